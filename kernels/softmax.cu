#include "kernels/common.cuh"
#include "kernels/softmax.cuh"

namespace equivae::gpu {

void log_softmax_forward(const float* x, float* y, const RowShape& s, cudaStream_t stream) {
  const int k = int(s.cols);
  launch_warp_rows(s.rows, stream, [=] __device__(int64_t row, int lane) {
    const float* z = x + row * k;
    const float lse = warp_row_lse(z, k, lane);
    for (int j = lane; j < k; j += 32) y[row * k + j] = z[j] - lse;
  });
}

void log_softmax_backward(const float* y, const float* dy, float* dx, const RowShape& s, cudaStream_t stream) {
  const int k = int(s.cols);
  launch_warp_rows(s.rows, stream, [=] __device__(int64_t row, int lane) {
    const int64_t base = row * k;
    double sum = 0;
    for (int j = lane; j < k; j += 32) sum += dy[base + j];
    const float g = float(warp_sum(sum));
    for (int j = lane; j < k; j += 32) dx[base + j] = dy[base + j] - expf(y[base + j]) * g;
  });
}

void softmax_forward(const float* x, float* y, const RowShape& s, cudaStream_t stream) {
  const int k = int(s.cols);
  launch_warp_rows(s.rows, stream, [=] __device__(int64_t row, int lane) {
    const float* z = x + row * k;
    const float lse = warp_row_lse(z, k, lane);
    for (int j = lane; j < k; j += 32) y[row * k + j] = expf(z[j] - lse);
  });
}

void softmax_backward(const float* y, const float* dy, float* dx, const RowShape& s, cudaStream_t stream) {
  const int k = int(s.cols);
  launch_warp_rows(s.rows, stream, [=] __device__(int64_t row, int lane) {
    const int64_t base = row * k;
    double sum = 0;
    for (int j = lane; j < k; j += 32) sum += double(dy[base + j]) * double(y[base + j]);
    const float g = float(warp_sum(sum));
    for (int j = lane; j < k; j += 32) dx[base + j] = y[base + j] * (dy[base + j] - g);
  });
}

void pick_forward(const float* x, const int32_t* index, float* y, const RowShape& s, int* bad, cudaStream_t stream) {
  CUDA_CHECK(cudaMemsetAsync(bad, 0, sizeof(int), stream));
  const int64_t k = s.cols;
  launch_map(s.rows, stream, [=] __device__(int64_t row) {
    const int32_t j = index[row];
    const bool ok = j >= 0 && j < k;
    if (!ok) *bad = 1;  // every writer stores the same 1
    y[row] = ok ? x[row * k + j] : 0.f;
  });
}

void pick_backward(const float* dy, const int32_t* index, float* dx, const RowShape& s, cudaStream_t stream) {
  const int64_t k = s.cols;
  launch_map(s.rows * s.cols, stream,
             [=] __device__(int64_t i) { dx[i] = (i % k == index[i / k]) ? dy[i / k] : 0.f; });
}

}  // namespace equivae::gpu
