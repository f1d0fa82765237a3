// The fixed EquiVAE graph of SPEC.md section 1 on the engine's ops, for one device and dtype.
//
//   h   : conv stack (5x5; stride 1, then 2) -> flatten -> dense(H) + ReLU   (per image)
//   r_y = g(mean over the set of h(x^i)),  g: dense(H) + ReLU -> linear(d_r)
//   q(v | r_y, x) = N(mu, exp(logvar)): e_x (own conv stack + dense), e_r: dense(H) + ReLU on r_y,
//         mu = linear(relu(dense([e_x, e_r]))), logvar likewise with its own weights
//   p(x | r_y, v): dense(H)+ReLU on each, concat, dense(H)+ReLU, dense to the last feature map
//         + ReLU, transposed convs mirroring the encoder, a last 5x5 stride-1 layer to the image
//         channels; Bernoulli logits, or a Gaussian mean with one learned log-variance per channel.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "model/layers.h"

namespace equivae {

enum class Likelihood { bernoulli, gaussian };

struct ModelConfig {
  int64_t channels = 1, image_size = 28;  // square images
  std::vector<int64_t> filters{16, 16, 32, 32, 64};
  int64_t hidden = 128, d_r = 16, d_v = 16;
  int num_classes = 10;
  Likelihood likelihood = Likelihood::bernoulli;
  // Semi-supervised models add the classifier q(y | x) of SPEC.md section 2 (parameters "q_y.*").
  bool semi_supervised = false;
  double classifier_dropout = 0.5;
  // How the parameters start (not part of the architecture, so not in a checkpoint's "model").
  // He-uniform: on MNIST it separated the classes in r from the first epoch where PyTorch's
  // default (torch) left r nearly constant and half of h and g's ReLU units dead
  // (docs/results.md, issue 11, screen 1).
  InitScheme init = InitScheme::he;
  std::string describe() const;
};

// The paper's two latent sizes (appendix): d_r = d_v = d, with H = 128 for 16-dimensional latents
// and halved to 64 for 8-dimensional ones ("the number of units in the dense layers are halved
// when using 8 dimensional latents, as in our semi-supervised experiments on MNIST"). q(y|x)'s
// dense widths (128, 64) are the ones the paper gives for those same runs, so they stay.
// Throws std::invalid_argument naming --latent for any other d.
void set_paper_latents(ModelConfig& m, int64_t d);

class EquiVAE {
 public:
  // Declares the parameters in `params` (allocate them afterwards).
  EquiVAE(const ModelConfig& config, ParameterStore& params);

  const ModelConfig& config() const { return config_; }
  // Spatial size after each conv of the encoder (e.g. 28, 14, 7, 4, 2).
  const std::vector<int64_t>& feature_sizes() const { return sizes_; }

  Var embed(const Var& images) const;       // h(x): [n, H]
  // The ReLU outputs of h (each conv, then its dense layer) and of g's hidden layer on `images`,
  // named as their parameters ("h.conv0", ..., "h.dense", "g.dense"); a unit is dim 1.
  std::vector<std::pair<std::string, Var>> invariant_activations(const Var& images) const;
  Var invariant(const Var& pooled) const;   // g(.): [n, d_r]
  Var represent(const Var& images) const { return invariant(embed(images)); }  // r(x), m = 1
  // r_y of each set: g(segmented mean of h over its members), members indexing `set_images`.
  Var class_latent(const Var& set_images, const Tensor& offsets, const Tensor& members) const;

  struct Posterior { Var mu, logvar; };
  Posterior posterior(const Var& images, const Var& r) const;
  Var decode(const Var& r, const Var& v) const;  // logits (Bernoulli) or mean (Gaussian)

  // Per-row log p(x | r, v) and KL(q(v | r, x) || N(0, I)) with one sample of v.
  struct Terms { Var loglik, kl; Var v; };
  Terms terms(const Var& images, const Tensor& targets, const Var& r, RandomStream& stream) const;
  // log p(x | r, v) of a decoded output.
  Var loglik(const Var& decoded, const Tensor& targets) const;

  // Semi-supervised models only. Logits of q(y | x): an own conv block on x, concatenated with
  // r(x) (m = 1) behind a stop-gradient, so no gradient reaches h or g this way; then dense 128
  // and 64 with ReLU and dropout, then K logits.
  Var class_logits(const Var& images, RandomStream& stream, bool training) const;
  // The same with r(x), the input behind the stop-gradient, given: a constant to the gradient,
  // which central differences must hold fixed too to compare with it (tests/test_semi.cpp).
  Var class_logits(const Var& images, const Tensor& r_stopped, RandomStream& stream, bool training) const;
  // L_unlab of each unlabelled row (SPEC.md section 2), the expectation over y exact:
  //   sum_y q(y|x) [log p(x | r_y, v_y) - KL(q(v | r_y, x) || N(0, I))] - KL(q(y|x) || p(y)),
  // with r_pairs [n K, d_r] the r_y of each (image i, class y) pair in row i K + y (each from its
  // own set of labelled examples of y) and one v_y per pair.
  Var unlabelled_elbo(const Var& images, const Tensor& targets, const Var& r_pairs, const Var& logits,
                      const Tensor& log_prior, RandomStream& stream) const;
  // The ELBO of every (image i, class y) pair, [n, K]: log p(x | r_y, v) - KL(q(v | r_y, x) || N(0, I))
  // with r_pairs as above and v one sample of q per pair, or its mean where `stream` is null (a
  // deterministic score: the generative classifier, train/evaluation.h).
  Var class_elbos(const Var& images, const Tensor& targets, const Var& r_pairs, RandomStream* stream) const;

 private:
  Posterior posterior_of_embedding(const Var& e_x, const Var& r) const;

  ModelConfig config_;
  std::vector<int64_t> sizes_, output_padding_;
  ConvStack h_, ex_;
  Dense g1_, g2_, er_, mu1_, mu2_, lv1_, lv2_, dr_, dv_, dj_, dmap_;
  std::vector<Dense> deconvs_;
  ConvStack qy_;                // semi-supervised only
  Dense qy1_, qy2_, qy_out_;
  Var output_logvar_;
};

}  // namespace equivae
