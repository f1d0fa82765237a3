// Reparameterised sampling and dropout, drawing from the Philox stream of engine/rng.h so that
// the CUDA kernels produce the same numbers for the same (seed, offset).
#include <cmath>

#include "engine/cpu/cpu_backend.h"
#include "engine/rng.h"

namespace equivae {

void CpuBackend::reparam_forward(const Tensor& mu, const Tensor& logvar, uint64_t seed, uint64_t offset, Tensor& v) {
  EQUIVAE_DISPATCH_FLOAT(mu, "reparam", {
    const T* m = mu.data<T>();
    const T* lv = logvar.data<T>();
    T* out = v.data<T>();
    for (int64_t i = 0, n = mu.numel(); i < n; ++i)
      out[i] = m[i] + std::exp(T(0.5) * lv[i]) * T(philox_normal(seed, offset + uint64_t(i)));
  });
}

void CpuBackend::reparam_backward(const Tensor& mu, const Tensor& v, const Tensor& dv, Tensor& dmu, Tensor& dlogvar) {
  EQUIVAE_DISPATCH_FLOAT(mu, "reparam_backward", {
    const T* m = mu.data<T>();
    const T* s = v.data<T>();
    const T* g = dv.data<T>();
    T* dm = dmu.data<T>();
    T* dl = dlogvar.data<T>();
    for (int64_t i = 0, n = mu.numel(); i < n; ++i) {
      dm[i] = g[i];
      dl[i] = T(0.5) * g[i] * (s[i] - m[i]);  // d v / d logvar = sigma * eps / 2 = (v - mu) / 2
    }
  });
}

void CpuBackend::dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, Tensor& y) {
  EQUIVAE_DISPATCH_FLOAT(x, "dropout", {
    const T* in = x.data<T>();
    T* out = y.data<T>();
    const T keep_scale = T(1.0 / (1.0 - p));
    for (int64_t i = 0, n = x.numel(); i < n; ++i)
      out[i] = philox_uniform(seed, offset + uint64_t(i)) >= float(p) ? in[i] * keep_scale : T(0);
  });
}

}  // namespace equivae
