// The autograd machinery itself: accumulation, no-grad, stop_grad, zero_grad, graph release.
#include <catch2/catch.hpp>

#include "engine/ops.h"

using namespace equivae;

namespace {
Tensor vec(std::vector<double> v) {
  const int64_t n = int64_t(v.size());
  return Tensor::from(v, {n}, DType::f64);
}
}  // namespace

TEST_CASE("autograd: a value used twice receives the sum of both gradients", "[autograd]") {
  Var x(vec({1.0, -2.0, 3.0}), true);
  // L = sum(x * x + 3 x) -> dL/dx = 2x + 3
  sum(add(mul(x, x), scale(x, 3.0))).backward();
  CHECK(x.grad().to_vector() == std::vector<double>{5.0, -1.0, 9.0});
  // A second backward on a new graph adds to the leaf's gradient...
  sum(x).backward();
  CHECK(x.grad().to_vector() == std::vector<double>{6.0, 0.0, 10.0});
  // ...until it is zeroed.
  x.zero_grad();
  sum(scale(x, 2.0)).backward();
  CHECK(x.grad().to_vector() == std::vector<double>{2.0, 2.0, 2.0});
}

TEST_CASE("autograd: diamond-shaped graphs", "[autograd]") {
  Var x(vec({0.5, 2.0}), true);
  const Var a = scale(x, 2.0), b = mul(a, x), c = add(a, b);  // c = 2x + 2x^2
  sum(c).backward();
  CHECK(x.grad().to_vector() == std::vector<double>{2.0 + 4 * 0.5, 2.0 + 4 * 2.0});
}

TEST_CASE("autograd: no-grad scope records nothing", "[autograd]") {
  Var x(vec({1.0, 2.0}), true);
  {
    NoGradGuard guard;
    CHECK_FALSE(grad_enabled());
    const Var y = mul(x, x);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.data()->node == nullptr);
  }
  CHECK(grad_enabled());
  CHECK(mul(x, x).requires_grad());
}

TEST_CASE("autograd: stop_grad blocks the gradient of one path only", "[autograd]") {
  Var x(vec({3.0, -1.0}), true);
  // L = sum(x * stop_grad(x)) -> dL/dx = stop_grad(x) = x (not 2x)
  sum(mul(x, stop_grad(x))).backward();
  CHECK(x.grad().to_vector() == std::vector<double>{3.0, -1.0});
}

TEST_CASE("autograd: inputs that need no gradient get none", "[autograd]") {
  Var x(vec({1.0, 2.0}), true), c(vec({5.0, 6.0}), false);
  sum(mul(x, c)).backward();
  CHECK(x.grad().to_vector() == std::vector<double>{5.0, 6.0});
  CHECK_FALSE(c.grad().defined());
}

TEST_CASE("autograd: backward releases the graph and rejects non-scalar losses", "[autograd]") {
  Var x(vec({1.0, 2.0}), true);
  const Var y = mul(x, x);
  CHECK_THROWS_WITH(y.backward(), Catch::Contains("one element"));
  const Var loss = sum(y);
  loss.backward();
  CHECK(y.data()->node == nullptr);  // released
  CHECK_THROWS_AS(Var(vec({1.0})).backward(), ShapeError);  // nothing requires grad
}
