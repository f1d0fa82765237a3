// Device-side building blocks shared by the op files (the one .cuh that holds device code rather
// than launcher declarations): launch geometry, an elementwise map, and the deterministic
// reductions every op uses. No float atomics anywhere: a sum is always computed by the same
// threads in the same order, so two runs (and two batches of the same data) give the same bits.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels/check.h"

namespace equivae::gpu {

constexpr int kThreads = 256;  // block size of the simple kernels

// Streaming multiprocessors of the current device (queried once): sizes grids and split-K.
inline int sm_count() {
  static const int count = [] {
    int device = 0, n = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    return std::max(n, 1);
  }();
  return count;
}

// The SM count that plans are made for: split-K (conv2d.cu) and the slices of channel sums. A plan
// decides how a sum is cut into partial sums, hence its rounding, so with plans from the device's
// own count an H100 PCIe (114 SMs) and an H100 SXM (132) give different bits. With reproducible
// plans (EQUIVAE_REPRODUCIBLE=1 at start, or set_reproducible_plans in conv2d.cuh) every GPU plans
// for kNominalSms, the H100 SXM's count: the same bits everywhere, at the price of a plan sized for
// another GPU on the others. Plans never depend on anything else of the device.
constexpr int kNominalSms = 132;
struct PlanSettings {
  bool reproducible = [] {
    const char* v = std::getenv("EQUIVAE_REPRODUCIBLE");
    return v && std::string(v) == "1";
  }();
  int device_sms = 0;  // > 0: taken for the device's count (tests emulating GPUs of other sizes)
};
inline PlanSettings& plan_settings() {
  static PlanSettings settings;
  return settings;
}
inline int plan_sm_count() {
  const PlanSettings& s = plan_settings();
  if (s.reproducible) return kNominalSms;
  return s.device_sms > 0 ? s.device_sms : sm_count();
}

// Kernels index with int where the tensor sizes allow it (faster address math); this guards it.
inline void check_int32(int64_t value, const char* what) {
  if (value < 0 || value > INT32_MAX)
    throw std::length_error(std::string("cuda: ") + what + " exceeds the 32-bit index range of the kernels");
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// A 128-bit load. A GPU faults on an address that is not 16-byte aligned; the emulator stops there
// too, naming it, where x86 would read it without complaint.
__device__ __forceinline__ float4 load4(const float* p) {
#ifdef EQUIVAE_CUDA_EMULATOR
  if (!aligned16(p)) emu::fail("a 128-bit load from an address that is not 16-byte aligned");
#endif
  return *reinterpret_cast<const float4*>(p);
}

// Grid for a grid-stride loop over n elements: one element per thread up to a few waves.
inline unsigned grid_for(int64_t n) {
  return unsigned(std::clamp<int64_t>(ceil_div(n, kThreads), 1, int64_t(sm_count()) * 32));
}

template <class F> __global__ void map_kernel(int64_t n, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) f(i);
}

// f(i) for every i in [0, n); f is a __device__ lambda (nvcc --extended-lambda).
template <class F> void launch_map(int64_t n, cudaStream_t stream, F f) {
  if (n <= 0) return;
  EQUIVAE_LAUNCH(map_kernel, grid_for(n), kThreads, stream, n, f);
}

// ---- reductions --------------------------------------------------------------------------------

// Butterfly sum over a warp. Addition is commutative, so every lane ends with the same bits.
template <class T> __device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class T> __device__ __forceinline__ T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// All threads of the block must call it.
template <class T> __device__ T block_sum(T v) {
  __shared__ T partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // a previous call's readers are done with `partial`
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  return warp_sum(lane < warps ? partial[lane] : T(0));
}

template <class F> __global__ void row_sum_kernel(int64_t cols, F f, double scale, float* out) {
  const int64_t r = blockIdx.x, begin = r * cols;
  double acc = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) acc += f(begin + c);
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[r] = float(acc * scale);
}

// out[r] = scale * sum over c of f(r * cols + c) (f returns double), one block per row.
template <class F> void reduce_rows(int64_t rows, int64_t cols, F f, double scale, float* out, cudaStream_t stream) {
  if (rows <= 0) return;
  check_int32(rows, "row count");
  EQUIVAE_LAUNCH(row_sum_kernel, unsigned(rows), kThreads, stream, cols, f, scale, out);
}

// Per-channel sums over [n, channels, hw] laid out as NCHW (hw = 1 for the columns of a
// matrix). Two passes so that the few channels of a large tensor still fill the GPU: pass 1 sums
// fixed slices of a channel's n * hw elements, pass 2 adds the slices of each channel in order.
// A channel of at most kOneBlockChannel elements is one block's work (a few microseconds),
// less than a second launch costs: then pass 1 writes the sums and there is no pass 2.
constexpr int64_t kOneBlockChannel = int64_t(1) << 16;
struct ChannelSplit {
  int slices, chunk;  // chunk: elements of one channel per slice
};
inline ChannelSplit channel_split(int64_t n, int64_t channels, int64_t hw) {
  const int64_t per_channel = n * hw;
  check_int32(per_channel, "channel size");
  check_int32(channels, "channel count");
  if (per_channel == 0 || channels == 0) return {1, 1};
  if (per_channel <= kOneBlockChannel) return {1, int(per_channel)};
  const int64_t fill = std::max<int64_t>(1, 4 * int64_t(plan_sm_count()) / channels);  // blocks per channel
  const int64_t by_size = ceil_div(per_channel, 4 * kThreads);                      // >= 4 elements a thread
  const int64_t chunk = ceil_div(per_channel, std::min(fill, by_size));
  return {int(ceil_div(per_channel, chunk)), int(chunk)};
}
inline size_t channel_reduce_workspace_bytes(int64_t n, int64_t channels, int64_t hw) {
  const ChannelSplit split = channel_split(n, channels, hw);
  return split.slices == 1 ? 0 : size_t(split.slices) * size_t(std::max<int64_t>(channels, 1)) * sizeof(double);
}

template <class F, class Out>
__global__ void channel_partial_kernel(int per_channel, int channels, int hw, int chunk, F f, Out* partial) {
  const int c = blockIdx.x, slice = blockIdx.y;
  const int begin = slice * chunk, end = min(per_channel, begin + chunk);
  double acc = 0;
  for (int j = begin + int(threadIdx.x); j < end; j += blockDim.x) {
    const int img = j / hw, p = j - img * hw;
    acc += f(img, (int64_t(img) * channels + c) * hw + p);
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partial[int64_t(c) * gridDim.y + slice] = Out(acc);
}

// One warp per channel adds its slices in a fixed order.
template <class Out> __global__ void channel_finish_kernel(const double* partial, int slices, int channels, Out* out) {
  const int c = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (c >= channels) return;  // whole warps leave together
  double acc = 0;
  for (int s = lane; s < slices; s += 32) acc += partial[int64_t(c) * slices + s];
  acc = warp_sum(acc);
  if (lane == 0) out[c] = Out(acc);
}

// out[c] = sum over images i < n and pixels p < hw of f(i, (i * channels + c) * hw + p); f returns
// double. `workspace` holds channel_reduce_workspace_bytes(n, channels, hw).
template <class F>
void reduce_channels(int64_t n, int64_t channels, int64_t hw, F f, void* workspace, float* out, cudaStream_t stream) {
  if (channels <= 0) return;
  if (n * hw == 0) {
    CUDA_CHECK(cudaMemsetAsync(out, 0, size_t(channels) * sizeof(float), stream));
    return;
  }
  const ChannelSplit split = channel_split(n, channels, hw);
  if (split.slices == 1) {
    EQUIVAE_LAUNCH(channel_partial_kernel, unsigned(channels), kThreads, stream, int(n * hw), int(channels), int(hw),
                   split.chunk, f, out);
    return;
  }
  double* partial = static_cast<double*>(workspace);
  EQUIVAE_LAUNCH(channel_partial_kernel, dim3(unsigned(channels), unsigned(split.slices)), kThreads, stream,
                 int(n * hw), int(channels), int(hw), split.chunk, f, partial);
  EQUIVAE_LAUNCH(channel_finish_kernel, unsigned(ceil_div(channels, kThreads / 32)), kThreads, stream, partial,
                 split.slices, int(channels), out);
}

// ---- categorical rows ----------------------------------------------------------------------------

// log(sum_j exp(z_j)) of one row of k logits, computed by one warp; every lane gets it. Like the
// CPU reference: max-shifted, exponentials summed in double.
__device__ inline float warp_row_lse(const float* z, int k, int lane) {
  float mx = -INFINITY;
  for (int j = lane; j < k; j += 32) mx = fmaxf(mx, z[j]);
  mx = warp_max(mx);
  double s = 0;
  for (int j = lane; j < k; j += 32) s += exp(double(z[j] - mx));
  return mx + float(log(warp_sum(s)));
}

template <class F> __global__ void warp_rows_kernel(int64_t rows, F f) {
  const int64_t row = int64_t(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5);
  if (row < rows) f(row, int(threadIdx.x & 31));  // whole warps take part or leave together
}

// f(row, lane) by one warp per row (categorical rows are short: K = 10 classes).
template <class F> void launch_warp_rows(int64_t rows, cudaStream_t stream, F f) {
  if (rows <= 0) return;
  EQUIVAE_LAUNCH(warp_rows_kernel, unsigned(ceil_div(rows, kThreads / 32)), kThreads, stream, rows, f);
}

}  // namespace equivae::gpu
