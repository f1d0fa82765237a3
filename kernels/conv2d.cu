// Convolution as implicit GEMM: the im2col matrix is never stored; each block gathers its tiles
// of it straight from the NCHW tensors into shared memory. One tiled FP32 GEMM kernel
// (igemm_kernel) serves the three products; each product is a "problem" that says how to load
// its A [M, K] and B [K, N] tiles and where output (m, n) lives:
//
//   forward          M = output pixels (n, oy, ox)   N = out_c   K = patch (c, ky, kx)
//   backward-data    M = input pixels  (n, iy, ix)   N = in_c    K = (oc, ky, kx)
//   backward-weight  M = patch (c, ky, kx)           N = out_c   K = output pixels (n, oy, ox)
//
// Backward-data gathers (each input pixel sums its own taps: no scatter, no atomics). With
// stride s only the taps with ky = iy + pad (mod s) touch pixel iy, so the input pixels are
// split into s * s phases (iy mod s, ix mod s), each a dense GEMM over its own taps: no work is
// spent on the zeros a strided transposed conv would otherwise multiply.
//
// When the output has too few tiles to fill the GPU (late encoder layers, every weight
// gradient) the reduction is split across blocks (split-K), sized by real occupancy: each tile
// states how many of its blocks an SM holds (kMinBlocks, kMinBlocksTf32, which __launch_bounds__
// makes the compiler honour), a wave is that times the SM count, and a plan splits only while the
// tiles alone fill less than a wave, into as many slices as one wave holds (never a second,
// partial wave). The slices' partial outputs are then added in a fixed order, so results stay
// deterministic, in a two-level tree inside the same launch: slices form sums of about
// sqrt(slices) slices each; the last block of a sum to arrive (an arrival counter) adds that sum's
// partials in slice order, and the last sum of a tile to finish adds the sums in order and
// applies the epilogue. A finish is then 2 sqrt(slices) deep, spread over sqrt(slices) blocks per
// tile, instead of every slice added by one block. The plan comes from plan_sm_count()
// (common.cuh): with reproducible plans, the same on every GPU.
#include <mma.h>

#include <cstdlib>
#include <string>

#include "kernels/common.cuh"
#include "kernels/conv2d.cuh"

namespace equivae::gpu {

namespace {
bool tf32_enabled = [] {
  const char* v = std::getenv("EQUIVAE_TF32");
  return v && std::string(v) == "1";
}();
}  // namespace

void set_conv_tf32(bool on) { tf32_enabled = on; }
bool conv_tf32() { return tf32_enabled; }
void set_reproducible_plans(bool on) { plan_settings().reproducible = on; }
bool reproducible_plans() { return plan_settings().reproducible; }
void set_plan_device_sms(int sms) { plan_settings().device_sms = sms; }

namespace {
namespace wmma = nvcuda::wmma;

constexpr int BK = 16;  // reduction depth of a shared-memory tile

// Block tile BM x BN, thread tile TM x TN. The thread count equals BM, so a thread loads one
// A-tile row (m-major loads) or, k-major, a fixed k column of the A and B tiles. kMinBlocks (FP32)
// and kMinBlocksTf32: the blocks an SM holds at once, which __launch_bounds__ makes true by capping
// the registers at 64K / (threads x blocks) (shared memory fits: SharedLayout). Chosen as the most
// that nvcc 13 fits without spilling (-Xptxas -v, sm_90): 24-32 resident warps for FP32's narrow
// tiles, 12 for 128x64, whose 64 accumulators need 128 registers; about half with TF32, whose
// fragments and output tile need more.
template <int BM_, int BN_, int TM_, int TN_, int kMinBlocks_, int kMinBlocksTf32_> struct Tile {
  static constexpr int BM = BM_, BN = BN_, TM = TM_, TN = TN_;
  static constexpr int kMinBlocks = kMinBlocks_, kMinBlocksTf32 = kMinBlocksTf32_;
  // Fewer resident blocks, fewer slices: a TF32 plan never needs more workspace than the FP32 one,
  // so a workspace sized before set_conv_tf32(true) (equivae_bench) still suffices.
  static_assert(kMinBlocksTf32 <= kMinBlocks, "TF32 plans must not outgrow FP32 workspaces");
  static constexpr int RM = BM / TM, RN = BN / TN;  // threads along m, along n
  static constexpr int kThreads = RM * RN;
  static constexpr int kB = (BN * BK + kThreads - 1) / kThreads;  // B-tile elements per thread
  static constexpr int kRowStep = kThreads / BK;                  // k-major: rows between a thread's loads
  // B's vector path: float4s along k (kVecK of them per tile column) per thread; rb holds either.
  static constexpr int kVecK = BK / 4, kBV = (BN * kVecK + kThreads - 1) / kThreads;
  static constexpr int kBRegs = kB > 4 * kBV ? kB : 4 * kBV;
  static_assert(kThreads == BM && kThreads % BK == 0, "loaders assume one thread per A-tile row");
};
using TileN4 = Tile<128, 4, 4, 1, 8, 8>;  // FP32 only (TF32 needs 16 columns)
using TileN16 = Tile<64, 16, 4, 4, 12, 6>;
using TileN32 = Tile<128, 32, 8, 4, 5, 3>;
using TileN64 = Tile<128, 64, 8, 8, 3, 2>;

// Blocks of tile Tl an SM holds with the math the products use now.
template <class Tl> int resident_blocks() {
  return conv_tf32() && Tl::BN % 16 == 0 ? Tl::kMinBlocksTf32 : Tl::kMinBlocks;
}

// Calls f(tile) with the tile for a GEMM of width n (the output channels): narrow N gets tall
// tiles instead of idle columns.
template <class F> auto with_tile(int64_t n, F&& f) {
  if (n <= 4) return f(TileN4{});
  if (n <= 16) return f(TileN16{});
  if (n <= 32) return f(TileN32{});
  return f(TileN64{});
}

// blockIdx.z = group * slices + slice: a group is an independent GEMM (a phase of
// backward-data), a slice a range [slice * chunk, + chunk) of its K. The finish adds slices
// [s * per_sum, + per_sum) into sum s, then the sums.
struct Split {
  int groups, slices, chunk, per_sum;
  __host__ __device__ int sums() const { return (slices + per_sum - 1) / per_sum; }
};

// What every problem reports on the host to size the launch.
struct Extent {
  int64_t max_m, n, max_k, out_numel;
  int groups;
};

constexpr int kMinChunk = 8 * BK;  // a slice's least depth: its pipeline start is then a small part

// The plan for a GPU of `sms` SMs: a function of the shape, the tile and `sms` alone.
Split plan_split(const Extent& e, int sms) {
  return with_tile(e.n, [&](auto tile) {
    using Tl = decltype(tile);
    const int64_t tiles = std::max<int64_t>(1, ceil_div(e.max_m, Tl::BM) * ceil_div(e.n, Tl::BN) * e.groups);
    const int64_t wave = int64_t(sms) * resident_blocks<Tl>();  // blocks resident at once
    const int64_t fit = tiles >= wave ? 1 : wave / tiles;  // slices one wave holds; 1 once the tiles fill it
    const int64_t most = std::max<int64_t>(1, std::min<int64_t>(ceil_div(e.max_k, kMinChunk), 65535 / e.groups));
    const int64_t want = std::min(fit, most);
    const int64_t chunk = std::max<int64_t>(BK, ceil_div(ceil_div(e.max_k, want), BK) * BK);
    const int slices = int(std::max<int64_t>(1, ceil_div(e.max_k, chunk)));
    int per_sum = 1;
    while (int64_t(per_sum) * per_sum < slices) ++per_sum;  // ceil(sqrt(slices))
    return Split{e.groups, slices, int(chunk), per_sum};
  });
}
Split plan_split(const Extent& e) { return plan_split(e, plan_sm_count()); }

size_t split_workspace_bytes(const Extent& e) {
  const Split s = plan_split(e);
  return s.slices > 1 ? size_t(s.slices) * size_t(e.out_numel) * sizeof(float) : 0;
}

// The output (numel elements) and how one element is written: bias (by the channel of its NCHW
// index), ReLU, store.
// Backward-weight with a bias appends the bias gradient to the output: elements from `split_at`
// on go to out2 (db) as they are.
struct Epilogue {
  float* out;
  int numel;
  const float* bias;  // null: none
  int hw, channels;
  bool relu;
  float* out2 = nullptr;
  int split_at = INT32_MAX;
  __device__ void apply(int i, float v) const {
    if (i >= split_at) {
      out2[i - split_at] = v;
      return;
    }
    if (bias) v += bias[(i / hw) % channels];
    out[i] = (relu && v < 0.f) ? 0.f : v;
  }
};

// dy as the backward passes read it: zero where the layer's fused ReLU was off (mask: its output).
__device__ __forceinline__ float masked(const float* dy, const float* mask, int64_t i) {
  const float v = dy[i];
  return mask && !(mask[i] > 0.f) ? 0.f : v;
}


// Stores a thread's fetched registers (ra: BK elements of A, rb: B) into the shared tiles. A is
// either the thread's own row (kARow: forward, backward-data) or k-major (backward-weight): column
// tid % BK, rows tid / BK + e * kRowStep. B is k-major: scalars (kB) as A's k-major layout, or with
// vec_b float4s (kBV): vector v = tid + e * kThreads holds k = 4 (v % kVecK) + 0..3 of column
// v / kVecK (b_vector gives the same).
struct BVector {
  int nn, kq;  // tile column, k / 4
};
template <class Tl> __device__ BVector b_vector(int tid, int e) {
  const int v = tid + e * Tl::kThreads;
  return {v / Tl::kVecK, v % Tl::kVecK};
}
template <class Tl, bool kARow, class ATile, class BTile>
__device__ void commit_tiles(int tid, bool vec_b, const float (&ra)[BK], const float (&rb)[Tl::kBRegs], ATile& As,
                             BTile& Bs) {
#pragma unroll
  for (int e = 0; e < BK; ++e) {
    if constexpr (kARow) As[e][tid] = ra[e];
    else As[tid % BK][tid / BK + e * Tl::kRowStep] = ra[e];
  }
  if (vec_b) {
#pragma unroll
    for (int e = 0; e < Tl::kBV; ++e) {
      const BVector b = b_vector<Tl>(tid, e);
      if (b.nn < Tl::BN)
#pragma unroll
        for (int q = 0; q < 4; ++q) Bs[4 * b.kq + q][b.nn] = rb[4 * e + q];
    }
    return;
  }
#pragma unroll
  for (int e = 0; e < Tl::kB; ++e) {
    const int nn = tid / BK + e * Tl::kRowStep;
    if (nn < Tl::BN) Bs[tid % BK][nn] = rb[e];
  }
}

// Stores a float4 into four registers.
__device__ __forceinline__ void put4(float* r, float4 v) { r[0] = v.x, r[1] = v.y, r[2] = v.z, r[3] = v.w; }

// ---- the products of a tile: FP32 on the CUDA cores, or TF32 on the tensor cores ---------------
// A math reads the shared tiles As [BK][BM + kPad] (A k-major: As[k][m]) and Bs [BK][BN + kPad]
// after each commit, and gives the epilogue output (m0 + ml, n0 + nl) as value(i, j, ml, nl), where
// ml = tm + i * RM, nl = tn + j * RN are the outputs of thread (tm, tn).

// FP32 (exact: the CPU reference's products, rounded in a different order): each thread keeps
// its TM x TN outputs in registers.
template <class Tl> struct Fp32Math {
  static constexpr bool kTf32 = false;
  static constexpr int kPad = 1;     // +1: k-major stores avoid bank conflicts
  static constexpr int kCFloats = 0;  // no output tile in shared memory
  float acc[Tl::TM][Tl::TN] = {};
  template <class ATile, class BTile> __device__ void multiply(const ATile& As, const BTile& Bs, int tid) {
    const int tm = tid % Tl::RM, tn = tid / Tl::RM;
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float a[Tl::TM], b[Tl::TN];
#pragma unroll
      for (int i = 0; i < Tl::TM; ++i) a[i] = As[kk][tm + i * Tl::RM];
#pragma unroll
      for (int j = 0; j < Tl::TN; ++j) b[j] = Bs[kk][tn + j * Tl::RN];
#pragma unroll
      for (int i = 0; i < Tl::TM; ++i)
#pragma unroll
        for (int j = 0; j < Tl::TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
  }
  __device__ void finish(float*, int) {}
  __device__ float value(int i, int j, int, int) const { return acc[i][j]; }
};

// TF32 tensor cores (wmma 16x16x8: products of 10-bit-mantissa operands, FP32 sums): warp w owns
// kFrags of the tile's 16x16 output blocks (w * kFrags + f, row-major over the blocks). At the
// end the warps store their sums into shared memory (over the dead A/B tiles) for the epilogue.
template <class Tl> struct Tf32Math {
  static constexpr bool kTf32 = true;
  static_assert(Tl::BM % 16 == 0 && Tl::BN % 16 == 0, "TF32 tiles are made of 16x16 blocks");
  static constexpr int kPad = 8;  // rows of 32-byte multiples: wmma's loads need 256-bit alignment
  static constexpr int kBlocksN = Tl::BN / 16, kWarps = Tl::kThreads / 32;
  static constexpr int kFrags = Tl::BM / 16 * kBlocksN / kWarps;
  static_assert(kFrags * kWarps == Tl::BM / 16 * kBlocksN, "whole blocks per warp");
  static constexpr int kCLd = Tl::BN + 4;  // output tile row: a multiple of 4 floats, as wmma stores need
  static constexpr int kCFloats = Tl::BM * kCLd;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[kFrags];
  const float* c_tile = nullptr;

  __device__ Tf32Math() {
#pragma unroll
    for (int f = 0; f < kFrags; ++f) wmma::fill_fragment(acc[f], 0.f);
  }
  template <class ATile, class BTile> __device__ void multiply(const ATile& As, const BTile& Bs, int tid) {
    const int first = tid / 32 * kFrags;
#pragma unroll
    for (int k = 0; k < BK; k += 8)
#pragma unroll
      for (int f = 0; f < kFrags; ++f) {
        const int mb = (first + f) / kBlocksN, nb = (first + f) % kBlocksN;
        wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> b;
        wmma::load_matrix_sync(a, &As[k][mb * 16], Tl::BM + kPad);
        wmma::load_matrix_sync(b, &Bs[k][nb * 16], Tl::BN + kPad);
#pragma unroll
        for (int e = 0; e < a.num_elements; ++e) a.x[e] = wmma::__float_to_tf32(a.x[e]);
#pragma unroll
        for (int e = 0; e < b.num_elements; ++e) b.x[e] = wmma::__float_to_tf32(b.x[e]);
        wmma::mma_sync(acc[f], a, b, acc[f]);
      }
  }
  // After the K loop's last barrier: the tiles' memory is free for the outputs.
  __device__ void finish(float* smem, int tid) {
    const int first = tid / 32 * kFrags;
#pragma unroll
    for (int f = 0; f < kFrags; ++f) {
      const int mb = (first + f) / kBlocksN, nb = (first + f) % kBlocksN;
      wmma::store_matrix_sync(smem + mb * 16 * kCLd + nb * 16, acc[f], kCLd, wmma::mem_row_major);
    }
    c_tile = smem;
    __syncthreads();
  }
  __device__ float value(int, int, int ml, int nl) const { return c_tile[ml * kCLd + nl]; }
};

template <class Tl, class Math> struct SharedLayout {
  static constexpr int kA = BK * (Tl::BM + Math::kPad), kB = BK * (Tl::BN + Math::kPad);
  static constexpr int kFloats = kA + kB > Math::kCFloats ? kA + kB : Math::kCFloats;
  static constexpr int kMinBlocks = Math::kTf32 ? Tl::kMinBlocksTf32 : Tl::kMinBlocks;
  // kMinBlocks blocks (and BackwardWeight's row tables, 13 bytes a row) fit in an H100 SM's 227 KiB.
  static_assert(kMinBlocks * (kFloats * 4 + 13 * Tl::BM + 64) <= 227 * 1024, "kMinBlocks overstates occupancy");
};

// Arrival counters of the split tiles, per tile: one per first-level sum, then one for the tile.
// Zero between launches (each sum's and tile's last block resets its own), allocated and zeroed
// once. A split plan has fewer tiles than a wave, and sqrt(wave / tiles) + 2 counters a tile.
constexpr int kMaxSplitCounters = 1 << 16;
unsigned* split_counters() {
  static unsigned* counters = [] {
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, kMaxSplitCounters * sizeof(unsigned)));
    CUDA_CHECK(cudaMemset(p, 0, kMaxSplitCounters * sizeof(unsigned)));  // once, before any kernel uses it
    return static_cast<unsigned*>(p);
  }();
  return counters;
}

// One arrival of this block at `counter`, which expects `arrivals`: true (in every thread) for the
// last to arrive, which then sees every earlier arrival's writes; it resets the counter.
__device__ bool arrive_last(unsigned* counter, int arrivals) {
  __shared__ bool last;
  __threadfence();  // this block's writes are visible before its arrival counts
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(counter, 1u) == unsigned(arrivals - 1);
    if (last) *counter = 0;  // ready for the next launch
  }
  __syncthreads();
  if (last) __threadfence();
  return last;
}

// The finish of a split product (see the top of the file), called by every thread of every block
// of a tile: outputs(f) calls f(output index, value) for each of the thread's outputs from slice
// `slice`; `counters` are the tile's split.sums() + 1. The same additions in the same order
// whichever blocks arrive last; sum s lands in the partials of its first slice, s * per_sum.
template <class Outputs>
__device__ void finish_split(const Split& split, int slice, unsigned* counters, float* partial, const Epilogue& ep,
                             const Outputs& outputs) {
  outputs([&](int idx, float v) { partial[int64_t(slice) * ep.numel + idx] = v; });
  const int sum = slice / split.per_sum, first = sum * split.per_sum;
  const int end = min(split.slices, first + split.per_sum);
  if (!arrive_last(&counters[sum], end - first)) return;
  outputs([&](int idx, float) {
    double acc = 0;
    for (int s = first; s < end; ++s) acc += __ldcg(&partial[int64_t(s) * ep.numel + idx]);
    partial[int64_t(first) * ep.numel + idx] = float(acc);
  });
  if (!arrive_last(&counters[split.sums()], split.sums())) return;
  outputs([&](int idx, float) {
    double acc = 0;
    for (int s = 0; s < split.slices; s += split.per_sum) acc += __ldcg(&partial[int64_t(s) * ep.numel + idx]);
    ep.apply(idx, float(acc));
  });
}

template <class Tl, class P, class Math>
__global__ void __launch_bounds__(Tl::kThreads, (SharedLayout<Tl, Math>::kMinBlocks))
    igemm_kernel(const __grid_constant__ P p, const Split split, const Epilogue ep, float* partial,
                 unsigned* counters) {
  using Layout = SharedLayout<Tl, Math>;
  __shared__ __align__(32) float smem[Layout::kFloats];
  auto& As = *reinterpret_cast<float(*)[BK][Tl::BM + Math::kPad]>(smem);
  auto& Bs = *reinterpret_cast<float(*)[BK][Tl::BN + Math::kPad]>(smem + Layout::kA);
  const int tid = threadIdx.x, tm = tid % Tl::RM, tn = tid / Tl::RM;
  const int slice = blockIdx.z % split.slices;
  const typename P::Group g = p.group(blockIdx.z / split.slices);
  const int m0 = blockIdx.x * Tl::BM, n0 = blockIdx.y * Tl::BN;
  if (m0 >= g.M) return;  // this phase has fewer rows than the longest one (whole block leaves)
  const int k_begin = slice * split.chunk, k_end = min(g.K, k_begin + split.chunk);

  typename P::template Loader<Tl> ld(p, g, m0, n0, k_begin, k_end, tid);
  __syncthreads();  // a loader may have built per-block tables in shared memory

  Math math;
  if (k_begin < k_end) ld.fetch(k_begin);
  for (int k0 = k_begin; k0 < k_end; k0 += BK) {
    ld.commit(As, Bs);
    __syncthreads();
    if (k0 + BK < k_end) ld.fetch(k0 + BK);  // next tile's loads overlap this tile's math
    math.multiply(As, Bs, tid);
    __syncthreads();
  }
  math.finish(smem, tid);

  // f(output index, i, j, ml, nl) for each of this thread's outputs inside the GEMM.
  const auto each_output = [&](auto&& f) {
#pragma unroll
    for (int i = 0; i < Tl::TM; ++i) {
      const int ml = tm + i * Tl::RM;
      if (m0 + ml >= g.M) continue;
#pragma unroll
      for (int j = 0; j < Tl::TN; ++j) {
        const int nl = tn + j * Tl::RN;
        if (n0 + nl >= p.N) continue;
        f(p.out_index(g, m0 + ml, n0 + nl), i, j, ml, nl);
      }
    }
  };
  // f(output index, value) for each of this thread's outputs.
  const auto outputs = [&](auto&& f) {
    each_output([&](int idx, int i, int j, int ml, int nl) { f(idx, math.value(i, j, ml, nl)); });
  };
  if (split.slices == 1) return outputs([&](int idx, float v) { ep.apply(idx, v); });
  const int tile = (blockIdx.z / split.slices * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  finish_split(split, slice, counters + int64_t(tile) * (split.sums() + 1), partial, ep, outputs);
}

template <class Tl, class P>
void launch_tile(const P& p, const Extent& e, const Split& split, const Epilogue& ep, void* workspace,
                 cudaStream_t stream) {
  const dim3 grid(unsigned(ceil_div(e.max_m, Tl::BM)), unsigned(ceil_div(e.n, Tl::BN)),
                  unsigned(split.groups * split.slices));
  unsigned* counters = nullptr;
  if (split.slices > 1) {
    if (int64_t(grid.x) * grid.y * split.groups * (split.sums() + 1) > kMaxSplitCounters)
      throw std::logic_error("conv2d: split plan too wide");
    counters = split_counters();
  }
  if constexpr (Tl::BN % 16 == 0) {
    if (conv_tf32()) {
      const auto kernel = igemm_kernel<Tl, P, Tf32Math<Tl>>;
      EQUIVAE_LAUNCH(kernel, grid, Tl::kThreads, stream, p, split, ep, static_cast<float*>(workspace), counters);
      return;
    }
  }
  const auto kernel = igemm_kernel<Tl, P, Fp32Math<Tl>>;
  EQUIVAE_LAUNCH(kernel, grid, Tl::kThreads, stream, p, split, ep, static_cast<float*>(workspace), counters);
}

// Runs problem p: picks the tile by N, splits K if the tiles alone cannot fill the GPU.
template <class P> void run(const P& p, const Extent& e, const Epilogue& ep, void* workspace, cudaStream_t stream) {
  if (e.out_numel == 0) return;
  check_int32(e.out_numel, "conv2d: output size");
  check_int32(e.max_m, "conv2d: GEMM rows");
  check_int32(e.max_k, "conv2d: GEMM depth");
  const Split split = plan_split(e);
  if (split.slices > 1 && !workspace) throw std::invalid_argument("conv2d: split-K needs a workspace");
  with_tile(e.n, [&](auto tile) { launch_tile<decltype(tile)>(p, e, split, ep, workspace, stream); });
}

// The conv's sizes as ints (run() has checked that the tensors fit).
struct Dims {
  int images, C, H, W, OC, OH, OW, KS, S, P;
  explicit Dims(const ConvShape& s)
      : images(int(s.n)), C(int(s.in_c)), H(int(s.in_h)), W(int(s.in_w)), OC(int(s.out_c)), OH(int(s.out_h)),
        OW(int(s.out_w)), KS(int(s.k)), S(int(s.stride)), P(int(s.pad)) {}
  // A dense layer (1x1 images, 1x1 kernel): a GEMM row of A is a row of x (forward) or of dy
  // (backward-data), contiguous in k.
  bool dense() const { return H == 1 && W == 1 && KS == 1 && P == 0; }
};

// 128-bit loads (a tile loader's vector path) need whole float4s: every one a loader reads starts at
// a multiple of 4 floats from a 16-byte aligned pointer (the row lengths below), and a K range ends
// on one (K % 4 == 0; split chunks are multiples of BK). The launchers choose per call.
__device__ __forceinline__ float4 masked4(const float* dy, const float* mask, int64_t i) {
  float4 v = load4(dy + i);
  if (mask) {
    const float4 m = load4(mask + i);
    v = {m.x > 0.f ? v.x : 0.f, m.y > 0.f ? v.y : 0.f, m.z > 0.f ? v.z : 0.f, m.w > 0.f ? v.w : 0.f};
  }
  return v;
}
__device__ __forceinline__ float4 zero4() { return {0.f, 0.f, 0.f, 0.f}; }

void check_conv(const ConvShape& s) {
  check_int32(s.in_numel(), "conv2d: input size");
  check_int32(s.out_numel(), "conv2d: output size");
  check_int32(s.weight_numel(), "conv2d: weight size");
}

// ---- forward: A = im2col(x) [pixels, patch], B = w^T [patch, out_c] ---------------------------

struct Forward : Dims {
  const float* x;
  const float* w;
  int N, M, K;  // N = out_c, M = n * OH * OW, K = C * KS * KS
  bool vec_a, vec_b;  // float4 loads: A rows of x (dense, C % 4 == 0), B rows of w (K % 4 == 0)
  Forward(const ConvShape& s, const float* x_, const float* w_)
      : Dims(s), x(x_), w(w_), N(OC), M(images * OH * OW), K(C * KS * KS),
        vec_a(dense() && C % 4 == 0 && aligned16(x_)), vec_b(K % 4 == 0 && aligned16(w_)) {}

  struct Group {
    int M, K;
  };
  __device__ Group group(int) const { return {M, K}; }
  __device__ int out_index(const Group&, int m, int n) const {
    const int ohw = OH * OW, img = m / ohw;
    return (img * OC + n) * ohw + (m - img * ohw);
  }

  // A m-major: this thread's row is output pixel m0 + tid; it walks k = (c, ky, kx) in order,
  // so consecutive threads read neighbouring input pixels.
  template <class Tl> struct Loader {
    const Forward& p;
    const float* x_img;
    int tid, n0, k_end, iy0, ix0, c, ky, kx;
    bool row_ok;
    float ra[BK], rb[Tl::kBRegs];

    __device__ Loader(const Forward& p_, const Group&, int m0, int n0_, int k_begin, int k_end_, int tid_)
        : p(p_), tid(tid_), n0(n0_), k_end(k_end_) {
      const int m = m0 + tid, ohw = p.OH * p.OW;
      row_ok = m < p.M;
      const int img = row_ok ? m / ohw : 0, pix = row_ok ? m - img * ohw : 0, oy = pix / p.OW;
      x_img = p.x + int64_t(img) * p.C * p.H * p.W;
      iy0 = oy * p.S - p.P;
      ix0 = (pix - oy * p.OW) * p.S - p.P;
      const int kk2 = p.KS * p.KS, r = k_begin % kk2;
      c = k_begin / kk2;
      ky = r / p.KS;
      kx = r % p.KS;
    }
    __device__ void fetch(int k0) {
      if (p.vec_a) {  // the row is x_img[k] (k = c)
#pragma unroll
        for (int q = 0; q < BK / 4; ++q) {
          const int k = k0 + 4 * q;
          put4(&ra[4 * q], row_ok && k < k_end ? load4(x_img + k) : zero4());
        }
      } else {
#pragma unroll
        for (int e = 0; e < BK; ++e) {
          const int iy = iy0 + ky, ix = ix0 + kx;
          const bool ok = row_ok && k0 + e < k_end && unsigned(iy) < unsigned(p.H) && unsigned(ix) < unsigned(p.W);
          ra[e] = ok ? x_img[(c * p.H + iy) * p.W + ix] : 0.f;
          if (++kx == p.KS) {
            kx = 0;
            if (++ky == p.KS) ky = 0, ++c;
          }
        }
      }
      if (p.vec_b) {
#pragma unroll
        for (int e = 0; e < Tl::kBV; ++e) {
          const BVector b = b_vector<Tl>(tid, e);
          const int n = n0 + b.nn, k = k0 + 4 * b.kq;
          put4(&rb[4 * e], b.nn < Tl::BN && n < p.N && k < k_end ? load4(&p.w[n * p.K + k]) : zero4());
        }
        return;
      }
      const int k = k0 + tid % BK;
#pragma unroll
      for (int e = 0; e < Tl::kB; ++e) {
        const int nn = tid / BK + e * Tl::kRowStep, n = n0 + nn;
        rb[e] = (nn < Tl::BN && n < p.N && k < k_end) ? p.w[n * p.K + k] : 0.f;
      }
    }
    template <class ATile, class BTile> __device__ void commit(ATile& As, BTile& Bs) const {
      commit_tiles<Tl, true>(tid, p.vec_b, ra, rb, As, Bs);
    }
  };
};

// ---- backward-data, one GEMM per phase: A = gathered dy [pixels of the phase, (oc, ty, tx)],
// B = w [(oc, ty, tx), in_c] with ky = ky0 + ty * S, kx = kx0 + tx * S ---------------------------

struct BackwardData : Dims {
  const float* dy;
  const float* w;
  const float* mask;  // null, or the forward's output: dy is masked by its ReLU
  int N;              // in_c
  bool vec_a;         // float4 loads of A, rows of dy (dense, OC % 4 == 0); B is always scalar
  static constexpr bool vec_b = false;
  BackwardData(const ConvShape& s, const float* dy_, const float* w_, const float* mask_ = nullptr)
      : Dims(s), dy(dy_), w(w_), mask(mask_), N(C),
        vec_a(dense() && OC % 4 == 0 && aligned16(dy_) && aligned16(mask_)) {}

  // Phase (py, px): input pixels iy = py + jy * S (jy < JH), ix = px + jx * S (jx < JW); the taps
  // that reach them are ky = ky0 + ty * S (ty < nky), from output row oy = (iy + P - ky) / S.
  struct Group {
    int M, K, py, px, JH, JW, ky0, kx0, nky, nkx;
  };
  __host__ __device__ Group group(int z) const {
    Group g;
    g.py = z / S;
    g.px = z % S;
    g.JH = g.py < H ? (H - g.py + S - 1) / S : 0;
    g.JW = g.px < W ? (W - g.px + S - 1) / S : 0;
    g.ky0 = (g.py + P) % S;
    g.kx0 = (g.px + P) % S;
    g.nky = g.ky0 < KS ? (KS - g.ky0 + S - 1) / S : 0;
    g.nkx = g.kx0 < KS ? (KS - g.kx0 + S - 1) / S : 0;
    g.M = images * g.JH * g.JW;
    g.K = OC * g.nky * g.nkx;
    return g;
  }
  __device__ int out_index(const Group& g, int m, int n) const {
    const int per_img = g.JH * g.JW, img = m / per_img, r = m - img * per_img, jy = r / g.JW;
    return ((img * C + n) * H + g.py + jy * S) * W + g.px + (r - jy * g.JW) * S;
  }

  template <class Tl> struct Loader {
    const BackwardData& p;
    const Group& g;
    const float* dy_img;
    const float* mask_img;
    int tid, n0, k_end, oy_base, ox_base, oc, ty, tx;
    bool row_ok;
    float ra[BK], rb[Tl::kBRegs];

    __device__ Loader(const BackwardData& p_, const Group& g_, int m0, int n0_, int k_begin, int k_end_, int tid_)
        : p(p_), g(g_), tid(tid_), n0(n0_), k_end(k_end_), oc(0), ty(0), tx(0) {
      const int m = m0 + tid, per_img = g.JH * g.JW;
      row_ok = m < g.M;
      const int img = row_ok ? m / per_img : 0, r = row_ok ? m - img * per_img : 0, jy = r / g.JW;
      dy_img = p.dy + int64_t(img) * p.OC * p.OH * p.OW;
      mask_img = p.mask ? p.mask + int64_t(img) * p.OC * p.OH * p.OW : nullptr;
      oy_base = (g.py + jy * p.S + p.P - g.ky0) / p.S;  // exact: the numerator is a multiple of S
      ox_base = (g.px + (r - jy * g.JW) * p.S + p.P - g.kx0) / p.S;
      if (k_begin < k_end) {
        const int taps = g.nky * g.nkx, t = k_begin % taps;
        oc = k_begin / taps;
        ty = t / g.nkx;
        tx = t % g.nkx;
      }
    }
    __device__ void fetch(int k0) {
      if (p.vec_a) {  // the row is dy_img[k] (k = oc)
#pragma unroll
        for (int q = 0; q < BK / 4; ++q) {
          const int k = k0 + 4 * q;
          put4(&ra[4 * q], row_ok && k < k_end ? masked4(dy_img, mask_img, k) : zero4());
        }
      } else {
#pragma unroll
        for (int e = 0; e < BK; ++e) {
          const int oy = oy_base - ty, ox = ox_base - tx;
          const bool ok = row_ok && k0 + e < k_end && unsigned(oy) < unsigned(p.OH) && unsigned(ox) < unsigned(p.OW);
          ra[e] = ok ? masked(dy_img, mask_img, (oc * p.OH + oy) * p.OW + ox) : 0.f;
          if (++tx == g.nkx) {
            tx = 0;
            if (++ty == g.nky) ty = 0, ++oc;
          }
        }
      }
      const int k = k0 + tid % BK;
      int w_base = 0;  // w[oc, 0, ky, kx] of this thread's k
      if (k < k_end) {
        const int taps = g.nky * g.nkx, t = k % taps, bty = t / g.nkx;
        w_base = ((k / taps) * p.C * p.KS + g.ky0 + bty * p.S) * p.KS + g.kx0 + (t - bty * g.nkx) * p.S;
      }
      const int c_stride = p.KS * p.KS;
#pragma unroll
      for (int e = 0; e < Tl::kB; ++e) {
        const int nn = tid / BK + e * Tl::kRowStep, n = n0 + nn;
        rb[e] = (nn < Tl::BN && n < p.N && k < k_end) ? p.w[w_base + n * c_stride] : 0.f;
      }
    }
    template <class ATile, class BTile> __device__ void commit(ATile& As, BTile& Bs) const {
      commit_tiles<Tl, true>(tid, p.vec_b, ra, rb, As, Bs);
    }
  };
};

// ---- backward-weight: A = im2col(x)^T [patch, pixels], B = dy as [pixels, out_c] ----------------

// With the bias gradient, A gains a row of ones (m = patch): its products are db = sum of dy.
struct BackwardWeight : Dims {
  const float* x;
  const float* dy;
  const float* mask;  // null, or the forward's output: dy is masked by its ReLU
  int N, M, K;        // N = out_c, M = C * KS * KS (+ 1: the bias row), K = n * OH * OW
  int patch;
  bool vec_b;  // float4 loads of B, dy's rows of pixels (OH OW % 4 == 0); A is always scalar
  BackwardWeight(const ConvShape& s, const float* x_, const float* dy_, const float* mask_ = nullptr,
                 bool bias = false)
      : Dims(s), x(x_), dy(dy_), mask(mask_), N(OC), M(C * KS * KS + bias), K(images * OH * OW),
        patch(C * KS * KS), vec_b(OH * OW % 4 == 0 && aligned16(dy_) && aligned16(mask_)) {}

  struct Group {
    int M, K;
  };
  __device__ Group group(int) const { return {M, K}; }
  __device__ int out_index(const Group&, int m, int n) const {  // dw [out_c, patch], then db [out_c]
    return m < patch ? n * patch + m : N * patch + n;
  }

  // Both tiles k-major: a thread owns one output pixel t = k0 + tid % BK per tile (consecutive
  // threads, consecutive pixels) and the A rows tid / BK + e * kRowStep, whose (c, ky, kx)
  // decomposition is tabulated once per block in shared memory.
  template <class Tl> struct Loader {
    const BackwardWeight& p;
    const int* row_off;  // c * H * W + ky * W + kx of each tile row
    const int* row_ky;   // a large negative ky marks rows past M: every tap is out of range
    const int* row_kx;
    const bool* row_ones;  // the bias row
    int tid, n0, k_end;
    float ra[BK], rb[Tl::kBRegs];

    __device__ Loader(const BackwardWeight& p_, const Group&, int m0, int n0_, int, int k_end_, int tid_)
        : p(p_), tid(tid_), n0(n0_), k_end(k_end_) {
      __shared__ int off[Tl::BM], kys[Tl::BM], kxs[Tl::BM];
      __shared__ bool ones[Tl::BM];
      const int m = m0 + tid, kk2 = p.KS * p.KS;
      const int c = m / kk2, r = m % kk2, ky = r / p.KS, kx = r % p.KS;
      off[tid] = m < p.patch ? (c * p.H + ky) * p.W + kx : 0;
      kys[tid] = m < p.patch ? ky : -(1 << 29);
      kxs[tid] = kx;
      ones[tid] = m == p.patch && m < p.M;
      row_off = off;
      row_ky = kys;
      row_kx = kxs;
      row_ones = ones;
    }
    __device__ void fetch(int k0) {
      const int t = k0 + tid % BK, ohw = p.OH * p.OW;
      const bool t_ok = t < k_end;
      const int img = t_ok ? t / ohw : 0, pix = t_ok ? t - img * ohw : 0, oy = pix / p.OW;
      const int iy0 = oy * p.S - p.P, ix0 = (pix - oy * p.OW) * p.S - p.P;
      const int64_t x_at = int64_t(img) * p.C * p.H * p.W + iy0 * p.W + ix0;  // + row_off: the tap
#pragma unroll
      for (int e = 0; e < BK; ++e) {
        const int row = tid / BK + e * Tl::kRowStep;
        const int iy = iy0 + row_ky[row], ix = ix0 + row_kx[row];
        const bool ok = t_ok && unsigned(iy) < unsigned(p.H) && unsigned(ix) < unsigned(p.W);
        ra[e] = ok ? p.x[x_at + row_off[row]] : (t_ok && row_ones[row] ? 1.f : 0.f);
      }
      if (p.vec_b) {  // pixels t4 .. t4 + 3 of one image (ohw % 4 == 0)
#pragma unroll
        for (int e = 0; e < Tl::kBV; ++e) {
          const BVector b = b_vector<Tl>(tid, e);
          const int n = n0 + b.nn, t4 = k0 + 4 * b.kq, img4 = t4 / ohw;
          const int64_t at = (int64_t(img4) * p.OC + n) * ohw + (t4 - img4 * ohw);
          put4(&rb[4 * e], b.nn < Tl::BN && n < p.N && t4 < k_end ? masked4(p.dy, p.mask, at) : zero4());
        }
        return;
      }
      const int64_t dy_at = int64_t(img) * p.OC * ohw + pix;
#pragma unroll
      for (int e = 0; e < Tl::kB; ++e) {
        const int nn = tid / BK + e * Tl::kRowStep, n = n0 + nn;
        rb[e] = (t_ok && nn < Tl::BN && n < p.N) ? masked(p.dy, p.mask, dy_at + int64_t(n) * ohw) : 0.f;
      }
    }
    template <class ATile, class BTile> __device__ void commit(ATile& As, BTile& Bs) const {
      commit_tiles<Tl, false>(tid, p.vec_b, ra, rb, As, Bs);
    }
  };
};

// ---- narrow layers: <= 4 output columns, a direct kernel -----------------------------------------
// The decoder's last transposed conv (16 -> 1 channel: backward-data with N = in_c = 1) as a GEMM
// fills 1 of the 128x4 tile's 4 columns. The direct kernel gives each thread one output pixel and
// all N (<= 4) channels of it: it walks the pixel's taps (for backward-data, only its phase's
// taps, as the GEMM does), reads each input value once and multiplies it by N weights that the
// block keeps in shared memory as [tap][N]. No idle lanes, no split, no workspace; each output is
// a sum in a fixed order (taps in (channel, ky, kx) order), so the bits are the same every run.
constexpr int kNarrowN = 4;                  // most output columns the direct kernel takes
constexpr int kNarrowThreads = 128;
constexpr int kNarrowMaxWeights = 4096;      // floats of weights in shared memory (16 KiB)

// Forward (kData false): out (img, oc < N, oy, ox) = sum over (c, ky, kx) of x * w[oc, c, ky, kx].
// Backward-data (kData true): out (img, c < N, iy, ix) = sum over (oc, ky, kx) of dy * w[oc, c, ky, kx],
// over the taps with ky = iy + P (mod S) whose output pixel exists.
template <bool kData>
__global__ void __launch_bounds__(kNarrowThreads)
    narrow_conv_kernel(const float* in, const float* mask, const float* w, const Dims d, const Epilogue ep) {
  __shared__ float ws[kNarrowMaxWeights];
  const int N = kData ? d.C : d.OC, R = kData ? d.OC : d.C;  // output channels, reduced channels
  const int taps = d.KS * d.KS, weights = R * taps * N;
  // ws[(r * taps + t) * N + j]: weight of reduced channel r, tap t, output channel j.
  for (int i = threadIdx.x; i < weights; i += blockDim.x) {
    const int j = i % N, rt = i / N, r = rt / taps, t = rt - r * taps;
    ws[i] = kData ? w[(r * d.C + j) * taps + t] : w[(j * d.C + r) * taps + t];
  }
  __syncthreads();
  const int OH = kData ? d.H : d.OH, OW = kData ? d.W : d.OW;  // the output's pixels
  const int IH = kData ? d.OH : d.H, IW = kData ? d.OW : d.W;  // the input's
  const int pixels = OH * OW, p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= d.images * pixels) return;
  const int img = p / pixels, pix = p - img * pixels, y = pix / OW, x = pix - y * OW;
  const float* in_img = in + int64_t(img) * R * IH * IW;
  const float* mask_img = mask ? mask + int64_t(img) * R * IH * IW : nullptr;
  // Backward-data: taps ky = ky0 + a S (the pixel's phase) reach input row (y + P - ky) / S.
  // Forward: every tap, input row y S - P + ky.
  const int ky0 = kData ? (y + d.P) % d.S : 0, kx0 = kData ? (x + d.P) % d.S : 0, step = kData ? d.S : 1;
  float acc[kNarrowN] = {};
  for (int r = 0; r < R; ++r) {
    const int plane = r * IH * IW;
    for (int ky = ky0; ky < d.KS; ky += step) {
      const int iy = kData ? (y + d.P - ky) / d.S : y * d.S - d.P + ky;
      if (kData ? (y + d.P - ky < 0 || iy >= IH) : unsigned(iy) >= unsigned(IH)) continue;
      for (int kx = kx0; kx < d.KS; kx += step) {
        const int ix = kData ? (x + d.P - kx) / d.S : x * d.S - d.P + kx;
        if (kData ? (x + d.P - kx < 0 || ix >= IW) : unsigned(ix) >= unsigned(IW)) continue;
        const float v = kData ? masked(in_img, mask_img, plane + iy * IW + ix) : in_img[plane + iy * IW + ix];
        const float* wt = &ws[(r * taps + ky * d.KS + kx) * N];
#pragma unroll
        for (int j = 0; j < kNarrowN; ++j)
          if (j < N) acc[j] = fmaf(v, wt[j], acc[j]);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < kNarrowN; ++j)
    if (j < N) ep.apply((img * N + j) * pixels + pix, acc[j]);
}

// Whether product (forward, or backward-data) of s runs on the direct kernel.
bool narrow(const ConvShape& s, bool data) {
  const int64_t n = data ? s.in_c : s.out_c;
  return n <= kNarrowN && s.weight_numel() <= kNarrowMaxWeights;
}

template <bool kData>
void launch_narrow(const float* in, const float* mask, const float* w, const ConvShape& s, const Epilogue& ep,
                   cudaStream_t stream) {
  const int64_t outputs = kData ? s.n * s.in_h * s.in_w : s.n * s.out_h * s.out_w;
  if (outputs == 0 || ep.numel == 0) return;
  EQUIVAE_LAUNCH(narrow_conv_kernel<kData>, unsigned(ceil_div(outputs, kNarrowThreads)), kNarrowThreads, stream,
                 in, mask, w, Dims(s), ep);
}

// ---- narrow weight gradients: <= 4 channels on one side, a direct kernel ------------------------
// dw [OC, C, KS, KS] (and db [OC]) of a layer with C <= 4 (an encoder's first conv; the decoder's
// last transposed conv, a conv2d with C = 1) or OC <= 4 is, as a GEMM, M = C KS KS (+ 1) rows or
// N = OC columns: most of a tile idle. The direct kernel gives each thread a unit: one channel of
// the wide side and one tap (ky, kx), or the bias (a tap of ones), with all the narrow side's
// channels of it in registers. A thread walks its slice of the rows (image, oy) in order and, in
// each, the ox whose tap lands inside the row: no per-pixel bounds checks, no idle lanes. The rows
// are split across blocks into a wave (as split-K splits a GEMM's K) and the slices are added by
// finish_split: the same bits on every run.
constexpr int kNarrowWeightBlocks = 8;  // blocks an SM holds (__launch_bounds__: 64 registers)
constexpr int kNarrowMinPixels = 256;   // a slice's least work: output pixels per thread

bool narrow_weight(const ConvShape& s) { return std::min(s.in_c, s.out_c) <= kNarrowN; }

// Units: (taps + 1) per channel of the wide side; the narrow side is C when C <= OC.
int64_t narrow_weight_units(const ConvShape& s) { return std::max(s.in_c, s.out_c) * (s.k * s.k + 1); }

// Slices of the n * OH rows for a GPU of `sms` SMs: as many as one wave holds, each at least
// kNarrowMinPixels output pixels.
Split plan_narrow_weight(const ConvShape& s, int sms) {
  const int64_t groups = ceil_div(narrow_weight_units(s), kNarrowThreads), rows = s.n * s.out_h;
  const int64_t fit = std::max<int64_t>(1, int64_t(sms) * kNarrowWeightBlocks / groups);
  const int64_t min_rows = std::max<int64_t>(1, ceil_div(kNarrowMinPixels, std::max<int64_t>(1, s.out_w)));
  const int64_t want = std::clamp<int64_t>(std::min(fit, rows / min_rows), 1, 65535);
  const int64_t chunk = std::max<int64_t>(1, ceil_div(rows, want));
  const int slices = int(std::max<int64_t>(1, ceil_div(rows, chunk)));
  int per_sum = 1;
  while (int64_t(per_sum) * per_sum < slices) ++per_sum;
  return Split{1, slices, int(chunk), per_sum};
}

// kNarrowIn: the narrow side is the input channels (unit channel w = oc), else the output channels
// (w = c). ep: dw, then db from split_at (ep.out2 null: no bias units).
template <bool kNarrowIn>
__global__ void __launch_bounds__(kNarrowThreads, kNarrowWeightBlocks)
    narrow_weight_kernel(const float* x, const float* dy, const float* mask, const Dims d, const Split split,
                         const Epilogue ep, float* partial, unsigned* counters) {
  const int taps = d.KS * d.KS, narrow = kNarrowIn ? d.C : d.OC, wides = kNarrowIn ? d.OC : d.C;
  const int u = blockIdx.y * blockDim.x + threadIdx.x, w = u / (taps + 1), t = u - w * (taps + 1);
  const bool ones = t == taps;  // the bias unit; with narrow output channels, wide channel 0's only
  const bool live = w < wides && (!ones || (ep.out2 && (kNarrowIn || w == 0)));
  const int ky = t / d.KS, kx = t - ky * d.KS, ohw = d.OH * d.OW, hw = d.H * d.W;
  // The ox whose input column ox S - P + kx lies in [0, W) (all of them for the bias).
  const int lo = ones || kx >= d.P ? 0 : (d.P - kx + d.S - 1) / d.S;
  const int hi = ones ? d.OW : d.W - 1 + d.P - kx < 0 ? 0 : min(d.OW, (d.W - 1 + d.P - kx) / d.S + 1);
  const int r_begin = blockIdx.x * split.chunk, r_end = min(d.images * d.OH, r_begin + split.chunk);
  float acc[kNarrowN] = {};
  for (int r = r_begin; live && r < r_end; ++r) {
    const int img = r / d.OH, oy = r - img * d.OH, iy = oy * d.S - d.P + ky;
    if (!ones && unsigned(iy) >= unsigned(d.H)) continue;
    const int64_t dy_row = int64_t(img) * d.OC * ohw + oy * d.OW;                  // + oc OH OW + ox
    const int64_t x_row = int64_t(img) * d.C * hw + int64_t(iy) * d.W + kx - d.P;  // + c H W + ox S
    if constexpr (kNarrowIn) {  // one dy value, narrow x values
      const int64_t g = dy_row + int64_t(w) * ohw;
      for (int ox = lo; ox < hi; ++ox) {
        const float v = masked(dy, mask, g + ox);
        if (ones) {
          acc[0] += v;
          continue;
        }
#pragma unroll
        for (int j = 0; j < kNarrowN; ++j)
          if (j < narrow) acc[j] = fmaf(v, x[x_row + j * hw + ox * d.S], acc[j]);
      }
    } else {  // narrow dy values, one x value
      const int64_t xg = x_row + int64_t(w) * hw;
      for (int ox = lo; ox < hi; ++ox) {
        const float v = ones ? 1.f : x[xg + ox * d.S];
#pragma unroll
        for (int j = 0; j < kNarrowN; ++j)
          if (j < narrow) acc[j] = fmaf(masked(dy, mask, dy_row + j * ohw + ox), v, acc[j]);
      }
    }
  }
  // f(index into dw then db, value) for each of this thread's outputs.
  const auto outputs = [&](auto&& f) {
    if (!live) return;
#pragma unroll
    for (int j = 0; j < kNarrowN; ++j) {
      if (j >= narrow || (ones && kNarrowIn && j > 0)) continue;
      if (ones) f(ep.split_at + (kNarrowIn ? w : j), acc[j]);
      else f(kNarrowIn ? (w * d.C + j) * taps + t : (j * d.C + w) * taps + t, acc[j]);
    }
  };
  if (split.slices == 1) return outputs([&](int idx, float v) { ep.apply(idx, v); });
  finish_split(split, blockIdx.x, counters + int64_t(blockIdx.y) * (split.sums() + 1), partial, ep, outputs);
}

void launch_narrow_weight(const float* x, const float* dy, const float* mask, const ConvShape& s, const Epilogue& ep,
                          void* workspace, cudaStream_t stream) {
  const Split split = plan_narrow_weight(s, plan_sm_count());
  const unsigned groups = unsigned(ceil_div(narrow_weight_units(s), kNarrowThreads));
  unsigned* counters = nullptr;
  if (split.slices > 1) {
    if (!workspace) throw std::invalid_argument("conv2d: split-K needs a workspace");
    if (int64_t(groups) * (split.sums() + 1) > kMaxSplitCounters) throw std::logic_error("conv2d: split plan too wide");
    counters = split_counters();
  }
  const dim3 grid(unsigned(split.slices), groups);
  const auto kernel = s.in_c <= s.out_c ? narrow_weight_kernel<true> : narrow_weight_kernel<false>;
  EQUIVAE_LAUNCH(kernel, grid, kNarrowThreads, stream, x, dy, mask, Dims(s), split, ep,
                 static_cast<float*>(workspace), counters);
}

Extent forward_extent(const ConvShape& s) {
  return {s.n * s.out_h * s.out_w, s.out_c, s.patch(), s.out_numel(), 1};
}
Extent backward_data_extent(const ConvShape& s) {
  const BackwardData p(s, nullptr, nullptr);
  int64_t max_m = 0, max_k = 0;
  for (int z = 0; z < p.S * p.S; ++z) {
    const BackwardData::Group g = p.group(z);
    max_m = std::max<int64_t>(max_m, g.M);
    max_k = std::max<int64_t>(max_k, g.K);
  }
  return {max_m, s.in_c, max_k, s.in_numel(), int(s.stride * s.stride)};
}
Extent backward_weight_extent(const ConvShape& s, bool bias) {
  return {s.patch() + bias, s.out_c, s.n * s.out_h * s.out_w, s.weight_numel() + (bias ? s.out_c : 0), 1};
}

}  // namespace

ConvPlan conv2d_plan(ConvProduct product, const ConvShape& s, bool bias) {
  if (product == ConvProduct::backward_weight && narrow_weight(s)) {
    const Split split = plan_narrow_weight(s, plan_sm_count());
    const int64_t groups = ceil_div(narrow_weight_units(s), kNarrowThreads);
    return ConvPlan{0, 0, kNarrowWeightBlocks, split.slices, split.chunk, split.slices * groups, true};
  }
  if (product != ConvProduct::backward_weight && narrow(s, product == ConvProduct::backward_data)) {
    const int64_t outputs = product == ConvProduct::forward ? s.n * s.out_h * s.out_w : s.n * s.in_h * s.in_w;
    return ConvPlan{0, 0, 0, 1, 0, ceil_div(outputs, kNarrowThreads), true};
  }
  const Extent e = product == ConvProduct::forward         ? forward_extent(s)
                   : product == ConvProduct::backward_data ? backward_data_extent(s)
                                                           : backward_weight_extent(s, bias);
  const Split split = plan_split(e);
  return with_tile(e.n, [&](auto tile) {
    using Tl = decltype(tile);
    return ConvPlan{Tl::BM, Tl::BN, resident_blocks<Tl>(), split.slices, split.chunk,
                    ceil_div(e.max_m, Tl::BM) * ceil_div(e.n, Tl::BN) * split.groups * split.slices, false};
  });
}

ConvLoads conv2d_vector_loads(ConvProduct product, const ConvShape& s, const float* a, const float* b,
                              const float* mask) {
  switch (product) {
    case ConvProduct::forward: {
      if (narrow(s, false)) return {false, false};
      const Forward p(s, a, b);
      return {p.vec_a, p.vec_b};
    }
    case ConvProduct::backward_data:
      if (narrow(s, true)) return {false, false};
      return {BackwardData(s, a, b, mask).vec_a, false};
    case ConvProduct::backward_weight:
      if (narrow_weight(s)) return {false, false};
      return {false, BackwardWeight(s, a, b, mask).vec_b};
  }
  return {false, false};
}

size_t conv2d_forward_workspace_bytes(const ConvShape& s) {
  return narrow(s, false) ? 0 : split_workspace_bytes(forward_extent(s));
}

void conv2d_forward(const float* x, const float* w, const float* b, bool relu, float* y, const ConvShape& s,
                    void* workspace, cudaStream_t stream) {
  check_conv(s);
  const Epilogue ep{y, int(s.out_numel()), b, int(s.out_h * s.out_w), int(s.out_c), relu};
  if (narrow(s, false)) return launch_narrow<false>(x, nullptr, w, s, ep, stream);
  run(Forward(s, x, w), forward_extent(s), ep, workspace, stream);
}

size_t conv2d_backward_data_workspace_bytes(const ConvShape& s) {
  check_conv(s);
  return narrow(s, true) ? 0 : split_workspace_bytes(backward_data_extent(s));
}

void conv2d_backward_data(const float* dy, const float* w, float* dx, const ConvShape& s, void* workspace,
                          cudaStream_t stream, const float* bias, bool relu, const float* dy_mask) {
  check_conv(s);
  if (s.stride * s.stride > 65535) throw std::invalid_argument("conv2d: stride too large for the CUDA kernels");
  const Epilogue ep{dx, int(s.in_numel()), bias, int(s.in_h * s.in_w), int(s.in_c), relu};
  if (narrow(s, true)) return launch_narrow<true>(dy, dy_mask, w, s, ep, stream);
  run(BackwardData(s, dy, w, dy_mask), backward_data_extent(s), ep, workspace, stream);
}

size_t conv2d_backward_weight_workspace_bytes(const ConvShape& s, bool bias) {
  const Extent e = backward_weight_extent(s, bias);
  if (!narrow_weight(s)) return split_workspace_bytes(e);
  const Split split = plan_narrow_weight(s, plan_sm_count());
  return split.slices > 1 ? size_t(split.slices) * size_t(e.out_numel) * sizeof(float) : 0;
}

void conv2d_backward_weight(const float* x, const float* dy, float* dw, const ConvShape& s, void* workspace,
                            cudaStream_t stream, const float* dy_mask, float* db) {
  check_conv(s);
  check_int32(s.weight_numel() + s.out_c, "conv2d: weight and bias size");
  const Extent e = backward_weight_extent(s, db != nullptr);
  Epilogue ep{dw, int(e.out_numel), nullptr, 1, 1, false};
  ep.out2 = db;
  ep.split_at = int(s.weight_numel());
  if (narrow_weight(s)) {
    if (e.out_numel > 0) launch_narrow_weight(x, dy, dy_mask, s, ep, workspace, stream);
    return;
  }
  run(BackwardWeight(s, x, dy, dy_mask, db != nullptr), e, ep, workspace, stream);
}

size_t channel_sum_workspace_bytes(const ChannelShape& s) { return channel_reduce_workspace_bytes(s.n, s.c, s.hw); }

void channel_sum(const float* dy, float* db, const ChannelShape& s, void* workspace, cudaStream_t stream) {
  reduce_channels(s.n, s.c, s.hw, [=] __device__(int, int64_t i) { return double(dy[i]); }, workspace, db, stream);
}

void relu_bias_backward(const float* y, const float* dy, float* dx, float* db, const ChannelShape& s, void* workspace,
                        cudaStream_t stream) {
  if (!db) {
    if (y && dx) launch_map(s.n * s.c * s.hw, stream, [=] __device__(int64_t i) { dx[i] = y[i] > 0.f ? dy[i] : 0.f; });
    return;
  }
  // The channel reduction visits every element once, so it writes the masked gradient on its way.
  if (y) {
    reduce_channels(s.n, s.c, s.hw, [=] __device__(int, int64_t i) {
      const float v = y[i] > 0.f ? dy[i] : 0.f;
      if (dx) dx[i] = v;
      return double(v);
    }, workspace, db, stream);
  } else {
    channel_sum(dy, db, s, workspace, stream);
  }
}

void add_channel_bias(const float* b, float* y, const ChannelShape& s, cudaStream_t stream) {
  const int64_t hw = s.hw, c = s.c;
  if (hw <= 0 || c <= 0) return;
  launch_map(s.n * c * hw, stream, [=] __device__(int64_t i) { y[i] += b[(i / hw) % c]; });
}

}  // namespace equivae::gpu
