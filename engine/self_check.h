// A backend's self-check (issue 15): before the first training step on a GPU the project has
// never run on, every kernel family of the Backend interface runs once on small random shapes in
// float32 and is compared against the float64 CPU reference, in a second or two, so that the
// first user of new hardware learns in seconds whether the kernels hold there. The agreement
// measure is the GPU parity suite's (tests/parity.h, tests/gpu/test_parity.cpp, which run the
// same ops on many more shapes): an element passes when
//     |got - want| <= rel * |want| + abs * max |want over the tensor|,
// by default rel = 1e-4, abs = 1e-5: float32 rounding of a length-K reduction is about K * 6e-8
// relative to the sum of magnitudes, so these bounds hold for the K (<= ~10^4) used here while a
// wrong index or a missing term is off by O(1).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/backend.h"

namespace equivae {

struct Tolerance {
  double rel = 1e-4, abs = 1e-5;
};
// TF32 tensor cores round both operands of each product to 10 mantissa bits (2^-11 relative
// each) and sum in FP32: |error| <= 2^-10 sum_k |a_k b_k|, which for random inputs in [-1, 1]
// stays under 5e-3 of the output's scale; an indexing error is O(1).
constexpr Tolerance kTf32Tolerance{5e-3, 5e-3};

// The worst element of `got` against `want` (same number of elements; any dtypes and devices).
struct Agreement {
  double worst = 0;  // |got - want| over its allowed error; > 1 disagrees; infinite for a NaN
  size_t at = 0, size = 0;
  double got = 0, want = 0;  // at that element
};
Agreement agreement(const Tensor& got, const Tensor& want, Tolerance tolerance = {});

// One compared output of one kernel.
struct KernelCheck {
  std::string
      kernel;  // the Backend method, its output and shape, e.g. "conv2d_backward_weight n2 16x14x14 -> 1 k5 s1 p2"
  Tolerance tolerance;
  Agreement result;
  std::string error;  // what the kernel threw, if it did
  bool passed() const { return error.empty() && result.worst <= 1; }
  std::string describe() const;  // the kernel, its worst error as a fraction of its tolerance, or its error
};

struct SelfCheckOptions {
  Tolerance tolerance;  // every kernel's
  Tolerance gemm;       // the convolutions' and dense layers' (one set of GEMM kernels): kTf32Tolerance
                        // when they run on TF32 tensor cores
  uint64_t seed = 1;    // of the random inputs
};

// Runs every kernel family of `test` (float32 tensors on `device`) once on small random shapes,
// and the same calls of `reference` (float64 tensors on the CPU); one entry per compared output.
// A kernel of `test` that disagrees or throws is an entry that did not pass, not an exception.
std::vector<KernelCheck> self_check(Backend& test, Device device, Backend& reference,
                                    const SelfCheckOptions& options = {});

// The conv shapes self_check runs every conv product on: among them, a layer for each kernel path of
// the CUDA planner (tests/gpu/test_plans.cpp checks that they reach every one).
std::vector<ConvShape> self_check_conv_shapes();

// self_check, then throws std::runtime_error naming every kernel that did not pass (its worst
// error against its tolerance, or what it threw) with `advice` appended. Returns the checks.
std::vector<KernelCheck> require_self_check(Backend& test, Device device, Backend& reference,
                                            const SelfCheckOptions& options = {}, const std::string& advice = "");

}  // namespace equivae
