// Evaluation of a trained model, with no Trainer: a model loaded from a checkpoint alone
// (train_mnist --evaluate, equivae_embed) or a Trainer's own (the same functions). The
// definitions (r(x) with m = 1, the distance classifier on training-class centroids of r,
// q(v | r, x)) are in docs/model.md.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/equivae.h"
#include "train/data.h"
#include "train/run_state.h"

namespace equivae {

// Rows `rows` of d as one [rows, C, H, W] tensor on `device`.
Tensor gather_images(const data::Dataset& d, const std::vector<int64_t>& rows, Device device);

// The model of a checkpoint, built from its metadata and loaded (parameters only) on `device`.
struct LoadedModel {
  RunState state;
  ParameterStore params;
  std::unique_ptr<EquiVAE> model;
};
std::unique_ptr<LoadedModel> load_model(const std::string& checkpoint, Device device);

// Images per forward pass of the evaluation functions (memory of the conv stacks).
constexpr int64_t kEvalBatch = 500;

// r(x) with m = 1 for every row of d: n x d_r, row-major.
std::vector<float> represent(const EquiVAE& model, const data::Dataset& d, Device device);

// Per row of d: r(x) (m = 1), and the mean and log-variance of q(v | r(x), x), the posterior of
// v at the image's own r (no label needed). Row-major n x d_r, n x d_v, n x d_v.
struct Embedding {
  std::vector<float> r, v_mean, v_logvar;
};
Embedding embed(const EquiVAE& model, const data::Dataset& d, Device device);

// The decoder's output at rows of (r, v) (row-major n x d_r, n x d_v): n x C x H x W Bernoulli
// logits or Gaussian means.
std::vector<float> decode_rows(const EquiVAE& model, const std::vector<float>& r, const std::vector<float>& v,
                               int64_t n, Device device);

// Nearest training-class centroid of r (0 parameters): centroids over `train`'s rows
// `labelled_rows` (all of them unless semi-supervised), the error rate on d.
double distance_error(const EquiVAE& model, const data::Dataset& train, const std::vector<int64_t>& labelled_rows,
                      const data::Dataset& d, Device device);

// Semi-supervised models: argmax q(y | x) on d, counts[true * K + predicted] for K classes.
std::vector<int64_t> classifier_confusion(const EquiVAE& model, const data::Dataset& d, Device device);
// The share of d off the diagonal of a confusion matrix (the error rate of its classifier).
double confusion_error(const std::vector<int64_t>& counts);
// Semi-supervised models: the error rate of argmax q(y | x) on d.
double classifier_error(const EquiVAE& model, const data::Dataset& d, Device device);
// The generative classifier (0 parameters beyond the model's): argmax over y of the ELBO of (x, y)
// at the posterior mean of v, with r_y from all of `train`'s rows `labelled_rows` of class y
// (g of the class's mean h); counts[true * K + predicted] on d. What L_unlab's expectation over y
// teaches q(y | x) comes from these scores, so its error bounds what the unlabelled images add.
std::vector<int64_t> generative_confusion(const EquiVAE& model, const data::Dataset& train,
                                          const std::vector<int64_t>& labelled_rows, const data::Dataset& d,
                                          Device device);

// Units of one ReLU layer that never fire (output <= 0 everywhere) on some images.
struct DeadUnits {
  std::string layer;
  int64_t units = 0, dead = 0;
};
// The never-active ReLU units of h and g (EquiVAE::invariant_activations) on the first `images`
// rows of d.
std::vector<DeadUnits> dead_units(const EquiVAE& model, const data::Dataset& d, int64_t images, Device device);

}  // namespace equivae
