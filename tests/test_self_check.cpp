// The self-check (engine/self_check.h) on the CPU: the float32 CPU backend passes it against its
// float64 self, and a backend with any one kernel spoiled (tests/forwarding_backend.h: outputs
// off by 1 %) is refused with that kernel named, so every Backend method is shown to be checked.
// The same check of the CUDA backend runs in the GPU suite (tests/gpu/test_parity.cpp).
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "engine/self_check.h"
#include "tests/forwarding_backend.h"

using namespace equivae;

TEST_CASE("self-check: the float32 CPU backend agrees with its float64 reference", "[self_check]") {
  const std::vector<KernelCheck> checks = self_check(backend(Device::cpu), Device::cpu, backend(Device::cpu));
  CHECK(checks.size() > 60);
  for (const KernelCheck& c : checks) {
    INFO(c.describe());
    CHECK(c.passed());
  }
  testing::ForwardingBackend unspoiled(backend(Device::cpu), "");
  CHECK_NOTHROW(require_self_check(unspoiled, Device::cpu, backend(Device::cpu)));
}

TEST_CASE("self-check: one spoiled kernel is refused, and named", "[self_check]") {
  const std::string spoiled =
      GENERATE(as<std::string>{}, "fill", "axpy", "scale", "binary", "relu_forward", "relu_backward", "copy_columns",
               "place_columns", "concat_columns", "split_columns", "gather_rows",
               "sum_rows", "broadcast_rows", "linear_forward",
               "linear_backward", "linear_relu_forward", "linear_relu_backward", "conv2d_forward",
               "conv2d_backward_data", "conv2d_backward_weight", "conv2d_backward", "channel_sum", "add_channel_bias",
               "conv_transpose2d_forward", "relu_bias_backward", "segmented_mean_forward", "segmented_mean_backward",
               "reparam_forward", "reparam_backward", "dropout", "bernoulli_loglik_forward",
               "bernoulli_loglik_backward", "gaussian_loglik_forward", "gaussian_loglik_backward", "kl_normal_forward",
               "kl_normal_backward", "log_softmax_forward", "log_softmax_backward", "softmax_forward",
               "softmax_backward", "pick_forward", "pick_backward", "categorical_kl_forward", "categorical_kl_backward",
               "entropy_forward", "entropy_backward", "has_nonfinite", "adam_step");
  INFO("spoiled: " << spoiled);
  testing::ForwardingBackend wrong(backend(Device::cpu), spoiled);
  const std::vector<KernelCheck> checks = self_check(wrong, Device::cpu, backend(Device::cpu));
  CHECK(wrong.spoiled_calls() > 0);
  size_t failed = 0;
  for (const KernelCheck& c : checks) {
    if (c.passed()) continue;
    ++failed;
    INFO(c.describe());
    CHECK(c.kernel.rfind(spoiled, 0) == 0);  // only the spoiled kernel's outputs fail
  }
  CHECK(failed > 0);
  try {
    require_self_check(wrong, Device::cpu, backend(Device::cpu), {}, " (advice)");
    FAIL("require_self_check accepted a spoiled " << spoiled);
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find("\n  " + spoiled) != std::string::npos);
    CHECK(what.find("of its tolerance") != std::string::npos);
    CHECK(what.find(" (advice)") != std::string::npos);
  }
}

TEST_CASE("self-check: a kernel that throws is refused with its error", "[self_check]") {
  testing::ForwardingBackend throwing(backend(Device::cpu), "linear_backward", testing::ForwardingBackend::Fault::throws);
  try {
    require_self_check(throwing, Device::cpu, backend(Device::cpu));
    FAIL("require_self_check accepted a kernel that throws");
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    INFO(what);
    for (const char* output : {"dx", "dw", "db"})  // each of its outputs is named
      CHECK(what.find(std::string("\n  linear_backward ") + output + ": threw: linear_backward: a deliberate fault") !=
            std::string::npos);
    CHECK(what.find("3 of ") != std::string::npos);
  }
}

TEST_CASE("self-check: the agreement measure", "[self_check]") {
  CHECK_THROWS_AS(agreement(Tensor::zeros({3}), Tensor::zeros({4})), ShapeError);
  const Agreement a = agreement(Tensor::from({1, 2, 3.001}, {3}), Tensor::from({1, 2, 3}, {3}), {1e-4, 0});
  CHECK(a.at == 2);
  CHECK(a.worst == Approx(0.001f / 3e-4).epsilon(1e-3));
}
