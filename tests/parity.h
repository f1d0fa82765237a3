// Parity of a float32 path against the float64 CPU reference (ggml's test-backend-ops, llm.c's
// check_tensor), shared by the GPU suite (tests/gpu/test_parity.cpp) and the fast CPU kernels'
// suite (tests/test_cpu_fast.cpp). An element passes when
//     |got - want| <= rel * |want| + abs * max |want over the tensor|,  by default rel = 1e-4, abs = 1e-5:
// float32 rounding of a length-K reduction is about K * 6e-8 relative to the sum of magnitudes,
// so these bounds hold for the K (<= ~10^4) of the suites while a wrong index or a missing term
// is off by O(1).
#pragma once
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace equivae::testing {

constexpr double kRel = 1e-4, kAbs = 1e-5;

// Worst |got - want| as a fraction of its allowed error; prints it and checks it is <= 1.
inline double compare(const std::string& what, const Tensor& got_t, const Tensor& want_t, double rel = kRel,
               double abs = kAbs) {
  const std::vector<double> got = got_t.to_vector(), want = want_t.to_vector();
  REQUIRE(got.size() == want.size());
  double max_abs = 0;
  for (double w : want) max_abs = std::max(max_abs, std::abs(w));
  double worst = 0;
  size_t worst_at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(got[i] - want[i]), bound = rel * std::abs(want[i]) + abs * max_abs;
    const double frac = std::isnan(err) ? std::numeric_limits<double>::infinity() : err == 0 ? 0 : err / bound;
    if (frac > worst) worst = frac, worst_at = i;
  }
  std::printf("  %-64s worst %.3g of threshold (element %zu of %zu)\n", what.c_str(), worst, worst_at, got.size());
  INFO(what << ": element " << worst_at << " got " << got[worst_at] << " want " << want[worst_at]);
  CHECK(worst <= 1.0);
  return worst;
}
}  // namespace equivae::testing
