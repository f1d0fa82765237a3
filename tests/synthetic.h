// A small synthetic data set, model and schedule for training tests (tests/test_model.cpp on the
// CPU, tests/gpu/test_train.cpp on the GPU): seconds to train, yet a real EquiVAE problem.
#pragma once
#include <algorithm>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "train/trainer.h"

namespace equivae::testing {

// 8x8 one-channel images of 4 classes. Class (content) = a fixed random binary 8x8 glyph; style =
// whether the image is drawn inverted, a bit that only x itself (so only v) can tell the
// decoder; 2 % of pixels are flipped.
inline data::Dataset synthetic(int64_t n, uint64_t seed, const std::string& name) {
  std::mt19937_64 glyph_rng(99), rng(seed);
  std::bernoulli_distribution half(0.5), flip(0.02);
  std::vector<std::vector<int>> glyphs(4, std::vector<int>(64));
  for (auto& g : glyphs)
    for (int& v : g) v = half(glyph_rng);
  data::Dataset d;
  d.name = name;
  d.n = n, d.channels = 1, d.height = 8, d.width = 8, d.num_classes = 4;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t y = int32_t(i % 4);
    d.labels.push_back(y);
    const bool inverted = half(rng);
    for (int v : glyphs[size_t(y)]) d.images.push_back(float((v != int(inverted)) != flip(rng)));
  }
  return d;
}

inline data::Splits synthetic_splits() { return {synthetic(320, 1, "syn/train"), synthetic(40, 2, "syn/val"), synthetic(40, 3, "syn/test")}; }

inline ModelConfig small_model() {
  ModelConfig m;
  m.image_size = 8;
  m.filters = {8, 8, 16, 16, 16};
  m.hidden = 32;
  m.d_r = 3;
  m.d_v = 2;
  m.num_classes = 4;
  return m;
}

inline TrainConfig small_training(const std::string& out, int epochs) {
  TrainConfig t;
  t.epochs = epochs;
  t.batch_size = 16;
  t.double_every = 2;
  t.max_batch_size = 32;
  t.m_max = 3;
  t.lr = 2e-3;
  t.seed = 5;
  t.out_dir = out;
  t.progress = false;
  t.eval_batch_size = 20;
  return t;
}

// How many parameter values of two trainers differ (0: bit for bit the same run).
inline size_t differing_parameters(Trainer& a, Trainer& b) {
  const auto x = a.params().values().to_vector(), y = b.params().values().to_vector();
  if (x.size() != y.size()) return std::max(x.size(), y.size());
  size_t differing = 0;
  for (size_t i = 0; i < x.size(); ++i) differing += x[i] != y[i];
  return differing;
}

inline std::string temp_dir(const std::string& name);

// A run of `epochs` epochs straight, against the same run stopped after epoch 1 and resumed from
// its checkpoint in a fresh trainer.
struct ResumeComparison {
  int epochs_after_resume = 0;
  uint64_t steps_straight = 0, steps_resumed = 0;
  size_t differing = 0;  // parameter values that differ at the end
};
inline ResumeComparison compare_resumed_run(const ModelConfig& model,
                                            const std::function<TrainConfig(const std::string&, int)>& training,
                                            const data::Splits& s, int epochs, const std::string& name) {
  const std::string a = temp_dir(name + "_a"), b = temp_dir(name + "_b");
  Trainer straight(model, training(a, epochs), s);
  straight.train();
  {
    Trainer first(model, training(b, 1), s);
    first.train();
  }
  Trainer resumed(model, training(b, epochs), s);
  resumed.resume(b + "/checkpoint.safetensors");
  ResumeComparison c;
  c.epochs_after_resume = resumed.epochs_done();
  resumed.train();
  c.steps_straight = straight.steps_done(), c.steps_resumed = resumed.steps_done();
  c.differing = differing_parameters(straight, resumed);
  std::filesystem::remove_all(a);
  std::filesystem::remove_all(b);
  return c;
}

inline std::string temp_dir(const std::string& name) {
  const auto p = std::filesystem::temp_directory_path() / ("equivae_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

}  // namespace equivae::testing
