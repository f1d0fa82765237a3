// The classifiers SPEC.md section 4 compares r against (train/classifiers.h): each learns a
// separable problem, stays at chance where labels carry no signal, keeps the epoch chosen on
// validation, and repeats itself exactly for the same seed.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include <nlohmann/json.hpp>

#include "tests/synthetic.h"
#include "train/checkpoint.h"
#include "train/classifiers.h"
#include "train/evaluation.h"

using namespace equivae;
using namespace equivae::testing;

namespace {

// n points of `classes` Gaussian blobs in `dim` dimensions (unit noise, means `spread` apart
// along their own axis); with shuffle_labels the labels are drawn independently of the points.
Features blobs(int64_t n, int64_t dim, int classes, double spread, uint64_t seed, bool shuffle_labels = false) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.0f, 1.0f);
  std::uniform_int_distribution<int> label(0, classes - 1);
  Features f;
  f.dim = dim;
  for (int64_t i = 0; i < n; ++i) {
    const int y = int(i % classes);
    for (int64_t k = 0; k < dim; ++k) f.x.push_back(noise(rng) + (k == y ? float(spread) : 0.0f));
    f.y.push_back(shuffle_labels ? label(rng) : y);
  }
  return f;
}

ClassifierConfig quiet(int epochs) {
  ClassifierConfig c;
  c.epochs = epochs;
  c.batch_size = 32;
  c.progress = false;
  c.seed = 3;
  return c;
}

}  // namespace

TEST_CASE("classifiers: the dense classifier on features learns blobs and repeats itself", "[classifiers]") {
  // 3 classes 4 apart: the Bayes error is about 1 %.
  const Features train = blobs(600, 5, 3, 4.0, 1), val = blobs(300, 5, 3, 4.0, 2), test = blobs(300, 5, 3, 4.0, 3);
  const ClassifierResult a = train_feature_classifier(train, val, test, 3, quiet(8));
  CHECK(a.test_error < 0.05);
  CHECK(a.validation_error < 0.05);
  CHECK(a.best_epoch >= 1);
  CHECK(a.best_epoch <= 8);
  const ClassifierResult b = train_feature_classifier(train, val, test, 3, quiet(8));
  CHECK(b.test_error == a.test_error);
  CHECK(b.validation_error == a.validation_error);
  CHECK(b.best_epoch == a.best_epoch);
}

TEST_CASE("classifiers: labels independent of the features stay at chance", "[classifiers]") {
  const Features train = blobs(600, 5, 3, 4.0, 1, true), val = blobs(300, 5, 3, 4.0, 2, true),
                 test = blobs(300, 5, 3, 4.0, 3, true);
  const ClassifierResult r = train_feature_classifier(train, val, test, 3, quiet(4));
  CHECK(r.test_error > 0.5);  // chance is 2/3
}

TEST_CASE("classifiers: the benchmark classifier learns the synthetic glyphs from images", "[classifiers]") {
  const data::Splits s = synthetic_splits();  // 4 glyph classes, half of them drawn inverted
  ClassifierConfig c = quiet(30);
  c.dropout = 0.2;
  const ClassifierResult r = train_benchmark_classifier(s, small_model(), c);
  INFO("validation " << r.validation_error << ", test " << r.test_error << ", epoch " << r.best_epoch);
  CHECK(r.test_error < 0.1);  // chance is 3/4
  CHECK(r.validation_error < 0.1);
}

TEST_CASE("classifiers: a benchmark run resumed from its epoch checkpoint ends bit for bit as an uninterrupted one",
          "[classifiers]") {
  const data::Splits s = synthetic_splits();
  const int average_from = GENERATE(0, 2);  // with weight averaging, stopped where the mean starts
  INFO("average_from " << average_from);
  const std::string straight_dir = temp_dir("benchmark_straight"), resumed_dir = temp_dir("benchmark_resumed");
  auto config = [&](const std::string& dir, int epochs, const std::string& resume_from) {
    ClassifierConfig c = quiet(epochs);
    c.dropout = 0.2;
    c.checkpoint_dir = dir, c.resume_from = resume_from, c.average_from = average_from;
    c.run.model = small_model(), c.run.benchmark = true;
    return c;
  };
  const ClassifierResult straight = train_benchmark_classifier(s, small_model(), config(straight_dir, 4, ""));
  train_benchmark_classifier(s, small_model(), config(resumed_dir, 2, ""));  // stopped after epoch 2
  const std::string stopped = resumed_dir + "/checkpoint.safetensors";
  const RunState state = read_run_state(stopped);
  CHECK(state.epoch == 2);
  CHECK(state.benchmark);
  CHECK(state.step > 0);
  const ClassifierResult resumed = train_benchmark_classifier(s, small_model(), config(resumed_dir, 4, stopped));
  CHECK(resumed.best_epoch == straight.best_epoch);
  CHECK(resumed.validation_error == straight.validation_error);
  CHECK(resumed.test_error == straight.test_error);
  // Parameters, Adam's moments and step, the epoch, the best epoch, the running mean and the
  // metrics log: the same files, byte for byte.
  auto bytes = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  for (const char* file : {"/checkpoint.safetensors", "/best.safetensors", "/metrics.jsonl"}) {
    INFO(file);
    const std::string a = bytes(straight_dir + file), b = bytes(resumed_dir + file);
    CHECK(a.size() > 100);
    CHECK(a == b);
  }
  // An EquiVAE reader refuses the benchmark's checkpoint, naming what it holds.
  CHECK_THROWS_WITH(load_model(resumed_dir + "/best.safetensors", Device::cpu), Catch::Contains("benchmark classifier"));
  std::filesystem::remove_all(straight_dir);
  std::filesystem::remove_all(resumed_dir);
}

TEST_CASE("classifiers: --average-from chooses the benchmark's epoch on the mean of its epoch-end parameters",
          "[classifiers]") {
  data::Splits s = synthetic_splits();
  std::mt19937_64 relabel(5);  // a validation error that wanders from epoch to epoch
  for (int32_t& y : s.validation.labels) y = int32_t(relabel() % 4);
  const int epochs = 5, from = 2;
  const std::string dir = temp_dir("benchmark_average");
  auto config = [&](int e) {
    ClassifierConfig c = quiet(e);
    c.checkpoint_dir = dir, c.average_from = from;
    if (e > 1) c.resume_from = dir + "/checkpoint.safetensors";
    c.run.model = small_model(), c.run.benchmark = true;
    return c;
  };
  // One epoch per call, each resumed from the last one's checkpoint, reading every epoch's
  // parameters and, from epoch 2, the checkpoint's running mean.
  ParameterStore params(small_model().init);
  BenchmarkClassifier::declare(params, small_model());
  params.allocate(1, DType::f32, Device::cpu);
  std::vector<std::vector<double>> at_epoch;
  std::vector<double> average;
  ClassifierResult result;
  for (int e = 1; e <= epochs; ++e) {
    result = train_benchmark_classifier(s, small_model(), config(e));
    Tensor mean;
    load_checkpoint(dir + "/checkpoint.safetensors", params, nullptr, e >= from ? &mean : nullptr);
    at_epoch.push_back(params.values().to_vector());
    if (e >= from) average = mean.to_vector();
  }
  // The mean of epochs from..last of the per-epoch parameters.
  auto mean_of = [&](int last) {
    std::vector<double> m(at_epoch[0].size(), 0.0);
    for (int e = from; e <= last; ++e)
      for (size_t i = 0; i < m.size(); ++i) m[i] += at_epoch[size_t(e - 1)][i] / double(last - from + 1);
    return m;
  };
  auto worst_difference = [](const std::vector<double>& a, const std::vector<double>& b) {
    REQUIRE(a.size() == b.size());
    double worst = 0, largest = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i])), largest = std::max(largest, std::abs(b[i]));
    CHECK(largest > 0);
    return worst / largest;
  };
  CHECK(worst_difference(average, mean_of(epochs)) <= 1e-6);
  CHECK(average != at_epoch.back());

  // Epoch 1 offers its own parameters, epochs 2-5 their mean; the best is the lowest on validation.
  std::ifstream metrics(dir + "/metrics.jsonl");
  std::vector<double> candidates;
  for (std::string line; std::getline(metrics, line);) {
    const nlohmann::json v = nlohmann::json::parse(line).at("validation");
    const bool averaged = int(candidates.size()) + 1 >= from;
    CHECK(v.contains("averaged_error") == averaged);
    candidates.push_back(averaged ? v.at("averaged_error") : v.at("error"));
  }
  REQUIRE(candidates.size() == size_t(epochs));
  const size_t lowest = size_t(std::min_element(candidates.begin(), candidates.end()) - candidates.begin());
  CHECK(result.best_epoch == int(lowest) + 1);
  CHECK(result.validation_error == candidates[lowest]);
  // best.safetensors holds the chosen candidate: the mean up to the best epoch, or epoch 1's own.
  load_checkpoint(dir + "/best.safetensors", params, nullptr);
  const std::vector<double> chosen = result.best_epoch >= from ? mean_of(result.best_epoch) : at_epoch[0];
  CHECK(worst_difference(params.values().to_vector(), chosen) <= 1e-6);
  std::filesystem::remove_all(dir);
}
