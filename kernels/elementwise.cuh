// Elementwise maps, concat/split column copies, row sums and the NaN/Inf scan (the CUDA side of
// engine/cpu/elementwise.cpp). Host launchers on raw float pointers; n counts elements.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace equivae::gpu {

enum class BinaryKind : uint8_t { add, sub, mul };

void fill(float* x, int64_t n, float value, cudaStream_t stream);
void fill(int32_t* x, int64_t n, int32_t value, cudaStream_t stream);
void axpy(int64_t n, float alpha, const float* x, float* y, cudaStream_t stream);   // y += alpha x
void scale(int64_t n, float alpha, const float* x, float* y, cudaStream_t stream);  // y = alpha x
void binary(BinaryKind op, int64_t n, const float* a, const float* b, float* y, cudaStream_t stream);
void relu_forward(int64_t n, const float* x, float* y, cudaStream_t stream);  // in place allowed
void relu_backward(int64_t n, const float* y, const float* dy, float* dx, cudaStream_t stream);

// Columns [src_col, src_col + cols) of src viewed as [rows, src_cols] to columns
// [dst_col, dst_col + cols) of dst viewed as [rows, dst_cols]; any element size.
struct ColumnCopy {
  int64_t rows, cols, src_cols, src_col, dst_cols, dst_col;
  size_t elem_bytes;
};
void copy_columns(const void* src, void* dst, const ColumnCopy& c, cudaStream_t stream);
// dst [rows, dst_cols] = 0 except columns [dst_col, + src_cols) = src [rows, src_cols]: one pass.
void place_columns(const float* src, float* dst, int64_t rows, int64_t src_cols, int64_t dst_cols, int64_t dst_col,
                   cudaStream_t stream);
// Up to kMaxColumnParts matrices part[p] [rows, begin[p + 1] - begin[p]] side by side as one
// [rows, begin[count]] (concat and split in one pass each, not one copy per part).
constexpr int kMaxColumnParts = 8;
struct ColumnParts {
  int count;
  float* part[kMaxColumnParts];
  int64_t begin[kMaxColumnParts + 1];  // first column of each part; begin[count] is the total
};
void join_columns(const ColumnParts& parts, int64_t rows, float* y, cudaStream_t stream);   // parts read only
void split_columns(const float* x, int64_t rows, const ColumnParts& parts, cudaStream_t stream);

void sum_rows(const float* x, int64_t rows, int64_t cols, float* y, cudaStream_t stream);        // double sums
void broadcast_rows(const float* dy, int64_t rows, int64_t cols, float* dx, cudaStream_t stream);

// Rows of x gathered: y row i = x row index[i], rows of row_bytes bytes (a multiple of 4) out of
// x's `rows`; one launch (a batch from a data set kept on the device, issue 15). With `bad`
// (a device int) non-null it is zeroed and set to 1 if an index is outside [0, rows), whose
// row of y is then zeros; null: the caller's indices are known to be in range (no memset).
void gather_rows(const void* x, int64_t rows, int64_t row_bytes, const int32_t* index, int64_t count, void* y,
                 int* bad, cudaStream_t stream);

// Zeroes *flag (a device int), then sets it to 1 if any x[i] is NaN or infinite.
void scan_nonfinite(const float* x, int64_t n, int* flag, cudaStream_t stream);

}  // namespace equivae::gpu
