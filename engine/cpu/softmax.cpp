// Softmax, log-softmax and picking one entry per row (the labelled log q(y|x)).
#include <cmath>

#include "engine/cpu/cpu_backend.h"

namespace equivae {

void CpuBackend::log_softmax_forward(const Tensor& x, int64_t rows, Tensor& y) {
  EQUIVAE_DISPATCH_FLOAT(x, "log_softmax", {
    const int64_t k = x.numel() / rows;
    const T* in = x.data<T>();
    T* out = y.data<T>();
    for (int64_t r = 0; r < rows; ++r) row_log_softmax(in + r * k, k, out + r * k);
  });
}

void CpuBackend::log_softmax_backward(const Tensor& y, const Tensor& dy, int64_t rows, Tensor& dx) {
  EQUIVAE_DISPATCH_FLOAT(y, "log_softmax_backward", {
    const int64_t k = y.numel() / rows;
    const T* out = y.data<T>();
    const T* g = dy.data<T>();
    T* d = dx.data<T>();
    for (int64_t r = 0; r < rows; ++r) {
      T s = 0;
      for (int64_t j = 0; j < k; ++j) s += g[r * k + j];
      for (int64_t j = 0; j < k; ++j) d[r * k + j] = g[r * k + j] - std::exp(out[r * k + j]) * s;
    }
  });
}

void CpuBackend::softmax_forward(const Tensor& x, int64_t rows, Tensor& y) {
  log_softmax_forward(x, rows, y);
  EQUIVAE_DISPATCH_FLOAT(y, "softmax", {
    T* out = y.data<T>();
    for (int64_t i = 0, n = y.numel(); i < n; ++i) out[i] = std::exp(out[i]);
  });
}

void CpuBackend::softmax_backward(const Tensor& y, const Tensor& dy, int64_t rows, Tensor& dx) {
  EQUIVAE_DISPATCH_FLOAT(y, "softmax_backward", {
    const int64_t k = y.numel() / rows;
    const T* out = y.data<T>();
    const T* g = dy.data<T>();
    T* d = dx.data<T>();
    for (int64_t r = 0; r < rows; ++r) {
      T s = 0;
      for (int64_t j = 0; j < k; ++j) s += g[r * k + j] * out[r * k + j];
      for (int64_t j = 0; j < k; ++j) d[r * k + j] = out[r * k + j] * (g[r * k + j] - s);
    }
  });
}

void CpuBackend::pick_forward(const Tensor& x, const Tensor& index, int64_t rows, Tensor& y) {
  EQUIVAE_DISPATCH_FLOAT(x, "pick", {
    const int64_t k = x.numel() / rows;
    const int32_t* idx = index.data<int32_t>();
    for (int64_t r = 0; r < rows; ++r)
      EQUIVAE_CHECK(idx[r] >= 0 && idx[r] < k, "pick: index {} at row {} is outside [0, {})", idx[r], r, k);
    for (int64_t r = 0; r < rows; ++r) y.data<T>()[r] = x.data<T>()[r * k + idx[r]];
  });
}

void CpuBackend::pick_backward(const Tensor& dy, const Tensor& index, int64_t rows, Tensor& dx) {
  EQUIVAE_DISPATCH_FLOAT(dy, "pick_backward", {
    const int64_t k = dx.numel() / rows;
    T* d = dx.data<T>();
    std::fill_n(d, dx.numel(), T(0));
    for (int64_t r = 0; r < rows; ++r) d[r * k + index.data<int32_t>()[r]] = dy.data<T>()[r];
  });
}

}  // namespace equivae
