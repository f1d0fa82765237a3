// The two supervised classifiers SPEC.md section 4 compares EquiVAE's r against:
//  - a 2-layer dense dropout network (128, 64) trained on frozen r(x);
//  - the benchmark: the invariant encoder's architecture (conv stack -> dense(H) -> dense(H))
//    with dropout after both dense layers, trained end to end on the labelled images alone.
// Both keep the parameters of the epoch with the lowest validation error and evaluate the test
// set once, at the end, with them: every choice is made on validation.
#pragma once
#include <string>
#include <vector>

#include "model/equivae.h"
#include "model/layers.h"
#include "train/data.h"
#include "train/run_state.h"

namespace equivae {

struct ClassifierConfig {
  int epochs = 20;
  // An epoch is as many whole shuffled passes over the training rows as it takes to reach this
  // many images (0: one pass), so that a labelled subset of 100 images is not judged on
  // validation after every 2 steps.
  int64_t epoch_images = 0;
  int64_t batch_size = 64;
  double lr = 1e-3, dropout = 0.5;
  // From this epoch on (0: never) the best epoch is chosen on the running mean of the epoch-end
  // parameters instead of each epoch's own (train/averaging.h).
  int average_from = 0;
  uint64_t seed = 1;
  Device device = Device::cpu;
  bool progress = true;
  // Per-epoch checkpoints (a long run's, such as the benchmark's): when set, checkpoint.safetensors
  // (parameters, Adam, the epoch, the step, the best epoch and its validation error, the running
  // mean when averaging) after every epoch, best.safetensors (the best epoch's parameters) and a
  // line of metrics.jsonl into this folder, with `run` as the checkpoints' metadata. A run
  // started with resume_from (such a checkpoint, best.safetensors beside it) continues after its
  // epoch exactly as if it had never stopped.
  std::string checkpoint_dir, resume_from;
  RunState run;
};

struct ClassifierResult {
  double validation_error = 1, test_error = 1;
  int best_epoch = 0;
};

// Features: n x dim row-major (e.g. Trainer::represent); labels in [0, classes).
struct Features {
  std::vector<float> x;
  std::vector<int32_t> y;
  int64_t dim = 0;
  int64_t n() const { return int64_t(y.size()); }
};

// How many rows of `logits` ([rows.size(), K], row-major) have their argmax away from
// labels[rows[i]].
int64_t wrong_predictions(const std::vector<double>& logits, const std::vector<int32_t>& labels,
                          const std::vector<int64_t>& rows);

ClassifierResult train_feature_classifier(const Features& train, const Features& validation, const Features& test,
                                          int classes, const ClassifierConfig& config);

// The benchmark's network: the invariant encoder's conv stack and dense layer, then a dense layer
// of the same width and the class logits (dropout after both hidden layers, in training).
struct BenchmarkClassifier {
  ConvStack convs;
  Dense hidden, out;
  static BenchmarkClassifier declare(ParameterStore& params, const ModelConfig& architecture);
  Var operator()(const Var& images, double dropout_rate, RandomStream& stream, bool training) const;
};

ClassifierResult train_benchmark_classifier(const data::Splits& data, const ModelConfig& architecture,
                                            const ClassifierConfig& config);

}  // namespace equivae
