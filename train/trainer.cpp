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

std::string model_json(const ModelConfig& m) {
  nlohmann::json j = {{"channels", m.channels}, {"image_size", m.image_size}, {"filters", m.filters},
                      {"hidden", m.hidden},     {"d_r", m.d_r},               {"d_v", m.d_v},
                      {"num_classes", m.num_classes},
                      {"likelihood", m.likelihood == Likelihood::bernoulli ? "bernoulli" : "gaussian"}};
  // Only when set, so supervised checkpoints keep the metadata they were written with.
  if (m.semi_supervised) j["semi_supervised"] = true, j["classifier_dropout"] = m.classifier_dropout;
  return j.dump();
}

// Bounds on a model read from a file: no layer of this model is wider than 2^16 nor the stack
// deeper than 16 convolutions, which keeps every product of sizes far from overflow. The
// parameter count is bounded by the checkpoint's own size (checkpoint_model).
constexpr int64_t kMaxWidth = 1 << 16, kMaxLayers = 16, kMaxChannels = 64;

ModelConfig model_from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(fmt::format("model is not valid JSON ({})", e.what()));
  }
  auto integer = [&](const std::string& key, int64_t min, int64_t max) {
    return json_integer(json_member(j, "model", key), "model." + key, min, max);
  };
  ModelConfig m;
  m.channels = integer("channels", 1, kMaxChannels);
  m.image_size = integer("image_size", 1, kMaxWidth);
  m.hidden = integer("hidden", 1, kMaxWidth);
  m.d_r = integer("d_r", 1, kMaxWidth);
  m.d_v = integer("d_v", 1, kMaxWidth);
  m.num_classes = int(integer("num_classes", 2, kMaxWidth));
  const nlohmann::json& filters = json_member(j, "model", "filters");
  if (!filters.is_array() || filters.empty() || filters.size() > size_t(kMaxLayers))
    throw std::runtime_error(fmt::format("model.filters is {}, expected 1 to {} filter counts", json_brief(filters),
                                         kMaxLayers));
  m.filters.clear();
  for (size_t i = 0; i < filters.size(); ++i)
    m.filters.push_back(json_integer(filters[i], fmt::format("model.filters[{}]", i), 1, kMaxWidth));
  const nlohmann::json& likelihood = json_member(j, "model", "likelihood");
  if (likelihood != "bernoulli" && likelihood != "gaussian")
    throw std::runtime_error(fmt::format("model.likelihood is {}, expected \"bernoulli\" or \"gaussian\"",
                                         json_brief(likelihood)));
  m.likelihood = likelihood == "gaussian" ? Likelihood::gaussian : Likelihood::bernoulli;
  const nlohmann::json semi = j.value("semi_supervised", nlohmann::json(false));
  if (!semi.is_boolean())
    throw std::runtime_error(fmt::format("model.semi_supervised is {}, expected true or false", json_brief(semi)));
  m.semi_supervised = semi.get<bool>();
  const nlohmann::json dropout = j.value("classifier_dropout", nlohmann::json(m.classifier_dropout));
  if (!dropout.is_number() || !(dropout.get<double>() >= 0 && dropout.get<double>() < 1))
    throw std::runtime_error(fmt::format("model.classifier_dropout is {}, expected a number in [0, 1)", json_brief(dropout)));
  m.classifier_dropout = dropout.get<double>();
  return m;
}

ModelConfig checkpoint_model(const std::string& path, const std::map<std::string, std::string>& metadata) {
  const auto found = metadata.find("model");
  if (found == metadata.end()) throw std::runtime_error(fmt::format("checkpoint {}: no model in the metadata", path));
  ModelConfig m;
  ParameterStore declared;  // declared only: nothing is allocated
  try {
    m = model_from_json(found->second);
    const EquiVAE probe(m, declared);
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("checkpoint {}: metadata field {}", path, e.what()));
  }
  // The file holds every parameter's value as f32 or f64: a model larger than that is a lie
  // that would otherwise cost an allocation (and an initialisation) of its size.
  const uint64_t file_bytes = std::filesystem::file_size(path);
  if (uint64_t(declared.numel()) > file_bytes / sizeof(float))
    throw std::runtime_error(fmt::format("checkpoint {}: its model ({}) has {} parameters, more than the {}-byte file holds",
                                         path, m.describe(), declared.numel(), file_bytes));
  // Values, gradients and Adam's two moments.
  data::require_memory("checkpoint", path, uint64_t(declared.numel()), 4 * sizeof(float), "the model's parameters");
  return m;
}

InitScheme checkpoint_init(const std::map<std::string, std::string>& metadata) {
  return metadata.count("init") ? init_scheme_from_name(metadata.at("init")) : InitScheme::torch;
}

data::SetSampling checkpoint_set_sampling(const std::map<std::string, std::string>& metadata) {
  return metadata.count("set_sampling") ? data::set_sampling_from_name(metadata.at("set_sampling"))
                                        : data::SetSampling::batch;
}

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
  Tensor host = Tensor::empty({int64_t(rows.size()), d.channels, d.height, d.width});
  float* dst = host.data<float>();
  const int64_t size = d.image_size();
  for (size_t i = 0; i < rows.size(); ++i) std::memcpy(dst + int64_t(i) * size, d.image(rows[i]), size_t(size) * 4);
  return host.to(config_.device);
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

double Trainer::classifier_error(const data::Dataset& d) {
  NoGradGuard no_grad;
  RandomStream unused;
  int64_t wrong = 0;
  for (int64_t begin = 0; begin < d.n; begin += config_.eval_batch_size) {
    std::vector<int64_t> rows;
    for (int64_t i = begin; i < std::min(d.n, begin + config_.eval_batch_size); ++i) rows.push_back(i);
    wrong += wrong_predictions(model_->class_logits(Var(gather(d, rows)), unused, false).value().to_vector(), d.labels,
                               rows);
  }
  return double(wrong) / double(d.n);
}

std::map<std::string, std::string> Trainer::metadata() const {
  std::map<std::string, std::string> m = {
      {"format", "equivae-checkpoint-1"},      {"model", model_json(model_config_)},
      {"epoch", std::to_string(epoch_)},         {"step", std::to_string(step_)},
      {"seed", std::to_string(config_.seed)},    {"m_max", std::to_string(config_.m_max)},
      {"labels_per_class", std::to_string(config_.labels_per_class)},
      {"data", data_.train.name},
      {"init", init_scheme_name(model_config_.init)},
      {"set_sampling", data::set_sampling_name(config_.set_sampling)}};
  if (best_epoch_ > 0) m["best_epoch"] = std::to_string(best_epoch_), m["best_validation_error"] = fmt::format("{:.17g}", best_error_);
  return m;
}

void Trainer::save(const std::string& path) { save_checkpoint(path, params_, adam_.get(), metadata()); }

void Trainer::resume(const std::string& path) {
  const auto meta = read_checkpoint_metadata(path);
  if (!meta.count("model") || meta.at("model") != model_json(model_config_))
    throw std::runtime_error(fmt::format("checkpoint {}: its model ({}) differs from this run's ({})", path,
                                         meta.count("model") ? meta.at("model") : "none", model_json(model_config_)));
  if (meta.count("seed") && metadata_count(path, meta, "seed", UINT64_MAX) != config_.seed)
    throw std::runtime_error(fmt::format("checkpoint {}: saved with --seed {}, this run has --seed {}", path,
                                         meta.at("seed"), config_.seed));
  if (checkpoint_init(meta) != model_config_.init || checkpoint_set_sampling(meta) != config_.set_sampling)
    throw std::runtime_error(fmt::format("checkpoint {}: saved with --init {} --set-sampling {}, this run has --init {} "
                                         "--set-sampling {}",
                                         path, init_scheme_name(checkpoint_init(meta)),
                                         data::set_sampling_name(checkpoint_set_sampling(meta)),
                                         init_scheme_name(model_config_.init),
                                         data::set_sampling_name(config_.set_sampling)));
  load_checkpoint(path, params_, adam_.get());
  epoch_ = int(metadata_count(path, meta, "epoch", INT_MAX));
  step_ = metadata_count(path, meta, "step", UINT64_MAX);
  if (meta.count("best_epoch")) {
    best_epoch_ = int(metadata_count(path, meta, "best_epoch", INT_MAX));
    try {
      best_error_ = std::stod(meta.at("best_validation_error"));
    } catch (const std::exception&) {
      throw std::runtime_error(fmt::format("checkpoint {}: metadata 'best_validation_error' is missing or not a number",
                                           path));
    }
    if (best_epoch_ == epoch_) {
      best_values_ = params_.values().clone();
    } else {  // the best epoch's parameters, kept beside the run's last checkpoint
      ParameterStore best(model_config_.init);
      EquiVAE shape_only(model_config_, best);
      best.allocate(config_.seed, params_.values().dtype(), Device::cpu);
      const std::string best_file = (std::filesystem::path(path).parent_path() / "best.safetensors").string();
      const auto best_meta = load_checkpoint(best_file, best, nullptr);
      EQUIVAE_CHECK(best_meta.count("epoch") && best_meta.at("epoch") == meta.at("best_epoch"),
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

std::vector<DeadUnits> Trainer::dead_units(const data::Dataset& d, int64_t images) {
  NoGradGuard no_grad;
  std::vector<DeadUnits> out;
  std::vector<std::vector<bool>> fired;
  const int64_t n = std::min(images, d.n);
  for (int64_t begin = 0; begin < n; begin += config_.eval_batch_size) {
    std::vector<int64_t> rows;
    for (int64_t i = begin; i < std::min(n, begin + config_.eval_batch_size); ++i) rows.push_back(i);
    const auto layers = model_->invariant_activations(Var(gather(d, rows)));
    for (size_t l = 0; l < layers.size(); ++l) {
      const Tensor a = layers[l].second.value().to(Device::cpu).to(DType::f32);
      const int64_t units = a.shape()[1], per_unit = a.numel() / (a.shape()[0] * units);
      if (out.size() <= l) out.push_back({layers[l].first, units, 0}), fired.emplace_back(size_t(units), false);
      const float* x = a.data<float>();
      for (int64_t i = 0; i < a.numel(); ++i)
        if (x[i] > 0) fired[l][size_t(i / per_unit % units)] = true;
    }
  }
  for (size_t l = 0; l < out.size(); ++l) out[l].dead = std::count(fired[l].begin(), fired[l].end(), false);
  return out;
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

std::vector<float> Trainer::represent(const data::Dataset& d) {
  NoGradGuard no_grad;
  std::vector<float> out;
  out.reserve(size_t(d.n * model_config_.d_r));
  for (int64_t begin = 0; begin < d.n; begin += config_.eval_batch_size) {
    std::vector<int64_t> rows;
    for (int64_t i = begin; i < std::min(d.n, begin + config_.eval_batch_size); ++i) rows.push_back(i);
    const Tensor r = model_->represent(Var(gather(d, rows))).value().to(Device::cpu);
    out.insert(out.end(), r.data<float>(), r.data<float>() + r.numel());
  }
  return out;
}

std::vector<std::vector<double>> Trainer::centroids() {
  const std::vector<float> r = represent(data_.train);
  const int64_t dr = model_config_.d_r;
  std::vector<std::vector<double>> c(size_t(model_config_.num_classes), std::vector<double>(size_t(dr), 0.0));
  // Over the labelled rows only: a semi-supervised model knows no other labels.
  for (size_t y = 0; y < c.size(); ++y) {
    for (int64_t i : train_classes_.rows[y])
      for (int64_t k = 0; k < dr; ++k) c[y][size_t(k)] += r[size_t(i * dr + k)];
    for (double& v : c[y]) v /= double(std::max<size_t>(1, train_classes_.rows[y].size()));
  }
  return c;
}

double Trainer::distance_error(const data::Dataset& d) {
  const auto c = centroids();
  const std::vector<float> r = represent(d);
  const int64_t dr = model_config_.d_r;
  int64_t wrong = 0;
  for (int64_t i = 0; i < d.n; ++i) {
    double best = std::numeric_limits<double>::infinity();
    int32_t label = -1;
    for (size_t y = 0; y < c.size(); ++y) {
      double dist = 0;
      for (int64_t k = 0; k < dr; ++k) dist += std::pow(double(r[size_t(i * dr + k)]) - c[y][size_t(k)], 2);
      if (dist < best) best = dist, label = int32_t(y);
    }
    wrong += label != d.labels[size_t(i)];
  }
  return double(wrong) / double(d.n);
}

}  // namespace equivae
