// The CPU reference backend: every op for float and double (gradient checks run in double).
// Method definitions live beside their op family: conv2d.cpp, linear.cpp, segmented_mean.cpp,
// random.cpp, likelihood.cpp, kl.cpp, softmax.cpp, elementwise.cpp, adam.cpp.
#pragma once

#include <algorithm>
#include <cmath>

#include "engine/backend.h"
#include "engine/cpu/parallel.h"

// Runs the statement with T bound to the C++ type of the float tensor `t` (f32 or f64).
#define EQUIVAE_DISPATCH_FLOAT(t, op, ...)                                                      \
  do {                                                                                          \
    switch ((t).dtype()) {                                                                      \
      case ::equivae::DType::f32: { using T = float; __VA_ARGS__; break; }                     \
      case ::equivae::DType::f64: { using T = double; __VA_ARGS__; break; }                    \
      default: throw ::equivae::ShapeError(fmt::format("{}: needs a float tensor, got {}", op, (t).describe())); \
    }                                                                                           \
  } while (0)

namespace equivae {

// log_softmax of one row of k logits into `out`.
template <class T> inline void row_log_softmax(const T* x, int64_t k, T* out) {
  T mx = x[0];
  for (int64_t j = 1; j < k; ++j) mx = std::max(mx, x[j]);
  double s = 0;
  for (int64_t j = 0; j < k; ++j) s += std::exp(double(x[j] - mx));
  const T lse = mx + T(std::log(s));
  for (int64_t j = 0; j < k; ++j) out[j] = x[j] - lse;
}

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr) override;
  void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) override;

  void fill(Tensor& x, double value) override;
  void axpy(double alpha, const Tensor& x, Tensor& y) override;
  void scale(const Tensor& x, double alpha, Tensor& y) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& y) override;
  void relu_forward(const Tensor& x, Tensor& y) override;
  void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx) override;
  void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t rows,
                    int64_t cols) override;
  void gather_rows(const Tensor& x, const Tensor& index, Tensor& y) override;
  void sum_rows(const Tensor& x, int64_t rows, Tensor& y) override;
  void broadcast_rows(const Tensor& dy, int64_t rows, Tensor& dx) override;
  bool has_nonfinite(const Tensor& x) override;

  void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override;
  void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor& dx, Tensor& dw,
                       Tensor& db) override;

  void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, Tensor& y,
                      const ConvShape& s) override;
  void conv2d_backward_data(const Tensor& dy, const Tensor& w, Tensor& dx, const ConvShape& s) override;
  void conv2d_backward_weight(const Tensor& x, const Tensor& dy, Tensor& dw, const ConvShape& s) override;
  void conv_transpose2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, Tensor& y,
                                const ConvShape& s) override;
  void channel_sum(const Tensor& dy, Tensor& db) override;
  void relu_bias_backward(const Tensor& y, const Tensor& dy, Tensor& dx, Tensor& db) override;
  void add_channel_bias(const Tensor& b, Tensor& y) override;

  void segmented_mean_forward(const Tensor& x, const Tensor& offsets, const Tensor& members, Tensor& y) override;
  void segmented_mean_backward(const Tensor& dy, const Tensor& offsets, const Tensor& members,
                               Tensor& dx) override;

  void reparam_forward(const Tensor& mu, const Tensor& logvar, uint64_t seed, uint64_t offset, Tensor& v) override;
  void reparam_backward(const Tensor& mu, const Tensor& v, const Tensor& dv, Tensor& dmu, Tensor& dlogvar) override;
  void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, Tensor& y) override;

  void bernoulli_loglik_forward(const Tensor& logits, const Tensor& target, int64_t rows, Tensor& y) override;
  void bernoulli_loglik_backward(const Tensor& logits, const Tensor& target, const Tensor& dy, int64_t rows,
                                 Tensor& dlogits) override;
  void gaussian_loglik_forward(const Tensor& mean, const Tensor& logvar, const Tensor& target, int64_t rows,
                               Tensor& y) override;
  void gaussian_loglik_backward(const Tensor& mean, const Tensor& logvar, const Tensor& target, const Tensor& dy,
                                int64_t rows, Tensor& dmean, Tensor& dlogvar) override;
  void kl_normal_forward(const Tensor& mu, const Tensor& logvar, int64_t rows, Tensor& y) override;
  void kl_normal_backward(const Tensor& mu, const Tensor& logvar, const Tensor& dy, int64_t rows, Tensor& dmu,
                          Tensor& dlogvar) override;

  void log_softmax_forward(const Tensor& x, int64_t rows, Tensor& y) override;
  void log_softmax_backward(const Tensor& y, const Tensor& dy, int64_t rows, Tensor& dx) override;
  void softmax_forward(const Tensor& x, int64_t rows, Tensor& y) override;
  void softmax_backward(const Tensor& y, const Tensor& dy, int64_t rows, Tensor& dx) override;
  void pick_forward(const Tensor& x, const Tensor& index, int64_t rows, Tensor& y) override;
  void pick_backward(const Tensor& dy, const Tensor& index, int64_t rows, Tensor& dx) override;
  void categorical_kl_forward(const Tensor& logits, const Tensor& log_prior, int64_t rows, Tensor& y) override;
  void categorical_kl_backward(const Tensor& logits, const Tensor& log_prior, const Tensor& dy, int64_t rows,
                               Tensor& dlogits) override;
  void entropy_forward(const Tensor& logits, int64_t rows, Tensor& y) override;
  void entropy_backward(const Tensor& logits, const Tensor& dy, int64_t rows, Tensor& dlogits) override;

  void adam_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamParams& p) override;
};

}  // namespace equivae
