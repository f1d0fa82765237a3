// Supervised EquiVAE training (SPEC.md sections 2-4): the objective L_lab with complementary
// sets, Adam, the doubling batch schedule, per-epoch validation with the distance classifier,
// JSON-lines metrics, atomic safetensors checkpoints and bit-for-bit resume.
#pragma once
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/equivae.h"
#include "train/data.h"
#include "train/evaluation.h"
#include "train/run_state.h"
#include "train/sampler.h"

namespace equivae {

struct TrainConfig {
  int epochs = 40;
  int64_t batch_size = 32;      // at the start; doubled every `double_every` epochs
  int double_every = 10;        // 0: never
  int64_t max_batch_size = 256;
  int m_max = 7;
  data::SetSampling set_sampling = data::SetSampling::batch;
  // > 0: semi-supervised (SPEC.md section 2) with this many labelled training images per class
  // (a balanced subset drawn with the seed); the model must be semi_supervised.
  int labels_per_class = 0;
  double lr = 1e-3;
  uint64_t seed = 1;
  Device device = Device::cpu;
  // checkpoint.safetensors (the last epoch), best.safetensors (the best on validation),
  // metrics.jsonl; empty: write nothing
  std::string out_dir;
  bool progress = true;
  int64_t eval_batch_size = 500;  // rows per pass of evaluate_elbo
  // The run's options (train/run_options.h), kept in every checkpoint so that --resume and
  // --evaluate restore them.
  nlohmann::json options = nlohmann::json::object();
  int64_t batch_size_for(int epoch) const;  // epoch counts from 0
};

// One pass of the objective over some rows, averaged per example.
struct ElboStats {
  double elbo = 0, loglik = 0, kl = 0;
  int64_t n = 0;
  void add(double loglik_sum, double kl_sum, double log_prior_sum, int64_t count);
};

class Trainer {
 public:
  Trainer(const ModelConfig& model, const TrainConfig& config, const data::Splits& data);

  // Continues the run saved in `path` (its model configuration must match).
  void resume(const std::string& path);
  // Trains from the next epoch to config.epochs, evaluating and checkpointing after each. The
  // epoch with the lowest validation error (the distance classifier's; q(y|x)'s when
  // semi-supervised) is kept as the best, in memory and in best.safetensors: the test set is never
  // looked at.
  void train();
  // Puts the best epoch's parameters in place (no-op before any epoch is trained).
  void use_best();
  int best_epoch() const { return best_epoch_; }
  double best_validation_error() const { return best_error_; }

  // r(x) with m = 1 for every row of d: n x d_r, row-major.
  std::vector<float> represent(const data::Dataset& d);
  // Nearest training-class centroid of r (0 parameters): the error rate on d.
  double distance_error(const data::Dataset& d);
  // The objective on d, with complementary sets drawn within d (no gradient).
  ElboStats evaluate_elbo(const data::Dataset& d);
  // Semi-supervised models: the error rate of argmax q(y | x) on d.
  double classifier_error(const data::Dataset& d);
  // The training rows whose labels the model sees (all of them unless semi-supervised).
  const std::vector<int64_t>& labelled_rows() const { return labelled_rows_; }

  const EquiVAE& model() const { return *model_; }
  ParameterStore& params() { return params_; }
  int epochs_done() const { return epoch_; }
  int64_t steps_done() const { return step_; }
  std::string checkpoint_path() const;
  std::string best_path() const;

 private:
  struct StepResult {
    Var loss;
    double loglik_sum, kl_sum, log_prior_sum;
    int64_t n;
    double unlabelled_sum = 0;  // semi-supervised: the sum of L_unlab over the step's unlabelled rows
  };
  StepResult objective(const data::Dataset& d, const data::ClassIndex& classes, const std::vector<int64_t>& rows,
                       uint64_t seed, uint64_t step);
  // Semi-supervised step: these unlabelled rows and as many labelled ones (cycling through the
  // labelled set); the loss is the objective of SPEC.md section 2 with no weight on any term,
  // each of its two sums taken as a mean over its own batch.
  StepResult semi_objective(const std::vector<int64_t>& unlabelled, uint64_t step);
  Tensor gather(const data::Dataset& d, const std::vector<int64_t>& rows) const;
  void save(const std::string& path);
  std::map<std::string, std::string> metadata() const;

  ModelConfig model_config_;
  TrainConfig config_;
  const data::Splits& data_;
  data::ClassIndex train_classes_;      // of the labelled rows
  std::vector<int64_t> labelled_rows_;  // all training rows unless semi-supervised
  std::vector<int64_t> epoch_rows_;     // what an epoch passes over: all rows, or the unlabelled ones
  std::vector<double> log_prior_;
  ParameterStore params_;
  std::unique_ptr<EquiVAE> model_;
  std::unique_ptr<Adam> adam_;
  int epoch_ = 0;      // epochs completed
  uint64_t step_ = 0;  // optimiser steps completed
  int best_epoch_ = 0;  // 0: none yet
  double best_error_ = std::numeric_limits<double>::infinity();
  Tensor best_values_;  // the best epoch's parameter buffer
};

}  // namespace equivae
