// Adam over the whole parameter buffer at once (PyTorch's torch.optim.Adam, amsgrad off).
#include <cmath>

#include "engine/cpu/cpu_backend.h"

namespace equivae {

void CpuBackend::adam_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamParams& p) {
  EQUIVAE_DISPATCH_FLOAT(param, "adam", {
    const T b1 = T(p.beta1), b2 = T(p.beta2);
    const AdamCorrections c = adam_corrections(p);
    const T step = T(c.step_size), bc2_sqrt = T(c.bc2_sqrt);
    T* w = param.data<T>();
    const T* g = grad.data<T>();
    T* mm = m.data<T>();
    T* vv = v.data<T>();
    parallel_range(param.numel(), [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        mm[i] = b1 * mm[i] + (1 - b1) * g[i];
        vv[i] = b2 * vv[i] + (1 - b2) * g[i] * g[i];
        w[i] -= step * mm[i] / (std::sqrt(vv[i]) / bc2_sqrt + T(p.eps));
      }
    });
  });
}

}  // namespace equivae
