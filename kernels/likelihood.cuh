// Per-row log-likelihoods of the decoder (the CUDA side of engine/cpu/likelihood.cpp): Bernoulli
// on logits and Gaussian with a log-variance, over tensors viewed as [rows, cols]; the forward
// writes one value per row (summed in double, one block per row).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace equivae::gpu {

struct RowShape {
  int64_t rows, cols;
};

void bernoulli_loglik_forward(const float* logits, const float* target, float* y, const RowShape& s,
                              cudaStream_t stream);
void bernoulli_loglik_backward(const float* logits, const float* target, const float* dy, float* dlogits,
                               const RowShape& s, cudaStream_t stream);

// logvar has one entry per element (channels = 0) or one per channel of rows laid out as
// [channels, cols / channels] (images [n, c, h, w] with a per-channel variance).
struct GaussianShape {
  int64_t rows, cols, channels;
};
void gaussian_loglik_forward(const float* mean, const float* logvar, const float* target, float* y,
                             const GaussianShape& s, cudaStream_t stream);
// The per-channel dlogvar is a deterministic two-pass reduction over rows and pixels; it needs
// gaussian_loglik_backward_workspace_bytes of scratch.
size_t gaussian_loglik_backward_workspace_bytes(const GaussianShape& s);
void gaussian_loglik_backward(const float* mean, const float* logvar, const float* target, const float* dy,
                              float* dmean, float* dlogvar, const GaussianShape& s, void* workspace,
                              cudaStream_t stream);

}  // namespace equivae::gpu
