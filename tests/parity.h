// Parity of a float32 path against the float64 CPU reference (ggml's test-backend-ops, llm.c's
// check_tensor), shared by the GPU suite (tests/gpu/test_parity.cpp) and the fast CPU kernels'
// suite (tests/test_cpu_fast.cpp). An element passes when
//     |got - want| <= rel * |want| + abs * max |want over the tensor|,  by default rel = 1e-4, abs = 1e-5:
// float32 rounding of a length-K reduction is about K * 6e-8 relative to the sum of magnitudes,
// so these bounds hold for the K (<= ~10^4) of the suites while a wrong index or a missing term
// is off by O(1). The measure and the tolerances are the self-check's (engine/self_check.h).
#pragma once
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

#include "engine/self_check.h"
#include "engine/tensor.h"

namespace equivae::testing {

constexpr double kRel = Tolerance{}.rel, kAbs = Tolerance{}.abs;

// Worst |got - want| as a fraction of its allowed error (engine/self_check.h: agreement); prints it
// and checks it is <= 1.
inline double compare(const std::string& what, const Tensor& got, const Tensor& want, double rel = kRel,
                      double abs = kAbs) {
  const Agreement a = agreement(got, want, {rel, abs});
  std::printf("  %-64s worst %.3g of threshold (element %zu of %zu)\n", what.c_str(), a.worst, a.at, a.size);
  INFO(what << ": element " << a.at << " got " << a.got << " want " << a.want);
  CHECK(a.worst <= 1.0);
  return a.worst;
}
}  // namespace equivae::testing
