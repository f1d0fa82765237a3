// Closed-form KL divergences and the categorical entropy (the CUDA side of engine/cpu/kl.cpp),
// per row of [rows, cols] tensors.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/likelihood.cuh"  // RowShape

namespace equivae::gpu {

// y[r] = KL(N(mu, exp(logvar)) || N(0, I)) = sum_c (mu^2 + exp(logvar) - 1 - logvar) / 2
void kl_normal_forward(const float* mu, const float* logvar, float* y, const RowShape& s, cudaStream_t stream);
void kl_normal_backward(const float* mu, const float* logvar, const float* dy, float* dmu, float* dlogvar,
                        const RowShape& s, cudaStream_t stream);

// KL(softmax(logits) || prior) from logits [rows, k] and log_prior [k]; entropy of softmax(logits).
void categorical_kl_forward(const float* logits, const float* log_prior, float* y, const RowShape& s,
                            cudaStream_t stream);
void categorical_kl_backward(const float* logits, const float* log_prior, const float* dy, float* dlogits,
                             const RowShape& s, cudaStream_t stream);
void entropy_forward(const float* logits, float* y, const RowShape& s, cudaStream_t stream);
void entropy_backward(const float* logits, const float* dy, float* dlogits, const RowShape& s, cudaStream_t stream);

}  // namespace equivae::gpu
