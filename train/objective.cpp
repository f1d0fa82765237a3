#include "train/objective.h"

#include <algorithm>
#include <climits>
#include <cmath>

#include "engine/ops.h"

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

// Data set rows of several lists, one after another, as the i32 indices of one gather.
std::vector<int32_t> concat_rows(std::initializer_list<const std::vector<int64_t>*> lists) {
  std::vector<int32_t> out;
  for (const std::vector<int64_t>* l : lists)
    for (int64_t row : *l) {
      EQUIVAE_CHECK(row >= 0 && row <= INT32_MAX, "objective: row {} is outside the 32-bit index range", row);
      out.push_back(int32_t(row));
    }
  return out;
}

}  // namespace

void ElboStats::add(double loglik_sum, double kl_sum, double log_prior_sum, int64_t count) {
  const double total = double(n + count);
  loglik = (loglik * double(n) + loglik_sum) / total;
  kl = (kl * double(n) + kl_sum) / total;
  elbo = (elbo * double(n) + loglik_sum - kl_sum + log_prior_sum) / total;
  n += count;
}

Objective::Objective(const EquiVAE& model, const TrainConfig& config, const DeviceImages& train)
    : model_(model),
      config_(config),
      train_(train),
      train_classes_(train.dataset().labels, train.dataset().num_classes),
      indices_(config.device) {
  const data::Dataset& t = train.dataset();
  for (int64_t i = 0; i < t.n; ++i) labelled_rows_.push_back(i);
  EQUIVAE_CHECK(config.teacher_warmup_epochs == 0 || config.labels_per_class > 0,
                "train: --teacher-warmup is for semi-supervised runs: give --labels N too");
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
  if (config.labels_per_class > 0)
    log_prior_tensor_ = Tensor::from(log_prior_, {int64_t(log_prior_.size())}, DType::f32).to(config.device);
}

void Objective::StepResult::read() {
  loglik_sum = loglik.item() * sum_scale(), kl_sum = kl.item() * sum_scale();
  if (unlabelled.defined()) unlabelled_sum = unlabelled.item();
}

int64_t Objective::max_set_images(int64_t n) const {
  int64_t bound = n * config_.m_max;
  if (config_.set_sampling == data::SetSampling::batch)
    bound = std::min(bound, n + std::min<int64_t>(model_.config().num_classes, n) * (config_.m_max + 1));
  return bound;
}

std::vector<std::span<const int32_t>> Objective::Indices::parts() const {
  std::vector<std::span<const int32_t>> p{gathered, offsets, members};
  if (!pick_offsets.empty()) p.insert(p.end(), {pick_offsets, pick_members, loss_offsets, loss_members});
  return p;
}

Objective::Indices Objective::supervised_indices(const data::Dataset& d, const data::ClassIndex& classes,
                                                 const std::vector<int64_t>& rows, uint64_t seed, uint64_t step,
                                                 int64_t fixed_rows) const {
  const data::ComplementarySets sets =
      data::sample_complementary_sets(rows, d.labels, classes, config_.m_max, seed, step, config_.set_sampling);
  Indices ix;
  ix.n = ix.rows = int64_t(rows.size());
  for (int64_t row : rows) ix.log_prior_sum += log_prior_[size_t(d.labels[size_t(row)])];
  ix.offsets = sets.offsets;
  ix.members = sets.members;
  if (fixed_rows == 0) {
    ix.gathered = concat_rows({&rows, &sets.images});
    return ix;
  }
  const int64_t n = ix.n, images = max_set_images(fixed_rows), members = fixed_rows * config_.m_max + 1;
  EQUIVAE_CHECK(n >= 1 && n <= fixed_rows, "objective: a batch of {} rows cannot run as a step of {} rows", n,
                fixed_rows);
  EQUIVAE_CHECK(fixed_rows + images <= INT32_MAX && members <= INT32_MAX,
                "objective: a step of {} rows needs more than 32-bit indices", fixed_rows);
  ix.rows = fixed_rows;
  std::vector<int64_t> padded = rows;
  padded.resize(size_t(fixed_rows), rows[0]);  // the padding rows: copies of the first, each with its set
  const std::vector<int32_t> first_set(sets.members.begin(), sets.members.begin() + sets.offsets[1]);
  for (int64_t i = n; i < fixed_rows; ++i) {
    ix.members.insert(ix.members.end(), first_set.begin(), first_set.end());
    ix.offsets.push_back(int32_t(ix.members.size()));
  }
  EQUIVAE_CHECK(int64_t(sets.images.size()) <= images && int64_t(ix.members.size()) < members,
                "objective: {} set images and {} members exceed the bounds {} and {}", sets.images.size(),
                ix.members.size(), images, members);
  ix.gathered = concat_rows({&padded, &sets.images});
  ix.gathered.resize(size_t(fixed_rows + images), 0);  // padding set images: encoded by h, in no set
  ix.members.resize(size_t(members), 0);                // the extra set's, dropped with it
  ix.offsets.push_back(int32_t(members));
  for (int32_t i = 0; i <= int32_t(fixed_rows); ++i) ix.pick_offsets.push_back(i);
  for (int32_t i = 0; i < int32_t(fixed_rows); ++i) ix.pick_members.push_back(i);
  // The loss's two sets of rows: the n real ones, then the padding's and row 0 (never empty).
  ix.loss_offsets = {0, int32_t(n), int32_t(fixed_rows + 1)};
  for (int32_t i = 0; i < int32_t(fixed_rows); ++i) ix.loss_members.push_back(i);
  ix.loss_members.push_back(0);
  return ix;
}

Objective::StepResult Objective::supervised_step(const DeviceImages& images, const Indices& host,
                                                 const std::vector<Tensor>& index, RandomStream noise) {
  const int64_t n = host.n, rows = host.rows;
  const Tensor all = images.gather(index[0]);
  const Tensor x = all.rows(0, rows);
  Var r = model_.class_latent(Var(all.rows(rows, all.dim(0))), index[1], index[2]);
  const bool fixed = index.size() > 3;
  if (fixed) r = segmented_mean(r, index[3], index[4]);  // each row's set, the extra set dropped (exact)
  const EquiVAE::Terms t = model_.terms(Var(x), x, r, noise);
  // Maximise the mean of L_lab; log p(y) is a constant of the parameters.
  if (!fixed) {
    const Var loglik = sum(t.loglik), kl = sum(t.kl);
    return {scale(sub(kl, loglik), 1.0 / double(n)), loglik.value(), kl.value(), Tensor(), host.log_prior_sum, n};
  }
  // Fixed shapes: the means over the n real rows (the padding rows' loss set dropped, so they get no
  // gradient), taken on the device, since n is not a constant of the graph.
  const Var per_row = concat({reshape(t.loglik, {rows, 1}), reshape(t.kl, {rows, 1})});
  const Var real = segmented_mean(segmented_mean(per_row, index[5], index[6]), index[3].rows(0, 2), index[4].rows(0, 1));
  const std::vector<Var> terms = split(real, {1, 1});  // [1, 1] each: mean log-likelihood, mean KL
  StepResult s{reshape(sub(terms[1], terms[0]), {1}), terms[0].value(), terms[1].value(), Tensor(),
               host.log_prior_sum, n};
  s.means = true;
  return s;
}

Objective::StepResult Objective::supervised(const DeviceImages& images, const data::ClassIndex& classes,
                                            const std::vector<int64_t>& rows, uint64_t seed, uint64_t step) {
  // One upload of the step's indices and one gather of the batch and its set images.
  const Indices ix = supervised_indices(images.dataset(), classes, rows, seed, step);
  // A step draws far fewer than 2^32 numbers.
  return supervised_step(images, ix, indices_.upload(ix.parts()), RandomStream{seed, step << 32});
}

double Objective::teacher_weight(double epochs_done) const {
  if (config_.teacher_warmup_epochs <= 0) return 1.0;
  return std::clamp(epochs_done / config_.teacher_warmup_epochs, 0.0, 1.0);
}

Objective::StepResult Objective::semi_supervised(const std::vector<int64_t>& unlabelled, uint64_t step,
                                                 double epochs_done) {
  const data::Dataset& d = train_.dataset();
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
  StepResult s = supervised(train_, train_classes_, labelled, seed, step);  // loss = -mean L_lab

  // Unlabelled rows: one set of m labelled images of class y for every (row, y) pair.
  const int K = model_.config().num_classes;
  const int m = unlabelled_set_size(step);
  std::vector<int32_t> set_classes;
  for (int64_t i = 0; i < b_u; ++i)
    for (int y_ = 0; y_ < K; ++y_) set_classes.push_back(y_);
  const data::ComplementarySets sets = data::sample_class_sets(set_classes, train_classes_, m, seed, step);
  // The rest of the step's indices in one upload, its images in one gather: the labelled rows
  // again (for q(y|x)), the set images, the unlabelled rows.
  std::vector<int32_t> labels;
  for (int64_t r : labelled) labels.push_back(d.labels[size_t(r)]);
  const std::vector<int32_t> gathered = concat_rows({&labelled, &sets.images, &unlabelled});
  const std::vector<Tensor> index = indices_.upload({gathered, sets.offsets, sets.members, labels});
  const Tensor all = train_.gather(index[0]);
  const int64_t set_images = int64_t(sets.images.size());
  const Tensor x_l = all.rows(0, b_l), x_u = all.rows(b_l + set_images, all.dim(0));
  RandomStream labelled_dropout{seed ^ kLabelledDropoutSalt, step << 32};
  const Var log_q = sum(pick(log_softmax(model_.class_logits(Var(x_l), labelled_dropout, true)), index[3]));
  const Var r_pairs = model_.class_latent(Var(all.rows(b_l, b_l + set_images)), index[1], index[2]);
  RandomStream unlabelled_dropout{seed ^ kUnlabelledDropoutSalt, step << 32};
  RandomStream unlabelled_noise{seed ^ kUnlabelledNoiseSalt, step << 32};
  Var logits_u = model_.class_logits(Var(x_u), unlabelled_dropout, true);
  if (const double w = teacher_weight(epochs_done); w < 1.0)  // the same values, a fraction w of the gradient
    logits_u = add(scale(stop_grad(logits_u), 1.0 - w), scale(logits_u, w));
  const Var u = sum(model_.unlabelled_elbo(Var(x_u), x_u, r_pairs, logits_u, log_prior_tensor_, unlabelled_noise));
  // -(mean over the labelled batch of L_lab + log q(y|x) + mean over the unlabelled batch of L_unlab).
  // Weighting the two sums by N_l / b_l and N_u / b_u instead (an unbiased estimate of the
  // objective summed over the whole data set) left q(y|x) at chance on MNIST: 1,000 labels of
  // 10,000 images, 3 epochs, validation q(y|x) error 88.74 % every epoch, distance error 76 %.
  s.loss = sub(s.loss, add(scale(log_q, 1.0 / double(b_l)), scale(u, 1.0 / double(b_u))));
  s.unlabelled = u.value();
  return s;
}

int Objective::unlabelled_set_size(uint64_t step) const {
  if (config_.unlabelled_sets_all) return config_.labels_per_class;
  data::Draws m_draw{config_.seed ^ kSetSizeSalt, data::Stream::ClassSets, step << 32};
  return 1 + int(m_draw.below(std::min(config_.m_max, config_.labels_per_class)));
}

ElboStats Objective::evaluate(const DeviceImages& images) {
  NoGradGuard no_grad;
  const data::Dataset& d = images.dataset();
  const data::ClassIndex classes(d.labels, d.num_classes);
  ElboStats stats;
  for (int64_t begin = 0, b = 0; begin < d.n; begin += config_.eval_batch_size, ++b) {
    std::vector<int64_t> rows;
    for (int64_t i = begin; i < std::min(d.n, begin + config_.eval_batch_size); ++i) rows.push_back(i);
    StepResult s = supervised(images, classes, rows, config_.seed ^ kValidationSeedSalt, uint64_t(b));
    s.read();
    stats.add(s.loglik_sum, s.kl_sum, s.log_prior_sum, s.n);
  }
  return stats;
}

}  // namespace equivae
