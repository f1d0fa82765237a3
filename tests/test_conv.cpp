// conv2d and conv_transpose2d forward against direct loops written from their definitions, the
// adjoint identity <conv(x), y> = <x, convT(y)>, and the model's size chains.
#include <catch2/catch.hpp>

#include <random>

#include "engine/ops.h"
#include "tests/gradcheck.h"

using namespace equivae;
using namespace equivae::testing;

namespace {

// y[n,o,oy,ox] = b[o] + sum_{c,ky,kx} x[n,c,oy*s-p+ky,ox*s-p+kx] w[o,c,ky,kx]
std::vector<double> naive_conv2d(const Tensor& x, const Tensor& w, const Tensor& b, int64_t s, int64_t p) {
  const auto X = x.to_vector(), W = w.to_vector(), B = b.to_vector();
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), Wd = x.dim(3), O = w.dim(0), K = w.dim(2);
  const int64_t OH = (H + 2 * p - K) / s + 1, OW = (Wd + 2 * p - K) / s + 1;
  std::vector<double> y(static_cast<size_t>(N * O * OH * OW));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oy = 0; oy < OH; ++oy)
        for (int64_t ox = 0; ox < OW; ++ox) {
          double acc = B[size_t(o)];
          for (int64_t c = 0; c < C; ++c)
            for (int64_t ky = 0; ky < K; ++ky)
              for (int64_t kx = 0; kx < K; ++kx) {
                const int64_t iy = oy * s - p + ky, ix = ox * s - p + kx;
                if (iy < 0 || iy >= H || ix < 0 || ix >= Wd) continue;
                acc += X[size_t(((n * C + c) * H + iy) * Wd + ix)] * W[size_t(((o * C + c) * K + ky) * K + kx)];
              }
          y[size_t(((n * O + o) * OH + oy) * OW + ox)] = acc;
        }
  return y;
}

// PyTorch's ConvTranspose2d by scattering: each input pixel adds w[c,o] * x into the output
// window at (iy*s - p, ix*s - p); w [C, O, K, K].
std::vector<double> naive_conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor& b, int64_t s, int64_t p,
                                           int64_t op) {
  const auto X = x.to_vector(), W = w.to_vector(), B = b.to_vector();
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), Wd = x.dim(3), O = w.dim(1), K = w.dim(2);
  const int64_t OH = (H - 1) * s - 2 * p + K + op, OW = (Wd - 1) * s - 2 * p + K + op;
  std::vector<double> y(static_cast<size_t>(N * O * OH * OW));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < OH * OW; ++i) y[size_t((n * O + o) * OH * OW + i)] = B[size_t(o)];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t iy = 0; iy < H; ++iy)
        for (int64_t ix = 0; ix < Wd; ++ix)
          for (int64_t o = 0; o < O; ++o)
            for (int64_t ky = 0; ky < K; ++ky)
              for (int64_t kx = 0; kx < K; ++kx) {
                const int64_t oy = iy * s - p + ky, ox = ix * s - p + kx;
                if (oy < 0 || oy >= OH || ox < 0 || ox >= OW) continue;
                y[size_t(((n * O + o) * OH + oy) * OW + ox)] +=
                    X[size_t(((n * C + c) * H + iy) * Wd + ix)] * W[size_t(((c * O + o) * K + ky) * K + kx)];
              }
  return y;
}

void require_close(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i);
    REQUIRE(got[i] == Approx(want[i]).margin(tol));
  }
}

double dot(const Tensor& a, const Tensor& b) {
  const auto x = a.to_vector(), y = b.to_vector();
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += x[i] * y[i];
  return s;
}

}  // namespace

TEST_CASE("conv: conv2d forward equals direct loops on random shapes", "[conv]") {
  std::mt19937_64 rng(31);
  for (int trial = 0; trial < 6; ++trial)
    for (int64_t stride : {1, 2}) {
      const int64_t n = trial == 0 ? 1 : pick_size(rng, 1, 4), c = pick_size(rng, 1, 4), o = pick_size(rng, 1, 5);
      const int64_t h = pick_size(rng, 1, 13), w = pick_size(rng, 1, 12), k = trial % 2 ? 5 : 3;
      const Tensor x = random_tensor({n, c, h, w}, rng), wt = random_tensor({o, c, k, k}, rng);
      const Tensor b = random_tensor({o}, rng);
      INFO("x " << x.describe() << " w " << wt.describe() << " stride " << stride);
      require_close(conv2d(Var(x), Var(wt), Var(b), stride, k / 2).value().to_vector(),
                    naive_conv2d(x, wt, b, stride, k / 2), 1e-12);
      // float32 path: same result to float precision
      require_close(conv2d(Var(x.to(DType::f32)), Var(wt.to(DType::f32)), Var(b.to(DType::f32)), stride, k / 2)
                        .value().to_vector(),
                    naive_conv2d(x, wt, b, stride, k / 2), 1e-4);
    }
}

TEST_CASE("conv: fused ReLU equals relu(conv2d)", "[conv]") {
  std::mt19937_64 rng(32);
  const Tensor x = random_tensor({3, 2, 9, 7}, rng), w = random_tensor({4, 2, 5, 5}, rng), b = random_tensor({4}, rng);
  const auto fused = conv2d(Var(x), Var(w), Var(b), 2, 2, true).value().to_vector();
  const auto plain = relu(conv2d(Var(x), Var(w), Var(b), 2, 2)).value().to_vector();
  CHECK(fused == plain);
}

TEST_CASE("conv: conv_transpose2d forward equals direct scattering loops", "[conv]") {
  std::mt19937_64 rng(33);
  for (int trial = 0; trial < 6; ++trial)
    for (int64_t stride : {1, 2}) {
      const int64_t n = trial == 0 ? 1 : pick_size(rng, 1, 3), c = pick_size(rng, 1, 4), o = pick_size(rng, 1, 4);
      const int64_t h = pick_size(rng, 1, 8), w = pick_size(rng, 2, 9), op = stride == 2 ? trial % 2 : 0;
      const Tensor x = random_tensor({n, c, h, w}, rng), wt = random_tensor({c, o, 5, 5}, rng);
      const Tensor b = random_tensor({o}, rng);
      INFO("x " << x.describe() << " stride " << stride << " output_padding " << op);
      require_close(conv_transpose2d(Var(x), Var(wt), Var(b), stride, 2, op).value().to_vector(),
                    naive_conv_transpose2d(x, wt, b, stride, 2, op), 1e-12);
    }
}

TEST_CASE("conv: conv_transpose2d is the adjoint of conv2d", "[conv]") {
  std::mt19937_64 rng(34);
  for (int trial = 0; trial < 5; ++trial)
    for (int64_t stride : {1, 2}) {
      const int64_t n = pick_size(rng, 1, 3), c = pick_size(rng, 1, 3), o = pick_size(rng, 1, 4);
      const int64_t h = pick_size(rng, 2, 11), w = h + 2 * pick_size(rng, 0, 1);  // same parity: one output_padding
      const Tensor x = random_tensor({n, c, h, w}, rng), wt = random_tensor({o, c, 5, 5}, rng);
      const Tensor cx = conv2d(Var(x), Var(wt), Var(), stride, 2).value();
      // The output_padding that makes convT's output x's size again.
      const int64_t op_h = h - conv_transpose_out_size(cx.dim(2), 5, stride, 2, 0);
      const int64_t op_w = w - conv_transpose_out_size(cx.dim(3), 5, stride, 2, 0);
      REQUIRE(op_h == op_w);
      const Tensor y = random_tensor(cx.shape(), rng);
      const Tensor cty = conv_transpose2d(Var(y), Var(wt), Var(), stride, 2, op_h).value();
      REQUIRE(cty.shape() == x.shape());
      CHECK(dot(cx, y) == Approx(dot(x, cty)).epsilon(1e-12));
    }
}

TEST_CASE("conv: the encoder and decoder size chains of the model", "[conv]") {
  struct Chain { int64_t image; std::vector<int64_t> encoder; std::vector<int64_t> output_padding; };
  // 28 -> 28 -> 14 -> 7 -> 4 -> 2 and back 2 -> 4 -> 7 -> 14 -> 28; 32 likewise.
  for (const Chain& chain : {Chain{28, {28, 14, 7, 4, 2}, {1, 0, 1, 1}}, Chain{32, {32, 16, 8, 4, 2}, {1, 1, 1, 1}}}) {
    Var x(Tensor::zeros({1, 1, chain.image, chain.image}));
    for (size_t i = 0; i < chain.encoder.size(); ++i) {
      x = conv2d(x, Var(Tensor::zeros({1, 1, 5, 5})), Var(), i == 0 ? 1 : 2, 2);
      CHECK(x.shape()[2] == chain.encoder[i]);
      CHECK(x.shape()[3] == chain.encoder[i]);
    }
    for (size_t i = 0; i < chain.output_padding.size(); ++i) {
      x = conv_transpose2d(x, Var(Tensor::zeros({1, 1, 5, 5})), Var(), 2, 2, chain.output_padding[i]);
      CHECK(x.shape()[2] == chain.encoder[chain.encoder.size() - 2 - i]);
    }
    CHECK(x.shape()[2] == chain.image);
  }
}
