#include <cmath>

#include "kernels/adam.cuh"
#include "kernels/common.cuh"

namespace equivae::gpu {

void adam_step(int64_t n, float* param, const float* grad, float* m, float* v, const AdamParams& p,
               cudaStream_t stream) {
  // Bias corrections in double on the host, then rounded, exactly as the CPU reference does.
  const float b1 = float(p.beta1), b2 = float(p.beta2), eps = float(p.eps);
  const float step = float(p.lr / (1 - std::pow(p.beta1, double(p.t))));
  const float bc2_sqrt = float(std::sqrt(1 - std::pow(p.beta2, double(p.t))));
  launch_map(n, stream, [=] __device__(int64_t i) {
    const float g = grad[i];
    const float mi = b1 * m[i] + (1 - b1) * g;
    const float vi = b2 * v[i] + (1 - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] -= step * mi / (sqrtf(vi) / bc2_sqrt + eps);
  });
}

}  // namespace equivae::gpu
