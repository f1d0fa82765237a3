// Closed-form KL divergences: a diagonal Gaussian against N(0, I), a categorical against a
// fixed prior, and the categorical entropy.
#include <cmath>
#include <vector>

#include "engine/cpu/cpu_backend.h"

namespace equivae {

void CpuBackend::kl_normal_forward(const Tensor& mu, const Tensor& logvar, int64_t rows, Tensor& y) {
  EQUIVAE_DISPATCH_FLOAT(mu, "kl_normal", {
    const int64_t cols = mu.numel() / rows;
    const T* m = mu.data<T>();
    const T* lv = logvar.data<T>();
    T* out = y.data<T>();
    for (int64_t r = 0; r < rows; ++r) {
      double acc = 0;
      for (int64_t i = r * cols; i < (r + 1) * cols; ++i) acc += m[i] * m[i] + std::exp(lv[i]) - 1 - lv[i];
      out[r] = T(0.5 * acc);
    }
  });
}

void CpuBackend::kl_normal_backward(const Tensor& mu, const Tensor& logvar, const Tensor& dy, int64_t rows,
                                    Tensor& dmu, Tensor& dlogvar) {
  EQUIVAE_DISPATCH_FLOAT(mu, "kl_normal_backward", {
    const int64_t cols = mu.numel() / rows;
    const T* m = mu.data<T>();
    const T* lv = logvar.data<T>();
    const T* g = dy.data<T>();
    T* dm = dmu.data<T>();
    T* dl = dlogvar.data<T>();
    for (int64_t i = 0, n = mu.numel(); i < n; ++i) {
      dm[i] = g[i / cols] * m[i];
      dl[i] = g[i / cols] * T(0.5) * (std::exp(lv[i]) - T(1));
    }
  });
}

// KL(q || p) = sum_j q_j a_j with a_j = log q_j - log p_j; d/dz_j = q_j (a_j - KL).
void CpuBackend::categorical_kl_forward(const Tensor& logits, const Tensor& log_prior, int64_t rows, Tensor& y) {
  EQUIVAE_DISPATCH_FLOAT(logits, "categorical_kl", {
    const int64_t k = logits.numel() / rows;
    const T* z = logits.data<T>();
    const T* lp = log_prior.data<T>();
    T* out = y.data<T>();
    std::vector<T> lq(static_cast<size_t>(k));
    for (int64_t r = 0; r < rows; ++r) {
      row_log_softmax(z + r * k, k, lq.data());
      double acc = 0;
      for (int64_t j = 0; j < k; ++j) acc += std::exp(lq[j]) * (lq[j] - lp[j]);
      out[r] = T(acc);
    }
  });
}

void CpuBackend::categorical_kl_backward(const Tensor& logits, const Tensor& log_prior, const Tensor& dy,
                                         int64_t rows, Tensor& dlogits) {
  EQUIVAE_DISPATCH_FLOAT(logits, "categorical_kl_backward", {
    const int64_t k = logits.numel() / rows;
    const T* z = logits.data<T>();
    const T* lp = log_prior.data<T>();
    const T* g = dy.data<T>();
    T* d = dlogits.data<T>();
    std::vector<T> lq(static_cast<size_t>(k));
    for (int64_t r = 0; r < rows; ++r) {
      row_log_softmax(z + r * k, k, lq.data());
      T kl = 0;
      for (int64_t j = 0; j < k; ++j) kl += std::exp(lq[j]) * (lq[j] - lp[j]);
      for (int64_t j = 0; j < k; ++j) d[r * k + j] = g[r] * std::exp(lq[j]) * (lq[j] - lp[j] - kl);
    }
  });
}

// H = -sum_j q_j log q_j; dH/dz_j = -q_j (log q_j + H).
void CpuBackend::entropy_forward(const Tensor& logits, int64_t rows, Tensor& y) {
  EQUIVAE_DISPATCH_FLOAT(logits, "entropy", {
    const int64_t k = logits.numel() / rows;
    const T* z = logits.data<T>();
    T* out = y.data<T>();
    std::vector<T> lq(static_cast<size_t>(k));
    for (int64_t r = 0; r < rows; ++r) {
      row_log_softmax(z + r * k, k, lq.data());
      double acc = 0;
      for (int64_t j = 0; j < k; ++j) acc -= std::exp(lq[j]) * lq[j];
      out[r] = T(acc);
    }
  });
}

void CpuBackend::entropy_backward(const Tensor& logits, const Tensor& dy, int64_t rows, Tensor& dlogits) {
  EQUIVAE_DISPATCH_FLOAT(logits, "entropy_backward", {
    const int64_t k = logits.numel() / rows;
    const T* z = logits.data<T>();
    const T* g = dy.data<T>();
    T* d = dlogits.data<T>();
    std::vector<T> lq(static_cast<size_t>(k));
    for (int64_t r = 0; r < rows; ++r) {
      row_log_softmax(z + r * k, k, lq.data());
      T h = 0;
      for (int64_t j = 0; j < k; ++j) h -= std::exp(lq[j]) * lq[j];
      for (int64_t j = 0; j < k; ++j) d[r * k + j] = -g[r] * std::exp(lq[j]) * (lq[j] + h);
    }
  });
}

}  // namespace equivae
