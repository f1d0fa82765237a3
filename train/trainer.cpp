#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "engine/backend.h"
#include "engine/late_read.h"
#include "engine/ops.h"
#include "train/averaging.h"
#include "train/checkpoint.h"
#include "train/classifiers.h"
#include "train/json_checks.h"
#include "train/progress.h"

namespace equivae {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

int64_t TrainConfig::batch_size_for(int epoch) const {
  int64_t b = batch_size;
  if (double_every > 0)
    for (int e = double_every; e <= epoch && b * 2 <= max_batch_size; e += double_every) b *= 2;
  return b;
}

Trainer::Trainer(const ModelConfig& model, const TrainConfig& config, const data::Splits& data)
    : model_config_(model), config_(config), data_(data), params_(model.init), average_(config.average_from) {
  const data::Dataset& t = data.train;
  EQUIVAE_CHECK(t.channels == model.channels && t.height == model.image_size && t.width == model.image_size &&
                    t.num_classes == model.num_classes,
                "train: data {} ({}x{}x{}, {} classes) does not fit the model ({})", t.name, t.channels, t.height,
                t.width, t.num_classes, model.describe());
  model_ = std::make_unique<EquiVAE>(model, params_);
  params_.allocate(config.seed, DType::f32, config.device);
  adam_ = std::make_unique<Adam>(params_, AdamConfig{.lr = config.lr});
  train_images_ = std::make_unique<DeviceImages>(t, config.device);
  validation_images_ = std::make_unique<DeviceImages>(data.validation, config.device);
  objective_ = std::make_unique<Objective>(*model_, config, *train_images_);
  graphs_ = std::make_unique<StepGraphs>(config.device, config.cuda_graphs != TrainConfig::Graphs::off,
                                         config.cuda_graphs == TrainConfig::Graphs::on);
  // An epoch passes over every training row, or over the unlabelled ones when semi-supervised.
  std::vector<bool> labelled(size_t(t.n), false);
  if (config.labels_per_class > 0)
    for (int64_t row : objective_->labelled_rows()) labelled[size_t(row)] = true;
  for (int64_t i = 0; i < t.n; ++i)
    if (!labelled[size_t(i)]) epoch_rows_.push_back(i);
  if (!config.out_dir.empty()) std::filesystem::create_directories(config.out_dir);
}

std::string Trainer::checkpoint_path() const { return config_.out_dir + "/checkpoint.safetensors"; }
std::string Trainer::best_path() const { return config_.out_dir + "/best.safetensors"; }

double Trainer::classifier_error(const data::Dataset& d) { return equivae::classifier_error(*model_, d, config_.device); }

std::map<std::string, std::string> Trainer::metadata() const {
  RunState s{.model = model_config_, .epoch = epoch_, .step = step_, .seed = config_.seed, .m_max = config_.m_max,
             .labels_per_class = config_.labels_per_class, .set_sampling = config_.set_sampling,
             .data = data_.train.name, .best_epoch = best_epoch_, .best_error = best_error_,
             .options = config_.options, .classes = data_.train.class_names};
  return run_state_metadata(s);
}

void Trainer::save(const std::string& path, const Tensor* average) {
  save_checkpoint(path, params_, adam_.get(), metadata(), average);
}

bool Trainer::averaging() const { return average_.active(epoch_); }

const Tensor& Trainer::candidate_values() { return averaging() ? average_.mean() : params_.values(); }

void Trainer::resume(const std::string& path) {
  const RunState state = read_run_state(path);
  if (model_json(state.model) != model_json(model_config_))
    throw std::runtime_error(fmt::format("checkpoint {}: its model ({}) differs from this run's ({})", path,
                                         model_json(state.model), model_json(model_config_)));
  if (state.seed != config_.seed)
    throw std::runtime_error(fmt::format("checkpoint {}: saved with --seed {}, this run has --seed {}", path,
                                         state.seed, config_.seed));
  if (state.model.init != model_config_.init || state.set_sampling != config_.set_sampling)
    throw std::runtime_error(fmt::format("checkpoint {}: saved with --init {} --set-sampling {}, this run has --init {} "
                                         "--set-sampling {}",
                                         path, init_scheme_name(state.model.init),
                                         data::set_sampling_name(state.set_sampling),
                                         init_scheme_name(model_config_.init),
                                         data::set_sampling_name(config_.set_sampling)));
  epoch_ = state.epoch, step_ = state.step;
  load_checkpoint(path, params_, adam_.get(), averaging() ? &average_.mean() : nullptr);
  if (state.best_epoch > 0) {
    best_epoch_ = state.best_epoch, best_error_ = state.best_error;
    if (best_epoch_ == epoch_) {
      best_values_ = candidate_values().clone();
    } else {  // the best epoch's parameters, kept beside the run's last checkpoint
      ParameterStore best(model_config_.init);
      EquiVAE shape_only(model_config_, best);
      best.allocate(config_.seed, params_.values().dtype(), Device::cpu);
      load_best_beside(path, best_epoch_, best);
      best_values_ = best.values().to(config_.device);
    }
  }
}

void Trainer::use_best() {
  if (best_values_.defined()) params_.values().copy_from(best_values_);
}

void Trainer::train() {
  const std::vector<int64_t>& all = epoch_rows_;
  const int64_t epoch_size = int64_t(all.size());
  const bool semi = config_.labels_per_class > 0;
  std::ofstream metrics = open_metrics_log(config_.out_dir, epoch_);

  const bool quiet_steps = config_.device == Device::cuda;
  LateScalars late;
  auto step = [&](const std::vector<int64_t>& rows, double epochs_done) {
    return semi ? objective_->semi_supervised(rows, step_, epochs_done)
                : objective_->supervised(*train_images_, objective_->train_classes(), rows, config_.seed, step_);
  };
  // A supervised batch as a step of the epoch's batch size (a short last batch padded to it),
  // forward, backward and Adam, through a CUDA graph (engine/step_graph.h): returns its loss terms
  // (a replay's: the capture's tensors), means over the batch's rows.
  auto graphed_step = [&](const std::vector<int64_t>& rows, int64_t batch) {
    const Objective::Indices ix =
        objective_->supervised_indices(data_.train, objective_->train_classes(), rows, config_.seed, step_, batch);
    const int64_t key = batch;
    const StepGraphs::Inputs in = graphs_->upload(key, step_counters(step_ << 32, *adam_), ix.parts());
    const std::vector<Tensor> terms = graphs_->run(key, in, [&] {
      Objective::StepResult s =
          objective_->supervised_step(*train_images_, ix, in.indices, RandomStream{config_.seed, 0});
      params_.zero_grad();
      s.loss.backward();
      adam_->step();
      return std::vector<Tensor>{s.loglik, s.kl};
    });
    if (graphs_->replayed()) adam_->set_steps(adam_->steps() + 1);  // what adam_->step() counts
    Objective::StepResult s;
    s.loglik = terms[0], s.kl = terms[1], s.n = ix.n, s.log_prior_sum = ix.log_prior_sum, s.means = true;
    return s;
  };
  for (; epoch_ < config_.epochs;) {
    const int64_t batch = config_.batch_size_for(epoch_);
    const std::vector<int64_t> order = data::shuffled(all, config_.seed, uint64_t(epoch_));
    const int64_t batches = (epoch_size + batch - 1) / batch;
    ElboStats stats;
    double unlabelled_sum = 0;
    int64_t unlabelled_n = 0;
    ProgressBar bar(fmt::format("epoch {}/{}", epoch_ + 1, config_.epochs), batches, config_.progress);
    const auto start = std::chrono::steady_clock::now();
    auto stop = [&](uint64_t step, const std::string& why) {
      return std::runtime_error(fmt::format(
          "training stopped at epoch {}, step {}: {}. Last good checkpoint: {}", epoch_ + 1, step, why,
          !config_.out_dir.empty() && std::filesystem::exists(checkpoint_path()) ? checkpoint_path() : "none"));
    };
    auto not_finite = [](double loglik, double kl, double unlabelled) -> const char* {
      if (!std::isfinite(loglik)) return "log p(x|r,v)";
      if (!std::isfinite(kl)) return "the KL term";
      return std::isfinite(unlabelled) ? nullptr : "L_unlab";
    };
    // The loss terms of steps not yet accounted for (late reads), oldest first.
    struct Counted {
      uint64_t step;
      int64_t n, unlabelled_n;
      double log_prior_sum;
      double sum_scale;  // StepResult::sum_scale(): the terms to sums over the n rows
    };
    std::deque<Counted> counted;
    auto account = [&] {
      const std::vector<double> v = late.pop();
      const Counted c = counted.front();
      counted.pop_front();
      const double unlabelled = v.size() > 2 ? v[2] : 0.0;
      if (const char* bad = not_finite(v[0], v[1], unlabelled))
        throw stop(c.step, fmt::format("{} is not finite (read a step late; on the CPU the op that made it is named)", bad));
      stats.add(v[0] * c.sum_scale, v[1] * c.sum_scale, c.log_prior_sum, c.n);
      unlabelled_sum += unlabelled, unlabelled_n += c.unlabelled_n;
    };
    for (int64_t b = 0; b < batches; ++b) {
      const std::vector<int64_t> rows(order.begin() + b * batch, order.begin() + std::min(epoch_size, (b + 1) * batch));
      const double epochs_done = double(epoch_) + double(b) / double(batches);  // sets the teacher's weight
      Objective::StepResult s;
      // Supervised batches through graphs (their backward and Adam inside), one per batch size.
      const bool graphed = graphs_->enabled() && !semi;
      try {
        {
          // On a GPU every value check is a host wait: there the checks run only to name the op
          // of a step gone NaN (when the loss is read at once).
          const ValueChecks checks(!quiet_steps);
          s = graphed ? graphed_step(rows, batch) : step(rows, epochs_done);
        }
        if (!config_.late_reads) {
          s.read();
          if (const char* bad = not_finite(s.loglik_sum, s.kl_sum, s.unlabelled_sum)) {
            if (quiet_steps) step(rows, epochs_done);  // the same step, checked
            throw NumericError(fmt::format("{} is not finite", bad));
          }
        }
      } catch (const NumericError& e) {
        throw stop(step_, e.what());
      }
      if (config_.late_reads) {
        std::vector<Tensor> terms{s.loglik, s.kl};
        if (s.unlabelled.defined()) terms.push_back(s.unlabelled);
        late.push(terms);  // queued behind the forward, read after the next step is queued
        counted.push_back({step_, s.n, semi ? int64_t(rows.size()) : 0, s.log_prior_sum, s.sum_scale()});
      } else {
        stats.add(s.loglik_sum, s.kl_sum, s.log_prior_sum, s.n);
        unlabelled_sum += s.unlabelled_sum, unlabelled_n += semi ? int64_t(rows.size()) : 0;
      }
      if (!graphed) {
        params_.zero_grad();
        s.loss.backward();
        adam_->step();
      }
      ++step_;
      if (!config_.out_dir.empty())
        throw_if_interrupted(fmt::format(
            "in epoch {}: {}; continue with --resume auto --out {}", epoch_ + 1,
            epoch_ > 0 ? fmt::format("{} holds epoch {}", checkpoint_path(), epoch_) : "no epoch was completed",
            config_.out_dir));
      while (late.pending() > 1) account();  // the previous step's, long computed
      bar.update(b + 1, fmt::format("elbo {:.2f} rec {:.2f} kl {:.2f} {:.0f} img/s", stats.elbo, stats.loglik, stats.kl,
                                    double(stats.n) / seconds_since(start)));
    }
    while (late.pending() > 0) account();
    const double train_seconds = seconds_since(start);
    const double images_per_s = double(stats.n) / train_seconds;
    bar.finish(fmt::format("elbo {:.2f} rec {:.2f} kl {:.2f} {:.0f} img/s", stats.elbo, stats.loglik, stats.kl,
                           images_per_s));
    ++epoch_;

    const ElboStats val = evaluate_elbo(data_.validation);
    const double val_error = distance_error(data_.validation);
    // q(y|x)'s validation confusion: its columns show a class given up (docs/results.md, issue 12).
    const std::vector<int64_t> val_confusion =
        semi ? classifier_confusion(*model_, data_.validation, config_.device) : std::vector<int64_t>{};
    const double val_classifier = semi ? confusion_error(val_confusion) : 0.0;
    // q(y|x)'s teacher on the unlabelled images (train/evaluation.h): how much they can add.
    const double val_generative =
        semi ? confusion_error(generative_confusion(*model_, data_.train, objective_->labelled_rows(), data_.validation,
                                                    config_.device))
             : 0.0;
    // The averaged model's errors (--average-from), which then choose the best epoch.
    double averaged_error = 0, averaged_classifier = 0;
    if (averaging()) {
      average_.add(params_.values(), epoch_);
      const ValuesInPlace mean(params_.values(), average_.mean());
      averaged_error = distance_error(data_.validation);
      averaged_classifier = semi ? classifier_error(data_.validation) : 0.0;
    }
    fmt::print(stderr, "epoch {}: batch {}, validation elbo {:.2f} (rec {:.2f}, kl {:.2f}), distance error {:.2f} %{}{}\n",
               epoch_, batch, val.elbo, val.loglik, val.kl, 100 * val_error,
               semi ? fmt::format(", q(y|x) error {:.2f} %, generative classifier error {:.2f} %", 100 * val_classifier,
                                  100 * val_generative)
                    : "",
               !averaging() ? ""
                            : fmt::format("; averaged over epochs {}-{}: distance error {:.2f} %{}", average_.from(),
                                          epoch_, 100 * averaged_error,
                                          semi ? fmt::format(", q(y|x) error {:.2f} %", 100 * averaged_classifier) : ""));
    if (!config_.out_dir.empty()) {
      nlohmann::json line = {
          {"epoch", epoch_}, {"step", step_}, {"batch_size", batch},
          {"train", {{"elbo", stats.elbo}, {"recon", stats.loglik}, {"kl", stats.kl}}},
          {"validation", {{"elbo", val.elbo}, {"recon", val.loglik}, {"kl", val.kl}, {"distance_error", val_error}}},
          {"train_seconds", train_seconds}, {"images_per_s", images_per_s}};
      if (semi) {
        line["train"]["unlabelled_elbo"] = unlabelled_sum / double(std::max<int64_t>(1, unlabelled_n));
        line["validation"]["classifier_error"] = val_classifier;
        line["validation"]["classifier_confusion"] = val_confusion;  // [true * K + predicted]
        line["validation"]["generative_error"] = val_generative;
      }
      if (averaging()) {
        line["validation"]["averaged_distance_error"] = averaged_error;
        if (semi) line["validation"]["averaged_classifier_error"] = averaged_classifier;
      }
      metrics << line.dump() << std::endl;
    }
    const double selection_error =
        averaging() ? (semi ? averaged_classifier : averaged_error) : (semi ? val_classifier : val_error);
    const bool best = selection_error < best_error_;
    if (best)
      best_epoch_ = epoch_, best_error_ = selection_error, best_values_ = candidate_values().clone();
    if (!config_.out_dir.empty()) {
      // The best first: a run stopped between the two saves redoes this epoch bit for bit.
      if (best) {
        const ValuesInPlace chosen(params_.values(), best_values_);
        save(best_path());
      }
      save(checkpoint_path(), averaging() ? &average_.mean() : nullptr);
    }
  }
}

ElboStats Trainer::evaluate_elbo(const data::Dataset& d) {
  if (&d == &data_.validation) return objective_->evaluate(*validation_images_);
  if (&d == &data_.train) return objective_->evaluate(*train_images_);
  return objective_->evaluate(DeviceImages(d, config_.device));  // another set (the test set): for this call
}

std::vector<float> Trainer::represent(const data::Dataset& d) { return equivae::represent(*model_, d, config_.device); }

double Trainer::distance_error(const data::Dataset& d) {
  return equivae::distance_error(*model_, data_.train, objective_->labelled_rows(), d, config_.device);
}

}  // namespace equivae
