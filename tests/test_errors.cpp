// Bad input gives an exception that names the op and the shapes, never a crash or garbage.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "engine/ops.h"

using namespace equivae;
using Catch::Contains;

namespace {
Var zeros(Shape s) { return Var(Tensor::zeros(std::move(s))); }
}  // namespace

TEST_CASE("errors: mismatched shapes name the op and both shapes", "[errors]") {
  CHECK_THROWS_WITH(add(zeros({2, 3}), zeros({3, 2})), Contains("add") && Contains("[2,3]") && Contains("[3,2]"));
  CHECK_THROWS_WITH(linear(zeros({4, 5}), zeros({3, 6}), zeros({3})), Contains("linear") && Contains("[3,6]"));
  CHECK_THROWS_WITH(linear(zeros({4, 5}), zeros({3, 5}), zeros({4})), Contains("bias") && Contains("[4]"));
  CHECK_THROWS_WITH(conv2d(zeros({2, 3, 8, 8}), zeros({4, 2, 5, 5}), Var(), 1, 2),
                    Contains("conv2d") && Contains("[4,2,5,5]") && Contains("[2,3,8,8]"));
  CHECK_THROWS_WITH(conv_transpose2d(zeros({2, 3, 4, 4}), zeros({2, 1, 5, 5}), Var(), 2, 2, 1),
                    Contains("conv_transpose2d") && Contains("[2,1,5,5]"));
  CHECK_THROWS_WITH(concat({zeros({2, 3}), zeros({3, 3})}), Contains("concat") && Contains("[3,3]"));
  CHECK_THROWS_WITH(split(zeros({2, 5}), {2, 2}), Contains("split") && Contains("[2,5]"));
  CHECK_THROWS_WITH(reshape(zeros({2, 5}), {3, 3}), Contains("reshape") && Contains("[3,3]"));
  CHECK_THROWS_WITH(kl_normal(zeros({2, 4}), zeros({2, 3})), Contains("kl_normal"));
  CHECK_THROWS_WITH(bernoulli_loglik(zeros({2, 4}), Tensor::zeros({2, 5})), Contains("bernoulli_loglik"));
  CHECK_THROWS_WITH(gaussian_loglik(zeros({2, 3, 4, 4}), zeros({2}), Tensor::zeros({2, 3, 4, 4})),
                    Contains("gaussian_loglik") && Contains("logvar"));
}

TEST_CASE("errors: wrong ranks and impossible geometry", "[errors]") {
  CHECK_THROWS_WITH(conv2d(zeros({3, 8, 8}), zeros({4, 3, 5, 5}), Var(), 1, 2),
                    Contains("conv2d") && Contains("input") && Contains("[3,8,8]"));
  CHECK_THROWS_WITH(linear(zeros({2, 3, 4}), zeros({5, 12}), Var()), Contains("linear") && Contains("[2,3,4]"));
  CHECK_THROWS_WITH(conv2d(zeros({1, 1, 1, 1}), zeros({1, 1, 5, 5}), Var(), 1, 0), Contains("too small"));
  CHECK_THROWS_WITH(conv_transpose2d(zeros({1, 1, 2, 2}), zeros({1, 1, 5, 5}), Var(), 2, 2, 2),
                    Contains("output_padding"));
  CHECK_THROWS_WITH(log_softmax(zeros({6})), Contains("log_softmax"));
  RandomStream stream;
  CHECK_THROWS_WITH(dropout(zeros({2, 2}), 1.0, stream, true), Contains("dropout"));
  CHECK_THROWS_AS(add(zeros({2}), Var(Tensor::zeros({2}, DType::f64))), ShapeError);  // dtype mismatch
}

TEST_CASE("errors: bad indices for segmented mean and pick", "[errors]") {
  const Var x = zeros({4, 3});
  CHECK_THROWS_WITH(segmented_mean(x, Tensor::from_indices({0, 2}), Tensor::from_indices({0, 4})),
                    Contains("segmented_mean") && Contains("member 4"));
  CHECK_THROWS_WITH(segmented_mean(x, Tensor::from_indices({0, 0, 1}), Tensor::from_indices({1})),
                    Contains("empty"));
  CHECK_THROWS_WITH(segmented_mean(x, Tensor::from_indices({0, 3}), Tensor::from_indices({0, 1})),
                    Contains("offsets"));
  CHECK_THROWS_WITH(pick(zeros({2, 3}), Tensor::from_indices({0, 3})), Contains("pick") && Contains("index 3"));
  CHECK_THROWS_WITH(pick(zeros({2, 3}), Tensor::from_indices({0})), Contains("pick"));
}

TEST_CASE("errors: NaN or Inf in a loss input is refused, naming the op and the input", "[errors]") {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const Var bad(Tensor::from({0.0, nan, 1.0, 2.0}, {2, 2}));
  const Var good(Tensor::zeros({2, 2}));
  CHECK_THROWS_AS(bernoulli_loglik(bad, Tensor::zeros({2, 2})), NumericError);
  CHECK_THROWS_WITH(bernoulli_loglik(bad, Tensor::zeros({2, 2})),
                    Contains("bernoulli_loglik") && Contains("logits") && Contains("NaN"));
  CHECK_THROWS_WITH(bernoulli_loglik(good, Tensor::from({0.0, inf, 1.0, 0.0}, {2, 2})), Contains("target"));
  CHECK_THROWS_WITH(kl_normal(good, bad), Contains("kl_normal") && Contains("logvar"));
  CHECK_THROWS_WITH(gaussian_loglik(bad, good, Tensor::zeros({2, 2})), Contains("gaussian_loglik") && Contains("mean"));
  CHECK_THROWS_WITH(categorical_kl(bad, Tensor::zeros({2})), Contains("categorical_kl"));
  CHECK_THROWS_WITH(entropy(bad), Contains("entropy"));
}

TEST_CASE("errors: the Bernoulli likelihood stays finite and exact for |logit| > 50", "[errors]") {
  // log p(x=1 | l) = -softplus(-l); for l = -80 that is -80 to double precision, not -inf.
  const Var logits(Tensor::from({-80.0, 80.0, 60.0, -60.0}, {1, 4}, DType::f64));
  const Tensor target = Tensor::from({1.0, 0.0, 1.0, 0.0}, {1, 4}, DType::f64);
  const double ll = bernoulli_loglik(logits, target).value().item();
  CHECK(std::isfinite(ll));
  CHECK(ll == Approx(-80.0 - 80.0 - std::log1p(std::exp(-60.0)) * 2).epsilon(1e-14));
  const Var flogits(Tensor::from({-200.0, 200.0}, {1, 2}));
  CHECK(bernoulli_loglik(flogits, Tensor::from({1.0, 0.0}, {1, 2})).value().item() == Approx(-400.0));
}
