// cuBLAS is column-major; a row-major [r, c] matrix is the column-major [c, r] matrix, its
// transpose. So each row-major product C = A B is computed as the column-major C^T = B^T A^T,
// with the operands' buffers passed as they are.
#include "kernels/common.cuh"
#include "kernels/linear.cuh"

namespace equivae::gpu {
namespace {

// Column-major C[m, n] = op(A) op(B) with k the inner size; k = 0 gives zeros.
void gemm(cublasHandle_t blas, cublasOperation_t op_a, cublasOperation_t op_b, int64_t m, int64_t n, int64_t k,
          const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc, cudaStream_t stream) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    CUDA_CHECK(cudaMemsetAsync(c, 0, size_t(m * n) * sizeof(float), stream));
    return;
  }
  for (int64_t v : {m, n, k, lda, ldb, ldc}) check_int32(v, "linear: matrix size");
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(cublasSetStream(blas, stream));
  CUBLAS_CHECK(cublasSgemm(blas, op_a, op_b, int(m), int(n), int(k), &one, a, int(lda), b, int(ldb), &zero, c,
                           int(ldc)));
}

}  // namespace

void linear_forward(cublasHandle_t blas, const float* x, const float* w, const float* b, float* y,
                    const LinearShape& s, cudaStream_t stream, bool relu) {
  // y^T [out, n] = (w^T)^T [out, in] x^T [in, n]; w's buffer is w^T [in, out] column-major.
  gemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, s.out, s.n, s.in, w, s.in, x, s.in, y, s.out, stream);
  // Bias and ReLU in one pass after the GEMM (cuBLASLt's BIAS/RELU epilogues would save this
  // launch too, but the CPU emulator has no cuBLASLt to check them against). NaN propagates, as
  // in the CPU reference's ReLU.
  if (!b && !relu) return;
  const int64_t out = s.out;
  launch_map(s.n * out, stream, [=] __device__(int64_t i) {
    const float v = b ? y[i] + b[i % out] : y[i];
    y[i] = relu && v < 0.f ? 0.f : v;
  });
}

size_t linear_backward_workspace_bytes(const LinearShape& s) {
  return channel_reduce_workspace_bytes(s.n, s.out, 1);
}

void linear_backward(cublasHandle_t blas, const float* x, const float* w, const float* dy, float* dx, float* dw,
                     float* db, const LinearShape& s, void* workspace, cudaStream_t stream) {
  // dx^T [in, n] = w^T [in, out] dy^T [out, n]
  if (dx) gemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, s.in, s.n, s.out, w, s.in, dy, s.out, dx, s.in, stream);
  // dw^T [in, out] = x^T [in, n] (dy^T)^T [n, out]
  if (dw) gemm(blas, CUBLAS_OP_N, CUBLAS_OP_T, s.in, s.out, s.n, x, s.in, dy, s.out, dw, s.in, stream);
  // db = column sums of dy: [n, out] is NCHW with hw = 1.
  if (db) reduce_channels(s.n, s.out, 1, [=] __device__(int, int64_t i) { return double(dy[i]); }, workspace, db, stream);
}

}  // namespace equivae::gpu
