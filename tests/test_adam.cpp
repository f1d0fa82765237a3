// Adam against torch.optim.Adam (torch 1.13, float64, lr = 0.1, other settings default) on
// L(w) = sum_i c_i (w_i - t_i)^2, whose values after each of 3 steps are written out below.
#include <catch2/catch.hpp>

#include "engine/ops.h"
#include "engine/params.h"

using namespace equivae;

TEST_CASE("adam: three steps match PyTorch's Adam", "[adam]") {
  ParameterStore params;
  Var w = params.declare("w", {4}, Init::zeros());
  params.allocate(0, DType::f64);
  const std::vector<double> start{1.0, -2.0, 0.5, 3.0};
  for (int i = 0; i < 4; ++i) w.value().data<double>()[i] = start[size_t(i)];
  const Tensor target = Tensor::from({0.25, 0.0, -1.0, 2.0}, {4}, DType::f64);
  const Tensor weight = Tensor::from({1.0, 0.5, 2.0, 0.01}, {4}, DType::f64);

  const std::vector<std::vector<double>> expected{
      {0.90000000066666663, -1.9000000005, 0.4000000001666667, 2.9000000499999752},
      {0.80062558295907305, -1.8001664866210927, 0.30023906195422523, 2.8004123297257206},
      {0.70245665849130734, -1.7006233928121137, 0.20090287000446616, 2.7015864272260299}};
  Adam adam(params, AdamConfig{.lr = 0.1});
  for (size_t k = 0; k < expected.size(); ++k) {
    params.zero_grad();
    const Var e = sub(w, Var(target));
    sum(mul(mul(e, e), Var(weight))).backward();
    adam.step();
    for (int i = 0; i < 4; ++i) {
      INFO("step " << k + 1 << " coordinate " << i);
      CHECK(w.value().data<double>()[i] == Approx(expected[k][size_t(i)]).epsilon(1e-13).margin(1e-15));
    }
  }
  CHECK(adam.steps() == 3);
}

TEST_CASE("adam: the gradient buffer is what parameters' gradients are", "[adam]") {
  ParameterStore params;
  Var a = params.declare("a", {2, 3}, Init::weights(3, 2));
  Var b = params.declare("b", {3}, Init::zeros());
  params.allocate(7, DType::f64);
  CHECK(params.numel() == 9);
  CHECK(params.find("b").offset == 6);
  sum(a).backward();
  sum(scale(b, 3.0)).backward();
  const std::vector<double> g = params.grads().to_vector();
  for (int i = 0; i < 6; ++i) CHECK(g[size_t(i)] == 1.0);
  for (int i = 6; i < 9; ++i) CHECK(g[size_t(i)] == 3.0);
  params.zero_grad();
  for (double x : params.grads().to_vector()) CHECK(x == 0.0);
  // Initial values: uniform in [-1/sqrt(3), 1/sqrt(3)], not all equal; zeros stay zero.
  const std::vector<double> v = params.values().to_vector();
  for (int i = 0; i < 6; ++i) CHECK(std::abs(v[size_t(i)]) <= 1 / std::sqrt(3.0));
  CHECK(v[0] != v[1]);
  for (int i = 6; i < 9; ++i) CHECK(v[size_t(i)] == 0.0);
}
