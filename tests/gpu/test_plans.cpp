// The conv planner (kernels/conv2d.cu): split-K sized by occupancy, the direct kernels' products,
// reproducible plans, which make a GPU's results independent of its SM count (and the train
// option that asks for them), and the tile loaders' 128-bit path. The emulator plans for any SM
// count it is told (set_plan_device_sms), so GPUs of different sizes are compared in one process.
#include <catch2/catch.hpp>

#include <algorithm>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "engine/backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/self_check.h"
#include "engine/shapes.h"
#include "kernels/conv2d.cuh"
#include "tests/parity.h"
#include "train/run_options.h"

using namespace equivae;

namespace {

Backend& cuda() { return backend(Device::cuda); }

Tensor uniform(const Shape& shape, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<double> v(size_t(shape_numel(shape)));
  for (double& x : v) x = u(rng);
  return Tensor::from(v, shape, DType::f32, Device::cuda);
}

}  // namespace

TEST_CASE("plans: split-K by occupancy; reproducible plans give the same plan and bits on any SM count",
          "[gpu][plan]") {
  struct Restore {
    ~Restore() { gpu::set_reproducible_plans(false), gpu::set_plan_device_sms(0); }
  } restore;
  auto shape = [](int64_t n, int64_t c, int64_t h, int64_t oc, int64_t k, int64_t s, int64_t p) {
    return ConvShape{n, c, h, h, oc, conv_out_size(h, k, s, p), conv_out_size(h, k, s, p), k, s, p};
  };
  const std::vector<ConvShape> cases{
      shape(64, 16, 28, 16, 5, 2, 2),  // MNIST's layers at batch 64 (forward: a wave of tiles or more)
      shape(64, 16, 14, 32, 5, 2, 2),
      shape(64, 32, 7, 32, 5, 2, 2),
      shape(64, 32, 4, 64, 5, 2, 2),
      shape(64, 16, 28, 1, 5, 1, 2),   // the decoder's last layer as a conv
      shape(3, 32, 7, 64, 5, 2, 2),    // few tiles, long reductions
      shape(6, 1, 28, 16, 5, 1, 2),
  };
  const gpu::ConvProduct products[] = {gpu::ConvProduct::forward, gpu::ConvProduct::backward_data,
                                       gpu::ConvProduct::backward_weight};
  auto plans = [&](int sms) {
    gpu::set_plan_device_sms(sms);
    std::vector<gpu::ConvPlan> out;
    for (const ConvShape& s : cases)
      for (gpu::ConvProduct product : products) out.push_back(gpu::conv2d_plan(product, s, true));
    return out;
  };
  // The outputs of the three products, as bits, on shapes small enough for the emulator; on GPUs
  // of 2 and 3 SMs their splits are then limited by the wave, not by K, so they differ.
  std::mt19937_64 rng(17);
  std::vector<std::tuple<ConvShape, Tensor, Tensor, Tensor>> inputs;
  for (const ConvShape& s : {shape(3, 32, 7, 64, 5, 2, 2), shape(6, 1, 28, 16, 5, 1, 2), shape(2, 16, 14, 32, 5, 2, 2)})
    inputs.emplace_back(s, uniform({s.n, s.in_c, s.in_h, s.in_w}, rng), uniform({s.out_c, s.in_c, s.k, s.k}, rng),
                        uniform({s.n, s.out_c, s.out_h, s.out_w}, rng));
  auto results = [&](int sms) {
    gpu::set_plan_device_sms(sms);
    std::vector<std::vector<double>> out;
    for (const auto& [s, x, w, dy] : inputs) {
      Tensor y = Tensor::empty({s.n, s.out_c, s.out_h, s.out_w}, DType::f32, Device::cuda);
      Tensor dx = Tensor::empty({s.n, s.in_c, s.in_h, s.in_w}, DType::f32, Device::cuda);
      Tensor dw = Tensor::empty({s.out_c, s.in_c, s.k, s.k}, DType::f32, Device::cuda);
      Tensor db = Tensor::empty({s.out_c}, DType::f32, Device::cuda);
      cuda().conv2d_forward(x, w, Tensor(), false, y, s);
      cuda().conv2d_backward(x, w, Tensor(), dy, dx, dw, db, s);
      for (const Tensor* t : {&y, &dx, &dw, &db}) out.push_back(t->to_vector());
    }
    return out;
  };

  // <= 4 output channels: the direct kernel (the decoder's last layer: backward-data with in_c 1).
  // Weight gradients: direct with <= 4 channels on either side (the decoder's last transposed conv
  // is a conv2d of 1 -> 16 channels, stride 1), split over rows like a GEMM's K.
  const ConvShape last = shape(64, 1, 28, 16, 5, 1, 2);
  CHECK(gpu::conv2d_plan(gpu::ConvProduct::backward_data, last).direct);
  CHECK(gpu::conv2d_plan(gpu::ConvProduct::forward, shape(64, 16, 28, 1, 5, 1, 2)).direct);
  CHECK_FALSE(gpu::conv2d_plan(gpu::ConvProduct::forward, last).direct);  // 16 output channels: the GEMM
  const gpu::ConvPlan last_dw = gpu::conv2d_plan(gpu::ConvProduct::backward_weight, last, false);
  CHECK(last_dw.direct);
  CHECK(last_dw.slices > 1);
  CHECK(gpu::conv2d_plan(gpu::ConvProduct::backward_weight, shape(64, 16, 28, 1, 5, 1, 2)).direct);
  CHECK(gpu::conv2d_plan(gpu::ConvProduct::backward_weight, shape(64, 3, 32, 16, 5, 2, 2), true).direct);
  CHECK_FALSE(gpu::conv2d_plan(gpu::ConvProduct::backward_weight, shape(64, 16, 28, 16, 5, 2, 2)).direct);

  gpu::set_reproducible_plans(false);
  for (int sms : {114, 132}) {
    INFO(sms << " SMs");
    const std::vector<gpu::ConvPlan> p = plans(sms);
    for (size_t i = 0; i < p.size(); ++i) {
      INFO("case " << i / 3 << ", product " << i % 3);
      const int64_t wave = int64_t(sms) * p[i].blocks_per_sm, tiles = p[i].blocks / p[i].slices;
      if (tiles >= wave / 2) CHECK(p[i].slices == 1);  // no split once a wave is (half) full
      if (p[i].slices > 1) CHECK(p[i].blocks <= wave);  // a split never starts a second wave
      const ConvShape& s = cases[i / 3];  // few tiles and a long reduction: split
      const int64_t depth = i % 3 == 0 ? s.patch() : i % 3 == 2 ? s.n * s.out_h * s.out_w : 0;
      if (tiles * 4 <= wave && depth >= 1024) CHECK(p[i].slices > 1);
    }
  }
  // Device plans follow the SM count, and so do the bits: what reproducible plans must undo.
  CHECK(plans(114) != plans(132));
  CHECK(results(2) != results(3));

  gpu::set_reproducible_plans(true);
  CHECK(plans(114) == plans(132));
  CHECK(plans(114) == plans(1));
  CHECK(results(2) == results(3));
}


TEST_CASE("plans: the self-check reaches every weight-gradient path (direct on either side, split or not; the GEMM)",
          "[gpu][plan][self_check]") {
  gpu::set_plan_device_sms(132);
  struct Restore {
    ~Restore() { gpu::set_plan_device_sms(0); }
  } restore;
  bool narrow_in_split = false, narrow_out = false, gemm_split = false;
  for (const ConvShape& s : self_check_conv_shapes()) {
    const gpu::ConvPlan p = gpu::conv2d_plan(gpu::ConvProduct::backward_weight, s);
    narrow_in_split |= p.direct && s.in_c <= 4 && s.in_c <= s.out_c && p.slices > 1;
    narrow_out |= p.direct && s.out_c < s.in_c;
    gemm_split |= !p.direct && p.slices > 1;
  }
  CHECK(narrow_in_split);
  CHECK(narrow_out);
  CHECK(gemm_split);
}

TEST_CASE("plans: --reproducible-plans selects the SM-independent plans; config.json records them",
          "[gpu][plan][run]") {
  struct Restore {
    ~Restore() { gpu::set_reproducible_plans(false), gpu::set_plan_device_sms(0); }
  } restore;
  // The decoder's last transposed conv at batch 512: its weight gradient is split into a wave of blocks.
  const ConvShape s{512, 1, 28, 28, 16, 28, 28, 5, 1, 2};
  auto plan_on = [&](int sms) {
    gpu::set_plan_device_sms(sms);
    return gpu::conv2d_plan(gpu::ConvProduct::backward_weight, s, true);
  };
  for (bool flag : {false, true}) {
    INFO("--reproducible-plans given: " << flag);
    gpu::set_reproducible_plans(false);  // as a process starts without EQUIVAE_REPRODUCIBLE
    RunOptions o;
    CLI::App app;
    OptionTable table{app, o};
    std::vector<std::string> args{"--device", "cuda"};
    if (flag) args.push_back("--reproducible-plans");
    std::reverse(args.begin(), args.end());  // CLI11 takes them last first
    app.parse(args);
    check_options(o);
    apply_device_options(o);
    CHECK(gpu::reproducible_plans() == flag);
    CHECK((plan_on(114) == plan_on(132)) == flag);
    CHECK(table.to_json().at("reproducible-plans") == flag);
  }
  {  // EQUIVAE_REPRODUCIBLE=1 (read at start) without the flag: on, and recorded as on
    gpu::set_reproducible_plans(true);
    RunOptions o;
    o.device = "cuda";
    apply_device_options(o);
    CHECK(o.reproducible_plans);
  }
}

// The conv GEMMs' 128-bit tile loads (gpu::conv2d_vector_loads): each loader with a vector path
// takes it where the shape and the pointers allow, and not for a view one float off (inputs, or
// the ReLU mask) nor for rows that are not whole float4s; both paths agree with the CPU. The
// emulator stops at a misaligned 128-bit load, as a GPU faults. (The conv parity test runs
// the vector paths on aligned tensors too, in FP32 and TF32.)
TEST_CASE("plans: 128-bit tile loads where the shape and alignment allow, 32-bit loads otherwise", "[gpu][vector]") {
  using gpu::ConvProduct;
  std::mt19937_64 rng(9);
  std::uniform_real_distribution<double> u(-1, 1);
  // Values on the CPU (float64) and, `offset` floats into a device buffer, their float32 view.
  struct View {
    Tensor cpu, buffer;
    int offset;
    std::vector<double> values;
    const float* ptr() const { return buffer.data<float>() + offset; }
  };
  auto view = [&](const Shape& shape, int offset) {
    View v{Tensor(), Tensor(), offset, std::vector<double>(size_t(shape_numel(shape)))};
    for (double& x : v.values) x = double(float(u(rng)));
    std::vector<double> padded(size_t(offset), 0.0);
    padded.insert(padded.end(), v.values.begin(), v.values.end());
    padded.resize(v.values.size() + 4, 0.0);
    v.cpu = Tensor::from(v.values, shape, DType::f64, Device::cpu);
    v.buffer = Tensor::from(padded, {int64_t(padded.size())}, DType::f32, Device::cuda);
    return v;
  };
  auto dense = [](int64_t n, int64_t c, int64_t oc) { return ConvShape{n, c, 1, 1, oc, 1, 1, 1, 1, 0}; };
  auto conv = [](int64_t n, int64_t c, int64_t h, int64_t oc, int64_t k, int64_t s, int64_t p) {
    return ConvShape{n, c, h, h, oc, conv_out_size(h, k, s, p), conv_out_size(h, k, s, p), k, s, p};
  };
  struct Case {
    ConvProduct product;
    ConvShape s;
    int off_a, off_b, off_mask;  // floats each input view is off 16-byte alignment; off_mask < 0: no mask
    bool want_a, want_b;
    const char* what;
  };
  const ConvProduct fwd = ConvProduct::forward, data = ConvProduct::backward_data, weight = ConvProduct::backward_weight;
  const std::vector<Case> cases{
      {fwd, dense(3, 8, 5), 0, 0, -1, true, true, "dense forward: rows of x and of w"},
      {fwd, dense(3, 8, 5), 1, 0, -1, false, true, "dense forward, x one float off"},
      {fwd, dense(3, 8, 5), 0, 1, -1, true, false, "dense forward, w one float off"},
      {fwd, dense(2, 6, 5), 0, 0, -1, false, false, "dense forward, rows of 6"},
      {fwd, conv(2, 8, 9, 6, 5, 2, 2), 0, 0, -1, false, true, "conv forward: x gathered, w rows of 200"},
      {fwd, conv(2, 3, 9, 6, 5, 2, 2), 0, 0, -1, false, false, "conv forward, w rows of 75"},
      {data, dense(3, 6, 8), 0, 0, 0, true, false, "dense backward-data: rows of dy, masked"},
      {data, dense(3, 6, 8), 0, 0, 1, false, false, "dense backward-data, mask one float off"},
      {data, dense(3, 6, 8), 1, 0, -1, false, false, "dense backward-data, dy one float off"},
      {data, conv(2, 8, 9, 8, 5, 2, 2), 0, 0, 0, false, false, "conv backward-data: dy gathered"},
      {weight, conv(3, 8, 28, 6, 5, 2, 2), 0, 0, 0, false, true, "backward-weight: dy rows of 196 pixels, masked, split"},
      {weight, conv(3, 8, 28, 6, 5, 2, 2), 0, 1, -1, false, false, "backward-weight, dy one float off"},
      {weight, conv(3, 8, 28, 6, 5, 2, 2), 0, 0, 3, false, false, "backward-weight, mask three floats off"},
      {weight, conv(2, 8, 13, 6, 5, 2, 2), 0, 0, -1, false, false, "backward-weight, rows of 49 pixels"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    const ConvShape& s = c.s;
    const Shape xs{s.n, s.in_c, s.in_h, s.in_w}, ys{s.n, s.out_c, s.out_h, s.out_w}, ws{s.out_c, s.in_c, s.k, s.k};
    // The product's inputs in the launcher's order: forward (x, w), backward-data (dy, w), backward-weight (x, dy).
    const View a = view(c.product == data ? ys : xs, c.off_a);
    const View b = view(c.product == weight ? ys : ws, c.off_b);
    const View mask = view(c.product == fwd ? Shape{1} : ys, std::max(c.off_mask, 0));
    const float* mask_ptr = c.off_mask >= 0 ? mask.ptr() : nullptr;
    const gpu::ConvLoads loads = gpu::conv2d_vector_loads(c.product, s, a.ptr(), b.ptr(), mask_ptr);
    CHECK(loads.a == c.want_a);
    CHECK(loads.b == c.want_b);
    // The backward products' dy as the kernels read it: zero where the mask is not positive.
    std::vector<double> dy_masked = (c.product == data ? a : b).values;
    for (size_t i = 0; mask_ptr && i < dy_masked.size(); ++i) dy_masked[i] *= mask.values[i] > 0;
    const Tensor dy_ref = c.product == fwd ? Tensor() : Tensor::from(dy_masked, ys, DType::f64, Device::cpu);
    const size_t ws_bytes = c.product == fwd    ? gpu::conv2d_forward_workspace_bytes(s)
                            : c.product == data ? gpu::conv2d_backward_data_workspace_bytes(s)
                                                : gpu::conv2d_backward_weight_workspace_bytes(s);
    Tensor workspace = Tensor::empty({int64_t(ws_bytes / 4 + 1)}, DType::f32, Device::cuda);
    const Shape out_shape = c.product == fwd ? ys : c.product == data ? xs : ws;
    Tensor want = Tensor::empty(out_shape, DType::f64, Device::cpu);
    Tensor got = Tensor::full(out_shape, std::numeric_limits<double>::quiet_NaN(), DType::f32, Device::cuda);
    if (c.product == fwd) {
      gpu::conv2d_forward(a.ptr(), b.ptr(), nullptr, false, got.data<float>(), s, workspace.raw(), cuda_stream());
      backend(Device::cpu).conv2d_forward(a.cpu, b.cpu, Tensor(), false, want, s);
    } else if (c.product == data) {
      gpu::conv2d_backward_data(a.ptr(), b.ptr(), got.data<float>(), s, workspace.raw(), cuda_stream(), nullptr, false,
                                mask_ptr);
      backend(Device::cpu).conv2d_backward_data(dy_ref, b.cpu, want, s);
    } else {
      gpu::conv2d_backward_weight(a.ptr(), b.ptr(), got.data<float>(), s, workspace.raw(), cuda_stream(), mask_ptr);
      backend(Device::cpu).conv2d_backward_weight(a.cpu, dy_ref, want, s);
    }
    equivae::testing::compare(c.what, got, want, equivae::testing::kRel, equivae::testing::kAbs);
  }
}
