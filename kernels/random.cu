#include "engine/rng.h"
#include "kernels/common.cuh"
#include "kernels/random.cuh"

namespace equivae::gpu {

void reparam_forward(int64_t n, const float* mu, const float* logvar, uint64_t seed, uint64_t offset,
                     const uint64_t* offset_base, float* v, cudaStream_t stream) {
  launch_map(n, stream, [=] __device__(int64_t i) {
    const uint64_t first = offset + (offset_base ? *offset_base : 0);
    v[i] = mu[i] + expf(0.5f * logvar[i]) * philox_normal(seed, first + uint64_t(i));
  });
}

void reparam_backward(int64_t n, const float* mu, const float* v, const float* dv, float* dmu, float* dlogvar,
                      cudaStream_t stream) {
  launch_map(n, stream, [=] __device__(int64_t i) {
    dmu[i] = dv[i];
    dlogvar[i] = 0.5f * dv[i] * (v[i] - mu[i]);  // d v / d logvar = sigma eps / 2 = (v - mu) / 2
  });
}

void dropout(int64_t n, const float* x, double p, uint64_t seed, uint64_t offset, const uint64_t* offset_base, float* y,
             cudaStream_t stream) {
  const float keep_scale = float(1.0 / (1.0 - p)), threshold = float(p);  // rounded as on the CPU
  launch_map(n, stream, [=] __device__(int64_t i) {
    const uint64_t first = offset + (offset_base ? *offset_base : 0);
    y[i] = philox_uniform(seed, first + uint64_t(i)) >= threshold ? x[i] * keep_scale : 0.f;
  });
}

}  // namespace equivae::gpu
