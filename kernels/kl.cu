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

// KL(q || p) = sum_j q_j a_j with a_j = log q_j - log p_j; d/dz_j = q_j (a_j - KL).
void categorical_kl_forward(const float* logits, const float* log_prior, float* y, const RowShape& s,
                            cudaStream_t stream) {
  const int k = int(s.cols);
  launch_warp_rows(s.rows, stream, [=] __device__(int64_t row, int lane) {
    const float* z = logits + row * k;
    const float lse = warp_row_lse(z, k, lane);
    double acc = 0;
    for (int j = lane; j < k; j += 32) {
      const float lq = z[j] - lse;
      acc += double(expf(lq)) * (double(lq) - double(log_prior[j]));
    }
    acc = warp_sum(acc);
    if (lane == 0) y[row] = float(acc);
  });
}

void categorical_kl_backward(const float* logits, const float* log_prior, const float* dy, float* dlogits,
                             const RowShape& s, cudaStream_t stream) {
  const int k = int(s.cols);
  launch_warp_rows(s.rows, stream, [=] __device__(int64_t row, int lane) {
    const float* z = logits + row * k;
    const float lse = warp_row_lse(z, k, lane);
    double kl = 0;
    for (int j = lane; j < k; j += 32) {
      const float lq = z[j] - lse;
      kl += double(expf(lq)) * (double(lq) - double(log_prior[j]));
    }
    const float klf = float(warp_sum(kl));
    for (int j = lane; j < k; j += 32) {
      const float lq = z[j] - lse;
      dlogits[row * k + j] = dy[row] * expf(lq) * (lq - log_prior[j] - klf);
    }
  });
}

// H = -sum_j q_j log q_j; dH/dz_j = -q_j (log q_j + H).
void entropy_forward(const float* logits, float* y, const RowShape& s, cudaStream_t stream) {
  const int k = int(s.cols);
  launch_warp_rows(s.rows, stream, [=] __device__(int64_t row, int lane) {
    const float* z = logits + row * k;
    const float lse = warp_row_lse(z, k, lane);
    double acc = 0;
    for (int j = lane; j < k; j += 32) {
      const float lq = z[j] - lse;
      acc -= double(expf(lq)) * double(lq);
    }
    acc = warp_sum(acc);
    if (lane == 0) y[row] = float(acc);
  });
}

void entropy_backward(const float* logits, const float* dy, float* dlogits, const RowShape& s, cudaStream_t stream) {
  const int k = int(s.cols);
  launch_warp_rows(s.rows, stream, [=] __device__(int64_t row, int lane) {
    const float* z = logits + row * k;
    const float lse = warp_row_lse(z, k, lane);
    double h = 0;
    for (int j = lane; j < k; j += 32) {
      const float lq = z[j] - lse;
      h -= double(expf(lq)) * double(lq);
    }
    const float hf = float(warp_sum(h));
    for (int j = lane; j < k; j += 32) {
      const float lq = z[j] - lse;
      dlogits[row * k + j] = -dy[row] * expf(lq) * (lq + hf);
    }
  });
}

}  // namespace equivae::gpu
