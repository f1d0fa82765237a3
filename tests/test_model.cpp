// The EquiVAE graph and its training loop on a small synthetic data set: the objective improves,
// r is invariant to the order of its set, v is used (KL > 0), checkpoints round-trip, a corrupt
// one is refused, resume continues bit for bit, and a NaN stops training with a clear message.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "tests/gradcheck.h"
#include "tests/synthetic.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

using namespace equivae;
using namespace equivae::testing;
using Catch::Contains;

TEST_CASE("model: parameter count and sizes of the default MNIST and SVHN models", "[model]") {
  ParameterStore p;
  EquiVAE mnist(ModelConfig{}, p);
  CHECK(mnist.feature_sizes() == std::vector<int64_t>{28, 14, 7, 4, 2});
  CHECK(p.numel() == 516353);  // the PyTorch peer (bench/torch_peer.py) counts the same
  ParameterStore q;
  ModelConfig svhn;
  svhn.channels = 3, svhn.image_size = 32, svhn.likelihood = Likelihood::gaussian;
  EquiVAE s(svhn, q);
  CHECK(s.feature_sizes() == std::vector<int64_t>{32, 16, 8, 4, 2});
  q.allocate(1);
  const Var out = s.decode(Var(Tensor::zeros({2, 16})), Var(Tensor::zeros({2, 16})));
  CHECK(out.shape() == Shape{2, 3, 32, 32});
}

TEST_CASE("model: initialisation schemes draw within their bounds, fill them, and zero the biases", "[model]") {
  const InitScheme scheme = GENERATE(InitScheme::torch, InitScheme::he, InitScheme::glorot);
  INFO("scheme " << init_scheme_name(scheme));
  ParameterStore p(scheme);
  EquiVAE model(ModelConfig{}, p);
  p.allocate(7);
  const auto all = p.values().to_vector();
  int weights = 0;
  for (const auto& e : p.entries()) {
    INFO(e.name);
    const bool bias = e.shape.size() == 1;
    double largest = 0, squares = 0;
    const int64_t n = shape_numel(e.shape);
    for (int64_t i = 0; i < n; ++i) {
      const double v = all[size_t(e.offset + i)];
      largest = std::max(largest, std::abs(v)), squares += v * v;
    }
    if (bias) {
      if (scheme == InitScheme::torch) CHECK(largest > 0);  // U(+-1/sqrt(fan_in)), like the weights
      else CHECK(largest == 0);
      continue;
    }
    ++weights;
    // Fans as PyTorch counts them from the shape: dense [out, in], conv [out, in, k, k] and
    // transposed conv [in, out, k, k] alike take fan_in from dim 1 and fan_out from dim 0.
    const int64_t k = e.shape.size() == 4 ? e.shape[2] * e.shape[3] : 1;
    const double fan_in = double(e.shape[1] * k), fan_out = double(e.shape[0] * k);
    const double bound = scheme == InitScheme::torch ? 1 / std::sqrt(fan_in)
                         : scheme == InitScheme::he  ? std::sqrt(6 / fan_in)
                                                     : std::sqrt(6 / (fan_in + fan_out));
    CHECK(largest <= bound * (1 + 1e-6));
    if (n >= 1000) {  // large tensors fill the interval: max near the bound, variance bound^2 / 3
      CHECK(largest >= 0.95 * bound);
      CHECK(squares / double(n) == Approx(bound * bound / 3).epsilon(0.15));
    }
  }
  CHECK(weights == 28);  // every weight tensor of the model: h 6, g 2, e_x 6, e_r 1, q 4, p 9
}

TEST_CASE("model: the torch, he and glorot schemes differ and the names round-trip", "[model]") {
  for (const char* name : {"torch", "he", "glorot"}) CHECK(init_scheme_name(init_scheme_from_name(name)) == name);
  CHECK_THROWS_WITH(init_scheme_from_name("kaiming"), Contains("unknown initialisation scheme 'kaiming'"));
  // A dense [128, 256] weight: torch 1/16, he sqrt(6/256), glorot sqrt(6/384).
  const Init w = Init::weights(256, 128);
  CHECK(w.bound(InitScheme::torch) == Approx(1.0 / 16));
  CHECK(w.bound(InitScheme::he) == Approx(std::sqrt(6.0 / 256)));
  CHECK(w.bound(InitScheme::glorot) == Approx(std::sqrt(6.0 / 384)));
  CHECK(Init::biases(256).bound(InitScheme::torch) == Approx(1.0 / 16));
  CHECK(Init::biases(256).bound(InitScheme::he) == 0);
}

TEST_CASE("model: r_y does not depend on the order of its set", "[model]") {
  ParameterStore p;
  EquiVAE model(small_model(), p);
  p.allocate(3, DType::f64);
  std::mt19937_64 rng(4);
  const Var images(testing::random_uniform({5, 1, 8, 8}, rng, 0, 1));
  const Tensor offsets = Tensor::from_indices({0, 4}), perm_offsets = Tensor::from_indices({0, 4});
  const auto a = model.class_latent(images, offsets, Tensor::from_indices({0, 1, 2, 3})).value().to_vector();
  const auto b = model.class_latent(images, perm_offsets, Tensor::from_indices({3, 1, 0, 2})).value().to_vector();
  const auto c = model.class_latent(images, offsets, Tensor::from_indices({0, 1, 2, 4})).value().to_vector();
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == Approx(b[i]).epsilon(1e-12));
  bool differs = false;  // and it does depend on the members
  for (size_t i = 0; i < a.size(); ++i) differs = differs || std::abs(a[i] - c[i]) > 1e-9;
  CHECK(differs);
}

TEST_CASE("model: gradient check of the whole EquiVAE objective (small config, double)", "[model][gradcheck]") {
  ParameterStore p;
  ModelConfig cfg = small_model();
  cfg.filters = {2, 2, 2, 2, 2};
  cfg.hidden = 4;
  EquiVAE model(cfg, p);
  p.allocate(8, DType::f64);
  std::mt19937_64 rng(6);
  const Tensor x = testing::random_uniform({2, 1, 8, 8}, rng, 0, 1);
  const Tensor set_images = testing::random_uniform({3, 1, 8, 8}, rng, 0, 1);
  const Tensor offsets = Tensor::from_indices({0, 1, 3}), members = Tensor::from_indices({2, 0, 1});
  // Every parameter's gradient, sampled: the analytic one from the parameter buffer against
  // central differences of the objective in the values buffer.
  Var loss;
  {
    RandomStream noise{1, 0};
    const Var r = model.class_latent(Var(set_images), offsets, members);
    const auto t = model.terms(Var(x), x, r, noise);
    loss = sum(sub(t.loglik, t.kl));
  }
  loss.backward();
  auto eval = [&] {
    NoGradGuard g;
    RandomStream noise{1, 0};
    const Var r = model.class_latent(Var(set_images), offsets, members);
    const auto t = model.terms(Var(x), x, r, noise);
    return sum(sub(t.loglik, t.kl)).value().item();
  };
  testing::check_parameter_gradients(p.values(), p.grads(), eval, 150, 7);
}

// A CUDA graph's step has fixed shapes (train/objective.h, supervised_indices): a short last
// batch runs padded to the batch size with copies of its first row. Its loss, reported terms and
// gradients must be the batch's own; run here on the CPU, where the padded step runs too.
TEST_CASE("objective: a batch padded to a step of fixed shapes keeps its own loss and gradients", "[train]") {
  const data::Splits s = synthetic_splits();
  ParameterStore p;
  EquiVAE model(small_model(), p);
  p.allocate(3);
  const TrainConfig c = small_training("", 1);
  const DeviceImages train(s.train, Device::cpu);
  Objective objective(model, c, train);
  const std::vector<int64_t> order = data::shuffled(objective.labelled_rows(), 11, 0);
  constexpr int64_t kFixed = 9;
  for (const int64_t n : {int64_t(1), int64_t(5), kFixed}) {
    INFO(n << " rows in a step of " << kFixed);
    const std::vector<int64_t> rows(order.begin(), order.begin() + n);
    constexpr uint64_t kStep = 3;
    p.zero_grad();
    Objective::StepResult own = objective.supervised(train, objective.train_classes(), rows, c.seed, kStep);
    own.loss.backward();
    own.read();
    const double own_loss = own.loss.value().item();
    const std::vector<double> own_grads = p.grads().to_vector();

    p.zero_grad();
    const Objective::Indices ix = objective.supervised_indices(s.train, objective.train_classes(), rows, c.seed, kStep, kFixed);
    CHECK(ix.n == n);
    CHECK(ix.rows == kFixed);
    CHECK(int64_t(ix.gathered.size()) == kFixed + objective.max_set_images(kFixed));
    IndexUpload upload(Device::cpu);
    Objective::StepResult padded =
        objective.supervised_step(train, ix, upload.upload(ix.parts()), RandomStream{c.seed, kStep << 32});
    padded.loss.backward();
    padded.read();
    CHECK(padded.means);
    CHECK(padded.loss.value().item() == Approx(own_loss).epsilon(1e-5));
    CHECK(padded.loglik_sum == Approx(own.loglik_sum).epsilon(1e-5));
    CHECK(padded.kl_sum == Approx(own.kl_sum).epsilon(1e-5));
    const std::vector<double> grads = p.grads().to_vector();
    double largest = 0, worst = 0;
    for (size_t i = 0; i < grads.size(); ++i) {
      largest = std::max(largest, std::abs(own_grads[i]));
      worst = std::max(worst, std::abs(grads[i] - own_grads[i]));
    }
    CHECK(largest > 0);
    CHECK(worst <= 1e-5 * largest);
  }
  CHECK_THROWS_WITH(objective.supervised_indices(s.train, objective.train_classes(), order, c.seed, 0, kFixed),
                    Contains("cannot run as a step of"));
}

TEST_CASE("train: the objective improves and v is used (KL stays above 0)", "[train]") {
  const data::Splits s = synthetic_splits();
  const std::string out = temp_dir("improves");
  TrainConfig cfg = small_training(out, 30);
  cfg.double_every = 0;
  Trainer t(small_model(), cfg, s);
  const ElboStats before = t.evaluate_elbo(s.validation);
  t.train();
  const ElboStats after = t.evaluate_elbo(s.validation);
  CHECK(after.elbo > before.elbo + 5.0);  // nats per image
  CHECK(after.kl > 0.5);  // v carries the style (about 1 nat for the inversion bit), no collapse
  std::ifstream metrics(out + "/metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(metrics, line);) lines += line.find("\"distance_error\"") != std::string::npos;
  CHECK(lines == 30);
  std::filesystem::remove_all(out);
}

TEST_CASE("train: the batch size doubles on schedule up to its cap", "[train]") {
  TrainConfig c = small_training("", 6);
  CHECK(c.batch_size_for(0) == 16);
  CHECK(c.batch_size_for(1) == 16);
  CHECK(c.batch_size_for(2) == 32);
  CHECK(c.batch_size_for(5) == 32);  // capped at max_batch_size
  c.double_every = 0;
  CHECK(c.batch_size_for(40) == 16);
}

TEST_CASE("train: resume continues bit for bit", "[train]") {
  const ResumeComparison c = compare_resumed_run(small_model(), small_training, synthetic_splits(), 3, "resume");
  CHECK(c.epochs_after_resume == 1);
  CHECK(c.steps_resumed == c.steps_straight);
  CHECK(c.differing == 0);
}

namespace {

// The validation distance error of every epoch in a run folder's metrics.jsonl.
std::vector<double> validation_errors(const std::string& out) {
  std::ifstream metrics(out + "/metrics.jsonl");
  std::vector<double> errors;
  for (std::string line; std::getline(metrics, line);)
    errors.push_back(nlohmann::json::parse(line).at("validation").at("distance_error"));
  return errors;
}

}  // namespace

TEST_CASE("train: a resumed run's metrics.jsonl has each epoch once, those after its checkpoint dropped", "[train]") {
  const std::string dir = temp_dir("metrics_resume");
  const data::Splits s = synthetic_splits();  // the trainers keep a reference
  {
    Trainer first(small_model(), small_training(dir, 2), s);
    first.train();
  }
  // A run stopped after writing epoch 3's metrics line but before its checkpoint.
  {
    std::ofstream(dir + "/metrics.jsonl", std::ios::app) << R"({"epoch":3,"validation":{"distance_error":7}})" << "\n";
  }
  Trainer resumed(small_model(), small_training(dir, 3), s);
  resumed.resume(dir + "/checkpoint.safetensors");
  resumed.train();
  std::ifstream metrics(dir + "/metrics.jsonl");
  std::vector<int64_t> epochs;
  for (std::string line; std::getline(metrics, line);) epochs.push_back(nlohmann::json::parse(line).at("epoch"));
  CHECK(epochs == std::vector<int64_t>{1, 2, 3});
  CHECK(validation_errors(dir).back() < 1);  // epoch 3's own line, not the stale one
  std::filesystem::remove_all(dir);
}

TEST_CASE("train: the best epoch is chosen on validation alone, kept in best.safetensors, and survives resume",
          "[train]") {
  data::Splits s = synthetic_splits();
  // Random validation labels: the validation error then wanders from epoch to epoch, so the
  // lowest is not simply the last epoch's.
  std::mt19937_64 relabel(1);
  for (int32_t& y : s.validation.labels) y = int32_t(relabel() % 4);
  const int epochs = 6;
  const std::string a = temp_dir("best_a"), b = temp_dir("best_b"), c = temp_dir("best_c");
  Trainer t(small_model(), small_training(a, epochs), s);
  t.train();
  const std::vector<double> errors = validation_errors(a);
  REQUIRE(errors.size() == size_t(epochs));
  const int lowest = int(std::min_element(errors.begin(), errors.end()) - errors.begin()) + 1;
  INFO("validation errors " << errors[0] << " " << errors[1] << " " << errors[2] << " " << errors[3] << " "
                            << errors[4] << " " << errors[5]);
  REQUIRE(lowest < epochs);  // the setup tells "best" from "last"
  CHECK(t.best_epoch() == lowest);
  CHECK(t.best_validation_error() == errors[size_t(lowest - 1)]);
  CHECK(read_checkpoint_metadata(a + "/best.safetensors").at("epoch") == std::to_string(lowest));
  const auto last = t.params().values().to_vector();
  t.use_best();
  CHECK(t.params().values().to_vector() != last);
  CHECK(t.distance_error(s.validation) == errors[size_t(lowest - 1)]);  // that epoch's parameters

  // Another test set (inverted labels) changes nothing: the test set is never looked at.
  data::Splits other = s;
  for (int32_t& y : other.test.labels) y = 3 - y;
  Trainer u(small_model(), small_training(b, epochs), other);
  u.train();
  u.use_best();
  CHECK(u.best_epoch() == t.best_epoch());
  CHECK(differing_parameters(t, u) == 0);

  // Stopped after epoch 3 and resumed in a fresh trainer: the same best epoch and parameters.
  { Trainer first(small_model(), small_training(c, 3), s); first.train(); }
  Trainer resumed(small_model(), small_training(c, epochs), s);
  resumed.resume(c + "/checkpoint.safetensors");
  resumed.train();
  resumed.use_best();
  CHECK(resumed.best_epoch() == t.best_epoch());
  CHECK(differing_parameters(t, resumed) == 0);

  // A best.safetensors of another epoch beside the checkpoint is refused, naming both files.
  const std::string d = temp_dir("best_d");
  std::filesystem::create_directories(d);
  std::filesystem::copy_file(a + "/checkpoint.safetensors", d + "/checkpoint.safetensors");
  std::filesystem::copy_file(a + "/checkpoint.safetensors", d + "/best.safetensors");  // epoch 6
  Trainer mixed(small_model(), small_training(d, epochs), s);
  CHECK_THROWS_WITH(mixed.resume(d + "/checkpoint.safetensors"),
                    Contains("its best epoch is " + std::to_string(lowest)) && Contains("best.safetensors holds epoch 6"));
  for (const auto& dir : {a, b, c, d}) std::filesystem::remove_all(dir);
}

TEST_CASE("train: --average-from keeps the mean of the epoch-end parameters, chooses on it, and survives resume",
          "[train]") {
  data::Splits s = synthetic_splits();
  std::mt19937_64 relabel(2);  // a wandering validation error, as above
  for (int32_t& y : s.validation.labels) y = int32_t(relabel() % 4);
  const int epochs = 5, from = 2;
  auto training = [&](const std::string& out, int e) {
    TrainConfig c = small_training(out, e);
    c.average_from = from;
    return c;
  };
  const std::string a = temp_dir("average_a"), b = temp_dir("average_b");
  Trainer straight(small_model(), training(a, epochs), s);
  straight.train();

  // The same run one epoch per trainer, each resumed from the last one's checkpoint, keeping
  // every epoch's parameters.
  std::vector<std::vector<double>> at_epoch;
  for (int e = 1; e <= epochs; ++e) {
    Trainer t(small_model(), training(b, e), s);
    if (e > 1) t.resume(b + "/checkpoint.safetensors");
    t.train();
    at_epoch.push_back(t.params().values().to_vector());
    if (e == epochs) {
      CHECK(differing_parameters(straight, t) == 0);
      CHECK(t.best_epoch() == straight.best_epoch());
    }
  }
  // The checkpoint's "average" is the mean of epochs 2-5's parameters.
  Trainer reader(small_model(), training("", epochs), s);
  Tensor average;
  load_checkpoint(a + "/checkpoint.safetensors", reader.params(), nullptr, &average);
  const std::vector<double> got = average.to_vector();
  REQUIRE(got.size() == at_epoch[0].size());
  double worst = 0, largest = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double mean = 0;
    for (int e = from; e <= epochs; ++e) mean += at_epoch[size_t(e - 1)][i] / double(epochs - from + 1);
    worst = std::max(worst, std::abs(got[i] - mean)), largest = std::max(largest, std::abs(mean));
  }
  CHECK(largest > 0);
  CHECK(worst <= 1e-6 * largest);
  CHECK(got != at_epoch.back());

  // The best epoch: epoch 1's own parameters, or from epoch 2 on the mean's, on validation alone.
  std::ifstream metrics(a + "/metrics.jsonl");
  std::vector<double> candidates;
  for (std::string line; std::getline(metrics, line);) {
    const nlohmann::json v = nlohmann::json::parse(line).at("validation");
    const bool averaged = int(candidates.size()) + 1 >= from;
    CHECK(v.contains("averaged_distance_error") == averaged);
    candidates.push_back(averaged ? v.at("averaged_distance_error") : v.at("distance_error"));
  }
  REQUIRE(candidates.size() == size_t(epochs));
  const size_t lowest = size_t(std::min_element(candidates.begin(), candidates.end()) - candidates.begin());
  CHECK(straight.best_epoch() == int(lowest) + 1);
  straight.use_best();
  CHECK(straight.distance_error(s.validation) == candidates[lowest]);

  // Resuming an averaging run from a checkpoint without the mean is refused, naming the tensor.
  const std::string c = temp_dir("average_c");
  { Trainer plain(small_model(), small_training(c, from), s); plain.train(); }
  Trainer wrong(small_model(), training(c, epochs), s);
  CHECK_THROWS_WITH(wrong.resume(c + "/checkpoint.safetensors"), Contains("tensor average is missing"));
  for (const auto& dir : {a, b, c}) std::filesystem::remove_all(dir);
}

TEST_CASE("train: checkpoints round-trip and corrupt ones are refused", "[train][checkpoint]") {
  const data::Splits s = synthetic_splits();
  const std::string dir = temp_dir("ckpt");
  Trainer t(small_model(), small_training(dir, 1), s);
  t.train();
  const std::string path = t.checkpoint_path();
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));  // written atomically
  Trainer u(small_model(), small_training(dir, 1), s);
  u.resume(path);
  CHECK(u.params().values().to_vector() == t.params().values().to_vector());

  auto corrupt = [&](const std::string& name, auto&& edit) {
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    edit(bytes);
    const std::string bad = dir + "/" + name;
    std::ofstream(bad, std::ios::binary) << bytes;
    return bad;
  };
  const std::string flipped = corrupt("flipped.safetensors", [](std::string& b) { b[b.size() - 7] ^= 0x40; });
  CHECK_THROWS_WITH(u.resume(flipped), Contains("flipped.safetensors") && Contains("CRC"));
  const std::string truncated = corrupt("truncated.safetensors", [](std::string& b) { b.resize(b.size() / 2); });
  CHECK_THROWS_WITH(u.resume(truncated), Contains("truncated.safetensors"));
  const std::string garbage = corrupt("garbage.safetensors", [](std::string& b) { b = "not a checkpoint"; });
  CHECK_THROWS_WITH(u.resume(garbage), Contains("garbage.safetensors"));
  CHECK_THROWS_WITH(u.resume(dir + "/missing.safetensors"), Contains("missing.safetensors") && Contains("opened"));
  ModelConfig other = small_model();
  other.hidden = 12;
  Trainer v(other, small_training(dir, 1), s);
  CHECK_THROWS_WITH(v.resume(path), Contains("model"));
  // A refused checkpoint leaves the model as it was.
  CHECK(u.params().values().to_vector() == t.params().values().to_vector());
  std::filesystem::remove_all(dir);
}

TEST_CASE("train: a NaN stops training, naming the step, the term and the last good checkpoint", "[train]") {
  const data::Splits s = synthetic_splits();
  const std::string dir = temp_dir("nan");
  {
    Trainer t(small_model(), small_training(dir, 1), s);
    t.train();
  }
  Trainer t(small_model(), small_training(dir, 2), s);
  t.resume(dir + "/checkpoint.safetensors");
  t.params().values().data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(t.train(), Contains("epoch 2") && Contains("step 20") && Contains("NaN") &&
                                   Contains(dir + "/checkpoint.safetensors"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("train: data that does not fit the model is refused", "[train]") {
  const data::Splits s = synthetic_splits();
  ModelConfig m = small_model();
  m.image_size = 28;
  CHECK_THROWS_WITH(Trainer(m, small_training("", 1), s), Contains("syn/train") && Contains("does not fit"));
}
