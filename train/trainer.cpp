#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "engine/backend.h"
#include "engine/ops.h"
#include "train/checkpoint.h"
#include "train/classifiers.h"
#include "train/json_checks.h"
#include "train/progress.h"

namespace equivae {
namespace {

// Validation draws its sets and noise from a stream of its own, the same every epoch, so that
// validation curves compare like with like.
constexpr uint64_t kValidationSeedSalt = 0x9e3779b97f4a7c15ull;
// Semi-supervised steps: their own streams for the labelled order, m, dropout and v of the
// unlabelled pairs, apart from the supervised part's (the seed itself).
constexpr uint64_t kLabelledOrderSalt = 0x51ed2701a3c4e5f7ull, kSetSizeSalt = 0x2545f4914f6cdd1dull,
                   kLabelledDropoutSalt = 0x7f4a7c159e3779b9ull, kUnlabelledDropoutSalt = 0x3c6ef372fe94f82bull,
                   kUnlabelledNoiseSalt = 0xa54ff53a5f1d36f1ull;

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

void ElboStats::add(double loglik_sum, double kl_sum, double log_prior_sum, int64_t count) {
  const double total = double(n + count);
  loglik = (loglik * double(n) + loglik_sum) / total;
  kl = (kl * double(n) + kl_sum) / total;
  elbo = (elbo * double(n) + loglik_sum - kl_sum + log_prior_sum) / total;
  n += count;
}

Trainer::Trainer(const ModelConfig& model, const TrainConfig& config, const data::Splits& data)
    : model_config_(model), config_(config), data_(data),
      train_classes_(data.train.labels, data.train.num_classes), params_(model.init) {
  const data::Dataset& t = data.train;
  EQUIVAE_CHECK(t.channels == model.channels && t.height == model.image_size && t.width == model.image_size &&
                    t.num_classes == model.num_classes,
                "train: data {} ({}x{}x{}, {} classes) does not fit the model ({})", t.name, t.channels, t.height,
                t.width, t.num_classes, model.describe());
  for (int64_t i = 0; i < t.n; ++i) epoch_rows_.push_back(i);
  labelled_rows_ = epoch_rows_;
  EQUIVAE_CHECK((config.labels_per_class > 0) == model.semi_supervised,
                "train: --labels needs a semi-supervised model and a semi-supervised model needs --labels");
  if (config.labels_per_class > 0) {
    EQUIVAE_CHECK(config.labels_per_class >= 2,
                  "train: {} label(s) per class: a complementary set needs another labelled image of the class",
                  config.labels_per_class);
    labelled_rows_ = data::balanced_label_subset(t, config.labels_per_class, config.seed);
    train_classes_ = data::ClassIndex(t.labels, t.num_classes, labelled_rows_);
    std::vector<bool> labelled(size_t(t.n), false);
    for (int64_t row : labelled_rows_) labelled[size_t(row)] = true;
    epoch_rows_.clear();
    for (int64_t i = 0; i < t.n; ++i)
      if (!labelled[size_t(i)]) epoch_rows_.push_back(i);
    log_prior_.assign(size_t(t.num_classes), -std::log(double(t.num_classes)));  // a balanced subset
  } else {
    for (double p : data::class_frequencies(t)) log_prior_.push_back(std::log(p));
  }
  model_ = std::make_unique<EquiVAE>(model, params_);
  params_.allocate(config.seed, DType::f32, config.device);
  adam_ = std::make_unique<Adam>(params_, AdamConfig{.lr = config.lr});
  if (!config.out_dir.empty()) std::filesystem::create_directories(config.out_dir);
}

std::string Trainer::checkpoint_path() const { return config_.out_dir + "/checkpoint.safetensors"; }
std::string Trainer::best_path() const { return config_.out_dir + "/best.safetensors"; }

Tensor Trainer::gather(const data::Dataset& d, const std::vector<int64_t>& rows) const {
  return gather_images(d, rows, config_.device);
}

Trainer::StepResult Trainer::objective(const data::Dataset& d, const data::ClassIndex& classes,
                                       const std::vector<int64_t>& rows, uint64_t seed, uint64_t step) {
  const data::ComplementarySets sets =
      data::sample_complementary_sets(rows, d.labels, classes, config_.m_max, seed, step, config_.set_sampling);
  const Tensor x = gather(d, rows);
  const Var r = model_->class_latent(Var(gather(d, sets.images)), Tensor::from_indices(sets.offsets, config_.device),
                                     Tensor::from_indices(sets.members, config_.device));
  RandomStream noise{seed, step << 32};  // a step draws far fewer than 2^32 numbers
  const EquiVAE::Terms t = model_->terms(Var(x), x, r, noise);
  const Var loglik = sum(t.loglik), kl = sum(t.kl);
  double log_prior_sum = 0;
  for (int64_t row : rows) log_prior_sum += log_prior_[size_t(d.labels[size_t(row)])];
  const int64_t n = int64_t(rows.size());
  // Maximise the mean of L_lab; log p(y) is a constant of the parameters.
  const Var loss = scale(sub(kl, loglik), 1.0 / double(n));
  return {loss, loglik.value().item(), kl.value().item(), log_prior_sum, n};
}

Trainer::StepResult Trainer::semi_objective(const std::vector<int64_t>& unlabelled, uint64_t step) {
  const data::Dataset& d = data_.train;
  const uint64_t seed = config_.seed;
  const int64_t n_l = int64_t(labelled_rows_.size());
  const int64_t b_u = int64_t(unlabelled.size()), b_l = std::min(b_u, n_l);
  // Labelled rows: positions step * b_l .. of an endless sequence of shuffled passes.
  std::vector<int64_t> labelled, pass_order;
  uint64_t pass = ~0ull;
  for (int64_t j = 0; j < b_l; ++j) {
    const uint64_t k = step * uint64_t(b_l) + uint64_t(j);
    if (k / uint64_t(n_l) != pass) {
      pass = k / uint64_t(n_l);
      pass_order = data::shuffled(labelled_rows_, seed ^ kLabelledOrderSalt, pass);
    }
    labelled.push_back(pass_order[size_t(k % uint64_t(n_l))]);
  }
  StepResult s = objective(d, train_classes_, labelled, seed, step);  // loss = -mean L_lab
  const Tensor y = Tensor::from_indices(
      [&] { std::vector<int32_t> v; for (int64_t r : labelled) v.push_back(d.labels[size_t(r)]); return v; }(),
      config_.device);
  RandomStream labelled_dropout{seed ^ kLabelledDropoutSalt, step << 32};
  const Var log_q = sum(pick(log_softmax(model_->class_logits(Var(gather(d, labelled)), labelled_dropout, true)), y));

  // Unlabelled rows: one set of m labelled images of class y for every (row, y) pair.
  const int K = model_config_.num_classes;
  data::Draws m_draw{seed ^ kSetSizeSalt, data::Stream::ClassSets, step << 32};
  const int m = 1 + int(m_draw.below(std::min(config_.m_max, config_.labels_per_class)));
  std::vector<int32_t> set_classes;
  for (int64_t i = 0; i < b_u; ++i)
    for (int y_ = 0; y_ < K; ++y_) set_classes.push_back(y_);
  const data::ComplementarySets sets = data::sample_class_sets(set_classes, train_classes_, m, seed, step);
  const Var r_pairs = model_->class_latent(Var(gather(d, sets.images)), Tensor::from_indices(sets.offsets, config_.device),
                                           Tensor::from_indices(sets.members, config_.device));
  const Tensor x_u = gather(d, unlabelled);
  RandomStream unlabelled_dropout{seed ^ kUnlabelledDropoutSalt, step << 32};
  RandomStream unlabelled_noise{seed ^ kUnlabelledNoiseSalt, step << 32};
  const Tensor log_prior = Tensor::from(log_prior_, {K}, DType::f32).to(config_.device);
  const Var u = sum(model_->unlabelled_elbo(Var(x_u), x_u, r_pairs,
                                            model_->class_logits(Var(x_u), unlabelled_dropout, true), log_prior,
                                            unlabelled_noise));
  // -(mean over the labelled batch of L_lab + log q(y|x) + mean over the unlabelled batch of L_unlab).
  // Weighting the two sums by N_l / b_l and N_u / b_u instead (an unbiased estimate of the
  // objective summed over the whole data set) left q(y|x) at chance on MNIST: 1,000 labels of
  // 10,000 images, 3 epochs, validation q(y|x) error 88.74 % every epoch, distance error 76 %.
  s.loss = sub(s.loss, add(scale(log_q, 1.0 / double(b_l)), scale(u, 1.0 / double(b_u))));
  s.unlabelled_sum = u.value().item();
  return s;
}

double Trainer::classifier_error(const data::Dataset& d) { return equivae::classifier_error(*model_, d, config_.device); }

std::map<std::string, std::string> Trainer::metadata() const {
  RunState s{.model = model_config_, .epoch = epoch_, .step = step_, .seed = config_.seed, .m_max = config_.m_max,
             .labels_per_class = config_.labels_per_class, .set_sampling = config_.set_sampling,
             .data = data_.train.name, .best_epoch = best_epoch_, .best_error = best_error_,
             .options = config_.options, .classes = data_.train.class_names};
  return run_state_metadata(s);
}

void Trainer::save(const std::string& path) { save_checkpoint(path, params_, adam_.get(), metadata()); }

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
  load_checkpoint(path, params_, adam_.get());
  epoch_ = state.epoch, step_ = state.step;
  if (state.best_epoch > 0) {
    best_epoch_ = state.best_epoch, best_error_ = state.best_error;
    if (best_epoch_ == epoch_) {
      best_values_ = params_.values().clone();
    } else {  // the best epoch's parameters, kept beside the run's last checkpoint
      ParameterStore best(model_config_.init);
      EquiVAE shape_only(model_config_, best);
      best.allocate(config_.seed, params_.values().dtype(), Device::cpu);
      const std::string best_file = (std::filesystem::path(path).parent_path() / "best.safetensors").string();
      const auto best_meta = load_checkpoint(best_file, best, nullptr);
      EQUIVAE_CHECK(best_meta.count("epoch") && best_meta.at("epoch") == std::to_string(best_epoch_),
                    "checkpoint {}: its best epoch is {}, but {} holds epoch {}", path, best_epoch_, best_file,
                    best_meta.count("epoch") ? best_meta.at("epoch") : "none");
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
  std::ofstream metrics;
  // A fresh run starts a new log; a resumed one continues its own.
  if (!config_.out_dir.empty())
    metrics.open(config_.out_dir + "/metrics.jsonl", epoch_ > 0 ? std::ios::app : std::ios::trunc);

  const bool quiet_steps = config_.device == Device::cuda;
  auto step = [&](const std::vector<int64_t>& rows) {
    return semi ? semi_objective(rows, step_) : objective(data_.train, train_classes_, rows, config_.seed, step_);
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
    for (int64_t b = 0; b < batches; ++b) {
      const std::vector<int64_t> rows(order.begin() + b * batch, order.begin() + std::min(epoch_size, (b + 1) * batch));
      StepResult s;
      try {
        {
          // On a GPU every value check is a host wait. The step reads its two loss terms anyway
          // (one wait each), so there the checks run only to name the op of a step gone NaN.
          const ValueChecks checks(!quiet_steps);
          s = step(rows);
        }
        if (!std::isfinite(s.loglik_sum) || !std::isfinite(s.kl_sum) || !std::isfinite(s.unlabelled_sum)) {
          if (quiet_steps) step(rows);  // the same step, checked
          throw NumericError(fmt::format("{} is not finite", !std::isfinite(s.loglik_sum) ? "log p(x|r,v)"
                                                             : !std::isfinite(s.kl_sum) ? "the KL term"
                                                                                        : "L_unlab"));
        }
      } catch (const NumericError& e) {
        throw std::runtime_error(fmt::format(
            "training stopped at epoch {}, step {}: {}. Last good checkpoint: {}", epoch_ + 1, step_, e.what(),
            !config_.out_dir.empty() && std::filesystem::exists(checkpoint_path()) ? checkpoint_path() : "none"));
      }
      params_.zero_grad();
      s.loss.backward();
      adam_->step();
      ++step_;
      if (!config_.out_dir.empty())
        throw_if_interrupted(fmt::format(
            "in epoch {}: {}; continue with --resume auto --out {}", epoch_ + 1,
            epoch_ > 0 ? fmt::format("{} holds epoch {}", checkpoint_path(), epoch_) : "no epoch was completed",
            config_.out_dir));
      stats.add(s.loglik_sum, s.kl_sum, s.log_prior_sum, s.n);
      unlabelled_sum += s.unlabelled_sum, unlabelled_n += semi ? int64_t(rows.size()) : 0;
      bar.update(b + 1, fmt::format("elbo {:.2f} rec {:.2f} kl {:.2f} {:.0f} img/s", stats.elbo, stats.loglik, stats.kl,
                                    double(stats.n) / seconds_since(start)));
    }
    const double train_seconds = seconds_since(start);
    const double images_per_s = double(stats.n) / train_seconds;
    bar.finish(fmt::format("elbo {:.2f} rec {:.2f} kl {:.2f} {:.0f} img/s", stats.elbo, stats.loglik, stats.kl,
                           images_per_s));
    ++epoch_;

    const ElboStats val = evaluate_elbo(data_.validation);
    const double val_error = distance_error(data_.validation);
    const double val_classifier = semi ? classifier_error(data_.validation) : 0.0;
    fmt::print(stderr, "epoch {}: batch {}, validation elbo {:.2f} (rec {:.2f}, kl {:.2f}), distance error {:.2f} %{}\n",
               epoch_, batch, val.elbo, val.loglik, val.kl, 100 * val_error,
               semi ? fmt::format(", q(y|x) error {:.2f} %", 100 * val_classifier) : "");
    if (!config_.out_dir.empty()) {
      nlohmann::json line = {
          {"epoch", epoch_}, {"step", step_}, {"batch_size", batch},
          {"train", {{"elbo", stats.elbo}, {"recon", stats.loglik}, {"kl", stats.kl}}},
          {"validation", {{"elbo", val.elbo}, {"recon", val.loglik}, {"kl", val.kl}, {"distance_error", val_error}}},
          {"train_seconds", train_seconds}, {"images_per_s", images_per_s}};
      if (semi) {
        line["train"]["unlabelled_elbo"] = unlabelled_sum / double(std::max<int64_t>(1, unlabelled_n));
        line["validation"]["classifier_error"] = val_classifier;
      }
      metrics << line.dump() << std::endl;
    }
    const double selection_error = semi ? val_classifier : val_error;
    const bool best = selection_error < best_error_;
    if (best) best_epoch_ = epoch_, best_error_ = selection_error, best_values_ = params_.values().clone();
    if (!config_.out_dir.empty()) {
      // The best first: a run stopped between the two saves redoes this epoch bit for bit.
      if (best) save(best_path());
      save(checkpoint_path());
    }
  }
}

ElboStats Trainer::evaluate_elbo(const data::Dataset& d) {
  NoGradGuard no_grad;
  const data::ClassIndex classes(d.labels, d.num_classes);
  ElboStats stats;
  for (int64_t begin = 0, b = 0; begin < d.n; begin += config_.eval_batch_size, ++b) {
    std::vector<int64_t> rows;
    for (int64_t i = begin; i < std::min(d.n, begin + config_.eval_batch_size); ++i) rows.push_back(i);
    const StepResult s = objective(d, classes, rows, config_.seed ^ kValidationSeedSalt, uint64_t(b));
    stats.add(s.loglik_sum, s.kl_sum, s.log_prior_sum, s.n);
  }
  return stats;
}

std::vector<float> Trainer::represent(const data::Dataset& d) { return equivae::represent(*model_, d, config_.device); }

double Trainer::distance_error(const data::Dataset& d) {
  return equivae::distance_error(*model_, data_.train, labelled_rows_, d, config_.device);
}

}  // namespace equivae
