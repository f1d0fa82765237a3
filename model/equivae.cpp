#include "model/equivae.h"

#include <algorithm>
#include <stdexcept>

#include "engine/shapes.h"

namespace equivae {

std::string ModelConfig::describe() const {
  std::string f;
  for (int64_t x : filters) f += (f.empty() ? "" : ",") + std::to_string(x);
  return fmt::format("{}x{}x{} images, filters ({}), H {}, d_r {}, d_v {}, {} classes, {} likelihood", channels,
                     image_size, image_size, f, hidden, d_r, d_v, num_classes,
                     likelihood == Likelihood::bernoulli ? "Bernoulli" : "Gaussian");
}

void set_paper_latents(ModelConfig& m, int64_t d) {
  constexpr int64_t kHiddenFor16 = 128;
  if (d != 8 && d != 16)
    throw std::invalid_argument(fmt::format("--latent {}: the paper's latent sizes are 8 and 16", d));
  m.d_r = m.d_v = d;
  m.hidden = kHiddenFor16 * d / 16;
}

EquiVAE::EquiVAE(const ModelConfig& config, ParameterStore& params) : config_(config) {
  const bool filters_positive = std::all_of(config.filters.begin(), config.filters.end(), [](int64_t f) { return f > 0; });
  EQUIVAE_CHECK(!config.filters.empty() && filters_positive && config.image_size > 0 && config.channels > 0 &&
                    config.hidden > 0 && config.d_r > 0 && config.d_v > 0 && config.num_classes > 1,
                "equivae: bad model configuration: {}", config.describe());
  sizes_ = conv_stack_sizes(config.image_size, config.filters.size());
  // The decoder retraces them: output padding makes each stride-2 transposed conv land on the
  // encoder's size (2 -> 4 -> 7 -> 14 -> 28 for 28x28).
  for (size_t i = sizes_.size() - 1; i >= 1; --i)
    output_padding_.push_back(sizes_[i - 1] - conv_transpose_out_size(sizes_[i], kConvKernel, 2, kConvPad, 0));

  const int64_t H = config.hidden, last = config.filters.back(), map = last * sizes_.back() * sizes_.back();
  auto dense = [&](const std::string& name, int64_t in, int64_t out) { return Dense::declare(params, name, in, out); };
  h_ = ConvStack::declare(params, "h", config.channels, config.image_size, config.filters, H);
  g1_ = dense("g.dense", H, H);
  g2_ = dense("g.out", H, config.d_r);
  ex_ = ConvStack::declare(params, "e_x", config.channels, config.image_size, config.filters, H);
  er_ = dense("e_r.dense", config.d_r, H);
  mu1_ = dense("q.mu.dense", 2 * H, H);
  mu2_ = dense("q.mu.out", H, config.d_v);
  lv1_ = dense("q.logvar.dense", 2 * H, H);
  lv2_ = dense("q.logvar.out", H, config.d_v);
  dr_ = dense("p.r.dense", config.d_r, H);
  dv_ = dense("p.v.dense", config.d_v, H);
  dj_ = dense("p.joint.dense", 2 * H, H);
  dmap_ = dense("p.map.dense", H, map);
  // Transposed convs mirror the encoder's channels: 64 -> 32 -> 32 -> 16 -> 16, then to the image.
  for (size_t i = config.filters.size(); i-- > 0;) {
    const int64_t in = config.filters[i], out = i > 0 ? config.filters[i - 1] : config.channels;
    // PyTorch's and Keras's fans of a transposed conv: fan_in from the output channels (weight dim 1).
    const int64_t fan_in = out * kConvKernel * kConvKernel, fan_out = in * kConvKernel * kConvKernel;
    const std::string layer = fmt::format("p.deconv{}", config.filters.size() - 1 - i);
    deconvs_.push_back({params.declare(layer + ".weight", {in, out, kConvKernel, kConvKernel}, Init::weights(fan_in, fan_out)),
                        params.declare(layer + ".bias", {out}, Init::biases(fan_in))});
  }
  if (config.likelihood == Likelihood::gaussian)
    output_logvar_ = params.declare("p.output_logvar", {config.channels}, Init::zeros());
  if (config.semi_supervised) {  // SPEC.md section 2: the classifier's widths are fixed at 128, 64
    qy_ = ConvStack::declare(params, "q_y", config.channels, config.image_size, config.filters, H);
    qy1_ = dense("q_y.dense1", H + config.d_r, 128);
    qy2_ = dense("q_y.dense2", 128, 64);
    qy_out_ = dense("q_y.out", 64, config.num_classes);
  }
}

Var EquiVAE::embed(const Var& images) const {
  check_shape("equivae", "images", images.value(), {-1, config_.channels, config_.image_size, config_.image_size});
  return h_(images);
}

std::vector<std::pair<std::string, Var>> EquiVAE::invariant_activations(const Var& images) const {
  std::vector<std::pair<std::string, Var>> out;
  const std::vector<Var> h = h_.activations(images);
  for (size_t i = 0; i + 1 < h.size(); ++i) out.emplace_back(fmt::format("h.conv{}", i), h[i]);
  out.emplace_back("h.dense", h.back());
  out.emplace_back("g.dense", g1_(h.back(), true));
  return out;
}

Var EquiVAE::invariant(const Var& pooled) const { return g2_(g1_(pooled, true), false); }

Var EquiVAE::class_latent(const Var& set_images, const Tensor& offsets, const Tensor& members) const {
  return invariant(segmented_mean(embed(set_images), offsets, members));
}

EquiVAE::Posterior EquiVAE::posterior(const Var& images, const Var& r) const {
  return posterior_of_embedding(ex_(images), r);
}

EquiVAE::Posterior EquiVAE::posterior_of_embedding(const Var& e_x, const Var& r) const {
  const Var c = concat({e_x, er_(r, true)});
  return {mu2_(mu1_(c, true), false), lv2_(lv1_(c, true), false)};
}

Var EquiVAE::decode(const Var& r, const Var& v) const {
  const Var joint = dj_(concat({dr_(r, true), dv_(v, true)}), true);
  const int64_t s = sizes_.back();
  Var x = reshape(dmap_(joint, true), {joint.shape()[0], config_.filters.back(), s, s});
  for (size_t i = 0; i < deconvs_.size(); ++i) {
    const bool last = i + 1 == deconvs_.size();
    // The last layer is the stride-1 one back to the image channels, with no activation.
    x = last ? conv_transpose2d(x, deconvs_[i].w, deconvs_[i].b, 1, kConvPad, 0, false)
             : conv_transpose2d(x, deconvs_[i].w, deconvs_[i].b, 2, kConvPad, output_padding_[i], true);
  }
  return x;
}

Var EquiVAE::loglik(const Var& decoded, const Tensor& targets) const {
  return config_.likelihood == Likelihood::bernoulli ? bernoulli_loglik(decoded, targets)
                                                     : gaussian_loglik(decoded, output_logvar_, targets);
}

namespace {

// Rows `rows` of x as a new [rows.size(), ...] Var: a segmented mean over sets of one member,
// so its backward adds each row's gradient back to the row it came from.
Var gather_rows(const Var& x, const std::vector<int32_t>& rows) {
  std::vector<int32_t> offsets(rows.size() + 1);
  for (size_t i = 0; i < offsets.size(); ++i) offsets[i] = int32_t(i);
  const Device device = x.value().device();
  return segmented_mean(x, Tensor::from_indices(offsets, device), Tensor::from_indices(rows, device));
}

}  // namespace

Var EquiVAE::class_logits(const Var& images, RandomStream& stream, bool training) const {
  // r(x) as a constant: the stop-gradient of SPEC section 2
  return class_logits(images, represent(images).value(), stream, training);
}

Var EquiVAE::class_logits(const Var& images, const Tensor& r_stopped, RandomStream& stream, bool training) const {
  EQUIVAE_CHECK(config_.semi_supervised, "equivae: class_logits needs a semi-supervised model");
  const Var c = concat({qy_(images), Var(r_stopped)});
  const double p = config_.classifier_dropout;
  const Var h1 = dropout(qy1_(c, true), p, stream, training);
  return qy_out_(dropout(qy2_(h1, true), p, stream, training), false);
}

Var EquiVAE::unlabelled_elbo(const Var& images, const Tensor& targets, const Var& r_pairs, const Var& logits,
                             const Tensor& log_prior, RandomStream& stream) const {
  const int64_t n = images.shape()[0], K = config_.num_classes;
  check_shape("unlabelled_elbo", "logits", logits.value(), {n, K});
  const Var elbo_y = class_elbos(images, targets, r_pairs, &stream);
  return sub(sum_rows(mul(softmax(logits), elbo_y)), categorical_kl(logits, log_prior));
}

Var EquiVAE::class_elbos(const Var& images, const Tensor& targets, const Var& r_pairs, RandomStream* stream) const {
  const int64_t n = images.shape()[0], K = config_.num_classes;
  check_shape("class_elbos", "r_pairs", r_pairs.value(), {n * K, config_.d_r});
  // Row i * K + y pairs image i with class y: e_x is computed once per image, the decoder runs
  // on all n * K pairs.
  std::vector<int32_t> image_of;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < K; ++y) image_of.push_back(int32_t(i));
  const Posterior q = posterior_of_embedding(gather_rows(ex_(images), image_of), r_pairs);
  const Var v = stream ? reparameterize(q.mu, q.logvar, *stream) : q.mu;
  const Tensor pair_targets = gather_rows(Var(targets), image_of).value();
  return reshape(sub(loglik(decode(r_pairs, v), pair_targets), kl_normal(q.mu, q.logvar)), {n, K});
}

EquiVAE::Terms EquiVAE::terms(const Var& images, const Tensor& targets, const Var& r, RandomStream& stream) const {
  const Posterior q = posterior(images, r);
  const Var v = reparameterize(q.mu, q.logvar, stream);
  return {loglik(decode(r, v), targets), kl_normal(q.mu, q.logvar), v};
}

}  // namespace equivae
