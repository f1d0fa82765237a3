// What a checkpoint says about its run, written and read back in this one place: the model, how
// far training went (epoch, step), the best epoch on validation, the run's options (config.json)
// and its class names. Every field read from a file is checked and a bad one named with the file.
#pragma once
#include <limits>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/equivae.h"
#include "train/sampler.h"

namespace equivae {

struct RunState {
  ModelConfig model;
  int epoch = 0;       // epochs completed
  uint64_t step = 0;   // optimiser steps completed
  uint64_t seed = 1;
  int m_max = 7, labels_per_class = 0;
  data::SetSampling set_sampling = data::SetSampling::batch;
  std::string data;    // the training set's name, e.g. "mnist/train[0:2000]"
  int best_epoch = 0;  // 0: none yet
  double best_error = std::numeric_limits<double>::infinity();
  // The run's options by name (train/run_options.h); for a checkpoint written before they were
  // kept, the ones its other fields give (seed, model sizes, init, set sampling, labels).
  nlohmann::json options = nlohmann::json::object();
  std::vector<std::string> classes;  // class names; empty when the checkpoint does not know them
  // A benchmark classifier's run (train/classifiers.h): its parameters are that network's, not
  // EquiVAE's, and `model` is the architecture it borrows.
  bool benchmark = false;
};

// The checkpoint metadata of `s` (format "equivae-checkpoint-1").
std::map<std::string, std::string> run_state_metadata(const RunState& s);
// The run state of checkpoint `path` (its metadata only: nothing of the model is allocated).
RunState read_run_state(const std::string& path);

// The model configuration as a checkpoint's metadata holds it (JSON), and back.
// model_from_json checks every field's type and range and throws std::runtime_error naming it.
std::string model_json(const ModelConfig& m);
ModelConfig model_from_json(const std::string& text);
// The model of a checkpoint's metadata (of EquiVAE, or of the benchmark classifier when the
// metadata says so), refused (naming the file and the field) before anything
// is allocated when a field is bad, when it has more parameters than the file holds values, or
// when training it would need more memory than the machine has.
ModelConfig checkpoint_model(const std::string& path, const std::map<std::string, std::string>& metadata);

// The metrics log (metrics.jsonl, a JSON line per epoch) of the run in folder `dir`, opened for
// the epoch after `epochs_done`: a fresh run starts a new log; a resumed one continues its own,
// without the lines of epochs after its checkpoint's (a run stopped between an epoch's metrics
// line and its checkpoint does that epoch again). An empty `dir`: no log (a closed stream).
std::ofstream open_metrics_log(const std::string& dir, int epochs_done);

}  // namespace equivae
