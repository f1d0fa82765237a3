// equivae_cpu_bench: the CPU path's speed against this machine's peak.
//   1. the peak: a loop of independent FMAs on the registers the convolutions use (512-bit with
//      AVX-512, else 256-bit; 12 chains, enough to cover the FMA latency on two pipes), per core
//      and on every thread at once;
//   2. every convolution of the model at its real shapes (forward, backward-data,
//      backward-weight of the five conv frames), on one thread: ms, GFLOP/s, fraction of the peak;
//   3. the whole training step (forward, backward, Adam) of the default model at each batch
//      size on all threads: images/s and the fraction of the peak it reaches.
// The step is bench/synthetic_step.h's, as in equivae_bench; speed against PyTorch comes from
// bench/cpu_vs_torch.sh, which times train_mnist's own epochs. EQUIVAE_CPU_NO_AVX2=1 times the
// portable im2col + GEMM path instead.
#include <immintrin.h>
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <functional>
#include <vector>

#include "bench/synthetic_step.h"
#include "engine/cpu/denormals.h"
#include "engine/backend.h"
#include "engine/cpu/conv2d_fast.h"
#include "engine/ops.h"
#include "engine/params.h"
#include "engine/rng.h"
#include "model/equivae.h"

using namespace equivae;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double thread_cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

struct Timing {
  double median, best;
};

// Seconds of one call over `repeats` timed calls after one untimed call (median and best): wall
// time, or with `cpu_time` this thread's CPU time (single-threaded timings then hold on a busy
// machine). The best is what the code can do; the median what a run on a shared machine sees.
Timing time_calls(int repeats, const std::function<void()>& fn, bool cpu_time = false) {
  fn();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto start = Clock::now();
    const double cpu_start = thread_cpu_seconds();
    fn();
    t.push_back(cpu_time ? thread_cpu_seconds() - cpu_start : seconds_since(start));
  }
  std::sort(t.begin(), t.end());
  return {t[t.size() / 2], t.front()};
}

constexpr int64_t kPeakIters = 20'000'000;

// 12 independent FMA chains of kPeakIters steps on this thread, on 256- or 512-bit registers; the
// result keeps the loop alive.
__attribute__((target("avx2,fma"))) float fma_chains_256() {
  __m256 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(float(i) * 1e-3f);
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < kPeakIters; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], m, c);
  for (int i = 1; i < 12; ++i) a[0] = _mm256_add_ps(a[0], a[i]);
  return _mm256_cvtss_f32(a[0]);
}
__attribute__((target("avx512f"))) float fma_chains_512() {
  __m512 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(float(i) * 1e-3f);
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < kPeakIters; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
  for (int i = 1; i < 12; ++i) a[0] = _mm512_add_ps(a[0], a[i]);
  return _mm512_cvtss_f32(a[0]);
}

// GFLOP/s of the FMA chains of `lanes`-float registers on `threads` threads at once, best of 3:
// the peak of the widest vectors the convolutions use (512-bit where cpu_has_avx512()).
double fma_peak_gflops(int threads, int lanes) {
  double best = 0;
  for (int trial = 0; trial < 3; ++trial) {
    const auto start = Clock::now();
    float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    sink += lanes == 16 ? fma_chains_512() : fma_chains_256();
    const double t = seconds_since(start);
    if (sink == 12345.f) std::printf(" ");  // keeps the loop
    best = std::max(best, double(threads) * kPeakIters * 12 * lanes * 2 / t / 1e9);
  }
  return best;
}

struct Frame {
  const char* name;
  ConvShape s;
};

// The five conv frames of the default model (the transposed convs are their backward-data).
std::vector<Frame> frames(int64_t n) {
  auto f = [&](int64_t c, int64_t hw, int64_t oc, int64_t stride) {
    const int64_t o = conv_out_size(hw, 5, stride, 2);
    return ConvShape{n, c, hw, hw, oc, o, o, 5, stride, 2};
  };
  return {{"L0 1x28x28->16x28x28 s1", f(1, 28, 16, 1)},
          {"L1 16x28x28->16x14x14 s2", f(16, 28, 16, 2)},
          {"L2 16x14x14->32x7x7 s2", f(16, 14, 32, 2)},
          {"L3 32x7x7->32x4x4 s2", f(32, 7, 32, 2)},
          {"L4 32x4x4->64x2x2 s2", f(32, 4, 64, 2)}};
}

double conv_flops(const ConvShape& s) { return 2.0 * double(s.out_numel()) * double(s.patch()); }

Tensor filled(const Shape& shape, uint64_t seed) {
  std::vector<double> v(size_t(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = double(philox_uniform(seed, i)) - 0.5;
  return Tensor::from(v, shape, DType::f32);
}

void bench_convs(int64_t batch, double core_peak) {
  Backend& cpu = backend(Device::cpu);
  omp_set_num_threads(1);
  std::printf("\nconvolutions at batch %lld, one thread, its CPU time, best of 9 (%s path)\n", (long long)batch, cpu_conv_path());
  std::printf("  %-28s %-16s %9s %9s %7s\n", "frame", "op", "ms", "GFLOP/s", "peak");
  for (const Frame& f : frames(batch)) {
    const ConvShape& s = f.s;
    const Tensor x = filled({s.n, s.in_c, s.in_h, s.in_w}, 1), w = filled({s.out_c, s.in_c, s.k, s.k}, 2),
                 b = filled({s.out_c}, 3), dy = filled({s.n, s.out_c, s.out_h, s.out_w}, 4);
    Tensor y = Tensor::empty(dy.shape(), DType::f32), dx = Tensor::empty(x.shape(), DType::f32),
           dw = Tensor::empty(w.shape(), DType::f32);
    const std::pair<const char*, std::function<void()>> ops[] = {
        {"forward+relu", [&] { cpu.conv2d_forward(x, w, b, true, y, s); }},
        {"backward-data", [&] { cpu.conv2d_backward_data(dy, w, dx, s); }},
        {"backward-weight", [&] { cpu.conv2d_backward_weight(x, dy, dw, s); }}};
    for (const auto& [op, fn] : ops) {
      const double t = time_calls(9, fn, true).best, gflops = conv_flops(s) / t / 1e9;
      std::printf("  %-28s %-16s %9.3f %9.1f %6.0f%%\n", f.name, op, t * 1e3, gflops, 100 * gflops / core_peak);
    }
  }
}

// FLOPs of one training step of the default model per image, with h encoding each image once:
// the convs (3 products each, but no backward-data into the images) and the dense layers (3 each).
double step_flops_per_image(const ParameterStore& params) {
  double flops = 0;
  for (const Frame& f : frames(1)) {
    const double c = conv_flops(f.s);
    const bool first = f.s.in_c == 1;
    flops += 2 * (first ? 2 : 3) * c;  // h and e_x
    flops += 3 * c;                     // the decoder's transposed conv
  }
  for (const ParameterStore::Entry& e : params.entries())
    if (e.shape.size() == 2) flops += 3 * 2 * double(shape_numel(e.shape));  // dense weights
  return flops;
}

void bench_step(int64_t batch, int threads, int steps, double machine_peak) {
  omp_set_num_threads(threads);
  bench::SyntheticStep train_step(batch, Device::cpu);
  const Timing t = time_calls(steps, [&] { train_step(); });
  const double best = double(batch) / t.best, median = double(batch) / t.median;
  const double gflops = best * step_flops_per_image(train_step.params()) / 1e9;
  std::printf("  batch %4lld  %8.2f ms/step  %7.0f images/s (median %5.0f)  %6.1f GFLOP/s  %4.0f%% of the %d-thread peak\n",
              (long long)batch, t.best * 1e3, best, median, gflops, 100 * gflops / machine_peak, threads);
}

}  // namespace

int main(int argc, char** argv) {
  equivae::flush_denormals_to_zero();  // first: the OpenMP threads inherit it
  CLI::App app{"equivae_cpu_bench: the CPU path against this machine's FMA peak"};
  std::vector<int64_t> batches{32, 128, 512};
  int threads = omp_get_max_threads(), steps = 15;
  int64_t conv_batch = 64;
  bool no_convs = false;
  app.add_option("--batch", batches, "training-step batch sizes")->capture_default_str();
  app.add_option("--threads", threads, "threads of the training step")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--steps", steps, "timed steps per batch size (the median is reported)")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--conv-batch", conv_batch, "batch of the per-convolution timings")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_flag("--no-convs", no_convs, "skip the per-convolution timings");
  CLI11_PARSE(app, argc, argv);

  const int lanes = cpu_has_avx512() ? 16 : 8;
  const double core_peak = fma_peak_gflops(1, lanes), machine_peak = fma_peak_gflops(threads, lanes);
  std::printf("FMA peak (12 chains of %d-bit FMAs): %.1f GFLOP/s on one thread, %.1f on %d threads\n", 32 * lanes,
              core_peak, machine_peak, threads);
  if (!no_convs) bench_convs(conv_batch, core_peak);
  {
    ParameterStore params;
    const EquiVAE model(ModelConfig{}, params);
    std::printf("\nFLOP per trained image (default model, each image encoded once by h): %.1f M\n",
                step_flops_per_image(params) / 1e6);
  }
  std::printf("\ntraining step of the default model, %d threads, best and median of --steps (%s convolutions)\n", threads, cpu_conv_path());
  for (int64_t b : batches) bench_step(b, threads, steps, machine_peak);
}
