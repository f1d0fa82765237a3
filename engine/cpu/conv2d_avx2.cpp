// The fast float32 convolutions of the CPU backend: direct convolutions on AVX2 + FMA registers,
// compiled with -mavx2 -mfma for this file only and chosen at run time (engine/cpu/cpu_features.h),
// so one binary still runs, on the im2col + GEMM path of conv2d.cpp, where AVX2 is missing.
//
// Why direct: the model's layers are small (16-64 channels, 28x28 down to 2x2, 5x5 kernels).
// im2col + GEMM spent four fifths of its time moving data (the column matrix is 25x the input
// for stride 1, about 6x for stride 2, and the GEMM packs it again). Here every multiply-add
// happens in a register tile that reads its inputs once from a padded copy of the input:
//
//   forward / backward-data  one tile = R output pixels x V vectors of output channels (ymm, or
//                            zmm where the CPU has AVX-512: conv2d_tiles.h, conv2d_avx512.cpp);
//                            the reduction runs over taps x input channels, each step one weight
//                            vector load per V and one broadcast per pixel. Backward-data is the
//                            same loop over dy: with stride 1 the flipped kernel, with stride 2
//                            one pass per output parity class (its taps are every other tap).
//   backward-weight          one tile = 5 kx taps x V vectors of output channels of dW for one (ci, ky);
//                            the reduction runs over every output pixel of the thread's images.
//
// Tensors stay NCHW at the interface (the reference path's layout, so parity is exact about
// layout and nothing else changes): the broadcast operand is read straight from padded NCHW
// planes, the vector operand is the packed weight (forward, backward-data) or dy transposed to
// pixel-major (backward-weight). Results go to NCHW from the registers.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/cpu/conv2d_fast.h"
#include "engine/cpu/conv2d_tiles.h"
#include "engine/cpu/parallel.h"

namespace equivae::avx2 {
namespace {

using conv_tiles::Pass;
using conv_tiles::WeightPass;
namespace avx512 = conv_tiles::avx512;

constexpr int kLanes = 8;

// Per-thread scratch that grows and is then reused: no allocation or page faults per call.
float* scratch(int slot, size_t n) {
  thread_local std::vector<float> buffers[3];
  if (buffers[slot].size() < n) buffers[slot].resize(n);
  return buffers[slot].data();
}

// Scratch shared by all threads of a call (packed weights), filled before the parallel region.
float* shared_scratch(size_t n) {
  static std::vector<float> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

struct Range { int64_t first, count; };
Range thread_images(int64_t n) {
  const int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
  return {n * t / threads, n * (t + 1) / threads - n * t / threads};
}

// Calls fn(first, count) over the thread's images in chunks whose padded copy (`floats` per
// image) stays within about a quarter MiB, half of a core's L2: the tiles then read it from cache
// at any batch size.
template <class Fn> void for_image_chunks(const Range& r, int64_t floats, Fn&& fn) {
  const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, floats));
  for (int64_t f = r.first; f < r.first + r.count; f += chunk) fn(f, std::min(chunk, r.first + r.count - f));
}

// Floats between two padded planes: at least hp * wp, and an odd number of 64-byte lines, so
// that the same pixel of consecutive planes falls in different L1 sets (planes 4 KiB apart,
// e.g. 32 x 32, would all share one set and evict each other).
int64_t plane_stride(int64_t hp, int64_t wp) {
  int64_t lines = (hp * wp + 15) / 16;
  if (lines % 2 == 0) ++lines;
  return lines * 16;
}

// Copies `planes` planes of h x w into zero-padded planes of hp x wp (`stride` floats apart),
// the source at row `top`, column `left`; rows or columns beyond hp/wp are dropped (never read).
void pad_planes(const float* src, int64_t planes, int64_t h, int64_t w, float* dst, int64_t hp, int64_t wp,
                int64_t stride, int64_t top, int64_t left) {
  const int64_t rows = std::min(h, hp - top), cols = std::min(w, wp - left);
  for (int64_t p = 0; p < planes; ++p) {
    float* out = dst + p * stride;
    const float* in = src + p * h * w;
    std::fill_n(out, top * wp, 0.f);
    for (int64_t y = 0; y < rows; ++y) {
      float* row = out + (top + y) * wp;
      std::fill_n(row, left, 0.f);
      std::memcpy(row + left, in + y * w, size_t(cols) * sizeof(float));
      std::fill(row + left + cols, row + wp, 0.f);
    }
    std::fill(out + (top + rows) * wp, out + stride, 0.f);
  }
}

// 8 x 8 block transpose: rows[i] (8 floats each, `in_stride` apart) -> columns, `out_stride` apart.
inline void transpose8(const float* in, int64_t in_stride, float* out, int64_t out_stride) {
  __m256 r[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(in + i * in_stride);
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(out + 0 * out_stride, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(out + 1 * out_stride, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(out + 2 * out_stride, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(out + 3 * out_stride, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(out + 4 * out_stride, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(out + 5 * out_stride, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(out + 6 * out_stride, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(out + 7 * out_stride, _mm256_permute2f128_ps(u3, u7, 0x31));
}

// Images [count][c][h][w] -> zero-padded pixel-major images [count][hp][wp][c], the source at
// row `top`, column `left` (rows or columns beyond hp/wp are dropped: never read).
void to_padded_nhwc(const float* src, int64_t count, int64_t c, int64_t h, int64_t w, float* dst, int64_t hp,
                    int64_t wp, int64_t top, int64_t left) {
  const int64_t rows = std::min(h, hp - top), cols = std::min(w, wp - left);
  for (int64_t n = 0; n < count; ++n) {
    const float* in = src + n * c * h * w;
    float* out = dst + n * hp * wp * c;
    std::fill_n(out, top * wp * c, 0.f);
    std::fill(out + (top + rows) * wp * c, out + hp * wp * c, 0.f);
    for (int64_t y = 0; y < rows; ++y) {
      float* row = out + (top + y) * wp * c;
      std::fill_n(row, left * c, 0.f);
      std::fill(row + (left + cols) * c, row + wp * c, 0.f);
      row += left * c;
      int64_t c0 = 0;
      for (; c0 + kLanes <= c; c0 += kLanes) {
        int64_t x = 0;
        for (; x + kLanes <= cols; x += kLanes) transpose8(in + (c0 * h + y) * w + x, h * w, row + x * c + c0, c);
        for (; x < cols; ++x)
          for (int64_t ch = c0; ch < c0 + kLanes; ++ch) row[x * c + ch] = in[(ch * h + y) * w + x];
      }
      for (; c0 < c; ++c0)
        for (int64_t x = 0; x < cols; ++x) row[x * c + c0] = in[(c0 * h + y) * w + x];
    }
  }
}

struct Ymm {
  using V = __m256;
  static constexpr int kLanes = 8, kRegisters = 16, kTilePixels = 6;  // 12 accumulators + 2 weights
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V relu(V v) { return _mm256_max_ps(_mm256_setzero_ps(), v); }  // this operand order keeps NaN
};

// The 512-bit tiles where the CPU has them and they take the channels, else the 256-bit ones.
// Two vectors of channels per tile where they divide the channels, even for 64: a weight vector
// then feeds a whole tile of pixels, and a layer's weights of one step stay in registers.
void run_pass(const Pass& p, int64_t images) {
  if (cpu_has_avx512() && avx512::takes(p.out_c)) avx512::run_pass(p, images);
  else conv_tiles::run_pass<Ymm>(p, images);
}

void weight_pass(const WeightPass& w) {
  if (cpu_has_avx512() && avx512::takes(w.shape.out_c)) avx512::weight_pass(w);
  else conv_tiles::weight_pass<Ymm>(w);
}

}  // namespace

// The shapes the row kernels take: one input channel, stride 1, 5x5 (the model's first layer).
bool single_channel_rows(const ConvShape& s) { return s.in_c == 1 && s.stride == 1 && s.k == 5; }

bool conv_supported(const ConvShape& s) {
  const bool channels = s.out_c % kLanes == 0 || single_channel_rows(s);
  return channels && s.stride >= 1 && s.stride <= 2 && s.pad < s.k;
}
bool conv_backward_data_supported(const ConvShape& s) {
  const bool channels = s.in_c % kLanes == 0 || single_channel_rows(s);
  return channels && s.out_c >= 1 && s.stride >= 1 && s.stride <= 2 && s.pad < s.k;
}

namespace {

// Stride-1 convolutions with one channel on one side (the first conv's forward, one input
// channel; the decoder's last transposed conv, one output channel): vectors run along 8 pixels
// of an output row, so no lane idles on a missing channel. Tile: 4 rows x 2 vectors of one output
// plane; each loaded row of 2 vectors serves up to 4 output rows (with as many kernel rows), so
// one kernel column (16 row loads, 5 weight broadcasts) feeds 80 FMAs. The 2 rows x 4 vectors
// tile before it needed 34 loads for 40 FMAs and ran at about 40 % of the FMA peak.
constexpr int kRows = 4, kVecs = 2, kRowKernel = 5;  // 8 accumulators + 2 row vectors + 5 weights

struct RowConv {
  const float* src;  // padded source planes of the thread's images: [images][reduce] planes of `plane` floats
  int64_t src_image, plane, wp, reduce, k;
  const float* weights;  // [out_c][reduce][k][k], tap (ay, ax) reads src[iy + ay][ix + ax]
  const float* bias;     // or null
  bool relu;
  float* out;            // [images][out_c][out_h][out_w]
  int64_t out_c, out_h, out_w;
};

template <int Rows>
void row_tile(const RowConv& c, const float* src, const float* w, float bias, int64_t iy0, int64_t ix0, float* out) {
  constexpr int K = kRowKernel;
  __m256 acc[Rows][kVecs];
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r)
#pragma GCC unroll 8
    for (int u = 0; u < kVecs; ++u) acc[r][u] = _mm256_set1_ps(bias);
  const int64_t wp = c.wp;
  for (int64_t ch = 0; ch < c.reduce; ++ch)
    for (int ax = 0; ax < K; ++ax) {
      // Source row s feeds output row r through kernel row s - r: each loaded vector serves up
      // to Rows output rows (8 row loads instead of 20 for 4 rows of a 5x5 kernel), and the K
      // weights of this kernel column are broadcast once for all of them.
      const float* col = src + ch * c.plane + iy0 * wp + ix0 + ax;
      __m256 wk[K];
#pragma GCC unroll 8
      for (int ay = 0; ay < K; ++ay) wk[ay] = _mm256_broadcast_ss(w + (ch * K + ay) * K + ax);
#pragma GCC unroll 8
      for (int sr = 0; sr < Rows + K - 1; ++sr) {
        __m256 v[kVecs];
#pragma GCC unroll 8
        for (int u = 0; u < kVecs; ++u) v[u] = _mm256_loadu_ps(col + sr * wp + u * kLanes);
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
          const int ay = sr - r;
          if (ay < 0 || ay >= K) continue;
#pragma GCC unroll 8
          for (int u = 0; u < kVecs; ++u) acc[r][u] = _mm256_fmadd_ps(wk[ay], v[u], acc[r][u]);
        }
      }
    }
  // The last vector of a row may run past out_w: only its first `left` lanes are stored.
#pragma GCC unroll 8
  for (int r = 0; r < Rows; ++r)
#pragma GCC unroll 8
    for (int u = 0; u < kVecs; ++u) {
      const int64_t left = c.out_w - ix0 - u * kLanes;
      if (left <= 0) continue;
      const __m256 y = c.relu ? _mm256_max_ps(_mm256_setzero_ps(), acc[r][u]) : acc[r][u];  // keeps NaN
      float* dst = out + (iy0 + r) * c.out_w + ix0 + u * kLanes;
      if (left >= kLanes) {
        _mm256_storeu_ps(dst, y);
      } else {  // through memory: vmaskmovps stores are microcoded and slow on AMD
        alignas(32) float lanes[kLanes];
        _mm256_store_ps(lanes, y);
        std::copy_n(lanes, left, dst);
      }
    }
}

void run_row_conv(const RowConv& c, int64_t images) {
  for (int64_t n = 0; n < images; ++n)
    for (int64_t o = 0; o < c.out_c; ++o) {
      const float* src = c.src + n * c.src_image;
      const float* w = c.weights + o * c.reduce * c.k * c.k;
      const float bias = c.bias ? c.bias[o] : 0.f;
      float* out = c.out + (n * c.out_c + o) * c.out_h * c.out_w;
      for (int64_t iy = 0; iy < c.out_h; iy += kRows)
        for (int64_t ix = 0; ix < c.out_w; ix += kVecs * kLanes) {
          if (c.out_h - iy >= kRows) row_tile<kRows>(c, src, w, bias, iy, ix, out);
          else
            for (int64_t r = iy; r < c.out_h; ++r) row_tile<1>(c, src, w, bias, r, ix, out);
        }
    }
}

// Padded source geometry of a row convolution with output h x w: columns up to whole tiles.
struct RowGeometry {
  int64_t hp, wp, plane;
};
RowGeometry row_geometry(int64_t out_h, int64_t out_w, int64_t k) {
  const int64_t cols = (out_w + kVecs * kLanes - 1) / (kVecs * kLanes) * kVecs * kLanes;
  const int64_t hp = out_h + k - 1, wp = cols + k - 1;
  return {hp, wp, plane_stride(hp, wp)};
}

void forward_single_channel(const float* x, const float* w, const float* b, bool relu, float* y, const ConvShape& s) {
  const RowGeometry g = row_geometry(s.out_h, s.out_w, s.k);
#pragma omp parallel
  {
    for_image_chunks(thread_images(s.n), g.plane, [&](int64_t first, int64_t count) {
      float* xp = scratch(0, size_t(count * g.plane));
      pad_planes(x + first * s.in_h * s.in_w, count, s.in_h, s.in_w, xp, g.hp, g.wp, g.plane, s.pad, s.pad);
      run_row_conv({xp, g.plane, g.plane, g.wp, 1, s.k, w, b, relu, y + first * s.out_c * s.out_h * s.out_w, s.out_c,
                    s.out_h, s.out_w},
                   count);
    });
  }
}

void backward_data_single_channel(const float* dy, const float* w, const float* b, bool relu, float* dx,
                                  const ConvShape& s) {
  // dx[iy][ix] = sum over co, ky, kx of dy[co][iy + pad - ky][ix + pad - kx] w[co][0][ky][kx]. With
  // dy padded by k - 1 - pad before, that is dy_pad[co][iy + ay][ix + ax] with ay = k - 1 - ky.
  const int64_t k = s.k;
  const RowGeometry g = row_geometry(s.in_h, s.in_w, k);
  float* wflip = shared_scratch(size_t(s.out_c * k * k));
  for (int64_t co = 0; co < s.out_c; ++co)
    for (int64_t t = 0; t < k * k; ++t) wflip[co * k * k + t] = w[co * k * k + (k * k - 1 - t)];
#pragma omp parallel
  {
    for_image_chunks(thread_images(s.n), s.out_c * g.plane, [&](int64_t first, int64_t count) {
      float* dp = scratch(0, size_t(count * s.out_c * g.plane));
      pad_planes(dy + first * s.out_c * s.out_h * s.out_w, count * s.out_c, s.out_h, s.out_w, dp, g.hp, g.wp, g.plane,
                 k - 1 - s.pad, k - 1 - s.pad);
      run_row_conv({dp, s.out_c * g.plane, g.plane, g.wp, s.out_c, k, wflip, b, relu, dx + first * s.in_h * s.in_w, 1,
                    s.in_h, s.in_w},
                   count);
    });
  }
}

}  // namespace

void conv_forward(const float* x, const float* w, const float* b, bool relu, float* y, const ConvShape& s) {
  if (single_channel_rows(s)) return forward_single_channel(x, w, b, relu, y, s);
  // Weights [out_c][in_c][ky][kx] -> [tap = (ky, kx)][in_c][out_c].
  const int64_t taps = s.k * s.k, wn = s.weight_numel();
  float* packed = shared_scratch(size_t(wn));
  for (int64_t co = 0; co < s.out_c; ++co)
    for (int64_t ci = 0; ci < s.in_c; ++ci)
      for (int64_t t = 0; t < taps; ++t) packed[(t * s.in_c + ci) * s.out_c + co] = w[(co * s.in_c + ci) * taps + t];
  const int64_t hp = (s.out_h - 1) * s.stride + s.k, wp = (s.out_w - 1) * s.stride + s.k, c = s.in_c;
#pragma omp parallel
  {
    // Pixel-major input: for a kernel row ky the k taps x c channels of a window are one run of
    // contiguous floats, the reduction of one step of the tile.
    for_image_chunks(thread_images(s.n), hp * wp * c, [&](int64_t first, int64_t count) {
      float* xp = scratch(0, size_t(count * hp * wp * c));
      to_padded_nhwc(x + first * c * s.in_h * s.in_w, count, c, s.in_h, s.in_w, xp, hp, wp, s.pad, s.pad);
      std::vector<int64_t> taps;
      for (int64_t ky = 0; ky < s.k; ++ky) taps.push_back(ky * wp * c);
      run_pass({xp, hp * wp * c, 1, s.k * c, s.out_h, s.out_w, s.stride * wp * c, s.stride * c,
                y + first * s.out_c * s.out_h * s.out_w, s.out_c * s.out_h * s.out_w, s.out_h * s.out_w, 0, s.out_w, 1,
                s.out_c, taps.data(), int64_t(taps.size()), packed, b, relu},
               count);
    });
  }
}

void conv_backward_data(const float* dy, const float* w, const float* b, bool relu, float* dx, const ConvShape& s) {
  if (single_channel_rows(s)) return backward_data_single_channel(dy, w, b, relu, dx, s);
  // dx[i] gathers dy[o] * w[kk] over i = o * stride - pad + kk. Per axis, the inputs i with
  // (i + pad) % stride = ph take the taps kk = ph + stride * a, from o = q - a, q = (i + pad) / stride:
  // a stride-1 convolution of dy with every stride-th tap, one pass per parity class (ph_y, ph_x).
  // dy is padded by `lo` = (k - 1) / stride before, so q - a + lo >= 0, and pixel-major, so the taps
  // a = A - 1 .. 0 along x (columns q - A + 1 .. q) and the channels form one contiguous run.
  const int64_t st = s.stride, lo = (s.k - 1) / st, co = s.out_c;
  const int64_t qmax_h = (s.in_h - 1 + s.pad) / st, qmax_w = (s.in_w - 1 + s.pad) / st;
  const int64_t hp = lo + std::max(s.out_h, qmax_h + 1), wp = lo + std::max(s.out_w, qmax_w + 1);
  const int64_t classes = st * st, most = (s.k + st - 1) / st, per_class = most * most * co * s.in_c;
  // Packed weights per class: [a_y][column position (a_x descending)][out_c][in_c].
  float* packed = shared_scratch(size_t(classes * per_class));
  for (int64_t ph = 0; ph < classes; ++ph) {
    const int64_t phy = ph / st, phx = ph % st, ax_n = (s.k - phx + st - 1) / st;
    float* dst = packed + ph * per_class;
    for (int64_t ky = phy; ky < s.k; ky += st)
      for (int64_t pos = 0; pos < ax_n; ++pos) {
        const int64_t kx = phx + st * (ax_n - 1 - pos);
        for (int64_t o = 0; o < co; ++o)
          for (int64_t ci = 0; ci < s.in_c; ++ci) dst[o * s.in_c + ci] = w[((o * s.in_c + ci) * s.k + ky) * s.k + kx];
        dst += co * s.in_c;
      }
  }
#pragma omp parallel
  {
    for_image_chunks(thread_images(s.n), hp * wp * co, [&](int64_t first, int64_t count) {
      float* dp = scratch(0, size_t(count * hp * wp * co));
      to_padded_nhwc(dy + first * co * s.out_h * s.out_w, count, co, s.out_h, s.out_w, dp, hp, wp, lo, lo);
      for (int64_t ph = 0; ph < classes; ++ph) {
        const int64_t phy = ph / st, phx = ph % st, ax_n = (s.k - phx + st - 1) / st;
        // q ranges of this class: inputs i = q * st - pad + ph in [0, in).
        const int64_t qy0 = (s.pad - phy + st - 1) / st, qx0 = (s.pad - phx + st - 1) / st;
        const int64_t qh = s.in_h - 1 + s.pad - phy < 0 ? 0 : (s.in_h - 1 + s.pad - phy) / st + 1 - qy0;
        const int64_t qw = s.in_w - 1 + s.pad - phx < 0 ? 0 : (s.in_w - 1 + s.pad - phx) / st + 1 - qx0;
        if (qh <= 0 || qw <= 0) continue;
        std::vector<int64_t> taps;
        for (int64_t ky = phy; ky < s.k; ky += st) taps.push_back(-((ky - phy) / st) * wp * co);
        run_pass({dp + ((qy0 + lo) * wp + (qx0 + lo - (ax_n - 1))) * co, hp * wp * co, 1, ax_n * co, qh, qw, wp * co,
                  co, dx + first * s.in_c * s.in_h * s.in_w, s.in_c * s.in_h * s.in_w, s.in_h * s.in_w,
                  (qy0 * st - s.pad + phy) * s.in_w + (qx0 * st - s.pad + phx), st * s.in_w, st, s.in_c, taps.data(),
                  int64_t(taps.size()), packed + ph * per_class, b, relu},
                 count);
      }
    });
  }
}

bool conv_backward_weight_supported(const ConvShape& s) {
  return s.out_c % kLanes == 0 && s.stride >= 1 && s.stride <= 2 && s.pad < s.k && s.k == 5;
}

void conv_backward_weight(const float* x, const float* dy, float* dw, const ConvShape& s) {
  const int64_t hp = (s.out_h - 1) * s.stride + s.k, wp = (s.out_w - 1) * s.stride + s.k, wn = s.weight_numel();
  const int64_t plane = plane_stride(hp, wp), taps = s.k * s.k;
  const int threads = omp_get_max_threads();
  // Per-thread partial sums in [ci][ky][kx][out_c], added in thread order (deterministic).
  float* partial = shared_scratch(size_t(threads * wn));
  std::fill_n(partial, threads * wn, 0.f);
  int used = 1;
#pragma omp parallel
  {
#pragma omp single
    used = omp_get_num_threads();
    const int64_t pixels = s.out_h * s.out_w, x_image = s.in_c * plane;
    float* mine = partial + omp_get_thread_num() * wn;
    for_image_chunks(thread_images(s.n), x_image + pixels * s.out_c, [&](int64_t first, int64_t count) {
      float* xp = scratch(0, size_t(count * x_image));
      float* dyt = scratch(1, size_t(count * pixels * s.out_c));
      pad_planes(x + first * s.in_c * s.in_h * s.in_w, count * s.in_c, s.in_h, s.in_w, xp, hp, wp, plane, s.pad, s.pad);
      // dy of the chunk, pixel-major: dyt[image][pixel][out_c]
      to_padded_nhwc(dy + first * s.out_c * pixels, count, s.out_c, 1, pixels, dyt, 1, pixels, 0, 0);
      weight_pass({xp, x_image, plane, wp, dyt, count, s, mine});
    });
  }
  for (int t = 1; t < used; ++t)
    for (int64_t j = 0; j < wn; ++j) partial[j] += partial[t * wn + j];
  for (int64_t ci = 0; ci < s.in_c; ++ci)
    for (int64_t t = 0; t < taps; ++t)
      for (int64_t co = 0; co < s.out_c; ++co) dw[(co * s.in_c + ci) * taps + t] = partial[(ci * taps + t) * s.out_c + co];
}

namespace {

// db[ch] = sum of the planes of channel ch of g, where g = dy, or dy * (y > 0) written to dx when
// y is given. Each plane is summed in 8 float lanes (planes split across threads), then the planes
// of a channel are added in double in image order (as the reference does): the same bits for any
// split, and the same with or without the mask for the same g.
void plane_sums(const float* y, const float* dy, int64_t n, int64_t c, int64_t hw, float* dx, float* db) {
  std::vector<double> sums(db ? size_t(n * c) : 0);
  parallel_range(
      n * c,
      [&](int64_t first, int64_t last) {
        for (int64_t q = first; q < last; ++q) {
          const float* g = dy + q * hw;
          __m256 v = _mm256_setzero_ps();
          int64_t j = 0;
          for (; j + kLanes <= hw; j += kLanes) {
            __m256 gj = _mm256_loadu_ps(g + j);
            if (y) {
              gj = _mm256_and_ps(gj, _mm256_cmp_ps(_mm256_loadu_ps(y + q * hw + j), _mm256_setzero_ps(), _CMP_GT_OQ));
              _mm256_storeu_ps(dx + q * hw + j, gj);
            }
            v = _mm256_add_ps(v, gj);
          }
          alignas(32) float lanes[kLanes];
          _mm256_store_ps(lanes, v);
          double sum = 0;
          for (float l : lanes) sum += double(l);
          for (; j < hw; ++j) {
            const float gj = y ? (y[q * hw + j] > 0.f ? g[j] : 0.f) : g[j];
            if (y) dx[q * hw + j] = gj;
            sum += double(gj);
          }
          if (db) sums[size_t(q)] = sum;
        }
      },
      hw);
  if (!db) return;
  for (int64_t ch = 0; ch < c; ++ch) {
    double acc = 0;
    for (int64_t i = 0; i < n; ++i) acc += sums[size_t(i * c + ch)];
    db[ch] = float(acc);
  }
}

}  // namespace

void channel_sum(const float* dy, int64_t n, int64_t c, int64_t hw, float* db) {
  plane_sums(nullptr, dy, n, c, hw, nullptr, db);
}

void relu_channel_sum(const float* y, const float* dy, int64_t n, int64_t c, int64_t hw, float* dx, float* db) {
  plane_sums(y, dy, n, c, hw, dx, db);
}

}  // namespace equivae::avx2
