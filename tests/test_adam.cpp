// Adam against torch.optim.Adam (torch 1.13, float64, lr = 0.1, other settings default) on
// L(w) = sum_i c_i (w_i - t_i)^2, whose values after each of 3 steps are written out below.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/ops.h"
#include "engine/params.h"
#include "engine/rng.h"
#include "model/equivae.h"
#include "train/checkpoint.h"

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
  CHECK(params.find("b").offset == 8);  // 6 rounded up to kParamAlign
  CHECK(params.buffer_numel() == 11);
  sum(a).backward();
  sum(scale(b, 3.0)).backward();
  const std::vector<double> g = params.grads().to_vector();
  for (int i = 0; i < 6; ++i) CHECK(g[size_t(i)] == 1.0);
  for (int i = 6; i < 8; ++i) CHECK(g[size_t(i)] == 0.0);  // the gap
  for (int i = 8; i < 11; ++i) CHECK(g[size_t(i)] == 3.0);
  params.zero_grad();
  for (double x : params.grads().to_vector()) CHECK(x == 0.0);
  // Initial values: uniform in [-1/sqrt(3), 1/sqrt(3)], not all equal; zeros stay zero.
  const std::vector<double> v = params.values().to_vector();
  for (int i = 0; i < 6; ++i) CHECK(std::abs(v[size_t(i)]) <= 1 / std::sqrt(3.0));
  CHECK(v[0] != v[1]);
  for (int i = 6; i < 11; ++i) CHECK(v[size_t(i)] == 0.0);
}

TEST_CASE("params: every view starts 16-byte aligned, and the padding changes no initial value", "[adam]") {
  const DType dtype = GENERATE(DType::f32, DType::f64);
  ParameterStore p;
  EquiVAE model(ModelConfig{}, p);
  p.allocate(11, dtype);
  int64_t packed = 0;
  for (const auto& e : p.entries()) {
    INFO(e.name);
    CHECK(reinterpret_cast<uintptr_t>(e.var.value().raw()) % 16 == 0);
    CHECK((reinterpret_cast<uintptr_t>(p.grads().raw()) + uintptr_t(e.offset) * dtype_size(dtype)) % 16 == 0);
    CHECK(e.index == packed);
    const int64_t n = shape_numel(e.shape);
    packed += n;
  }
  CHECK(p.numel() == packed);
  // Initial values are keyed by the packed index: the padding moves no draw.
  ParameterStore q;
  q.declare("a", {3}, Init::weights(4, 4));
  Var b = q.declare("b", {5}, Init::weights(4, 4));
  q.allocate(5, dtype);
  REQUIRE(q.find("b").offset == 4);  // a gap of one
  CHECK(reinterpret_cast<uintptr_t>(b.value().raw()) % 16 == 0);
  CHECK(q.values().to_vector()[3] == 0.0);
  for (int64_t i = 0; i < 5; ++i)
    CHECK(b.value().to_vector()[size_t(i)] ==
          Approx((2 * philox_uniform(5, uint64_t(3 + i)) - 1) * 0.5).epsilon(dtype == DType::f32 ? 1e-6 : 1e-14));
}

TEST_CASE("params: a checkpoint keeps Adam's moments packed, without the padding, and loads them back", "[adam][checkpoint]") {
  auto make = [](ParameterStore& p) {
    Var a = p.declare("a", {3}, Init::weights(3, 1));
    Var b = p.declare("b", {2, 3}, Init::weights(3, 2));
    p.allocate(3, DType::f32);
    return std::pair{a, b};
  };
  ParameterStore p;
  auto [a, b] = make(p);
  Adam adam(p);
  for (int k = 0; k < 2; ++k) {
    p.zero_grad();
    sum(mul(a, a)).backward();
    sum(mul(b, scale(b, 2.0))).backward();
    adam.step();
  }
  const auto dir = std::filesystem::temp_directory_path() / ("equivae_test_adam_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "padded.safetensors").string();
  save_checkpoint(path, p, &adam, {});
  {  // the file's moments have the packed length, 9, not the buffer's (3 + gap 1 + 6 = 10)
    std::ifstream in(path, std::ios::binary);
    uint64_t len = 0;
    in.read(reinterpret_cast<char*>(&len), 8);
    std::string text(len, ' ');
    in.read(text.data(), std::streamsize(len));
    const nlohmann::json header = nlohmann::json::parse(text);
    CHECK(header["adam.m"]["shape"] == nlohmann::json::array({9}));
    CHECK(header["adam.v"]["shape"] == nlohmann::json::array({9}));
  }
  ParameterStore q;
  make(q);
  Adam reloaded(q);
  load_checkpoint(path, q, &reloaded);
  CHECK(q.values().to_vector() == p.values().to_vector());  // the gap (index 3) too: zero
  CHECK(reloaded.first_moment().to_vector() == adam.first_moment().to_vector());
  CHECK(reloaded.second_moment().to_vector() == adam.second_moment().to_vector());
  CHECK(reloaded.first_moment().to_vector()[3] == 0.0);  // the gap
  CHECK(reloaded.first_moment().to_vector()[4] != 0.0);
  std::filesystem::remove_all(dir);
}
