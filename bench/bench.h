// What equivae_bench's parts share: the device's peaks, CUDA-event timing and one result row.
// Plain C++17 on the CUDA runtime API, so that .cu and .cpp files of the bench can include it.
#pragma once
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "kernels/check.h"

namespace equivae::bench {

struct DeviceInfo {
  std::string name;
  int sms = 0, cc_major = 0, cc_minor = 0;
  double clock_ghz = 0;          // peak SM clock
  double fp32_peak_gflops = 0;   // SMs x FP32 lanes per SM x 2 (FMA) x clock
  double mem_peak_gbs = 0;       // 2 (DDR) x memory clock x bus width
  size_t l2_bytes = 0;
};

// Everything a benchmark needs: the stream the backend queues on, timing settings.
struct BenchContext {
  DeviceInfo device;
  cudaStream_t stream = nullptr;
  int warmup = 5, repeats = 25;
  void* flush = nullptr;  // when set: written before every repeat to evict the L2 (unless --no-flush-l2)
  size_t flush_bytes = 0;
  std::vector<int> batches;
};

// One measured call. Work is per call: flops for compute-bound ops, bytes (compulsory traffic)
// for memory-bound ones; vendor_ms is the library doing the same thing in the same run.
struct Result {
  std::string group;  // e.g. "mnist b128"
  std::string op;     // e.g. "conv2d_forward L3"
  std::string shape;
  double ms = 0;
  double flops = 0, bytes = 0;
  std::string vendor = {};  // "cudnn", "cublas" or empty
  double vendor_ms = 0;
  double vendor_tf32_ms = 0;  // cuDNN with its default math (TF32 tensor cores allowed); 0: n/a
  double tf32_ms = 0;         // ours on TF32 tensor cores (gpu::set_conv_tf32); 0: n/a
  bool mismatch = false;      // our output differed from the vendor's beyond float rounding
};

// Median time of one call of fn, in ms, on ctx.stream. Each repeat times `inner` calls (enough
// for ~0.2 ms) so that a tiny kernel is not measured as launch latency: back to back, or with
// the L2 flushed before each call (ctx.flush), the flush outside the timed events.
inline double median_ms(const BenchContext& ctx, const std::function<void()>& fn) {
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  auto timed = [&](int calls) {  // ms of `calls` calls between one pair of events
    CUDA_CHECK(cudaEventRecord(start, ctx.stream));
    for (int i = 0; i < calls; ++i) fn();
    CUDA_CHECK(cudaEventRecord(stop, ctx.stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    return double(ms);
  };
  auto time = [&](int calls) {
    if (!ctx.flush) return timed(calls) / calls;
    double total = 0;
    for (int i = 0; i < calls; ++i) {
      CUDA_CHECK(cudaMemsetAsync(ctx.flush, 0, ctx.flush_bytes, ctx.stream));
      total += timed(1);
    }
    return total / calls;
  };
  for (int i = 0; i < ctx.warmup; ++i) fn();
  const double one = time(1);
  const int inner = int(std::clamp(std::ceil(0.2 / std::max(one, 1e-4)), 1.0, 100.0));
  std::vector<double> t;
  for (int r = 0; r < ctx.repeats; ++r) t.push_back(time(inner));
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The hook for a whole training step (forward, backward, Adam of the real model) at each batch
// size: bench/train_step.cpp, which the model's owner fills in. Appends its rows to `out`.
void bench_training_step(const BenchContext& ctx, std::vector<Result>& out);

}  // namespace equivae::bench
