// The conv planner (kernels/conv2d.cu): split-K sized by occupancy, and reproducible plans, which
// make a GPU's results independent of its SM count. The emulator plans for any SM count it is told
// (set_plan_device_sms), so GPUs of different sizes are compared in one process.
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
