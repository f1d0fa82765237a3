// Adam over the whole parameter buffer at once (PyTorch's torch.optim.Adam, amsgrad off).
#include <cmath>

#include "engine/cpu/cpu_backend.h"

namespace equivae {

void CpuBackend::adam_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamParams& p) {
  EQUIVAE_DISPATCH_FLOAT(param, "adam", {
    const AdamCorrections c = adam_corrections(p);
    const T b1 = T(p.beta1), b2 = T(p.beta2), eps = T(p.eps), step = T(c.step_size), bc2_sqrt = T(c.bc2_sqrt);
    // Distinct buffers: with __restrict and -fno-math-errno (engine/CMakeLists.txt) the loop
    // compiles to vector instructions; it runs once per step over every parameter.
    T* __restrict w = param.data<T>();
    const T* __restrict g = grad.data<T>();
    T* __restrict mm = m.data<T>();
    T* __restrict vv = v.data<T>();
    parallel_range(param.numel(), [=](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const T m_i = b1 * mm[i] + (1 - b1) * g[i], v_i = b2 * vv[i] + (1 - b2) * g[i] * g[i];
        mm[i] = m_i, vv[i] = v_i;
        w[i] -= step * m_i / (std::sqrt(v_i) / bc2_sqrt + eps);
      }
    });
  });
}

}  // namespace equivae
