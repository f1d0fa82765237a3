// Every option of a train_mnist / train_svhn run, declared once: its flag, variable, help with the
// default, the allowed range (checked at start, with a message naming the option and the range)
// and how a continued run treats it. The same table writes the run's config.json (and the
// checkpoint's "options" metadata) and reads them back, so a value from a file passes the same
// checks as one typed on the command line.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/equivae.h"
#include "train/classifiers.h"
#include "train/data.h"
#include "train/trainer.h"

namespace equivae {

// How --resume and --evaluate treat an option the run already has.
enum class Kept {
  run,         // the run's value; given again, it must agree (seed, model sizes, data, schedule)
  extendable,  // the run's value unless given again (--epochs: a resumed run may go further)
  invocation,  // of this command only, never restored (where to write, device, threads)
  // An epoch from which something starts that never changes training (--average-from): given
  // again, it may differ while the run has reached neither its value nor the new one.
  until_reached,
};

// Defaults are those of ModelConfig, TrainConfig and ClassifierConfig: one home each.
struct RunOptions {
  std::string dataset = "mnist", data_dir, out, device = "cpu", resume, evaluate;
  std::string init = init_scheme_name(ModelConfig{}.init);
  std::string set_sampling = data::set_sampling_name(TrainConfig{}.set_sampling);
  std::string likelihood;  // "": by data set (resolve_defaults)
  std::string cuda_graphs = "on";  // TrainConfig::cuda_graphs
  std::string unlabelled_sets = TrainConfig{}.unlabelled_sets_all ? "all" : "random";
  std::vector<int64_t> filters = ModelConfig{}.filters;
  int64_t hidden = ModelConfig{}.hidden, d_r = ModelConfig{}.d_r, d_v = ModelConfig{}.d_v, image_size = 0;
  int64_t train_limit = 0, max_image_pixels = data::kDefaultMaxImagePixels;
  int64_t batch_size = TrainConfig{}.batch_size, max_batch_size = TrainConfig{}.max_batch_size;
  int epochs = TrainConfig{}.epochs, double_every = TrainConfig{}.double_every, m_max = TrainConfig{}.m_max;
  int average_from = TrainConfig{}.average_from;
  int labels = 0, latent = 0, threads = 0, classifier_epochs = ClassifierConfig{}.epochs;
  double lr = TrainConfig{}.lr, teacher_warmup = TrainConfig{}.teacher_warmup_epochs;
  uint64_t seed = TrainConfig{}.seed;
  bool quick = false, no_progress = false, benchmark = false, tf32 = false, force = false, skip_self_check = false;
  bool reproducible_plans = false;
};

class OptionTable {
 public:
  // Declares every option of `o` on `app` (the help of train_<default_dataset>).
  OptionTable(CLI::App& app, RunOptions& o);

  // Every option's value by name ("batch-size": 32, ...): config.json.
  nlohmann::json to_json() const;
  // Names of the options given on the command line (after a parse).
  std::set<std::string> given() const;
  // Takes the run's options `stored` (to_json() of the run, read from `source`) for every option
  // of kind run or extendable that `given` lacks, through the same checks as the command line;
  // refuses a given option of kind run whose value differs, naming it, both values and the source,
  // and one of kind until_reached where the run's `epochs_done` has reached the old or new value.
  // Unknown names are refused (a file from a newer build, or a typo).
  void restore(const nlohmann::json& stored, const std::string& source, const std::set<std::string>& given,
               int epochs_done = 0);

 private:
  struct Entry {
    CLI::Option* option;
    Kept kept;
    std::function<nlohmann::json()> value;
  };
  template <class T>
  CLI::Option* add(const std::string& name, T& value, const std::string& help, Kept kept);
  template <class T>
  CLI::Option* number(const std::string& name, T& value, T min, T max, const std::string& help, Kept kept);
  CLI::App& app_;
  std::vector<std::pair<std::string, Entry>> entries_;
};

// The defaults that depend on others, before restoring a run's options (which then replace them):
// the data folder and the likelihood by data set (Gaussian for SVHN, Bernoulli elsewhere) and
// --quick's schedule where --epochs / --classifier-epochs are not given (the run folder is
// train_main.cpp's, once a resumed checkpoint's folder is known).
void resolve_defaults(RunOptions& o, const std::set<std::string>& given);
// What a single range cannot express (--max-batch-size below --batch-size, --tf32 without cuda);
// throws std::invalid_argument naming the options.
void check_options(const RunOptions& o);

// With --device cuda: starts the CUDA backend (throws with the reason where there is none) and sets
// its convolutions' math (--tf32) and plans (--reproducible-plans; EQUIVAE_REPRODUCIBLE=1 in the
// environment turns them on without the flag, and then o.reproducible_plans too, so that
// config.json records the plans the run used). Nothing on the CPU.
void apply_device_options(RunOptions& o);

// The run's data: the splits of docs/data.md (for --dataset folder: 10 % validation, 10 % test in
// an order shuffled with a fixed seed), the first --train-limit training images, images resized to
// --image-size, and standardised with the training set's channel statistics when the likelihood
// is Gaussian. Errors name the data set and say where to get it.
data::Splits load_run_data(const RunOptions& o);

// The model and training configurations the options give, for data of `splits` (channels, size,
// classes); --labels must be a multiple of the classes.
ModelConfig model_config(const RunOptions& o, const data::Splits& splits);
TrainConfig train_config(const RunOptions& o, const ModelConfig& model);

}  // namespace equivae
