#include "train/objective.h"

#include <cmath>

#include "engine/ops.h"
#include "train/evaluation.h"

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

}  // namespace

void ElboStats::add(double loglik_sum, double kl_sum, double log_prior_sum, int64_t count) {
  const double total = double(n + count);
  loglik = (loglik * double(n) + loglik_sum) / total;
  kl = (kl * double(n) + kl_sum) / total;
  elbo = (elbo * double(n) + loglik_sum - kl_sum + log_prior_sum) / total;
  n += count;
}

Objective::Objective(const EquiVAE& model, const TrainConfig& config, const data::Dataset& train)
    : model_(model), config_(config), train_(train), train_classes_(train.labels, train.num_classes) {
  const data::Dataset& t = train;
  for (int64_t i = 0; i < t.n; ++i) labelled_rows_.push_back(i);
  EQUIVAE_CHECK((config.labels_per_class > 0) == model.config().semi_supervised,
                "train: --labels needs a semi-supervised model and a semi-supervised model needs --labels");
  if (config.labels_per_class > 0) {
    EQUIVAE_CHECK(config.labels_per_class >= 2,
                  "train: {} label(s) per class: a complementary set needs another labelled image of the class",
                  config.labels_per_class);
    labelled_rows_ = data::balanced_label_subset(t, config.labels_per_class, config.seed);
    train_classes_ = data::ClassIndex(t.labels, t.num_classes, labelled_rows_);
    log_prior_.assign(size_t(t.num_classes), -std::log(double(t.num_classes)));  // a balanced subset
  } else {
    for (double p : data::class_frequencies(t)) log_prior_.push_back(std::log(p));
  }
}

void Objective::StepResult::read() {
  loglik_sum = loglik.item(), kl_sum = kl.item();
  if (unlabelled.defined()) unlabelled_sum = unlabelled.item();
}

Objective::StepResult Objective::supervised(const data::Dataset& d, const data::ClassIndex& classes,
                                       const std::vector<int64_t>& rows, uint64_t seed, uint64_t step) const {
  const data::ComplementarySets sets =
      data::sample_complementary_sets(rows, d.labels, classes, config_.m_max, seed, step, config_.set_sampling);
  const Tensor x = gather_images(d, rows, config_.device);
  const Var r = model_.class_latent(Var(gather_images(d, sets.images, config_.device)), Tensor::from_indices(sets.offsets, config_.device),
                                     Tensor::from_indices(sets.members, config_.device));
  RandomStream noise{seed, step << 32};  // a step draws far fewer than 2^32 numbers
  const EquiVAE::Terms t = model_.terms(Var(x), x, r, noise);
  const Var loglik = sum(t.loglik), kl = sum(t.kl);
  double log_prior_sum = 0;
  for (int64_t row : rows) log_prior_sum += log_prior_[size_t(d.labels[size_t(row)])];
  const int64_t n = int64_t(rows.size());
  // Maximise the mean of L_lab; log p(y) is a constant of the parameters.
  const Var loss = scale(sub(kl, loglik), 1.0 / double(n));
  return {loss, loglik.value(), kl.value(), Tensor(), log_prior_sum, n};
}

Objective::StepResult Objective::semi_supervised(const std::vector<int64_t>& unlabelled, uint64_t step) const {
  const data::Dataset& d = train_;
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
  StepResult s = supervised(d, train_classes_, labelled, seed, step);  // loss = -mean L_lab
  const Tensor y = Tensor::from_indices(
      [&] { std::vector<int32_t> v; for (int64_t r : labelled) v.push_back(d.labels[size_t(r)]); return v; }(),
      config_.device);
  RandomStream labelled_dropout{seed ^ kLabelledDropoutSalt, step << 32};
  const Var log_q = sum(pick(log_softmax(model_.class_logits(Var(gather_images(d, labelled, config_.device)), labelled_dropout, true)), y));

  // Unlabelled rows: one set of m labelled images of class y for every (row, y) pair.
  const int K = model_.config().num_classes;
  data::Draws m_draw{seed ^ kSetSizeSalt, data::Stream::ClassSets, step << 32};
  const int m = 1 + int(m_draw.below(std::min(config_.m_max, config_.labels_per_class)));
  std::vector<int32_t> set_classes;
  for (int64_t i = 0; i < b_u; ++i)
    for (int y_ = 0; y_ < K; ++y_) set_classes.push_back(y_);
  const data::ComplementarySets sets = data::sample_class_sets(set_classes, train_classes_, m, seed, step);
  const Var r_pairs = model_.class_latent(Var(gather_images(d, sets.images, config_.device)), Tensor::from_indices(sets.offsets, config_.device),
                                           Tensor::from_indices(sets.members, config_.device));
  const Tensor x_u = gather_images(d, unlabelled, config_.device);
  RandomStream unlabelled_dropout{seed ^ kUnlabelledDropoutSalt, step << 32};
  RandomStream unlabelled_noise{seed ^ kUnlabelledNoiseSalt, step << 32};
  const Tensor log_prior = Tensor::from(log_prior_, {K}, DType::f32).to(config_.device);
  const Var u = sum(model_.unlabelled_elbo(Var(x_u), x_u, r_pairs,
                                            model_.class_logits(Var(x_u), unlabelled_dropout, true), log_prior,
                                            unlabelled_noise));
  // -(mean over the labelled batch of L_lab + log q(y|x) + mean over the unlabelled batch of L_unlab).
  // Weighting the two sums by N_l / b_l and N_u / b_u instead (an unbiased estimate of the
  // objective summed over the whole data set) left q(y|x) at chance on MNIST: 1,000 labels of
  // 10,000 images, 3 epochs, validation q(y|x) error 88.74 % every epoch, distance error 76 %.
  s.loss = sub(s.loss, add(scale(log_q, 1.0 / double(b_l)), scale(u, 1.0 / double(b_u))));
  s.unlabelled = u.value();
  return s;
}

ElboStats Objective::evaluate(const data::Dataset& d) const {
  NoGradGuard no_grad;
  const data::ClassIndex classes(d.labels, d.num_classes);
  ElboStats stats;
  for (int64_t begin = 0, b = 0; begin < d.n; begin += config_.eval_batch_size, ++b) {
    std::vector<int64_t> rows;
    for (int64_t i = begin; i < std::min(d.n, begin + config_.eval_batch_size); ++i) rows.push_back(i);
    StepResult s = supervised(d, classes, rows, config_.seed ^ kValidationSeedSalt, uint64_t(b));
    s.read();
    stats.add(s.loglik_sum, s.kl_sum, s.log_prior_sum, s.n);
  }
  return stats;
}

}  // namespace equivae
