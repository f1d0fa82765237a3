// A Backend that forwards every call to another one, and can spoil one kernel: its outputs (its
// non-const Tensor arguments) are scaled by 1.01 after each call (has_nonfinite's answer is
// inverted), a 1e-2 relative error, 100 times the self-check's and parity suite's tolerance; or
// it throws instead. The self-check's tests hand it to engine/self_check.h to see it refuse,
// naming that kernel.
#pragma once
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/backend.h"

namespace equivae::testing {

class ForwardingBackend final : public Backend {
 public:
  enum class Fault { wrong_output, throws };
  // spoil: the name of the Backend method to spoil ("" none).
  ForwardingBackend(Backend& inner, std::string spoil, Fault fault = Fault::wrong_output)
      : inner_(inner), spoil_(std::move(spoil)), fault_(fault) {}
  const char* name() const override { return inner_.name(); }
  // How many calls were spoiled.
  int spoiled_calls() const { return spoiled_calls_; }

  // clang-format off
  void* allocate(size_t bytes) override { return inner_.allocate(bytes); }
  void deallocate(void* ptr) override { inner_.deallocate(ptr); }
  void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) override { inner_.copy(dst, dst_device, src, src_device, bytes); }
  void fill(Tensor& x, double value) override { call("fill", &Backend::fill, x, value); }
  void axpy(double alpha, const Tensor& x, Tensor& y) override { call("axpy", &Backend::axpy, alpha, x, y); }
  void scale(const Tensor& x, double alpha, Tensor& y) override { call("scale", &Backend::scale, x, alpha, y); }
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& y) override { call("binary", &Backend::binary, op, a, b, y); }
  void relu_forward(const Tensor& x, Tensor& y) override { call("relu_forward", &Backend::relu_forward, x, y); }
  void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx) override { call("relu_backward", &Backend::relu_backward, y, dy, dx); }
  void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t rows, int64_t cols) override { call("copy_columns", &Backend::copy_columns, src, src_col, dst, dst_col, rows, cols); }
  void gather_rows(const Tensor& x, const Tensor& index, Tensor& y) override { call("gather_rows", &Backend::gather_rows, x, index, y); }
  void sum_rows(const Tensor& x, int64_t rows, Tensor& y) override { call("sum_rows", &Backend::sum_rows, x, rows, y); }
  void broadcast_rows(const Tensor& dy, int64_t rows, Tensor& dx) override { call("broadcast_rows", &Backend::broadcast_rows, dy, rows, dx); }
  void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override { call("linear_forward", &Backend::linear_forward, x, w, b, y); }
  void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor& dx, Tensor& dw, Tensor& db) override { call("linear_backward", &Backend::linear_backward, x, w, dy, dx, dw, db); }
  void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, Tensor& y, const ConvShape& s) override { call("conv2d_forward", &Backend::conv2d_forward, x, w, b, relu, y, s); }
  void conv2d_backward_data(const Tensor& dy, const Tensor& w, Tensor& dx, const ConvShape& s) override { call("conv2d_backward_data", &Backend::conv2d_backward_data, dy, w, dx, s); }
  void conv2d_backward_weight(const Tensor& x, const Tensor& dy, Tensor& dw, const ConvShape& s) override { call("conv2d_backward_weight", &Backend::conv2d_backward_weight, x, dy, dw, s); }
  void channel_sum(const Tensor& dy, Tensor& db) override { call("channel_sum", &Backend::channel_sum, dy, db); }
  void add_channel_bias(const Tensor& b, Tensor& y) override { call("add_channel_bias", &Backend::add_channel_bias, b, y); }
  void segmented_mean_forward(const Tensor& x, const Tensor& offsets, const Tensor& members, Tensor& y) override { call("segmented_mean_forward", &Backend::segmented_mean_forward, x, offsets, members, y); }
  void segmented_mean_backward(const Tensor& dy, const Tensor& offsets, const Tensor& members, Tensor& dx) override { call("segmented_mean_backward", &Backend::segmented_mean_backward, dy, offsets, members, dx); }
  void reparam_forward(const Tensor& mu, const Tensor& logvar, uint64_t seed, uint64_t offset, Tensor& v) override { call("reparam_forward", &Backend::reparam_forward, mu, logvar, seed, offset, v); }
  void reparam_backward(const Tensor& mu, const Tensor& v, const Tensor& dv, Tensor& dmu, Tensor& dlogvar) override { call("reparam_backward", &Backend::reparam_backward, mu, v, dv, dmu, dlogvar); }
  void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, Tensor& y) override { call("dropout", &Backend::dropout, x, p, seed, offset, y); }
  void bernoulli_loglik_forward(const Tensor& logits, const Tensor& target, int64_t rows, Tensor& y) override { call("bernoulli_loglik_forward", &Backend::bernoulli_loglik_forward, logits, target, rows, y); }
  void bernoulli_loglik_backward(const Tensor& logits, const Tensor& target, const Tensor& dy, int64_t rows, Tensor& dlogits) override { call("bernoulli_loglik_backward", &Backend::bernoulli_loglik_backward, logits, target, dy, rows, dlogits); }
  void gaussian_loglik_forward(const Tensor& mean, const Tensor& logvar, const Tensor& target, int64_t rows, Tensor& y) override { call("gaussian_loglik_forward", &Backend::gaussian_loglik_forward, mean, logvar, target, rows, y); }
  void gaussian_loglik_backward(const Tensor& mean, const Tensor& logvar, const Tensor& target, const Tensor& dy, int64_t rows, Tensor& dmean, Tensor& dlogvar) override { call("gaussian_loglik_backward", &Backend::gaussian_loglik_backward, mean, logvar, target, dy, rows, dmean, dlogvar); }
  void kl_normal_forward(const Tensor& mu, const Tensor& logvar, int64_t rows, Tensor& y) override { call("kl_normal_forward", &Backend::kl_normal_forward, mu, logvar, rows, y); }
  void kl_normal_backward(const Tensor& mu, const Tensor& logvar, const Tensor& dy, int64_t rows, Tensor& dmu, Tensor& dlogvar) override { call("kl_normal_backward", &Backend::kl_normal_backward, mu, logvar, dy, rows, dmu, dlogvar); }
  void log_softmax_forward(const Tensor& x, int64_t rows, Tensor& y) override { call("log_softmax_forward", &Backend::log_softmax_forward, x, rows, y); }
  void log_softmax_backward(const Tensor& y, const Tensor& dy, int64_t rows, Tensor& dx) override { call("log_softmax_backward", &Backend::log_softmax_backward, y, dy, rows, dx); }
  void softmax_forward(const Tensor& x, int64_t rows, Tensor& y) override { call("softmax_forward", &Backend::softmax_forward, x, rows, y); }
  void softmax_backward(const Tensor& y, const Tensor& dy, int64_t rows, Tensor& dx) override { call("softmax_backward", &Backend::softmax_backward, y, dy, rows, dx); }
  void pick_forward(const Tensor& x, const Tensor& index, int64_t rows, Tensor& y) override { call("pick_forward", &Backend::pick_forward, x, index, rows, y); }
  void pick_backward(const Tensor& dy, const Tensor& index, int64_t rows, Tensor& dx) override { call("pick_backward", &Backend::pick_backward, dy, index, rows, dx); }
  void categorical_kl_forward(const Tensor& logits, const Tensor& log_prior, int64_t rows, Tensor& y) override { call("categorical_kl_forward", &Backend::categorical_kl_forward, logits, log_prior, rows, y); }
  void categorical_kl_backward(const Tensor& logits, const Tensor& log_prior, const Tensor& dy, int64_t rows, Tensor& dlogits) override { call("categorical_kl_backward", &Backend::categorical_kl_backward, logits, log_prior, dy, rows, dlogits); }
  void entropy_forward(const Tensor& logits, int64_t rows, Tensor& y) override { call("entropy_forward", &Backend::entropy_forward, logits, rows, y); }
  void entropy_backward(const Tensor& logits, const Tensor& dy, int64_t rows, Tensor& dlogits) override { call("entropy_backward", &Backend::entropy_backward, logits, dy, rows, dlogits); }
  void linear_relu_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, Tensor& y) override { call("linear_relu_forward", &Backend::linear_relu_forward, x, w, b, relu, y); }
  void conv_transpose2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, Tensor& y, const ConvShape& s) override { call("conv_transpose2d_forward", &Backend::conv_transpose2d_forward, x, w, b, relu, y, s); }
  void place_columns(const Tensor& src, Tensor& dst, int64_t dst_col, int64_t rows) override { call("place_columns", &Backend::place_columns, src, dst, dst_col, rows); }
  void concat_columns(const std::vector<Tensor>& parts, int64_t rows, Tensor& y) override { call("concat_columns", &Backend::concat_columns, parts, rows, y); }
  void split_columns(const Tensor& x, int64_t rows, std::vector<Tensor>& parts) override { call("split_columns", &Backend::split_columns, x, rows, parts); }
  void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& dy, Tensor& dx, Tensor& dw, Tensor& db, const ConvShape& s) override { call("conv2d_backward", &Backend::conv2d_backward, x, w, y, dy, dx, dw, db, s); }
  void linear_relu_backward(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& dy, Tensor& dx, Tensor& dw, Tensor& db) override { call("linear_relu_backward", &Backend::linear_relu_backward, x, w, y, dy, dx, dw, db); }
  void relu_bias_backward(const Tensor& y, const Tensor& dy, Tensor& dx, Tensor& db) override { call("relu_bias_backward", &Backend::relu_bias_backward, y, dy, dx, db); }
  bool has_nonfinite(const Tensor& x) override { return inner_.has_nonfinite(x) != spoiled("has_nonfinite"); }
  void adam_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamParams& p) override { call("adam_step", &Backend::adam_step, param, grad, m, v, p); }
  // clang-format on

 private:
  bool spoiled(const char* op) {
    if (spoil_ != op) return false;
    ++spoiled_calls_;
    if (fault_ == Fault::throws) throw std::runtime_error(spoil_ + ": a deliberate fault");
    return true;
  }
  // The inner backend's method, then, if it is the one to spoil, its outputs.
  template <class... P, class... A>
  void call(const char* op, void (Backend::*method)(P...), A&... args) {
    if (fault_ == Fault::throws) spoiled(op);
    (inner_.*method)(args...);
    if (fault_ == Fault::wrong_output && spoiled(op)) (spoil(args), ...);
  }
  void spoil(Tensor& output) {
    if (output.defined()) inner_.scale(output, 1.01, output);
  }
  void spoil(std::vector<Tensor>& outputs) {
    for (Tensor& t : outputs) spoil(t);
  }
  template <class T>
  void spoil(const T&) {}  // an input

  Backend& inner_;
  std::string spoil_;
  Fault fault_;
  int spoiled_calls_ = 0;
};

}  // namespace equivae::testing
