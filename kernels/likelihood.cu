#include "kernels/common.cuh"
#include "kernels/likelihood.cuh"

namespace equivae::gpu {
namespace {

constexpr double kLog2Pi = 1.8378770664093454836;  // log(2 pi)

// Without overflow for either sign, as on the CPU.
__device__ __forceinline__ float sigmoid(float l) {
  if (l >= 0.f) return 1.f / (1.f + expf(-l));
  const float e = expf(l);
  return e / (1.f + e);
}

// Index into logvar of element i of a [rows, cols] tensor.
struct LogvarIndex {
  int64_t cols, hw;  // hw = 0: one log-variance per element
  __device__ int64_t operator()(int64_t i) const { return hw ? (i % cols) / hw : i; }
};
LogvarIndex logvar_index(const GaussianShape& s) { return {s.cols, s.channels ? s.cols / s.channels : 0}; }

}  // namespace

void bernoulli_loglik_forward(const float* logits, const float* target, float* y, const RowShape& s,
                              cudaStream_t stream) {
  reduce_rows(s.rows, s.cols, [=] __device__(int64_t i) {
    // x l - softplus(l), softplus(l) = max(l, 0) + log1p(e^-|l|) as on the CPU; x l - max(l, 0)
    // first, which is exactly 0 for x = 1, l > 0 instead of a difference of two large numbers.
    const float l = logits[i];
    return double(target[i] * l - fmaxf(l, 0.f)) - double(log1pf(expf(-fabsf(l))));
  }, 1.0, y, stream);
}

void bernoulli_loglik_backward(const float* logits, const float* target, const float* dy, float* dlogits,
                               const RowShape& s, cudaStream_t stream) {
  const int64_t cols = s.cols;
  launch_map(s.rows * s.cols, stream,
             [=] __device__(int64_t i) { dlogits[i] = dy[i / cols] * (target[i] - sigmoid(logits[i])); });
}

void gaussian_loglik_forward(const float* mean, const float* logvar, const float* target, float* y,
                             const GaussianShape& s, cudaStream_t stream) {
  const LogvarIndex lvi = logvar_index(s);
  reduce_rows(s.rows, s.cols, [=] __device__(int64_t i) {
    const double l = logvar[lvi(i)], e = double(target[i]) - double(mean[i]);
    return -0.5 * (kLog2Pi + l + e * e * exp(-l));
  }, 1.0, y, stream);
}

size_t gaussian_loglik_backward_workspace_bytes(const GaussianShape& s) {
  return s.channels ? channel_reduce_workspace_bytes(s.rows, s.channels, s.cols / s.channels) : 0;
}

void gaussian_loglik_backward(const float* mean, const float* logvar, const float* target, const float* dy,
                              float* dmean, float* dlogvar, const GaussianShape& s, void* workspace,
                              cudaStream_t stream) {
  const LogvarIndex lvi = logvar_index(s);
  const int64_t cols = s.cols;
  launch_map(s.rows * s.cols, stream, [=] __device__(int64_t i) {
    const float inv_var = expf(-logvar[lvi(i)]), e = target[i] - mean[i];
    dmean[i] = dy[i / cols] * e * inv_var;
    if (!lvi.hw) dlogvar[i] = dy[i / cols] * -0.5f * (1.f - e * e * inv_var);
  });
  if (!s.channels) return;
  // dlogvar[c] = sum over rows r and pixels of channel c of dy[r] * -(1 - e^2 / var) / 2
  reduce_channels(s.rows, s.channels, lvi.hw, [=] __device__(int row, int64_t i) {
    const double inv_var = exp(-double(logvar[lvi(i)])), e = double(target[i]) - double(mean[i]);
    return double(dy[row]) * -0.5 * (1.0 - e * e * inv_var);
  }, workspace, dlogvar, stream);
}

}  // namespace equivae::gpu
