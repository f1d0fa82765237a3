// Reparameterised sampling and dropout (the CUDA side of engine/cpu/random.cpp). Element i draws
// Philox number offset + i of the stream keyed by seed (engine/rng.h, shared with the CPU), so
// both devices draw the same numbers.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace equivae::gpu {

// offset_base: null, or a device word added to offset when the kernel runs (a training step
// captured in a CUDA graph draws at its own step's offsets when replayed: engine/shapes.h).
// v = mu + exp(logvar / 2) * eps, eps = philox_normal(seed, offset + i)
void reparam_forward(int64_t n, const float* mu, const float* logvar, uint64_t seed, uint64_t offset,
                     const uint64_t* offset_base, float* v, cudaStream_t stream);
// dmu = dv, dlogvar = dv * (v - mu) / 2
void reparam_backward(int64_t n, const float* mu, const float* v, const float* dv, float* dmu, float* dlogvar,
                      cudaStream_t stream);
// y = x / (1 - p) where philox_uniform(seed, offset + i) >= p, else 0 (also the backward, on dy).
void dropout(int64_t n, const float* x, double p, uint64_t seed, uint64_t offset, const uint64_t* offset_base, float* y,
             cudaStream_t stream);

}  // namespace equivae::gpu
