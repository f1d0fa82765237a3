// Softmax, log-softmax and picking one entry per row (the CUDA side of engine/cpu/softmax.cpp),
// over [rows, k] tensors, one warp per row.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/likelihood.cuh"  // RowShape

namespace equivae::gpu {

void log_softmax_forward(const float* x, float* y, const RowShape& s, cudaStream_t stream);
void log_softmax_backward(const float* y, const float* dy, float* dx, const RowShape& s, cudaStream_t stream);
void softmax_forward(const float* x, float* y, const RowShape& s, cudaStream_t stream);
void softmax_backward(const float* y, const float* dy, float* dx, const RowShape& s, cudaStream_t stream);

// y[r] = x[r, index[r]]. Zeroes *bad (a device int), then sets it to 1 if an index is outside
// [0, k) (that row's y is then 0): the caller reads it back to raise the error the CPU raises.
void pick_forward(const float* x, const int32_t* index, float* y, const RowShape& s, int* bad, cudaStream_t stream);
// dx zero except dx[r, index[r]] = dy[r].
void pick_backward(const float* dy, const int32_t* index, float* dx, const RowShape& s, cudaStream_t stream);

}  // namespace equivae::gpu
