// The differentiable ops of the EquiVAE graph. Each checks its inputs (throwing ShapeError or
// NumericError that names the op and the shapes), allocates its output on the inputs' device,
// calls that device's backend, and records how to compute its inputs' gradients.
#pragma once
#include <vector>

#include "engine/autograd.h"
#include "engine/rng.h"

namespace equivae {

// elementwise (same shapes)
Var add(const Var& a, const Var& b);
Var sub(const Var& a, const Var& b);
Var mul(const Var& a, const Var& b);
Var scale(const Var& x, double alpha);
Var relu(const Var& x);

// shapes
Var reshape(const Var& x, Shape shape);
// Along dimension 1 of tensors viewed as [rows, *] (all share dim 0): concat and its inverse.
Var concat(const std::vector<Var>& xs);
std::vector<Var> split(const Var& x, const std::vector<int64_t>& sizes);

// reductions
Var sum(const Var& x);       // [1]
Var mean(const Var& x);      // [1]
Var sum_rows(const Var& x);  // [dim 0]: sum over all other dimensions

// layers
// x [n, in], w [out, in], b [out] or undefined; relu: max(0, x w^T + b) in the same pass.
Var linear(const Var& x, const Var& w, const Var& b, bool relu = false);
// x [n, c, h, w], w [out_c, c, k, k], b [out_c] or undefined; optional fused ReLU.
Var conv2d(const Var& x, const Var& w, const Var& b, int64_t stride, int64_t pad, bool relu = false);
// PyTorch's ConvTranspose2d: x [n, c, h, w], w [c, out_c, k, k], b [out_c] or undefined.
Var conv_transpose2d(const Var& x, const Var& w, const Var& b, int64_t stride, int64_t pad,
                     int64_t output_padding, bool relu = false);

// Rows of x (dim 0) picked by index (a 1-D i32 tensor on x's device, repeats allowed), as a new
// tensor, no gradient: a batch gathered from a data set kept on the device (one kernel).
Tensor gather_rows(const Tensor& x, const Tensor& index);

// r_y: row s of the result is the mean of x's rows members[offsets[s] .. offsets[s+1]) (CSR,
// i32 tensors on x's device; every set non-empty, every member a row of x).
Var segmented_mean(const Var& x, const Tensor& offsets, const Tensor& members);

// random: draws from `stream` (engine/rng.h)
Var reparameterize(const Var& mu, const Var& logvar, RandomStream& stream);  // mu + exp(logvar/2) eps
Var dropout(const Var& x, double p, RandomStream& stream, bool training);

// Per-row terms of the objective (one value per dim-0 row). Inputs must be finite.
Var bernoulli_loglik(const Var& logits, const Tensor& target);
// logvar: the mean's shape, or [c] shared by all pixels of channel c of [n, c, h, w] images.
Var gaussian_loglik(const Var& mean, const Var& logvar, const Tensor& target);
Var kl_normal(const Var& mu, const Var& logvar);  // KL(N(mu, exp(logvar)) || N(0, I))

// categorical, over the last dimension of [n, k]
Var log_softmax(const Var& x);
Var softmax(const Var& x);
Var pick(const Var& x, const Tensor& index);  // x[r, index[r]], index i32 [n]
Var categorical_kl(const Var& logits, const Tensor& log_prior);  // KL(softmax(logits) || prior)
Var entropy(const Var& logits);

// Checks that read tensor values: losses scan their inputs for NaN/Inf, and index tensors on a
// GPU are range-checked (segmented_mean's sets, pick's indices). On by default. On a GPU each is a
// host wait, so a loop that reads its loss terms anyway and builds its own indices (the trainer)
// turns them off there. Index tensors on the CPU are always checked (it costs no wait).
void set_value_checks(bool on);
bool value_checks();
// Sets the value checks for a scope, then restores them.
class ValueChecks {
 public:
  explicit ValueChecks(bool on) : saved_(value_checks()) { set_value_checks(on); }
  ~ValueChecks() { set_value_checks(saved_); }
  ValueChecks(const ValueChecks&) = delete;
  ValueChecks& operator=(const ValueChecks&) = delete;

 private:
  bool saved_;
};

}  // namespace equivae
