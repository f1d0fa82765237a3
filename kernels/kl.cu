#include "kernels/common.cuh"
#include "kernels/kl.cuh"

namespace equivae::gpu {

void kl_normal_forward(const float* mu, const float* logvar, float* y, const RowShape& s, cudaStream_t stream) {
  // In double: exp(lv) - 1 - lv cancels for small lv (these tensors are small: [n, d_v]).
  reduce_rows(s.rows, s.cols, [=] __device__(int64_t i) {
    const double m = mu[i], lv = logvar[i];
    return m * m + (exp(lv) - 1.0 - lv);
  }, 0.5, y, stream);
}

void kl_normal_backward(const float* mu, const float* logvar, const float* dy, float* dmu, float* dlogvar,
                        const RowShape& s, cudaStream_t stream) {
  const int64_t cols = s.cols;
  launch_map(s.rows * s.cols, stream, [=] __device__(int64_t i) {
    const float g = dy[i / cols];
    dmu[i] = g * mu[i];
    dlogvar[i] = g * 0.5f * (expf(logvar[i]) - 1.f);
  });
}

namespace {

// One row's KL(q || p) = sum_j q_j (log q_j - log p_j), q = softmax(z), by one warp (every lane
// gets it; summed in double). With no prior (null) p_j = 1: the result is minus the entropy.
__device__ float warp_row_kl(const float* z, const float* log_prior, int k, int lane, float lse) {
  double acc = 0;
  for (int j = lane; j < k; j += 32) {
    const float lq = z[j] - lse;
    acc += double(expf(lq)) * (double(lq) - (log_prior ? double(log_prior[j]) : 0.0));
  }
  return float(warp_sum(acc));
}

// dz_j = g * d KL / dz_j = g q_j (log q_j - log p_j - KL) for one row (no prior: p_j = 1).
__device__ void warp_row_kl_backward(const float* z, const float* log_prior, int k, int lane, float g, float* dz) {
  const float lse = warp_row_lse(z, k, lane);
  const float kl = warp_row_kl(z, log_prior, k, lane, lse);
  for (int j = lane; j < k; j += 32) {
    const float lq = z[j] - lse;
    dz[j] = g * expf(lq) * (lq - (log_prior ? log_prior[j] : 0.f) - kl);
  }
}

}  // namespace

void categorical_kl_forward(const float* logits, const float* log_prior, float* y, const RowShape& s,
                            cudaStream_t stream) {
  const int k = int(s.cols);
  launch_warp_rows(s.rows, stream, [=] __device__(int64_t row, int lane) {
    const float* z = logits + row * k;
    const float kl = warp_row_kl(z, log_prior, k, lane, warp_row_lse(z, k, lane));
    if (lane == 0) y[row] = kl;
  });
}

void categorical_kl_backward(const float* logits, const float* log_prior, const float* dy, float* dlogits,
                             const RowShape& s, cudaStream_t stream) {
  const int k = int(s.cols);
  launch_warp_rows(s.rows, stream, [=] __device__(int64_t row, int lane) {
    warp_row_kl_backward(logits + row * k, log_prior, k, lane, dy[row], dlogits + row * k);
  });
}

// The entropy H = -sum_j q_j log q_j is minus the KL against p_j = 1; so dH/dz_j = -q_j (log q_j + H).
void entropy_forward(const float* logits, float* y, const RowShape& s, cudaStream_t stream) {
  const int k = int(s.cols);
  launch_warp_rows(s.rows, stream, [=] __device__(int64_t row, int lane) {
    const float* z = logits + row * k;
    const float h = -warp_row_kl(z, nullptr, k, lane, warp_row_lse(z, k, lane));
    if (lane == 0) y[row] = h;
  });
}

void entropy_backward(const float* logits, const float* dy, float* dlogits, const RowShape& s, cudaStream_t stream) {
  const int k = int(s.cols);
  launch_warp_rows(s.rows, stream, [=] __device__(int64_t row, int lane) {
    warp_row_kl_backward(logits + row * k, nullptr, k, lane, -dy[row], dlogits + row * k);
  });
}

}  // namespace equivae::gpu
