#include "model/equivae.h"

#include "engine/shapes.h"

namespace equivae {
namespace {
constexpr int64_t kKernel = 5, kPad = 2;
}

std::string ModelConfig::describe() const {
  std::string f;
  for (int64_t x : filters) f += (f.empty() ? "" : ",") + std::to_string(x);
  return fmt::format("{}x{}x{} images, filters ({}), H {}, d_r {}, d_v {}, {} classes, {} likelihood", channels,
                     image_size, image_size, f, hidden, d_r, d_v, num_classes,
                     likelihood == Likelihood::bernoulli ? "Bernoulli" : "Gaussian");
}

EquiVAE::Dense EquiVAE::dense(ParameterStore& p, const std::string& name, int64_t in, int64_t out) {
  return {p.declare(name + ".weight", {out, in}, Init::fan_in(in)), p.declare(name + ".bias", {out}, Init::fan_in(in))};
}

EquiVAE::ConvEncoder EquiVAE::conv_encoder(ParameterStore& p, const std::string& name) {
  ConvEncoder e;
  int64_t in = config_.channels;
  for (size_t i = 0; i < config_.filters.size(); ++i) {
    const int64_t out = config_.filters[i], fan_in = in * kKernel * kKernel;
    const std::string layer = fmt::format("{}.conv{}", name, i);
    e.convs.push_back({p.declare(layer + ".weight", {out, in, kKernel, kKernel}, Init::fan_in(fan_in)),
                       p.declare(layer + ".bias", {out}, Init::fan_in(fan_in))});
    in = out;
  }
  e.dense = dense(p, name + ".dense", in * sizes_.back() * sizes_.back(), config_.hidden);
  return e;
}

EquiVAE::EquiVAE(const ModelConfig& config, ParameterStore& params) : config_(config) {
  EQUIVAE_CHECK(!config.filters.empty() && config.image_size > 0 && config.channels > 0 && config.hidden > 0 &&
                    config.d_r > 0 && config.d_v > 0 && config.num_classes > 1,
                "equivae: bad model configuration: {}", config.describe());
  // Encoder sizes: stride 1 for the first conv, 2 for the others.
  int64_t s = config.image_size;
  for (size_t i = 0; i < config.filters.size(); ++i) {
    s = conv_out_size(s, kKernel, i == 0 ? 1 : 2, kPad);
    sizes_.push_back(s);
  }
  // The decoder retraces them: output padding makes each stride-2 transposed conv land on the
  // encoder's size (2 -> 4 -> 7 -> 14 -> 28 for 28x28).
  for (size_t i = sizes_.size() - 1; i >= 1; --i)
    output_padding_.push_back(sizes_[i - 1] - conv_transpose_out_size(sizes_[i], kKernel, 2, kPad, 0));

  const int64_t H = config.hidden, last = config.filters.back(), map = last * sizes_.back() * sizes_.back();
  h_ = conv_encoder(params, "h");
  g1_ = dense(params, "g.dense", H, H);
  g2_ = dense(params, "g.out", H, config.d_r);
  ex_ = conv_encoder(params, "e_x");
  er_ = dense(params, "e_r.dense", config.d_r, H);
  mu1_ = dense(params, "q.mu.dense", 2 * H, H);
  mu2_ = dense(params, "q.mu.out", H, config.d_v);
  lv1_ = dense(params, "q.logvar.dense", 2 * H, H);
  lv2_ = dense(params, "q.logvar.out", H, config.d_v);
  dr_ = dense(params, "p.r.dense", config.d_r, H);
  dv_ = dense(params, "p.v.dense", config.d_v, H);
  dj_ = dense(params, "p.joint.dense", 2 * H, H);
  dmap_ = dense(params, "p.map.dense", H, map);
  // Transposed convs mirror the encoder's channels: 64 -> 32 -> 32 -> 16 -> 16, then to the image.
  for (size_t i = config.filters.size(); i-- > 0;) {
    const int64_t in = config.filters[i], out = i > 0 ? config.filters[i - 1] : config.channels;
    const int64_t fan_in = out * kKernel * kKernel;  // PyTorch's ConvTranspose2d fan-in (weight dim 1)
    const std::string layer = fmt::format("p.deconv{}", config.filters.size() - 1 - i);
    deconvs_.push_back({params.declare(layer + ".weight", {in, out, kKernel, kKernel}, Init::fan_in(fan_in)),
                        params.declare(layer + ".bias", {out}, Init::fan_in(fan_in))});
  }
  if (config.likelihood == Likelihood::gaussian)
    output_logvar_ = params.declare("p.output_logvar", {config.channels}, Init::zeros());
}

Var EquiVAE::apply(const Dense& d, const Var& x, bool relu_out) {
  const Var y = linear(x, d.w, d.b);
  return relu_out ? relu(y) : y;
}

Var EquiVAE::run(const ConvEncoder& e, const Var& images) const {
  check_shape("equivae", "images", images.value(), {-1, config_.channels, config_.image_size, config_.image_size});
  Var x = images;
  for (size_t i = 0; i < e.convs.size(); ++i) x = conv2d(x, e.convs[i].w, e.convs[i].b, i == 0 ? 1 : 2, kPad, true);
  return apply(e.dense, reshape(x, {x.shape()[0], -1}), true);
}

Var EquiVAE::embed(const Var& images) const { return run(h_, images); }

Var EquiVAE::invariant(const Var& pooled) const { return apply(g2_, apply(g1_, pooled, true), false); }

Var EquiVAE::class_latent(const Var& set_images, const Tensor& offsets, const Tensor& members) const {
  return invariant(segmented_mean(embed(set_images), offsets, members));
}

EquiVAE::Posterior EquiVAE::posterior(const Var& images, const Var& r) const {
  const Var c = concat({run(ex_, images), apply(er_, r, true)});
  return {apply(mu2_, apply(mu1_, c, true), false), apply(lv2_, apply(lv1_, c, true), false)};
}

Var EquiVAE::decode(const Var& r, const Var& v) const {
  const Var joint = apply(dj_, concat({apply(dr_, r, true), apply(dv_, v, true)}), true);
  const int64_t s = sizes_.back();
  Var x = reshape(apply(dmap_, joint, true), {joint.shape()[0], config_.filters.back(), s, s});
  for (size_t i = 0; i < deconvs_.size(); ++i) {
    const bool last = i + 1 == deconvs_.size();
    // The last layer is the stride-1 one back to the image channels, with no activation.
    x = last ? conv_transpose2d(x, deconvs_[i].w, deconvs_[i].b, 1, kPad, 0, false)
             : conv_transpose2d(x, deconvs_[i].w, deconvs_[i].b, 2, kPad, output_padding_[i], true);
  }
  return x;
}

Var EquiVAE::loglik(const Var& decoded, const Tensor& targets) const {
  return config_.likelihood == Likelihood::bernoulli ? bernoulli_loglik(decoded, targets)
                                                     : gaussian_loglik(decoded, output_logvar_, targets);
}

EquiVAE::Terms EquiVAE::terms(const Var& images, const Tensor& targets, const Var& r, RandomStream& stream) const {
  const Posterior q = posterior(images, r);
  const Var v = reparameterize(q.mu, q.logvar, stream);
  return {loglik(decode(r, v), targets), kl_normal(q.mu, q.logvar), v};
}

}  // namespace equivae
