// The device interface: every op the EquiVAE graph needs, on tensors the caller has allocated.
// The autograd layer (engine/ops.cpp) allocates, checks shapes and calls backend(device) once
// per op; it never branches on the device (flashlight's AutogradExtension design). The CPU
// backend (engine/cpu) is the float/double reference; the CUDA backend (engine/cuda, on the
// kernel launchers of kernels/) is float.
//
// Conventions: outputs are overwritten unless the name says accumulate; per-row reductions
// produce one value per leading-dimension row; index tensors are i32.
#pragma once
#include <cstdint>

#include "engine/shapes.h"
#include "engine/tensor.h"

namespace equivae {

enum class BinaryOp : uint8_t { add, sub, mul };

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // memory
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr) = 0;
  // Copies bytes between this device and the host or within this device.
  virtual void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) = 0;

  // elementwise
  virtual void fill(Tensor& x, double value) = 0;
  virtual void axpy(double alpha, const Tensor& x, Tensor& y) = 0;  // y += alpha * x
  virtual void scale(const Tensor& x, double alpha, Tensor& y) = 0;  // y = alpha * x
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& y) = 0;
  virtual void relu_forward(const Tensor& x, Tensor& y) = 0;
  virtual void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx) = 0;  // dx = dy * (y > 0)
  // Columns [src_col, src_col + cols) of src viewed as [rows, src_cols] go to columns
  // [dst_col, dst_col + cols) of dst viewed as [rows, dst_cols] (concat and split).
  virtual void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t rows,
                            int64_t cols) = 0;

  // y row i = x row index[i] along dim 0 (any dtype; index i32): a batch gathered from a data set
  // kept on the device. An index outside x's rows throws (CUDA: while value checks are on; off,
  // its row is zeros).
  virtual void gather_rows(const Tensor& x, const Tensor& index, Tensor& y) = 0;

  // reductions over the last dimension of x viewed as [rows, cols]
  virtual void sum_rows(const Tensor& x, int64_t rows, Tensor& y) = 0;        // y[r] = sum_c x[r, c]
  virtual void broadcast_rows(const Tensor& dy, int64_t rows, Tensor& dx) = 0;  // dx[r, c] = dy[r]

  // dense: y = x w^T + b, x [n, in], w [out, in], b [out] (may be undefined)
  virtual void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) = 0;
  // Any of dx, dw, db may be undefined (not wanted).
  virtual void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor& dx, Tensor& dw,
                               Tensor& db) = 0;

  // convolution (see ConvShape): the three products of a conv2d, bias and ReLU kept separate so
  // that a transposed conv reuses them (its forward is conv2d's backward-data).
  virtual void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, Tensor& y,
                              const ConvShape& s) = 0;  // y = relu?(conv(x, w) + b); b may be undefined
  virtual void conv2d_backward_data(const Tensor& dy, const Tensor& w, Tensor& dx, const ConvShape& s) = 0;
  virtual void conv2d_backward_weight(const Tensor& x, const Tensor& dy, Tensor& dw, const ConvShape& s) = 0;
  // db[c] = sum over n, h, w of dy[n, c, h, w]
  virtual void channel_sum(const Tensor& dy, Tensor& db) = 0;
  // y[n, c, h, w] += b[c]
  virtual void add_channel_bias(const Tensor& b, Tensor& y) = 0;

  // segmented mean: y[s] = mean of x[members[j]] for j in [offsets[s], offsets[s+1])
  virtual void segmented_mean_forward(const Tensor& x, const Tensor& offsets, const Tensor& members,
                                      Tensor& y) = 0;
  // dx = 0, then dx[members[j]] += dy[s] / m_s
  virtual void segmented_mean_backward(const Tensor& dy, const Tensor& offsets, const Tensor& members,
                                       Tensor& dx) = 0;

  // random (Philox, see engine/rng.h): element i uses index offset + i
  virtual void reparam_forward(const Tensor& mu, const Tensor& logvar, uint64_t seed, uint64_t offset,
                               Tensor& v) = 0;  // v = mu + exp(logvar / 2) * eps
  virtual void reparam_backward(const Tensor& mu, const Tensor& v, const Tensor& dv, Tensor& dmu,
                                Tensor& dlogvar) = 0;  // dlogvar = dv * (v - mu) / 2
  // y = x * keep / (1 - p) with keep = uniform >= p; backward is the same map applied to dy.
  virtual void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, Tensor& y) = 0;

  // per-row losses over x viewed as [rows, cols]; outputs have `rows` entries
  virtual void bernoulli_loglik_forward(const Tensor& logits, const Tensor& target, int64_t rows, Tensor& y) = 0;
  virtual void bernoulli_loglik_backward(const Tensor& logits, const Tensor& target, const Tensor& dy,
                                         int64_t rows, Tensor& dlogits) = 0;
  // logvar is either the mean's shape or [c] for images [n, c, h, w] (one variance per channel).
  virtual void gaussian_loglik_forward(const Tensor& mean, const Tensor& logvar, const Tensor& target,
                                       int64_t rows, Tensor& y) = 0;
  // dlogvar (per-channel case) is summed over rows and pixels.
  virtual void gaussian_loglik_backward(const Tensor& mean, const Tensor& logvar, const Tensor& target,
                                        const Tensor& dy, int64_t rows, Tensor& dmean, Tensor& dlogvar) = 0;
  // KL(N(mu, exp(logvar)) || N(0, I)) per row
  virtual void kl_normal_forward(const Tensor& mu, const Tensor& logvar, int64_t rows, Tensor& y) = 0;
  virtual void kl_normal_backward(const Tensor& mu, const Tensor& logvar, const Tensor& dy, int64_t rows,
                                  Tensor& dmu, Tensor& dlogvar) = 0;

  // categorical, over the last dimension of [rows, k]
  virtual void log_softmax_forward(const Tensor& x, int64_t rows, Tensor& y) = 0;
  virtual void log_softmax_backward(const Tensor& y, const Tensor& dy, int64_t rows, Tensor& dx) = 0;
  virtual void softmax_forward(const Tensor& x, int64_t rows, Tensor& y) = 0;
  virtual void softmax_backward(const Tensor& y, const Tensor& dy, int64_t rows, Tensor& dx) = 0;
  // y[r] = x[r, index[r]] and its adjoint (dx zero except at the picked entries)
  virtual void pick_forward(const Tensor& x, const Tensor& index, int64_t rows, Tensor& y) = 0;
  virtual void pick_backward(const Tensor& dy, const Tensor& index, int64_t rows, Tensor& dx) = 0;
  // KL(softmax(logits) || prior) per row, from logits and log prior [k]; entropy likewise.
  virtual void categorical_kl_forward(const Tensor& logits, const Tensor& log_prior, int64_t rows, Tensor& y) = 0;
  virtual void categorical_kl_backward(const Tensor& logits, const Tensor& log_prior, const Tensor& dy,
                                       int64_t rows, Tensor& dlogits) = 0;
  virtual void entropy_forward(const Tensor& logits, int64_t rows, Tensor& y) = 0;
  virtual void entropy_backward(const Tensor& logits, const Tensor& dy, int64_t rows, Tensor& dlogits) = 0;

  // Fused forms of the ops above, for fewer passes (and, on a GPU, fewer launches). The defaults
  // compose those ops, so the CPU reference is the composition; the CUDA backend fuses.
  // y = relu?(x w^T + b); b may be undefined.
  virtual void linear_relu_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, Tensor& y);
  // A transposed conv: y = relu?(conv2d_backward_data(x, w) + b) (s is the conv2d it reverses).
  virtual void conv_transpose2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, Tensor& y,
                                        const ConvShape& s);
  // dst [rows, dst_cols] = 0 except columns [dst_col, dst_col + src_cols) = src [rows, src_cols]
  // (a split's backward).
  virtual void place_columns(const Tensor& src, Tensor& dst, int64_t dst_col, int64_t rows);
  // y [rows, sum of widths] = the parts [rows, width_p] side by side (concat), and its adjoint:
  // each part = its columns of x (concat's backward, split). One pass each instead of a copy_columns per part.
  virtual void concat_columns(const std::vector<Tensor>& parts, int64_t rows, Tensor& y);
  virtual void split_columns(const Tensor& x, int64_t rows, std::vector<Tensor>& parts);
  // The gradients of y = relu?(conv2d(x, w) + b) from dy: y is the forward's output when it had
  // the ReLU (undefined: no ReLU); any of dx, dw, db may be undefined (not wanted).
  virtual void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& dy, Tensor& dx,
                               Tensor& dw, Tensor& db, const ConvShape& s);
  // The same for y = relu?(x w^T + b).
  virtual void linear_relu_backward(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& dy, Tensor& dx,
                                    Tensor& dw, Tensor& db);
  // The backward of a fused bias + ReLU: dx = dy * (y > 0) (y undefined: no ReLU, dx untouched)
  // and db = channel_sum of that gradient (db undefined: no bias). [n, c] counts as [n, c, 1].
  virtual void relu_bias_backward(const Tensor& y, const Tensor& dy, Tensor& dx, Tensor& db);

  // True when any element of x is NaN or infinite (reads a flag back to the host).
  virtual bool has_nonfinite(const Tensor& x) = 0;

  // One Adam step over whole buffers (PyTorch semantics, bias-corrected).
  virtual void adam_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamParams& p) = 0;
};

// The backend of a device; throws if the CUDA backend was not built or no GPU is present.
Backend& backend(Device device);
// True when this build has the CUDA backend (EQUIVAE_WITH_CUDA) and a GPU is present.
bool cuda_available();
// The CUDA convolutions on TF32 tensor cores (on) or in exact FP32 (off, the default; also set
// by EQUIVAE_TF32=1 at start): kernels/conv2d.cuh. Throws in a build without the CUDA backend.
void set_cuda_tf32(bool on);
// The CUDA backend's split-K and reduction plans made for a nominal 132-SM GPU whatever the device
// (on: the same bits on every GPU) or for the device's own SM count (off, the default unless
// EQUIVAE_REPRODUCIBLE=1 was set at start): kernels/conv2d.cuh. Setting it throws in a build
// without the CUDA backend; asking says false there.
void set_cuda_reproducible_plans(bool on);
bool cuda_reproducible_plans();

}  // namespace equivae
