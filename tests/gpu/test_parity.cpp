// GPU parity (ggml's test-backend-ops, llm.c's check_tensor): every Backend method on the CUDA
// backend in float32 against the CPU backend in float64, on awkward shapes (odd sizes, batch 1,
// m = 1, C = 1). Both backends see the same float32-representable inputs. An element passes when
//     |gpu - cpu| <= kRel * |cpu| + kAbs * max |cpu over the tensor|,  kRel = 1e-4, kAbs = 1e-5:
// float32 rounding of a length-K reduction is about K * 6e-8 relative to the sum of magnitudes,
// so these bounds hold for the K (<= ~10^4) here while a wrong index or a missing term is off by
// O(1). Outputs are pre-filled with NaN on the GPU, so an element a kernel forgets to write fails.
// Each check prints its worst error as a fraction of its threshold.
//
// Then an EquiVAE-shaped step through engine/ops.h on both devices (loss and every gradient),
// its determinism (two identical GPU steps give identical bits) and the caching allocator's
// promise (a step after warm-up makes no cudaMalloc).
//
// Own main: exits 77 (ctest: skipped) when no GPU is present.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "engine/backend.h"
#include "engine/ops.h"
#include "engine/params.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/self_check.h"
#include "tests/forwarding_backend.h"
#include "tests/parity.h"

using namespace equivae;
using equivae::testing::compare;
using equivae::testing::kAbs;
using equivae::testing::kRel;

namespace {

// The whole-model step chains ~20 ops between the loss and the first layer's weights; each
// adds its float32 rounding, so its bounds are 10x the per-op ones.
constexpr double kModelRel = 1e-3, kModelAbs = 1e-4;

Backend& gpu_backend() { return backend(Device::cuda); }
Backend& cpu_backend() { return backend(Device::cpu); }

// The same values on both devices: float64 on the CPU, float32 on the GPU.
struct Pair {
  Tensor cpu, gpu;
};

Pair from_values(std::vector<double> v, const Shape& shape) {
  for (double& x : v) x = double(float(x));  // representable in float32: both sides see the same input
  return {Tensor::from(v, shape, DType::f64, Device::cpu), Tensor::from(v, shape, DType::f32, Device::cuda)};
}

Pair uniform(const Shape& shape, std::mt19937_64& rng, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(size_t(shape_numel(shape)));
  for (double& x : v) x = u(rng);
  return from_values(std::move(v), shape);
}

// An output: NaN on the GPU until a kernel writes it.
Pair output(const Shape& shape) {
  return {Tensor::empty(shape, DType::f64, Device::cpu),
          Tensor::full(shape, std::numeric_limits<double>::quiet_NaN(), DType::f32, Device::cuda)};
}

Pair indices(const std::vector<int32_t>& v) { return {Tensor::from_indices(v), Tensor::from_indices(v, Device::cuda)}; }

double compare(const std::string& what, const Pair& p, double rel = kRel, double abs = kAbs) {
  return equivae::testing::compare(what, p.gpu, p.cpu, rel, abs);
}

// A class prior with p_j proportional to j + 1, as logs.
std::vector<double> log_prior_values(int64_t k) {
  std::vector<double> v(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) v[size_t(j)] = std::log(double(j + 1) / double(k * (k + 1) / 2));
  return v;
}

std::string conv_name(const char* op, const ConvShape& s) {
  return std::string(op) + " n" + std::to_string(s.n) + " " + std::to_string(s.in_c) + "x" + std::to_string(s.in_h) +
         "x" + std::to_string(s.in_w) + " -> " + std::to_string(s.out_c) + " k" + std::to_string(s.k) + " s" +
         std::to_string(s.stride) + " p" + std::to_string(s.pad);
}

}  // namespace

TEST_CASE("parity: elementwise ops, row sums, column copies, the NaN scan", "[gpu]") {
  std::mt19937_64 rng(1);
  for (int64_t n : {1, 7, 1000, 65537}) {
    const std::string tag = " n" + std::to_string(n);
    const Pair a = uniform({n}, rng), b = uniform({n}, rng);
    Pair y = output({n});
    cpu_backend().fill(y.cpu, 0.375);
    gpu_backend().fill(y.gpu, 0.375);
    compare("fill" + tag, y);
    Pair acc = uniform({n}, rng);
    cpu_backend().axpy(-1.7, a.cpu, acc.cpu);
    gpu_backend().axpy(-1.7, a.gpu, acc.gpu);
    compare("axpy" + tag, acc);
    cpu_backend().scale(a.cpu, 2.5, y.cpu);
    gpu_backend().scale(a.gpu, 2.5, y.gpu);
    compare("scale" + tag, y);
    for (BinaryOp op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul}) {
      Pair r = output({n});
      cpu_backend().binary(op, a.cpu, b.cpu, r.cpu);
      gpu_backend().binary(op, a.gpu, b.gpu, r.gpu);
      compare("binary " + std::to_string(int(op)) + tag, r);
    }
    Pair yr = output({n}), dr = output({n});
    cpu_backend().relu_forward(a.cpu, yr.cpu);
    gpu_backend().relu_forward(a.gpu, yr.gpu);
    compare("relu_forward" + tag, yr);
    cpu_backend().relu_backward(yr.cpu, b.cpu, dr.cpu);
    gpu_backend().relu_backward(yr.gpu, b.gpu, dr.gpu);
    compare("relu_backward" + tag, dr);
    gpu_backend().relu_forward(acc.gpu, acc.gpu);  // in place, as conv_transpose2d uses it
    cpu_backend().relu_forward(acc.cpu, acc.cpu);
    compare("relu_forward in place" + tag, acc);
  }
  {
    Pair i = indices({3, -2, 7});
    gpu_backend().fill(i.gpu, 5);
    CHECK(i.gpu.to_vector() == std::vector<double>{5, 5, 5});
  }
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {5, 1}, {1, 513}, {33, 784}, {300, 3}}) {
    const std::string tag = " " + std::to_string(rows) + "x" + std::to_string(cols);
    const Pair x = uniform({rows, cols}, rng);
    Pair s = output({rows}), d = output({rows, cols});
    cpu_backend().sum_rows(x.cpu, rows, s.cpu);
    gpu_backend().sum_rows(x.gpu, rows, s.gpu);
    compare("sum_rows" + tag, s);
    cpu_backend().broadcast_rows(s.cpu, rows, d.cpu);
    gpu_backend().broadcast_rows(s.gpu, rows, d.gpu);
    compare("broadcast_rows" + tag, d);
  }
  {  // concat-like and split-like column copies, float and int
    const int64_t rows = 9;
    const Pair src = uniform({rows, 7}, rng);
    Pair dst = output({rows, 12});
    cpu_backend().fill(dst.cpu, 0);
    gpu_backend().fill(dst.gpu, 0);
    cpu_backend().copy_columns(src.cpu, 2, dst.cpu, 5, rows, 4);
    gpu_backend().copy_columns(src.gpu, 2, dst.gpu, 5, rows, 4);
    compare("copy_columns f32", dst);
    const Pair other = uniform({rows, 1}, rng), third = uniform({rows, 4}, rng);
    Pair joined = output({rows, 12});  // concat and split in one pass
    cpu_backend().concat_columns({src.cpu, other.cpu, third.cpu}, rows, joined.cpu);
    gpu_backend().concat_columns({src.gpu, other.gpu, third.gpu}, rows, joined.gpu);
    compare("concat_columns f32, 3 parts", joined);
    Pair parts[3] = {output({rows, 7}), output({rows, 1}), output({rows, 4})};
    std::vector<Tensor> on_cpu{parts[0].cpu, parts[1].cpu, parts[2].cpu}, on_gpu{parts[0].gpu, parts[1].gpu, parts[2].gpu};
    cpu_backend().split_columns(joined.cpu, rows, on_cpu);
    gpu_backend().split_columns(joined.gpu, rows, on_gpu);
    for (const Pair& p : parts) compare("split_columns f32, a part of 3", p);
    std::vector<Tensor> many_cpu, many_gpu;  // more parts than one kernel takes: copied part by part
    for (int p = 0; p < 12; ++p) {
      const Pair column = uniform({rows, 1}, rng);
      many_cpu.push_back(column.cpu), many_gpu.push_back(column.gpu);
    }
    cpu_backend().concat_columns(many_cpu, rows, joined.cpu);
    gpu_backend().concat_columns(many_gpu, rows, joined.gpu);
    compare("concat_columns f32, 12 parts", joined);
    Pair placed = output({rows, 12});  // a split's backward: zeros but for the part's columns
    cpu_backend().place_columns(src.cpu, placed.cpu, 5, rows);
    gpu_backend().place_columns(src.gpu, placed.gpu, 5, rows);
    compare("place_columns f32", placed);
    std::vector<int32_t> iv(27);
    for (size_t k = 0; k < iv.size(); ++k) iv[k] = int32_t(k * 7 - 50);
    const Pair isrc = indices(iv);
    Pair idst = indices(std::vector<int32_t>(18, 0));
    cpu_backend().copy_columns(isrc.cpu, 1, idst.cpu, 0, 9, 2);
    gpu_backend().copy_columns(isrc.gpu, 1, idst.gpu, 0, 9, 2);
    CHECK(idst.gpu.to_vector() == idst.cpu.to_vector());
  }
  for (int64_t n : {1, 4097}) {
    std::vector<double> v(size_t(n), 0.5);
    CHECK_FALSE(gpu_backend().has_nonfinite(from_values(v, {n}).gpu));
    v.back() = std::numeric_limits<double>::infinity();
    CHECK(gpu_backend().has_nonfinite(from_values(v, {n}).gpu));
    v.back() = std::numeric_limits<double>::quiet_NaN();
    CHECK(gpu_backend().has_nonfinite(from_values(v, {n}).gpu));
  }
}

TEST_CASE("parity: the CUDA backend is float32 only", "[gpu]") {
  const Tensor x = Tensor::empty({4}, DType::f64, Device::cuda);
  Tensor y = Tensor::empty({4}, DType::f64, Device::cuda);
  CHECK_THROWS_AS(gpu_backend().relu_forward(x, y), ShapeError);
  CHECK_THROWS_AS(gpu_backend().fill(y, 1.0), ShapeError);
  CHECK_THROWS_AS(gpu_backend().sum_rows(x, 1, y), ShapeError);
}

// A NaN must reach the loss on both devices, or the GPU would train on where the CPU stops.
TEST_CASE("parity: NaN and Inf pass through ReLU and the fused conv ReLU as on the CPU", "[gpu]") {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const Pair x = from_values({nan, inf, -inf, -0.0, 2.0, -3.0, nan}, {7});
  Pair y = output({7});
  cpu_backend().relu_forward(x.cpu, y.cpu);
  gpu_backend().relu_forward(x.gpu, y.gpu);
  const std::vector<double> want = y.cpu.to_vector(), got = y.gpu.to_vector();
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("element " << i << ": cpu " << want[i] << " gpu " << got[i]);
    CHECK(std::isnan(got[i]) == std::isnan(want[i]));
    if (!std::isnan(want[i])) CHECK(got[i] == want[i]);
  }
  CHECK(std::isnan(want[0]));  // (the CPU reference propagates it)

  // One NaN weight: every output pixel that uses it is NaN, with and without the fused ReLU.
  std::mt19937_64 rng(11);
  const ConvShape s{2, 3, 9, 9, 6, 9, 9, 5, 1, 2};
  const Pair in = uniform({2, 3, 9, 9}, rng);
  std::vector<double> wv(6 * 3 * 25, 0.1);
  wv[40] = nan;
  const Pair w = from_values(wv, {6, 3, 5, 5});
  for (bool relu : {false, true}) {
    Pair out = output({2, 6, 9, 9});
    cpu_backend().conv2d_forward(in.cpu, w.cpu, Tensor(), relu, out.cpu, s);
    gpu_backend().conv2d_forward(in.gpu, w.gpu, Tensor(), relu, out.gpu, s);
    const std::vector<double> a = out.cpu.to_vector(), b = out.gpu.to_vector();
    size_t nans = 0, mismatched = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      nans += std::isnan(a[i]);
      mismatched += std::isnan(a[i]) != std::isnan(b[i]);
    }
    CHECK(nans > 0);
    CHECK(mismatched == 0);
  }
}

TEST_CASE("parity: linear forward and backward (as 1x1 convolutions)", "[gpu]") {
  std::mt19937_64 rng(2);
  struct Case {
    int64_t n, in, out;
  };
  for (const Case c : {Case{1, 1, 1}, Case{1, 17, 5}, Case{7, 33, 129}, Case{64, 256, 128}, Case{130, 200, 3}}) {
    const std::string tag = " " + std::to_string(c.n) + "x" + std::to_string(c.in) + " -> " + std::to_string(c.out);
    const Pair x = uniform({c.n, c.in}, rng), w = uniform({c.out, c.in}, rng), b = uniform({c.out}, rng);
    const Pair dy = uniform({c.n, c.out}, rng);
    for (bool bias : {true, false}) {
      Pair y = output({c.n, c.out});
      cpu_backend().linear_forward(x.cpu, w.cpu, bias ? b.cpu : Tensor(), y.cpu);
      gpu_backend().linear_forward(x.gpu, w.gpu, bias ? b.gpu : Tensor(), y.gpu);
      compare(std::string("linear_forward") + (bias ? " +b" : "") + tag, y);
      Pair yr = output({c.n, c.out});  // ReLU in the epilogue
      cpu_backend().linear_relu_forward(x.cpu, w.cpu, bias ? b.cpu : Tensor(), true, yr.cpu);
      gpu_backend().linear_relu_forward(x.gpu, w.gpu, bias ? b.gpu : Tensor(), true, yr.gpu);
      compare(std::string("linear_relu_forward") + (bias ? " +b" : "") + tag, yr);
    }
    Pair dx = output({c.n, c.in}), dw = output({c.out, c.in}), db = output({c.out});
    cpu_backend().linear_backward(x.cpu, w.cpu, dy.cpu, dx.cpu, dw.cpu, db.cpu);
    gpu_backend().linear_backward(x.gpu, w.gpu, dy.gpu, dx.gpu, dw.gpu, db.gpu);
    compare("linear_backward dx" + tag, dx);
    compare("linear_backward dw" + tag, dw);
    compare("linear_backward db" + tag, db);
    Tensor none;
    Pair dw2 = output({c.out, c.in});  // only dw wanted
    cpu_backend().linear_backward(x.cpu, w.cpu, dy.cpu, none, dw2.cpu, none);
    gpu_backend().linear_backward(x.gpu, w.gpu, dy.gpu, none, dw2.gpu, none);
    compare("linear_backward dw alone" + tag, dw2);
    const Pair out = uniform({c.n, c.out}, rng);  // the forward's output: its sign masks dy
    Pair rdx = output({c.n, c.in}), rdw = output({c.out, c.in}), rdb = output({c.out});
    cpu_backend().linear_relu_backward(x.cpu, w.cpu, out.cpu, dy.cpu, rdx.cpu, rdw.cpu, rdb.cpu);
    gpu_backend().linear_relu_backward(x.gpu, w.gpu, out.gpu, dy.gpu, rdx.gpu, rdw.gpu, rdb.gpu);
    compare("linear_relu_backward dx" + tag, rdx);
    compare("linear_relu_backward dw" + tag, rdw);
    compare("linear_relu_backward db" + tag, rdb);
  }
}

// TF32 tensor cores: engine/self_check.h (kTf32Tolerance) says why 5e-3.
constexpr double kTf32Rel = kTf32Tolerance.rel, kTf32Abs = kTf32Tolerance.abs;

TEST_CASE("parity: conv2d forward, backward-data, backward-weight, bias pieces", "[gpu]") {
  const bool tf32 = GENERATE(false, true);
  set_cuda_tf32(tf32);
  struct BackToFp32 {
    ~BackToFp32() { set_cuda_tf32(false); }  // also when a REQUIRE leaves early
  } back_to_fp32;
  const double rel = tf32 ? kTf32Rel : kRel, abs = tf32 ? kTf32Abs : kAbs;
  const std::string math = tf32 ? " tf32" : "";
  std::mt19937_64 rng(3);
  auto shape = [](int64_t n, int64_t c, int64_t h, int64_t w, int64_t oc, int64_t k, int64_t s, int64_t p) {
    return ConvShape{n, c, h, w, oc, conv_out_size(h, k, s, p), conv_out_size(w, k, s, p), k, s, p};
  };
  const std::vector<ConvShape> cases{
      shape(2, 1, 28, 28, 16, 5, 1, 2),  // the encoders' layers (MNIST), batch 2 or 1
      shape(1, 16, 28, 28, 16, 5, 2, 2),
      shape(3, 16, 14, 14, 32, 5, 2, 2),
      shape(2, 32, 7, 7, 32, 5, 2, 2),
      shape(1, 32, 4, 4, 64, 5, 2, 2),
      shape(2, 3, 32, 32, 16, 5, 1, 2),   // SVHN's first layer
      shape(1, 16, 28, 28, 1, 5, 1, 2),   // the decoder's last layer as a conv (N = 1)
      shape(3, 2, 9, 11, 5, 3, 2, 1),     // odd sizes, non-square
      shape(1, 1, 5, 5, 1, 5, 1, 2),      // C = 1, out_c = 1
      shape(2, 5, 13, 12, 3, 3, 3, 0),    // stride 3: nine backward-data phases
      shape(2, 4, 7, 8, 6, 1, 2, 0),      // 1x1 stride 2: phases with no taps at all
      shape(1, 70, 6, 5, 70, 2, 1, 1),    // N > 64: several column tiles
      shape(6, 1, 28, 28, 16, 5, 1, 2),   // backward-weight split 37 ways: a 7 x 6 finish tree
      // The direct kernel for <= 4 output channels (forward: out_c, backward-data: in_c):
      shape(1, 1, 28, 28, 16, 5, 2, 2),   // the decoder's last transposed conv (16 -> 1), batch 1
      shape(3, 3, 11, 9, 4, 4, 3, 1),     // 4 and 3 channels, even kernel, stride 3, odd sizes
      shape(1, 2, 7, 5, 2, 3, 2, 0),      // batch 1, odd, no padding
      // The direct weight gradient (<= 4 channels on either side; the rest above are direct too
      // where C or out_c <= 4):
      shape(1, 1, 28, 28, 16, 5, 1, 2),   // the decoder's last transposed conv as its conv2d, batch 1: split
      shape(3, 4, 10, 7, 2, 3, 1, 1),     // 4 -> 2: the narrow side is the output, odd sizes
      shape(2, 3, 2, 1, 5, 3, 1, 1),      // taps that miss every column of a 2x1 image
      shape(1, 6, 9, 9, 3, 2, 4, 3),      // stride above the kernel, padding above half of it
  };
  for (const ConvShape& s : cases) {
    const Shape xs{s.n, s.in_c, s.in_h, s.in_w}, ys{s.n, s.out_c, s.out_h, s.out_w};
    const Pair x = uniform(xs, rng), w = uniform({s.out_c, s.in_c, s.k, s.k}, rng), b = uniform({s.out_c}, rng);
    const Pair dy = uniform(ys, rng);
    for (bool relu : {false, true}) {
      Pair y = output(ys);
      cpu_backend().conv2d_forward(x.cpu, w.cpu, b.cpu, relu, y.cpu, s);
      gpu_backend().conv2d_forward(x.gpu, w.gpu, b.gpu, relu, y.gpu, s);
      compare(conv_name(relu ? "conv2d_forward+b+relu" : "conv2d_forward+b", s) + math, y, rel, abs);
    }
    Pair y = output(ys);
    cpu_backend().conv2d_forward(x.cpu, w.cpu, Tensor(), false, y.cpu, s);
    gpu_backend().conv2d_forward(x.gpu, w.gpu, Tensor(), false, y.gpu, s);
    compare(conv_name("conv2d_forward", s) + math, y, rel, abs);
    Pair dx = output(xs), dw = output({s.out_c, s.in_c, s.k, s.k}), db = output({s.out_c});
    cpu_backend().conv2d_backward_data(dy.cpu, w.cpu, dx.cpu, s);
    gpu_backend().conv2d_backward_data(dy.gpu, w.gpu, dx.gpu, s);
    compare(conv_name("conv2d_backward_data", s) + math, dx, rel, abs);
    cpu_backend().conv2d_backward_weight(x.cpu, dy.cpu, dw.cpu, s);
    gpu_backend().conv2d_backward_weight(x.gpu, dy.gpu, dw.gpu, s);
    compare(conv_name("conv2d_backward_weight", s) + math, dw, rel, abs);
    cpu_backend().channel_sum(dy.cpu, db.cpu);
    gpu_backend().channel_sum(dy.gpu, db.gpu);
    compare(conv_name("channel_sum", s), db);
    Pair biased = {dy.cpu.clone(), dy.gpu.clone()};
    cpu_backend().add_channel_bias(b.cpu, biased.cpu);
    gpu_backend().add_channel_bias(b.gpu, biased.gpu);
    compare(conv_name("add_channel_bias", s), biased);
    // The fused pieces against the CPU's composition of the ops above (Backend's defaults).
    const Pair bx = uniform({s.in_c}, rng);
    for (bool relu : {false, true}) {
      Pair t = output(xs);  // a transposed conv: bias and ReLU in the backward-data epilogue
      cpu_backend().conv_transpose2d_forward(dy.cpu, w.cpu, bx.cpu, relu, t.cpu, s);
      gpu_backend().conv_transpose2d_forward(dy.gpu, w.gpu, bx.gpu, relu, t.gpu, s);
      compare(conv_name(relu ? "conv_transpose2d_forward+b+relu" : "conv_transpose2d_forward+b", s) + math, t, rel,
              abs);
    }
    const Pair out = uniform(ys, rng);  // the layer's output, whose sign masks the gradient
    Pair masked = output(ys), dbr = output({s.out_c}), db_only = output({s.out_c});
    cpu_backend().relu_bias_backward(out.cpu, dy.cpu, masked.cpu, dbr.cpu);
    gpu_backend().relu_bias_backward(out.gpu, dy.gpu, masked.gpu, dbr.gpu);
    compare(conv_name("relu_bias_backward dx", s), masked);
    compare(conv_name("relu_bias_backward db", s), dbr);
    Tensor none;
    cpu_backend().relu_bias_backward(none, dy.cpu, none, db_only.cpu);
    gpu_backend().relu_bias_backward(none, dy.gpu, none, db_only.gpu);
    compare(conv_name("relu_bias_backward db, no relu", s), db_only);
    for (bool relu : {false, true}) {  // mask and bias row inside the GEMMs' loads
      const std::string what = relu ? "conv2d_backward+relu " : "conv2d_backward ";
      Pair fdx = output(xs), fdw = output({s.out_c, s.in_c, s.k, s.k}), fdb = output({s.out_c});
      cpu_backend().conv2d_backward(x.cpu, w.cpu, relu ? out.cpu : Tensor(), dy.cpu, fdx.cpu, fdw.cpu, fdb.cpu, s);
      gpu_backend().conv2d_backward(x.gpu, w.gpu, relu ? out.gpu : Tensor(), dy.gpu, fdx.gpu, fdw.gpu, fdb.gpu, s);
      compare(conv_name((what + "dx").c_str(), s) + math, fdx, rel, abs);
      compare(conv_name((what + "dw").c_str(), s) + math, fdw, rel, abs);
      compare(conv_name((what + "db").c_str(), s) + math, fdb, rel, abs);
    }
  }
}

TEST_CASE("parity: segmented mean forward and backward", "[gpu]") {
  std::mt19937_64 rng(4);
  struct Case {
    int64_t rows, width, sets, m_max;
  };
  for (const Case c : {Case{1, 1, 1, 1}, Case{5, 3, 9, 1}, Case{12, 130, 12, 7}, Case{40, 300, 3, 25}}) {
    // Random CSR sets (members may repeat; some rows may be in no set).
    std::uniform_int_distribution<int32_t> row(0, int32_t(c.rows - 1));
    std::uniform_int_distribution<int64_t> size(1, c.m_max);
    std::vector<int32_t> offsets{0}, members;
    for (int64_t s = 0; s < c.sets; ++s) {
      for (int64_t j = size(rng); j > 0; --j) members.push_back(row(rng));
      offsets.push_back(int32_t(members.size()));
    }
    const Pair off = indices(offsets), mem = indices(members);
    const std::string tag = " rows " + std::to_string(c.rows) + " width " + std::to_string(c.width) + " sets " +
                            std::to_string(c.sets) + " m<=" + std::to_string(c.m_max);
    const Pair x = uniform({c.rows, c.width}, rng), dy = uniform({c.sets, c.width}, rng);
    Pair y = output({c.sets, c.width}), dx = output({c.rows, c.width});
    cpu_backend().segmented_mean_forward(x.cpu, off.cpu, mem.cpu, y.cpu);
    gpu_backend().segmented_mean_forward(x.gpu, off.gpu, mem.gpu, y.gpu);
    compare("segmented_mean_forward" + tag, y);
    cpu_backend().segmented_mean_backward(dy.cpu, off.cpu, mem.cpu, dx.cpu);
    gpu_backend().segmented_mean_backward(dy.gpu, off.gpu, mem.gpu, dx.gpu);
    compare("segmented_mean_backward" + tag, dx);
  }
}

TEST_CASE("parity: reparameterisation and dropout draw the CPU's numbers", "[gpu]") {
  std::mt19937_64 rng(5);
  for (int64_t n : {1, 3, 1001}) {
    for (uint64_t offset : {uint64_t(0), uint64_t(6), uint64_t(1) << 40}) {
      const std::string tag = " n" + std::to_string(n) + " offset " + std::to_string(offset);
      const Pair mu = uniform({n}, rng), lv = uniform({n}, rng, -3, 2), dv = uniform({n}, rng);
      Pair v = output({n}), dmu = output({n}), dlv = output({n});
      cpu_backend().reparam_forward(mu.cpu, lv.cpu, 1234, offset, v.cpu);
      gpu_backend().reparam_forward(mu.gpu, lv.gpu, 1234, offset, v.gpu);
      compare("reparam_forward" + tag, v);
      cpu_backend().reparam_backward(mu.cpu, v.cpu, dv.cpu, dmu.cpu, dlv.cpu);
      gpu_backend().reparam_backward(mu.gpu, v.gpu, dv.gpu, dmu.gpu, dlv.gpu);
      compare("reparam_backward dmu" + tag, dmu);
      compare("reparam_backward dlogvar" + tag, dlv);
      for (double p : {0.1, 0.5}) {
        Pair y = output({n});
        cpu_backend().dropout(mu.cpu, p, 99, offset, y.cpu);
        gpu_backend().dropout(mu.gpu, p, 99, offset, y.gpu);
        compare("dropout p " + std::to_string(p) + tag, y);
      }
    }
  }
}

TEST_CASE("parity: Bernoulli and Gaussian log-likelihoods", "[gpu]") {
  std::mt19937_64 rng(6);
  for (auto [n, c, h, w] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{1, 1, 1, 1}, {3, 1, 28, 28}, {2, 3, 5, 7}}) {
    const std::string tag = " " + std::to_string(n) + "x" + std::to_string(c) + "x" + std::to_string(h) + "x" +
                            std::to_string(w);
    const Shape s{n, c, h, w};
    const Pair logits = uniform(s, rng, -30, 30), target = uniform(s, rng, 0, 1), dy = uniform({n}, rng);
    Pair y = output({n}), d = output(s);
    cpu_backend().bernoulli_loglik_forward(logits.cpu, target.cpu, n, y.cpu);
    gpu_backend().bernoulli_loglik_forward(logits.gpu, target.gpu, n, y.gpu);
    compare("bernoulli_loglik_forward" + tag, y);
    cpu_backend().bernoulli_loglik_backward(logits.cpu, target.cpu, dy.cpu, n, d.cpu);
    gpu_backend().bernoulli_loglik_backward(logits.gpu, target.gpu, dy.gpu, n, d.gpu);
    compare("bernoulli_loglik_backward" + tag, d);

    const Pair mean = uniform(s, rng, -2, 2), x = uniform(s, rng, -2, 2);
    for (bool per_channel : {false, true}) {
      const Shape ls = per_channel ? Shape{c} : s;
      const std::string t2 = tag + (per_channel ? " per-channel logvar" : "");
      const Pair lv = uniform(ls, rng, -2, 1);
      Pair gy = output({n}), dmean = output(s), dlv = output(ls);
      cpu_backend().gaussian_loglik_forward(mean.cpu, lv.cpu, x.cpu, n, gy.cpu);
      gpu_backend().gaussian_loglik_forward(mean.gpu, lv.gpu, x.gpu, n, gy.gpu);
      compare("gaussian_loglik_forward" + t2, gy);
      cpu_backend().gaussian_loglik_backward(mean.cpu, lv.cpu, x.cpu, dy.cpu, n, dmean.cpu, dlv.cpu);
      gpu_backend().gaussian_loglik_backward(mean.gpu, lv.gpu, x.gpu, dy.gpu, n, dmean.gpu, dlv.gpu);
      compare("gaussian_loglik_backward dmean" + t2, dmean);
      compare("gaussian_loglik_backward dlogvar" + t2, dlv);
    }
  }
}

TEST_CASE("parity: KL terms, softmax family, pick", "[gpu]") {
  std::mt19937_64 rng(7);
  for (auto [rows, k] : {std::pair<int64_t, int64_t>{1, 1}, {1, 10}, {33, 10}, {5, 33}, {7, 70}}) {
    const std::string tag = " " + std::to_string(rows) + "x" + std::to_string(k);
    const Pair mu = uniform({rows, k}, rng, -2, 2), lv = uniform({rows, k}, rng, -3, 2), dy = uniform({rows}, rng);
    const Pair g = uniform({rows, k}, rng);
    Pair y = output({rows}), dmu = output({rows, k}), dlv = output({rows, k});
    cpu_backend().kl_normal_forward(mu.cpu, lv.cpu, rows, y.cpu);
    gpu_backend().kl_normal_forward(mu.gpu, lv.gpu, rows, y.gpu);
    compare("kl_normal_forward" + tag, y);
    cpu_backend().kl_normal_backward(mu.cpu, lv.cpu, dy.cpu, rows, dmu.cpu, dlv.cpu);
    gpu_backend().kl_normal_backward(mu.gpu, lv.gpu, dy.gpu, rows, dmu.gpu, dlv.gpu);
    compare("kl_normal_backward dmu" + tag, dmu);
    compare("kl_normal_backward dlogvar" + tag, dlv);

    const Pair logits = uniform({rows, k}, rng, -8, 8);
    const Pair log_prior = from_values(log_prior_values(k), {k});
    Pair kl = output({rows}), dkl = output({rows, k}), h = output({rows}), dh = output({rows, k});
    cpu_backend().categorical_kl_forward(logits.cpu, log_prior.cpu, rows, kl.cpu);
    gpu_backend().categorical_kl_forward(logits.gpu, log_prior.gpu, rows, kl.gpu);
    compare("categorical_kl_forward" + tag, kl);
    cpu_backend().categorical_kl_backward(logits.cpu, log_prior.cpu, dy.cpu, rows, dkl.cpu);
    gpu_backend().categorical_kl_backward(logits.gpu, log_prior.gpu, dy.gpu, rows, dkl.gpu);
    compare("categorical_kl_backward" + tag, dkl);
    cpu_backend().entropy_forward(logits.cpu, rows, h.cpu);
    gpu_backend().entropy_forward(logits.gpu, rows, h.gpu);
    compare("entropy_forward" + tag, h);
    cpu_backend().entropy_backward(logits.cpu, dy.cpu, rows, dh.cpu);
    gpu_backend().entropy_backward(logits.gpu, dy.gpu, rows, dh.gpu);
    compare("entropy_backward" + tag, dh);

    Pair ls = output({rows, k}), dls = output({rows, k}), sm = output({rows, k}), dsm = output({rows, k});
    cpu_backend().log_softmax_forward(logits.cpu, rows, ls.cpu);
    gpu_backend().log_softmax_forward(logits.gpu, rows, ls.gpu);
    compare("log_softmax_forward" + tag, ls);
    // The backward takes the forward's output: give both sides the GPU's (float) one.
    const Pair ls_in{ls.gpu.to(Device::cpu).to(DType::f64), ls.gpu};
    cpu_backend().log_softmax_backward(ls_in.cpu, g.cpu, rows, dls.cpu);
    gpu_backend().log_softmax_backward(ls_in.gpu, g.gpu, rows, dls.gpu);
    compare("log_softmax_backward" + tag, dls);
    cpu_backend().softmax_forward(logits.cpu, rows, sm.cpu);
    gpu_backend().softmax_forward(logits.gpu, rows, sm.gpu);
    compare("softmax_forward" + tag, sm);
    const Pair sm_in{sm.gpu.to(Device::cpu).to(DType::f64), sm.gpu};
    cpu_backend().softmax_backward(sm_in.cpu, g.cpu, rows, dsm.cpu);
    gpu_backend().softmax_backward(sm_in.gpu, g.gpu, rows, dsm.gpu);
    compare("softmax_backward" + tag, dsm);

    std::vector<int32_t> labels(static_cast<size_t>(rows));
    for (size_t r = 0; r < labels.size(); ++r) labels[r] = int32_t((r * 7 + 3) % size_t(k));
    const Pair idx = indices(labels);
    Pair picked = output({rows}), dpick = output({rows, k});
    cpu_backend().pick_forward(logits.cpu, idx.cpu, rows, picked.cpu);
    gpu_backend().pick_forward(logits.gpu, idx.gpu, rows, picked.gpu);
    compare("pick_forward" + tag, picked);
    cpu_backend().pick_backward(dy.cpu, idx.cpu, rows, dpick.cpu);
    gpu_backend().pick_backward(dy.gpu, idx.gpu, rows, dpick.gpu);
    compare("pick_backward" + tag, dpick);
    labels.back() = int32_t(k);  // out of range: an error, as on the CPU
    Pair bad = output({rows});
    CHECK_THROWS_AS(gpu_backend().pick_forward(logits.gpu, indices(labels).gpu, rows, bad.gpu), ShapeError);
  }
}

TEST_CASE("parity: Adam over a buffer, several steps", "[gpu]") {
  // start 0: 16-byte aligned buffers, the kernel's 128-bit path with a tail of 3 (10007 = 4 x 2501
  // + 3); start 1: views one float in, the scalar path.
  const int64_t start = GENERATE(0, 1);
  std::mt19937_64 rng(8);
  const int64_t n = 10007;
  Pair w = uniform({n + start}, rng), m = output({n + start}), v = output({n + start});
  for (Pair* p : {&m, &v}) {
    cpu_backend().fill(p->cpu, 0);
    gpu_backend().fill(p->gpu, 0);
  }
  auto view = [&](const Pair& p) { return Pair{p.cpu.rows(start, start + n), p.gpu.rows(start, start + n)}; };
  Pair wv = view(w), mv = view(m), vv = view(v);
  for (int64_t t = 1; t <= 3; ++t) {
    const Pair g = uniform({n}, rng, -0.1, 0.1);
    const AdamParams p{1e-3, 0.9, 0.999, 1e-8, t};
    cpu_backend().adam_step(wv.cpu, g.cpu, mv.cpu, vv.cpu, p);
    gpu_backend().adam_step(wv.gpu, g.gpu, mv.gpu, vv.gpu, p);
  }
  const std::string at = " (start " + std::to_string(start) + ")";
  compare("adam param after 3 steps" + at, w);
  compare("adam first moment" + at, m);
  compare("adam second moment" + at, v);
}

// ---- a small EquiVAE-shaped step through engine/ops.h -------------------------------------------

namespace {

constexpr int64_t kImages = 5, kSide = 12, kClasses = 4, kHidden = 12, kLatent = 3;

struct Model {
  ParameterStore params;
  std::vector<Var> h, e, cls, dec;  // weights and biases, in order of use
  Var out_logvar;
  int64_t channels;

  explicit Model(int64_t c) : channels(c) {
    auto conv = [&](std::vector<Var>& into, const std::string& name, int64_t in, int64_t out, bool transposed = false) {
      const Shape ws = transposed ? Shape{in, out, 5, 5} : Shape{out, in, 5, 5};
      into.push_back(params.declare(name + ".w", ws, Init::weights(in * 25, out * 25)));
      into.push_back(params.declare(name + ".b", {out}, Init::biases(in * 25)));
    };
    auto dense = [&](std::vector<Var>& into, const std::string& name, int64_t in, int64_t out) {
      into.push_back(params.declare(name + ".w", {out, in}, Init::weights(in, out)));
      into.push_back(params.declare(name + ".b", {out}, Init::biases(in)));
    };
    // invariant encoder h (12 -> 12 -> 6 -> 3) then g
    conv(h, "h.conv1", c, 4);
    conv(h, "h.conv2", 4, 6);
    conv(h, "h.conv3", 6, 8);
    dense(h, "h.dense", 8 * 9, kHidden);
    dense(h, "g.dense", kHidden, kHidden);
    dense(h, "g.out", kHidden, kLatent);
    // equivariant encoder: e_x, e_r, the two heads
    conv(e, "e.conv1", c, 4);
    dense(e, "e.dense", 4 * 36, kHidden);
    dense(e, "e.r", kLatent, kHidden);
    dense(e, "e.mu1", 2 * kHidden, kHidden);
    dense(e, "e.mu2", kHidden, kLatent);
    dense(e, "e.lv1", 2 * kHidden, kHidden);
    dense(e, "e.lv2", kHidden, kLatent);
    // classifier head q(y|x) on e_x's features
    dense(cls, "q.dense", kHidden, kHidden);
    dense(cls, "q.out", kHidden, kClasses);
    // decoder: dense pieces, then transposed convs 3 -> 6 -> 12 (output padding 1) -> 12
    dense(dec, "d.r", kLatent, kHidden);
    dense(dec, "d.v", kLatent, kHidden);
    dense(dec, "d.joint", 2 * kHidden, kHidden);
    dense(dec, "d.map", kHidden, 8 * 9);
    conv(dec, "d.convt1", 8, 6, true);
    conv(dec, "d.convt2", 6, 4, true);
    conv(dec, "d.convt3", 4, c, true);
    out_logvar = params.declare("d.logvar", {c}, Init::zeros());
  }

  // Minus the objective per image (labelled terms plus the classifier's KL and entropy terms,
  // so that every op of engine/ops.h is on the path).
  Var loss(const Tensor& x, const Tensor& offsets, const Tensor& members, const Tensor& labels,
           const Tensor& log_prior, RandomStream& stream) const {
    const int64_t n = x.dim(0);
    auto lin = [](const Var& in, const std::vector<Var>& p, size_t i) { return linear(in, p[i], p[i + 1]); };
    const Var xv(x);
    Var a = conv2d(xv, h[0], h[1], 1, 2, true);
    a = conv2d(a, h[2], h[3], 2, 2, true);
    a = conv2d(a, h[4], h[5], 2, 2, true);
    const Var hx = relu(lin(reshape(a, {n, -1}), h, 6));
    const Var r = lin(relu(lin(segmented_mean(hx, offsets, members), h, 8)), h, 10);

    const Var ex = relu(lin(reshape(conv2d(xv, e[0], e[1], 2, 2, true), {n, -1}), e, 2));
    const Var er = relu(lin(r, e, 4));
    const Var cat = concat({ex, er});
    const Var mu = lin(relu(lin(cat, e, 6)), e, 8), logvar = lin(relu(lin(cat, e, 10)), e, 12);
    const Var v = reparameterize(mu, logvar, stream);

    const Var hidden = relu(lin(concat({relu(lin(r, dec, 0)), relu(lin(v, dec, 2))}), dec, 4));
    Var img = reshape(relu(lin(hidden, dec, 6)), {n, 8, 3, 3});
    img = conv_transpose2d(img, dec[8], dec[9], 2, 2, 1, true);
    img = conv_transpose2d(img, dec[10], dec[11], 2, 2, 1, true);
    img = conv_transpose2d(img, dec[12], dec[13], 1, 2, 0, false);
    const Var ll = channels == 1 ? bernoulli_loglik(img, x) : gaussian_loglik(img, out_logvar, x);

    const Var logits = lin(dropout(relu(lin(ex, cls, 0)), 0.25, stream, true), cls, 2);
    const Var log_q = log_softmax(logits);
    const Var q_terms = add(add(pick(log_q, labels), entropy(logits)), scale(categorical_kl(logits, log_prior), -1));
    const Var soft = sum_rows(mul(softmax(logits), log_q));  // -entropy again, through softmax's backward
    const Var objective = add(sub(ll, kl_normal(mu, logvar)), add(q_terms, scale(soft, 0.5)));
    return scale(sum(objective), -1.0 / double(n));
  }
};

struct Batch {
  Tensor x, offsets, members, labels, log_prior;
  Batch to(Device d, DType t) const {
    return {x.to(t).to(d), offsets.to(d), members.to(d), labels.to(d), log_prior.to(t).to(d)};
  }
};

Batch make_batch(int64_t c, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  std::normal_distribution<double> normal(0, 1);
  std::vector<double> x(size_t(kImages * c * kSide * kSide));
  for (double& v : x) v = double(float(c == 1 ? u(rng) : normal(rng)));
  // Sets exclude the image they stand for; set 0 has m = 1.
  const std::vector<int32_t> offsets{0, 1, 3, 6, 8, 10}, members{1, 0, 2, 0, 1, 4, 2, 3, 0, 3};
  return {Tensor::from(x, {kImages, c, kSide, kSide}, DType::f32), Tensor::from_indices(offsets),
          Tensor::from_indices(members), Tensor::from_indices({0, 3, 1, 2, 3}), Tensor::from(log_prior_values(kClasses), {kClasses}, DType::f32)};
}

// One forward + backward; returns the loss. Gradients land in the store's gradient buffer.
double step(Model& m, const Batch& b, uint64_t seed) {
  m.params.zero_grad();
  RandomStream stream{seed, 0};
  const Var loss = m.loss(b.x, b.offsets, b.members, b.labels, b.log_prior, stream);
  loss.backward();
  return loss.value().item();
}

}  // namespace

TEST_CASE("parity: an EquiVAE-shaped step (loss, every gradient, Adam), determinism, no cudaMalloc", "[gpu]") {
  for (int64_t c : {int64_t(1), int64_t(3)}) {
    const std::string tag = c == 1 ? " (Bernoulli, 1 channel)" : " (Gaussian, 3 channels)";
    std::mt19937_64 rng(9 + uint64_t(c));
    const Batch host = make_batch(c, rng);
    const Batch on_gpu = host.to(Device::cuda, DType::f32), on_cpu = host.to(Device::cpu, DType::f64);

    Model g(c), r(c);
    g.params.allocate(17, DType::f32, Device::cuda);
    r.params.allocate(17, DType::f64, Device::cpu);
    r.params.values().copy_from(g.params.values().to(Device::cpu).to(DType::f64));  // identical float inputs

    const double loss_gpu = step(g, on_gpu, 5), loss_cpu = step(r, on_cpu, 5);
    std::printf("  model step%s: loss gpu %.9g cpu %.9g\n", tag.c_str(), loss_gpu, loss_cpu);
    CHECK(std::abs(loss_gpu - loss_cpu) <= kModelRel * std::abs(loss_cpu));
    for (const ParameterStore::Entry& e : r.params.entries())
      compare("grad " + e.name + tag, g.params.find(e.name).var.grad(), e.var.grad(), kModelRel, kModelAbs);

    Adam adam_g(g.params), adam_r(r.params);
    adam_g.step();
    adam_r.step();
    compare("parameters after one Adam step" + tag, g.params.values(), r.params.values(), kModelRel, kModelAbs);

    // Determinism: the same step again gives the same bits.
    const std::vector<double> grads_1 = g.params.grads().to_vector();
    const double loss_1 = step(g, on_gpu, 6);
    const std::vector<double> grads_a = g.params.grads().to_vector();
    const double loss_2 = step(g, on_gpu, 6);
    CHECK(loss_1 == loss_2);
    CHECK(g.params.grads().to_vector() == grads_a);
    CHECK(grads_a != grads_1);  // (the parameters did move)

    // After those warm-up steps, a further step (with its Adam update) makes no cudaMalloc, and
    // the host waits for the GPU only to read the loss (the value checks' reads are switched off).
    const CudaMemoryStats before = cuda_memory_stats();
    uint64_t waits = 0;
    {
      const ValueChecks off(false);
      const uint64_t waits_before = cuda_host_waits();
      step(g, on_gpu, 7);
      adam_g.step();
      waits = cuda_host_waits() - waits_before;
    }
    cuda_synchronize();
    const CudaMemoryStats after = cuda_memory_stats();
    std::printf("  host waits in that step%s: %llu\n", tag.c_str(), (unsigned long long)waits);
    CHECK(waits == 1);
    std::printf("  allocator%s: %llu cudaMalloc calls, %.1f MiB reserved, new calls in the last step: %llu\n",
                tag.c_str(), (unsigned long long)after.mallocs, double(after.bytes_reserved) / (1 << 20),
                (unsigned long long)(after.mallocs - before.mallocs));
    CHECK(after.mallocs == before.mallocs);
  }
}

// Issue 15's self-check on first use (engine/self_check.h; train_mnist runs it before training on
// a GPU): it passes on this device, and refuses the same backend with one kernel spoiled.
TEST_CASE("self-check: the CUDA backend passes; a spoiled kernel is refused, named", "[gpu][self_check]") {
  std::vector<KernelCheck> checks;
  REQUIRE_NOTHROW(checks = require_self_check(gpu_backend(), Device::cuda, cpu_backend()));
  double worst = 0;
  for (const KernelCheck& c : checks) worst = std::max(worst, c.result.worst);
  std::printf("  self-check: %zu kernel outputs, worst %.3g of threshold\n", checks.size(), worst);
  CHECK(checks.size() > 60);
  {  // train_mnist --tf32: convolutions and dense layers on TF32 tensor cores, at the TF32 bound
    set_cuda_tf32(true);
    struct BackToFp32 {
      ~BackToFp32() { set_cuda_tf32(false); }
    } back_to_fp32;
    SelfCheckOptions tf32;
    tf32.gemm = kTf32Tolerance;
    CHECK_NOTHROW(require_self_check(gpu_backend(), Device::cuda, cpu_backend(), tf32));
    // At the FP32 bound TF32 is refused: the self-check sees which math the kernels use.
    CHECK_THROWS_WITH(require_self_check(gpu_backend(), Device::cuda, cpu_backend()), Catch::Contains("\n  linear_forward:"));
  }
  for (const char* spoiled : {"conv2d_backward_weight", "place_columns", "adam_step"}) {
    equivae::testing::ForwardingBackend wrong(gpu_backend(), spoiled);
    try {
      require_self_check(wrong, Device::cuda, cpu_backend());
      FAIL("a spoiled " << spoiled << " passed the self-check");
    } catch (const std::runtime_error& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(std::string("\n  ") + spoiled) != std::string::npos);
    }
  }
}

int main(int argc, char** argv) {
  if (!cuda_available()) {
    std::puts("no CUDA device: GPU parity tests skipped");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
