// Training on the GPU is the CPU's training (--device cuda, same code): the synthetic run of
// tests/synthetic.h on both devices, compared epoch by epoch (both in float32; only the order of
// the GPU's sums differs), the same model's representations, and a GPU checkpoint continued on
// the CPU. Part of equivae_gpu_tests, so it is skipped where there is no GPU.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/cuda/cuda_backend.h"
#include "engine/ops.h"
#include "tests/synthetic.h"

using namespace equivae;
using namespace equivae::testing;
using Catch::Contains;

namespace {

std::vector<nlohmann::json> read_metrics(const std::string& dir) {
  std::ifstream in(dir + "/metrics.jsonl");
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

// Relative, with a floor of 1 nat: a KL term near 0 (a few 1e-6 nats) is compared absolutely.
double difference(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1.0); }

}  // namespace

TEST_CASE("train on the GPU: the CPU's run epoch by epoch, and its checkpoint continues on the CPU", "[gpu][train]") {
  const data::Splits s = synthetic_splits();
  const std::string on_cpu = temp_dir("train_cpu"), on_gpu = temp_dir("train_gpu");
  const int epochs = 3;
  TrainConfig cpu_config = small_training(on_cpu, epochs), gpu_config = small_training(on_gpu, epochs);
  gpu_config.device = Device::cuda;
  Trainer cpu(small_model(), cpu_config, s), gpu(small_model(), gpu_config, s);
  // The same initial parameters: both drawn on the host from the seed.
  REQUIRE(gpu.params().values().to_vector() == cpu.params().values().to_vector());

  cpu.train();
  gpu.train();
  REQUIRE(gpu.steps_done() == cpu.steps_done());
  const std::vector<nlohmann::json> a = read_metrics(on_gpu), b = read_metrics(on_cpu);
  REQUIRE(a.size() == size_t(epochs));
  REQUIRE(b.size() == size_t(epochs));
  // float32 rounding differs by ~1e-7 per op; through 60 Adam steps it grows to ~1e-5 relative.
  // A wrong kernel is off by far more (the parity suite's bounds are per op).
  constexpr double kRel = 1e-3;
  for (size_t e = 0; e < a.size(); ++e) {
    for (const char* part : {"train", "validation"})
      for (const char* term : {"elbo", "recon", "kl"}) {
        const double x = a[e][part][term], y = b[e][part][term];
        std::printf("  epoch %zu %s %s: gpu %.9g cpu %.9g\n", e + 1, part, term, x, y);
        CHECK(difference(x, y) <= kRel);
      }
    // One of the 40 validation images may land on the other side of a centroid boundary.
    CHECK(std::abs(double(a[e]["validation"]["distance_error"]) - double(b[e]["validation"]["distance_error"])) <=
          1.0 / 40 + 1e-12);
  }
  const std::vector<double> pg = gpu.params().values().to_vector(), pc = cpu.params().values().to_vector();
  double worst = 0, scale = 0;
  for (size_t i = 0; i < pg.size(); ++i) {
    worst = std::max(worst, std::abs(pg[i] - pc[i]));
    scale = std::max(scale, std::abs(pc[i]));
  }
  std::printf("  parameters after %d epochs: worst |gpu - cpu| %.3g (largest |parameter| %.3g)\n", epochs, worst, scale);
  CHECK(worst <= kRel * scale);

  // The GPU run's checkpoint, resumed on the CPU: the GPU's parameters, bit for bit, and it trains on.
  Trainer continued(small_model(), small_training(on_gpu, epochs + 1), s);
  continued.resume(on_gpu + "/checkpoint.safetensors");
  CHECK(continued.epochs_done() == epochs);
  CHECK(continued.params().values().to_vector() == pg);
  // r of the same parameters on both devices.
  const std::vector<float> r_gpu = gpu.represent(s.test), r_cpu = continued.represent(s.test);
  REQUIRE(r_gpu.size() == r_cpu.size());
  double r_worst = 0, r_scale = 0;
  for (size_t i = 0; i < r_gpu.size(); ++i) {
    r_worst = std::max(r_worst, double(std::abs(r_gpu[i] - r_cpu[i])));
    r_scale = std::max(r_scale, double(std::abs(r_cpu[i])));
  }
  std::printf("  r of the test images: worst |gpu - cpu| %.3g (largest |r| %.3g)\n", r_worst, r_scale);
  CHECK(r_worst <= 1e-4 * r_scale);
  continued.train();
  CHECK(continued.epochs_done() == epochs + 1);

  std::filesystem::remove_all(on_cpu);
  std::filesystem::remove_all(on_gpu);
}

TEST_CASE("train on the GPU: a NaN stops training, naming the step, the op and the last good checkpoint", "[gpu][train]") {
  // The GPU's training steps run without value checks (each would be a host wait); with the loss
  // read at once, a step whose loss terms come out NaN is run again with them, so the message
  // still names the op. Read a step late (the default), the step is named but not the op.
  const bool late = GENERATE(false, true);
  const data::Splits s = synthetic_splits();
  const std::string dir = temp_dir("gpu_nan");
  TrainConfig config = small_training(dir, 1);
  config.device = Device::cuda;
  config.late_reads = late;
  {
    Trainer t(small_model(), config, s);
    t.train();
  }
  config.epochs = 2;
  Trainer t(small_model(), config, s);
  t.resume(dir + "/checkpoint.safetensors");
  Tensor values = t.params().values().to(Device::cpu);
  values.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
  t.params().values().copy_from(values);
  CHECK_THROWS_WITH(t.train(), Contains("epoch 2") && Contains("step 20") &&
                                   Contains(late ? "is not finite (read a step late" : "contains NaN or Inf") &&
                                   Contains(dir + "/checkpoint.safetensors"));
  CHECK(value_checks());  // restored after the step
  std::filesystem::remove_all(dir);
}

TEST_CASE("train on the GPU: the loss read a step late logs what eager reads log, with no host wait", "[gpu][train]") {
  const data::Splits s = synthetic_splits();
  const std::string eager_dir = temp_dir("gpu_eager"), late_dir = temp_dir("gpu_late");
  TrainConfig eager_config = small_training(eager_dir, 2), late_config = small_training(late_dir, 2);
  eager_config.device = late_config.device = Device::cuda;
  eager_config.late_reads = false;
  REQUIRE(late_config.late_reads);  // the default
  Trainer eager(small_model(), eager_config, s), late(small_model(), late_config, s);
  uint64_t waits = cuda_host_waits();
  eager.train();
  const uint64_t eager_waits = cuda_host_waits() - waits;
  waits = cuda_host_waits();
  late.train();
  const uint64_t late_waits = cuda_host_waits() - waits;
  std::printf("  host waits: eager %llu, late %llu, over %lld steps\n", (unsigned long long)eager_waits,
              (unsigned long long)late_waits, (long long)late.steps_done());
  REQUIRE(late.steps_done() == eager.steps_done());
  CHECK(eager_waits - late_waits == 2 * uint64_t(late.steps_done()));  // log p(x|r,v) and KL: one wait each
  const std::vector<nlohmann::json> a = read_metrics(late_dir), b = read_metrics(eager_dir);
  REQUIRE(a.size() == 2);
  REQUIRE(b.size() == 2);
  for (size_t e = 0; e < a.size(); ++e) {
    CHECK(a[e]["train"] == b[e]["train"]);  // bit for bit: the same sums, added in the same order
    CHECK(a[e]["validation"] == b[e]["validation"]);
  }
  CHECK(late.params().values().to_vector() == eager.params().values().to_vector());
  std::filesystem::remove_all(eager_dir);
  std::filesystem::remove_all(late_dir);
}
