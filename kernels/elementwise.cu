#include "kernels/common.cuh"
#include "kernels/elementwise.cuh"

namespace equivae::gpu {

void fill(float* x, int64_t n, float value, cudaStream_t stream) {
  launch_map(n, stream, [=] __device__(int64_t i) { x[i] = value; });
}
void fill(int32_t* x, int64_t n, int32_t value, cudaStream_t stream) {
  launch_map(n, stream, [=] __device__(int64_t i) { x[i] = value; });
}

void axpy(int64_t n, float alpha, const float* x, float* y, cudaStream_t stream) {
  launch_map(n, stream, [=] __device__(int64_t i) { y[i] += alpha * x[i]; });
}

void scale(int64_t n, float alpha, const float* x, float* y, cudaStream_t stream) {
  launch_map(n, stream, [=] __device__(int64_t i) { y[i] = alpha * x[i]; });
}

void binary(BinaryKind op, int64_t n, const float* a, const float* b, float* y, cudaStream_t stream) {
  switch (op) {
    case BinaryKind::add: launch_map(n, stream, [=] __device__(int64_t i) { y[i] = a[i] + b[i]; }); break;
    case BinaryKind::sub: launch_map(n, stream, [=] __device__(int64_t i) { y[i] = a[i] - b[i]; }); break;
    case BinaryKind::mul: launch_map(n, stream, [=] __device__(int64_t i) { y[i] = a[i] * b[i]; }); break;
  }
}

void relu_forward(int64_t n, const float* x, float* y, cudaStream_t stream) {
  launch_map(n, stream, [=] __device__(int64_t i) { y[i] = x[i] < 0.f ? 0.f : x[i]; });  // NaN propagates, as on the CPU
}

void relu_backward(int64_t n, const float* y, const float* dy, float* dx, cudaStream_t stream) {
  launch_map(n, stream, [=] __device__(int64_t i) { dx[i] = y[i] > 0.f ? dy[i] : 0.f; });
}

void place_columns(const float* src, float* dst, int64_t rows, int64_t src_cols, int64_t dst_cols, int64_t dst_col,
                   cudaStream_t stream) {
  launch_map(rows * dst_cols, stream, [=] __device__(int64_t i) {
    const int64_t r = i / dst_cols, c = i - r * dst_cols - dst_col;
    dst[i] = c >= 0 && c < src_cols ? src[r * src_cols + c] : 0.f;
  });
}

namespace {
// Which part holds column c (count <= kMaxColumnParts: a short scan), and where in it.
__device__ __forceinline__ float* column_part(const ColumnParts& parts, int64_t rows_done, int64_t c) {
  int p = 0;
  while (p + 1 < parts.count && c >= parts.begin[p + 1]) ++p;
  const int64_t width = parts.begin[p + 1] - parts.begin[p];
  return parts.part[p] + rows_done * width + (c - parts.begin[p]);
}
}  // namespace

void join_columns(const ColumnParts& parts, int64_t rows, float* y, cudaStream_t stream) {
  const int64_t total = parts.begin[parts.count];
  launch_map(rows * total, stream, [=] __device__(int64_t i) {
    const int64_t r = i / total;
    y[i] = *column_part(parts, r, i - r * total);
  });
}

void split_columns(const float* x, int64_t rows, const ColumnParts& parts, cudaStream_t stream) {
  const int64_t total = parts.begin[parts.count];
  launch_map(rows * total, stream, [=] __device__(int64_t i) {
    const int64_t r = i / total;
    *column_part(parts, r, i - r * total) = x[i];
  });
}

// A strided 2-D copy is exactly what cudaMemcpy2DAsync does (pitches in bytes).
void copy_columns(const void* src, void* dst, const ColumnCopy& c, cudaStream_t stream) {
  if (c.rows <= 0 || c.cols <= 0) return;
  const size_t e = c.elem_bytes;
  CUDA_CHECK(cudaMemcpy2DAsync(static_cast<char*>(dst) + size_t(c.dst_col) * e, size_t(c.dst_cols) * e,
                               static_cast<const char*>(src) + size_t(c.src_col) * e, size_t(c.src_cols) * e,
                               size_t(c.cols) * e, size_t(c.rows), cudaMemcpyDeviceToDevice, stream));
}

void sum_rows(const float* x, int64_t rows, int64_t cols, float* y, cudaStream_t stream) {
  reduce_rows(rows, cols, [=] __device__(int64_t i) { return double(x[i]); }, 1.0, y, stream);
}

void broadcast_rows(const float* dy, int64_t rows, int64_t cols, float* dx, cudaStream_t stream) {
  if (cols <= 0) return;
  launch_map(rows * cols, stream, [=] __device__(int64_t i) { dx[i] = dy[i / cols]; });
}

namespace {
// gather_rows in words of W (nvcc allows no __device__ lambda inside another lambda: a template).
template <class W>
void gather_words(const W* src, int64_t rows, int64_t words, const int32_t* index, int64_t count, W* dst, int* bad,
                  cudaStream_t stream) {
  launch_map(count * words, stream, [=] __device__(int64_t i) {
    const int64_t r = i / words, j = index[r];
    const bool ok = j >= 0 && j < rows;
    if (!ok && bad) *bad = 1;  // every writer stores the same 1
    dst[i] = ok ? src[j * words + (i - r * words)] : W{};
  });
}
}  // namespace

void gather_rows(const void* x, int64_t rows, int64_t row_bytes, const int32_t* index, int64_t count, void* y,
                 int* bad, cudaStream_t stream) {
  if (bad) CUDA_CHECK(cudaMemsetAsync(bad, 0, sizeof(int), stream));
  // 16-byte words where rows and both buffers allow (an MNIST row is 3136 bytes), else 4-byte
  // ones: a copy either way, so the bits are the source's.
  const bool wide = row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                    reinterpret_cast<uintptr_t>(y) % 16 == 0;
  if (wide)
    gather_words(static_cast<const float4*>(x), rows, row_bytes / 16, index, count, static_cast<float4*>(y), bad,
                 stream);
  else
    gather_words(static_cast<const uint32_t*>(x), rows, row_bytes / 4, index, count, static_cast<uint32_t*>(y), bad,
                 stream);
}

void scan_nonfinite(const float* x, int64_t n, int* flag, cudaStream_t stream) {
  CUDA_CHECK(cudaMemsetAsync(flag, 0, sizeof(int), stream));
  // Every writer stores the same 1, so the race is benign and the result deterministic.
  launch_map(n, stream, [=] __device__(int64_t i) {
    if (!isfinite(x[i])) *flag = 1;
  });
}

}  // namespace equivae::gpu
