// A finite-difference gradient check for every op of engine/ops.h (tolerances: gradcheck.h).
// Shapes are drawn at random per trial, always including batch 1 and odd sizes.
#include <cmath>

#include "tests/gradcheck.h"

using namespace equivae;
using namespace equivae::testing;

namespace {
constexpr int kTrials = 3;
// Batch sizes per trial: batch 1 first, then odd ones.
int64_t batch_for(int trial, std::mt19937_64& rng) { return trial == 0 ? 1 : 2 * pick_size(rng, 1, 3) + 1; }
// Normal values kept at least `gap` away from 0, so ReLU kinks are never crossed by +-eps.
Tensor away_from_zero(Shape shape, std::mt19937_64& rng, double gap = 0.05) {
  Tensor t = random_tensor(std::move(shape), rng);
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i)
    if (std::abs(p[i]) < gap) p[i] = p[i] < 0 ? -gap : gap;
  return t;
}
}  // namespace

TEST_CASE("gradcheck: add, sub, mul, scale", "[gradcheck]") {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < kTrials; ++trial) {
    const Shape s{batch_for(trial, rng), pick_size(rng, 1, 7)};
    check_gradients("add", [](auto& v) { return add(v[0], v[1]); }, {random_tensor(s, rng), random_tensor(s, rng)});
    check_gradients("sub", [](auto& v) { return sub(v[0], v[1]); }, {random_tensor(s, rng), random_tensor(s, rng)});
    check_gradients("mul", [](auto& v) { return mul(v[0], v[1]); }, {random_tensor(s, rng), random_tensor(s, rng)});
    check_gradients("scale", [](auto& v) { return scale(v[0], -2.5); }, {random_tensor(s, rng)});
    // The same value used twice: d(x*x)/dx = 2x only if both uses accumulate.
    check_gradients("mul(x, x)", [](auto& v) { return mul(v[0], v[0]); }, {random_tensor(s, rng)});
  }
}

TEST_CASE("gradcheck: relu", "[gradcheck]") {
  std::mt19937_64 rng(12);
  for (int trial = 0; trial < kTrials; ++trial)
    check_gradients("relu", [](auto& v) { return relu(v[0]); },
                    {away_from_zero({batch_for(trial, rng), pick_size(rng, 1, 9), 3}, rng)});
}

TEST_CASE("gradcheck: reshape, concat, split", "[gradcheck]") {
  std::mt19937_64 rng(13);
  for (int trial = 0; trial < kTrials; ++trial) {
    const int64_t n = batch_for(trial, rng), a = pick_size(rng, 1, 5), b = pick_size(rng, 1, 4);
    check_gradients("reshape", [&](auto& v) { return reshape(v[0], {n, -1}); }, {random_tensor({n, a, b}, rng)});
    check_gradients("concat", [](auto& v) { return concat({v[0], v[1], v[2]}); },
                    {random_tensor({n, a}, rng), random_tensor({n, b, 2}, rng), random_tensor({n, 1}, rng)});
    check_gradients("split", [&](auto& v) {
      auto parts = split(v[0], {a, b});
      return concat({mul(parts[1], parts[1]), parts[0]});  // both parts used, in another order
    }, {random_tensor({n, a + b}, rng)});
  }
}

TEST_CASE("gradcheck: sum, mean, sum_rows", "[gradcheck]") {
  std::mt19937_64 rng(14);
  for (int trial = 0; trial < kTrials; ++trial) {
    const Shape s{batch_for(trial, rng), pick_size(rng, 1, 6), pick_size(rng, 1, 3)};
    check_gradients("sum", [](auto& v) { return sum(v[0]); }, {random_tensor(s, rng)});
    check_gradients("mean", [](auto& v) { return mean(v[0]); }, {random_tensor(s, rng)});
    check_gradients("sum_rows", [](auto& v) { return sum_rows(v[0]); }, {random_tensor(s, rng)});
  }
}

TEST_CASE("gradcheck: linear", "[gradcheck]") {
  std::mt19937_64 rng(15);
  for (int trial = 0; trial < kTrials; ++trial) {
    const int64_t n = batch_for(trial, rng), in = pick_size(rng, 1, 9), out = pick_size(rng, 1, 7);
    check_gradients("linear", [](auto& v) { return linear(v[0], v[1], v[2]); },
                    {random_tensor({n, in}, rng), random_tensor({out, in}, rng), random_tensor({out}, rng)});
    check_gradients("linear without bias", [](auto& v) { return linear(v[0], v[1], Var()); },
                    {random_tensor({n, in}, rng), random_tensor({out, in}, rng)});
  }
}

TEST_CASE("gradcheck: conv2d 5x5, stride 1 and 2, padding 2, bias, fused ReLU", "[gradcheck]") {
  std::mt19937_64 rng(16);
  for (int trial = 0; trial < kTrials; ++trial)
    for (int64_t stride : {1, 2})
      for (bool fused_relu : {false, true}) {
        const int64_t n = batch_for(trial, rng), c = pick_size(rng, 1, 3), o = pick_size(rng, 1, 4);
        const int64_t h = pick_size(rng, 3, 9), w = pick_size(rng, 3, 8);
        INFO("stride " << stride << " relu " << fused_relu);
        check_gradients("conv2d", [&](auto& v) { return conv2d(v[0], v[1], v[2], stride, 2, fused_relu); },
                        {random_tensor({n, c, h, w}, rng), random_tensor({o, c, 5, 5}, rng, 0.3),
                         random_tensor({o}, rng)});
      }
}

TEST_CASE("gradcheck: conv_transpose2d 5x5 with output_padding", "[gradcheck]") {
  std::mt19937_64 rng(17);
  for (int trial = 0; trial < kTrials; ++trial)
    for (int64_t stride : {1, 2})
      for (bool fused_relu : {false, true}) {
        const int64_t n = batch_for(trial, rng), c = pick_size(rng, 1, 3), o = pick_size(rng, 1, 3);
        const int64_t h = pick_size(rng, 1, 5), w = pick_size(rng, 2, 4), op = stride == 2 ? trial % 2 : 0;
        INFO("stride " << stride << " output_padding " << op << " relu " << fused_relu);
        check_gradients("conv_transpose2d",
                        [&](auto& v) { return conv_transpose2d(v[0], v[1], v[2], stride, 2, op, fused_relu); },
                        {random_tensor({n, c, h, w}, rng), random_tensor({c, o, 5, 5}, rng, 0.3),
                         random_tensor({o}, rng)});
      }
}

TEST_CASE("gradcheck: segmented mean over class sets, including m = 1", "[gradcheck]") {
  std::mt19937_64 rng(18);
  for (int trial = 0; trial < kTrials; ++trial) {
    const int64_t rows = pick_size(rng, 1, 9), d = pick_size(rng, 1, 5), sets = trial == 0 ? 1 : pick_size(rng, 2, 6);
    std::vector<int32_t> offsets{0}, members;
    for (int64_t s = 0; s < sets; ++s) {
      const int64_t m = (s == 0) ? 1 : pick_size(rng, 1, rows);  // set 0 has m = 1
      std::vector<int32_t> pool(static_cast<size_t>(rows));
      for (int32_t r = 0; r < int32_t(rows); ++r) pool[size_t(r)] = r;
      std::shuffle(pool.begin(), pool.end(), rng);
      members.insert(members.end(), pool.begin(), pool.begin() + m);  // rows shared across sets
      offsets.push_back(int32_t(members.size()));
    }
    const Tensor off = Tensor::from_indices(offsets), mem = Tensor::from_indices(members);
    check_gradients("segmented_mean", [&](auto& v) { return segmented_mean(v[0], off, mem); },
                    {random_tensor({rows, d}, rng)});
  }
}

TEST_CASE("gradcheck: reparameterised Gaussian sample", "[gradcheck]") {
  std::mt19937_64 rng(19);
  for (int trial = 0; trial < kTrials; ++trial) {
    const Shape s{batch_for(trial, rng), pick_size(rng, 1, 8)};
    check_gradients("reparameterize", [](auto& v) {
      RandomStream stream{1234, 0};  // the same eps in every evaluation
      return reparameterize(v[0], v[1], stream);
    }, {random_tensor(s, rng), random_tensor(s, rng, 0.5)});
  }
}

TEST_CASE("gradcheck: dropout", "[gradcheck]") {
  std::mt19937_64 rng(20);
  for (int trial = 0; trial < kTrials; ++trial) {
    const Shape s{batch_for(trial, rng), pick_size(rng, 4, 16)};
    check_gradients("dropout", [](auto& v) {
      RandomStream stream{99, 8};
      return dropout(v[0], 0.3, stream, true);
    }, {random_tensor(s, rng)});
  }
}

TEST_CASE("gradcheck: Bernoulli log-likelihood from logits", "[gradcheck]") {
  std::mt19937_64 rng(21);
  for (int trial = 0; trial < kTrials; ++trial) {
    const Shape s{batch_for(trial, rng), pick_size(rng, 1, 3), pick_size(rng, 1, 5), pick_size(rng, 1, 5)};
    const Tensor target = random_uniform(s, rng, 0, 1);
    check_gradients("bernoulli_loglik", [&](auto& v) { return bernoulli_loglik(v[0], target); },
                    {random_tensor(s, rng, 3.0)});
  }
}

TEST_CASE("gradcheck: Gaussian log-likelihood, per-element and per-channel log-variance", "[gradcheck]") {
  std::mt19937_64 rng(22);
  for (int trial = 0; trial < kTrials; ++trial) {
    const int64_t n = batch_for(trial, rng), c = pick_size(rng, 1, 3);
    const Shape s{n, c, pick_size(rng, 1, 4), pick_size(rng, 1, 4)};
    const Tensor target = random_tensor(s, rng);
    check_gradients("gaussian_loglik (per element)", [&](auto& v) { return gaussian_loglik(v[0], v[1], target); },
                    {random_tensor(s, rng), random_tensor(s, rng, 0.5)});
    check_gradients("gaussian_loglik (per channel)", [&](auto& v) { return gaussian_loglik(v[0], v[1], target); },
                    {random_tensor(s, rng), random_tensor({c}, rng, 0.5)});
  }
}

TEST_CASE("gradcheck: closed-form KL of a diagonal Gaussian against N(0, I)", "[gradcheck]") {
  std::mt19937_64 rng(23);
  for (int trial = 0; trial < kTrials; ++trial) {
    const Shape s{batch_for(trial, rng), pick_size(rng, 1, 9)};
    check_gradients("kl_normal", [](auto& v) { return kl_normal(v[0], v[1]); },
                    {random_tensor(s, rng), random_tensor(s, rng, 0.7)});
  }
}

TEST_CASE("gradcheck: log_softmax, softmax, pick", "[gradcheck]") {
  std::mt19937_64 rng(24);
  for (int trial = 0; trial < kTrials; ++trial) {
    const int64_t n = batch_for(trial, rng), k = trial == 0 ? 1 : pick_size(rng, 2, 10);
    check_gradients("log_softmax", [](auto& v) { return log_softmax(v[0]); }, {random_tensor({n, k}, rng, 2.0)});
    check_gradients("softmax", [](auto& v) { return softmax(v[0]); }, {random_tensor({n, k}, rng, 2.0)});
    std::vector<int32_t> labels;
    for (int64_t r = 0; r < n; ++r) labels.push_back(int32_t(pick_size(rng, 0, k - 1)));
    const Tensor index = Tensor::from_indices(labels);
    check_gradients("pick(log_softmax)", [&](auto& v) { return pick(log_softmax(v[0]), index); },
                    {random_tensor({n, k}, rng, 2.0)});
  }
}

TEST_CASE("gradcheck: categorical KL against a fixed prior, entropy", "[gradcheck]") {
  std::mt19937_64 rng(25);
  for (int trial = 0; trial < kTrials; ++trial) {
    const int64_t n = batch_for(trial, rng), k = pick_size(rng, 2, 10);
    std::vector<double> prior(static_cast<size_t>(k));
    double total = 0;
    for (double& p : prior) total += (p = std::uniform_real_distribution<double>(0.2, 1.0)(rng));
    for (double& p : prior) p = std::log(p / total);
    const Tensor log_prior = Tensor::from(prior, {k}, DType::f64);
    check_gradients("categorical_kl", [&](auto& v) { return categorical_kl(v[0], log_prior); },
                    {random_tensor({n, k}, rng, 2.0)});
    check_gradients("entropy", [](auto& v) { return entropy(v[0]); }, {random_tensor({n, k}, rng, 2.0)});
  }
}
