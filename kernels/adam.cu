#include <cmath>
#include <cstdint>

#include "kernels/adam.cuh"
#include "kernels/common.cuh"

namespace equivae::gpu {

void adam_step(int64_t n, float* param, const float* grad, float* m, float* v, const AdamParams& p,
               const float* corrections, cudaStream_t stream) {
  // Bias corrections in double on the host, then rounded, exactly as the CPU reference does (or
  // the same numbers from device memory).
  const float b1 = float(p.beta1), b2 = float(p.beta2), eps = float(p.eps);
  const AdamCorrections c = adam_corrections(p);
  const float host_step = float(c.step_size), host_bc2_sqrt = float(c.bc2_sqrt);
  const auto update = [=] __device__(float& w, float g, float& mi, float& vi) {
    const float step = corrections ? corrections[0] : host_step;
    const float bc2_sqrt = corrections ? corrections[1] : host_bc2_sqrt;
    mi = b1 * mi + (1 - b1) * g;
    vi = b2 * vi + (1 - b2) * g * g;
    w -= step * mi / (sqrtf(vi) / bc2_sqrt + eps);
  };
  // 128-bit loads and stores where the four buffers allow them (ParameterStore's buffers are
  // allocated whole: their bases are aligned); thread q takes elements [4q, 4q + 4), the last one
  // the n % 4 left over one by one. Same arithmetic either way, in one launch.
  const bool aligned = ((uintptr_t(param) | uintptr_t(grad) | uintptr_t(m) | uintptr_t(v)) & 15) == 0;
  if (!aligned) {
    launch_map(n, stream, [=] __device__(int64_t i) { update(param[i], grad[i], m[i], v[i]); });
    return;
  }
  launch_map((n + 3) / 4, stream, [=] __device__(int64_t q) {
    const int64_t i = 4 * q;
    if (i + 4 > n) {
      for (int64_t j = i; j < n; ++j) update(param[j], grad[j], m[j], v[j]);
      return;
    }
    float4 w = reinterpret_cast<const float4*>(param)[q], mi = reinterpret_cast<const float4*>(m)[q];
    float4 vi = reinterpret_cast<const float4*>(v)[q];
    const float4 g = reinterpret_cast<const float4*>(grad)[q];
    update(w.x, g.x, mi.x, vi.x);
    update(w.y, g.y, mi.y, vi.y);
    update(w.z, g.z, mi.z, vi.z);
    update(w.w, g.w, mi.w, vi.w);
    reinterpret_cast<float4*>(param)[q] = w;
    reinterpret_cast<float4*>(m)[q] = mi;
    reinterpret_cast<float4*>(v)[q] = vi;
  });
}

}  // namespace equivae::gpu
