// The training loop of EquiVAE: Adam over the objective (train/objective.h) with the doubling
// batch schedule, per-epoch validation with the distance classifier (train/evaluation.h),
// JSON-lines metrics, atomic safetensors checkpoints (their run state: train/run_state.h) and
// bit-for-bit resume.
#pragma once
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/step_graph.h"
#include "model/equivae.h"
#include "train/averaging.h"
#include "train/data.h"
#include "train/device_images.h"
#include "train/evaluation.h"
#include "train/objective.h"
#include "train/run_state.h"
#include "train/sampler.h"

namespace equivae {

class Trainer {
 public:
  Trainer(const ModelConfig& model, const TrainConfig& config, const data::Splits& data);

  // Continues the run saved in `path` (its model configuration must match).
  void resume(const std::string& path);
  // Trains from the next epoch to config.epochs, evaluating and checkpointing after each. The
  // epoch with the lowest validation error (the distance classifier's; q(y|x)'s when
  // semi-supervised) is kept as the best, in memory and in best.safetensors: the test set is never
  // looked at. With TrainConfig::average_from, from that epoch on the candidates are the running
  // means of the epoch-end parameters (kept in the checkpoint as "average") instead.
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
  const std::vector<int64_t>& labelled_rows() const { return objective_->labelled_rows(); }

  const EquiVAE& model() const { return *model_; }
  ParameterStore& params() { return params_; }
  int epochs_done() const { return epoch_; }
  int64_t steps_done() const { return step_; }
  const StepGraphs& step_graphs() const { return *graphs_; }
  std::string checkpoint_path() const;
  std::string best_path() const;

 private:
  void save(const std::string& path, const Tensor* average = nullptr);
  // Whether the epochs done include TrainConfig::average_from, so that average_ holds their mean.
  bool averaging() const;
  // The parameters this epoch offers as the best: the running mean once averaging, else its own.
  const Tensor& candidate_values();
  std::map<std::string, std::string> metadata() const;

  ModelConfig model_config_;
  TrainConfig config_;
  const data::Splits& data_;
  std::vector<int64_t> epoch_rows_;     // what an epoch passes over: all rows, or the unlabelled ones
  ParameterStore params_;
  std::unique_ptr<EquiVAE> model_;
  std::unique_ptr<Adam> adam_;
  // The training and validation images on the training device (uploaded once: device_images.h).
  std::unique_ptr<DeviceImages> train_images_, validation_images_;
  std::unique_ptr<Objective> objective_;
  std::unique_ptr<StepGraphs> graphs_;  // config.cuda_graphs
  int epoch_ = 0;      // epochs completed
  uint64_t step_ = 0;  // optimiser steps completed
  int best_epoch_ = 0;  // 0: none yet
  double best_error_ = std::numeric_limits<double>::infinity();
  Tensor best_values_;  // the best epoch's parameter buffer
  ParameterAverage average_;  // of the epoch-end parameters since TrainConfig::average_from
};

}  // namespace equivae
