// Per-row log-likelihoods of the decoder: Bernoulli on logits and Gaussian with log-variance.
#include <cmath>
#include <numbers>

#include "engine/cpu/cpu_backend.h"

namespace equivae {
namespace {

// log(1 + exp(l)) without overflow: exact for |l| > 50 where the naive form is inf or 0.
template <class T> T softplus(T l) { return std::max(l, T(0)) + std::log1p(std::exp(-std::abs(l))); }
template <class T> T sigmoid(T l) {
  if (l >= T(0)) return T(1) / (T(1) + std::exp(-l));
  const T e = std::exp(l);
  return e / (T(1) + e);
}

// Per-channel log-variance ([c] for rows of c * hw values) or one per element.
struct LogvarIndex {
  bool per_channel;
  int64_t channels, hw;
  int64_t operator()(int64_t i, int64_t cols) const { return per_channel ? (i % cols) / hw : i; }
};
LogvarIndex logvar_index(const Tensor& mean, const Tensor& logvar, int64_t rows) {
  const int64_t cols = mean.numel() / rows;
  if (logvar.numel() == mean.numel()) return {false, 0, 0};
  return {true, logvar.numel(), cols / logvar.numel()};
}

}  // namespace

void CpuBackend::bernoulli_loglik_forward(const Tensor& logits, const Tensor& target, int64_t rows, Tensor& y) {
  EQUIVAE_DISPATCH_FLOAT(logits, "bernoulli_loglik", {
    const int64_t cols = logits.numel() / rows;
    const T* l = logits.data<T>();
    const T* x = target.data<T>();
    T* out = y.data<T>();
    parallel_range(
        rows,
        [&](int64_t first, int64_t last) {
          for (int64_t r = first; r < last; ++r) {
            double acc = 0;
            for (int64_t c = r * cols; c < (r + 1) * cols; ++c) acc += x[c] * l[c] - softplus(l[c]);
            out[r] = T(acc);
          }
        },
        cols);
  });
}

void CpuBackend::bernoulli_loglik_backward(const Tensor& logits, const Tensor& target, const Tensor& dy,
                                           int64_t rows, Tensor& dlogits) {
  EQUIVAE_DISPATCH_FLOAT(logits, "bernoulli_loglik_backward", {
    const int64_t cols = logits.numel() / rows;
    const T* l = logits.data<T>();
    const T* x = target.data<T>();
    const T* g = dy.data<T>();
    T* d = dlogits.data<T>();
    parallel_range(logits.numel(), [&](int64_t first, int64_t last) {
      for (int64_t i = first; i < last; ++i) d[i] = g[i / cols] * (x[i] - sigmoid(l[i]));
    });
  });
}

void CpuBackend::gaussian_loglik_forward(const Tensor& mean, const Tensor& logvar, const Tensor& target,
                                         int64_t rows, Tensor& y) {
  const LogvarIndex lvi = logvar_index(mean, logvar, rows);
  EQUIVAE_DISPATCH_FLOAT(mean, "gaussian_loglik", {
    const int64_t cols = mean.numel() / rows;
    const T* m = mean.data<T>();
    const T* lv = logvar.data<T>();
    const T* x = target.data<T>();
    T* out = y.data<T>();
    const double log2pi = std::log(2.0 * std::numbers::pi);
    for (int64_t r = 0; r < rows; ++r) {
      double acc = 0;
      for (int64_t i = r * cols; i < (r + 1) * cols; ++i) {
        const T l = lv[lvi(i, cols)], e = x[i] - m[i];
        acc += -0.5 * (log2pi + l + e * e * std::exp(-l));
      }
      out[r] = T(acc);
    }
  });
}

void CpuBackend::gaussian_loglik_backward(const Tensor& mean, const Tensor& logvar, const Tensor& target,
                                          const Tensor& dy, int64_t rows, Tensor& dmean, Tensor& dlogvar) {
  const LogvarIndex lvi = logvar_index(mean, logvar, rows);
  EQUIVAE_DISPATCH_FLOAT(mean, "gaussian_loglik_backward", {
    const int64_t cols = mean.numel() / rows;
    const T* m = mean.data<T>();
    const T* lv = logvar.data<T>();
    const T* x = target.data<T>();
    const T* g = dy.data<T>();
    T* dm = dmean.data<T>();
    T* dl = dlogvar.data<T>();
    std::fill_n(dl, dlogvar.numel(), T(0));
    for (int64_t i = 0, n = mean.numel(); i < n; ++i) {
      const int64_t j = lvi(i, cols);
      const T inv_var = std::exp(-lv[j]), e = x[i] - m[i], gr = g[i / cols];
      dm[i] = gr * e * inv_var;
      dl[j] += gr * T(-0.5) * (T(1) - e * e * inv_var);
    }
  });
}

}  // namespace equivae
