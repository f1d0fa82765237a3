// Thread splitting for the CPU backend's loops. Header-only and free of intrinsics, so the
// AVX2 kernels (compiled with -mavx2) share it without carrying AVX2 code into other files.
#pragma once

#include <omp.h>

#include <cstdint>

namespace equivae {

// Calls fn(first, last) on pieces of [0, n), one per OpenMP thread when the work (n items of
// `item_size` elements each) is large enough to pay for waking them (about 32k elements), else
// once: for loops whose items are independent, so results do not depend on the split.
template <class Fn> void parallel_range(int64_t n, Fn&& fn, int64_t item_size = 1) {
  constexpr int64_t kMinParallel = int64_t(1) << 15;
  if (n * item_size < kMinParallel || n < 2 || omp_get_max_threads() == 1) return fn(int64_t(0), n);
#pragma omp parallel
  {
    const int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
    fn(n * t / threads, n * (t + 1) / threads);
  }
}

}  // namespace equivae
