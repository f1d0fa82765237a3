// The fast float32 CPU path (engine/cpu/conv2d_avx2.cpp and the other float32 kernels) against
// the float64 reference of the same backend, op by op, forward and backward, on the model's
// shapes and on awkward ones (batch 1, odd sizes, one input channel, strides 1 and 2, output
// sizes that leave padding unread). Tolerances: tests/parity.h. float32 outputs start as NaN, so
// an element a kernel forgets to write fails.
#include <catch2/catch.hpp>

#include <limits>
#include <random>
#include <string>
#include <thread>

#include "engine/backend.h"
#include "engine/cpu/conv2d_fast.h"
#include "engine/cpu/denormals.h"
#include "tests/parity.h"

using namespace equivae;
using namespace equivae::testing;

namespace {

struct Pair {
  Tensor f32, f64;
};

Pair uniform(const Shape& shape, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<double> v(size_t(shape_numel(shape)));
  for (double& x : v) x = double(float(u(rng)));  // float32-representable: both sides see the same input
  return {Tensor::from(v, shape, DType::f32), Tensor::from(v, shape, DType::f64)};
}

Pair output(const Shape& shape) {
  return {Tensor::full(shape, std::numeric_limits<double>::quiet_NaN(), DType::f32), Tensor::empty(shape, DType::f64)};
}

ConvShape conv_shape(int64_t n, int64_t c, int64_t h, int64_t w, int64_t oc, int64_t k, int64_t s, int64_t p) {
  return ConvShape{n, c, h, w, oc, conv_out_size(h, k, s, p), conv_out_size(w, k, s, p), k, s, p};
}

std::string name(const char* op, const ConvShape& s) {
  return std::string(op) + " n" + std::to_string(s.n) + " " + std::to_string(s.in_c) + "x" + std::to_string(s.in_h) +
         "x" + std::to_string(s.in_w) + " -> " + std::to_string(s.out_c) + "x" + std::to_string(s.out_h) + "x" +
         std::to_string(s.out_w) + " k" + std::to_string(s.k) + " s" + std::to_string(s.stride);
}

}  // namespace

TEST_CASE("fast CPU path: conv2d forward, backward-data and backward-weight against the float64 reference",
          "[conv][fast]") {
  if (!cpu_has_avx2_fma()) WARN("this CPU has no AVX2 + FMA: float32 runs the im2col + GEMM path, checked here instead");
  Backend& cpu = backend(Device::cpu);
  std::mt19937_64 rng(11);
  const ConvShape shapes[] = {
      // the model's layers at batch 3 (encoder convs; the decoder's transposed convs are their backward-data)
      conv_shape(3, 1, 28, 28, 16, 5, 1, 2), conv_shape(3, 16, 28, 28, 16, 5, 2, 2), conv_shape(3, 16, 14, 14, 32, 5, 2, 2),
      conv_shape(3, 32, 7, 7, 32, 5, 2, 2), conv_shape(3, 32, 4, 4, 64, 5, 2, 2),
      // batch 1, odd sizes, channel counts that are not multiples of the tiles
      conv_shape(1, 1, 9, 11, 8, 5, 2, 2), conv_shape(1, 8, 5, 7, 24, 5, 1, 2), conv_shape(2, 24, 13, 9, 40, 5, 2, 2),
      conv_shape(1, 3, 6, 6, 56, 5, 2, 2), conv_shape(2, 16, 3, 3, 8, 5, 2, 2), conv_shape(1, 5, 8, 8, 16, 3, 1, 1),
      conv_shape(1, 8, 8, 10, 16, 3, 2, 1), conv_shape(2, 16, 7, 7, 8, 5, 1, 0),
      // one input channel, stride 1: backward-data along rows (widths below, at and above a vector tile)
      conv_shape(2, 1, 5, 3, 16, 5, 1, 2), conv_shape(1, 1, 7, 33, 8, 5, 1, 2), conv_shape(1, 1, 4, 9, 24, 3, 1, 1),
      // shapes the fast path hands back to im2col (out_c or in_c not a multiple of 8)
      conv_shape(2, 16, 9, 9, 3, 5, 1, 2), conv_shape(1, 3, 9, 9, 5, 5, 2, 2)};
  for (const ConvShape& s : shapes) {
    const Shape xs{s.n, s.in_c, s.in_h, s.in_w}, ys{s.n, s.out_c, s.out_h, s.out_w}, ws{s.out_c, s.in_c, s.k, s.k};
    const Pair x = uniform(xs, rng), w = uniform(ws, rng), b = uniform({s.out_c}, rng), dy = uniform(ys, rng);
    for (bool relu : {false, true}) {
      Pair y = output(ys);
      cpu.conv2d_forward(x.f32, w.f32, b.f32, relu, y.f32, s);
      cpu.conv2d_forward(x.f64, w.f64, b.f64, relu, y.f64, s);
      compare(name(relu ? "conv2d_forward+bias+relu" : "conv2d_forward+bias", s), y.f32, y.f64);
    }
    Pair y = output(ys), dx = output(xs), dw = output(ws);
    cpu.conv2d_forward(x.f32, w.f32, Tensor(), false, y.f32, s);
    cpu.conv2d_forward(x.f64, w.f64, Tensor(), false, y.f64, s);
    compare(name("conv2d_forward", s), y.f32, y.f64);
    cpu.conv2d_backward_data(dy.f32, w.f32, dx.f32, s);
    cpu.conv2d_backward_data(dy.f64, w.f64, dx.f64, s);
    compare(name("conv2d_backward_data", s), dx.f32, dx.f64);
    cpu.conv2d_backward_weight(x.f32, dy.f32, dw.f32, s);
    cpu.conv2d_backward_weight(x.f64, dy.f64, dw.f64, s);
    compare(name("conv2d_backward_weight", s), dw.f32, dw.f64);
    Pair db = output({s.out_c});
    cpu.channel_sum(dy.f32, db.f32);
    cpu.channel_sum(dy.f64, db.f64);
    compare(name("channel_sum", s), db.f32, db.f64);
    // The transposed conv reversing this one, its bias and ReLU applied by the kernel itself.
    const Pair tb = uniform({s.in_c}, rng);
    for (bool relu : {false, true}) {
      Pair t = output(xs);
      cpu.conv_transpose2d_forward(dy.f32, w.f32, tb.f32, relu, t.f32, s);
      cpu.conv_transpose2d_forward(dy.f64, w.f64, tb.f64, relu, t.f64, s);
      compare(name(relu ? "conv_transpose2d_forward+bias+relu" : "conv_transpose2d_forward+bias", s), t.f32, t.f64);
    }
    // A ReLU layer's backward: the masked gradient and its bias sums in one pass (y about half negative).
    const Pair relu_out = uniform(ys, rng);
    Pair masked = output(ys), mdb = output({s.out_c});
    cpu.relu_bias_backward(relu_out.f32, dy.f32, masked.f32, mdb.f32);
    cpu.relu_bias_backward(relu_out.f64, dy.f64, masked.f64, mdb.f64);
    compare(name("relu_bias_backward: dx", s), masked.f32, masked.f64);
    compare(name("relu_bias_backward: db", s), mdb.f32, mdb.f64);
  }
}

TEST_CASE("fast CPU path: the fused ReLU mask and bias sums of a dense layer, NaN and zeros as in the reference",
          "[fast]") {
  Backend& cpu = backend(Device::cpu);
  std::mt19937_64 rng(13);
  // [n, c] rows of a dense layer (planes of one element), and [n, c, hw] planes with a vector tail.
  for (const Shape& shape : {Shape{5, 3}, Shape{1, 1}, Shape{3, 2, 13}, Shape{2, 3, 16}}) {
    Pair y = uniform(shape, rng), dy = uniform(shape, rng);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (Pair* p : {&y, &dy})  // a NaN where y > 0 keeps it; a NaN in y masks it out; y = 0 masks
      for (Tensor* t : {&p->f32, &p->f64})
        t->dtype() == DType::f32 ? void(t->data<float>()[0] = float(p == &y ? 0.0 : nan))
                                 : void(t->data<double>()[0] = p == &y ? 0.0 : nan);
    if (y.f32.numel() > 9) {
      y.f32.data<float>()[9] = float(nan), y.f64.data<double>()[9] = nan;
      y.f32.data<float>()[3] = 0.5f, y.f64.data<double>()[3] = 0.5;
      dy.f32.data<float>()[3] = float(nan), dy.f64.data<double>()[3] = nan;
    }
    Pair dx = output(shape), db = output({shape[1]});
    cpu.relu_bias_backward(y.f32, dy.f32, dx.f32, db.f32);
    cpu.relu_bias_backward(y.f64, dy.f64, dx.f64, db.f64);
    const std::vector<double> got = dx.f32.to_vector(), want = dx.f64.to_vector();
    for (size_t i = 0; i < got.size(); ++i) {
      INFO("element " << i << " of " << shape_numel(shape) << ": got " << got[i] << ", want " << want[i]);
      if (std::isnan(want[i])) REQUIRE(std::isnan(got[i]));
      else REQUIRE(std::abs(got[i] - want[i]) <= 1e-7 * std::abs(want[i]));
    }
    CHECK(!std::isnan(got[0]));  // y = 0: masked even where dy is NaN
    const std::vector<double> sums = db.f32.to_vector(), want_sums = db.f64.to_vector();
    for (size_t ch = 0; ch < sums.size(); ++ch) {
      INFO("channel " << ch);
      REQUIRE(std::isnan(sums[ch]) == std::isnan(want_sums[ch]));
    }
  }
}

TEST_CASE("fast CPU path: NaN and Inf pass through the fused conv ReLU as in the reference", "[conv][fast]") {
  Backend& cpu = backend(Device::cpu);
  std::mt19937_64 rng(12);
  const ConvShape s = conv_shape(2, 16, 9, 9, 16, 5, 2, 2);
  Pair x = uniform({s.n, s.in_c, s.in_h, s.in_w}, rng);
  const Pair w = uniform({s.out_c, s.in_c, s.k, s.k}, rng);
  for (Tensor* t : {&x.f32, &x.f64}) {
    t->dtype() == DType::f32 ? void(t->data<float>()[5] = std::numeric_limits<float>::quiet_NaN())
                             : void(t->data<double>()[5] = std::numeric_limits<double>::quiet_NaN());
    t->dtype() == DType::f32 ? void(t->data<float>()[500] = std::numeric_limits<float>::infinity())
                             : void(t->data<double>()[500] = std::numeric_limits<double>::infinity());
  }
  Pair y = output({s.n, s.out_c, s.out_h, s.out_w});
  cpu.conv2d_forward(x.f32, w.f32, Tensor(), true, y.f32, s);
  cpu.conv2d_forward(x.f64, w.f64, Tensor(), true, y.f64, s);
  const std::vector<double> got = y.f32.to_vector(), want = y.f64.to_vector();
  int64_t nonfinite = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", want " << want[i]);
    REQUIRE(std::isnan(got[i]) == std::isnan(want[i]));
    REQUIRE(std::isinf(got[i]) == std::isinf(want[i]));
    nonfinite += !std::isfinite(want[i]);
  }
  CHECK(nonfinite > 0);
  CHECK(cpu.has_nonfinite(y.f32));
}

#if defined(__x86_64__) || defined(_M_X64)
TEST_CASE("flush_denormals_to_zero: a subnormal result is 0 on this thread and on threads started after",
          "[denormals]") {
  // volatile: computed at run time under the thread's MXCSR, not folded by the compiler.
  volatile float smallest_normal = std::numeric_limits<float>::min(), half = 0.5f;
  volatile double smallest_normal_d = std::numeric_limits<double>::min();
  REQUIRE(smallest_normal * half != 0.0f);  // subnormal under IEEE arithmetic
  const unsigned saved = _mm_getcsr();
  REQUIRE(flush_denormals_to_zero());
  const float here = smallest_normal * half;
  const double here_d = smallest_normal_d * 0.5;
  float there = 1.0f;  // a new thread, as the OpenMP pool's workers are made
  std::thread([&] { there = smallest_normal * half; }).join();
  _mm_setcsr(saved);  // the other tests run with IEEE arithmetic
  CHECK(here == 0.0f);
  CHECK(here_d == 0.0);
  CHECK(there == 0.0f);
  CHECK(smallest_normal * half != 0.0f);
}
#endif
