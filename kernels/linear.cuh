// Dense layers y = x w^T + b through cuBLAS (the CUDA side of engine/cpu/linear.cpp), with x
// [n, in], w [out, in], b [out], all row-major.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace equivae::gpu {

struct LinearShape {
  int64_t n, in, out;
};

// b may be null.
// relu: y = max(0, x w^T + b), in the same pass as the bias.
void linear_forward(cublasHandle_t blas, const float* x, const float* w, const float* b, float* y,
                    const LinearShape& s, cudaStream_t stream, bool relu = false);

// Scratch for the bias gradient's deterministic two-pass column sum.
size_t linear_backward_workspace_bytes(const LinearShape& s);
// Any of dx, dw, db may be null (not wanted).
void linear_backward(cublasHandle_t blas, const float* x, const float* w, const float* dy, float* dx, float* dw,
                     float* db, const LinearShape& s, void* workspace, cudaStream_t stream);

}  // namespace equivae::gpu
