// Finite-difference gradient checks in double precision.
//
// The checked scalar is L = sum(W * f(inputs)) with W a fixed random tensor (a plain sum would
// hide transposed or permuted gradients). Each analytic dL/dx_j is compared with the central
// difference (L(x_j + eps) - L(x_j - eps)) / (2 eps), eps = 1e-5, and must satisfy
//     |analytic - numeric| <= kGradAtol + kGradRtol * |numeric|
// with kGradAtol = 1e-7, kGradRtol = 1e-5: the central difference's truncation error is
// O(eps^2) ~ 1e-10 relative and its rounding error ~ 1e-16 |L| / eps, far below these bounds,
// while a wrong backward (a missing factor, a transposed index) is off by O(1).
#pragma once
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/ops.h"

namespace equivae::testing {

constexpr double kGradEps = 1e-5;
constexpr double kGradAtol = 1e-7;
constexpr double kGradRtol = 1e-5;

// A double tensor of normal values (scale `sd`, shifted by `shift`) from a seeded generator.
inline Tensor random_tensor(Shape shape, std::mt19937_64& rng, double sd = 1.0, double shift = 0.0) {
  std::normal_distribution<double> normal(shift, sd);
  std::vector<double> v(size_t(shape_numel(shape)));
  for (double& x : v) x = normal(rng);
  return Tensor::from(v, std::move(shape), DType::f64);
}

inline Tensor random_uniform(Shape shape, std::mt19937_64& rng, double lo, double hi) {
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(size_t(shape_numel(shape)));
  for (double& x : v) x = u(rng);
  return Tensor::from(v, std::move(shape), DType::f64);
}

using GraphFn = std::function<Var(const std::vector<Var>&)>;

// (f with *x + eps - f with *x - eps) / (2 eps); *x is left as it was.
inline double central_difference(double* x, const std::function<double()>& f) {
  const double saved = *x;
  *x = saved + kGradEps;
  const double plus = f();
  *x = saved - kGradEps;
  const double minus = f();
  *x = saved;
  return (plus - minus) / (2 * kGradEps);
}

// Checks d sum(W * f(inputs)) / d inputs[i] for every input; at most `max_coords` sampled
// coordinates per input. Returns the worst error as a fraction of its allowed bound.
inline double check_gradients(const std::string& name, const GraphFn& f, const std::vector<Tensor>& inputs,
                              uint64_t seed = 1, int max_coords = 48) {
  std::mt19937_64 rng(seed);
  std::vector<Var> vars;
  for (const Tensor& t : inputs) vars.emplace_back(t, true);
  const Var out = f(vars);
  const Tensor weights = random_tensor(out.shape(), rng);
  const Var loss = sum(mul(out, Var(weights)));
  loss.backward();

  auto eval = [&] {
    NoGradGuard no_grad;
    std::vector<Var> plain;
    for (const Tensor& t : inputs) plain.emplace_back(t, false);
    return sum(mul(f(plain), Var(weights))).value().item();
  };

  double worst = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    INFO(name << ": input " << i << " " << inputs[i].describe());
    REQUIRE(vars[i].grad().defined());
    const std::vector<double> analytic = vars[i].grad().to_vector();
    double* x = inputs[i].data<double>();
    const int64_t n = inputs[i].numel();
    std::vector<int64_t> coords(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) coords[size_t(j)] = j;
    if (n > max_coords) {
      std::shuffle(coords.begin(), coords.end(), rng);
      coords.resize(size_t(max_coords));
    }
    for (int64_t j : coords) {
      const double numeric = central_difference(x + j, eval);
      const double bound = kGradAtol + kGradRtol * std::abs(numeric);
      const double err = std::abs(analytic[size_t(j)] - numeric);
      worst = std::max(worst, err / bound);
      INFO("coordinate " << j << ": analytic " << analytic[size_t(j)] << ", numeric " << numeric);
      CHECK(err <= bound);
    }
  }
  return worst;
}

// Checks a model's parameter gradients: `grads` (from one backward of the objective) against
// central differences of `objective()` (evaluated without gradients) at `samples` random elements
// of the double parameter buffer `values`. Returns the elements it checked.
inline std::vector<int64_t> check_parameter_gradients(Tensor& values, const Tensor& grads,
                                                      const std::function<double()>& objective, int samples,
                                                      uint64_t seed) {
  const std::vector<double> analytic = grads.to_vector();
  double* w = values.data<double>();
  std::mt19937_64 rng(seed);
  std::vector<int64_t> checked;
  for (int k = 0; k < samples; ++k) {
    const int64_t j = std::uniform_int_distribution<int64_t>(0, values.numel() - 1)(rng);
    const double numeric = central_difference(w + j, objective);
    INFO("parameter element " << j << ": analytic " << analytic[size_t(j)] << " numeric " << numeric);
    CHECK(std::abs(analytic[size_t(j)] - numeric) <= kGradAtol + kGradRtol * std::abs(numeric));
    checked.push_back(j);
  }
  return checked;
}

// Reproducible random sizes: each test draws its shapes from its own seeded generator.
inline int64_t pick_size(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

}  // namespace equivae::testing
