// The set mean behind r_y (the CUDA side of engine/cpu/segmented_mean.cpp): row s of y is the
// mean of rows members[offsets[s] .. offsets[s+1]) of x (CSR, i32, every set non-empty).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace equivae::gpu {

struct SegmentShape {
  int64_t rows;     // rows of x (and dx)
  int64_t sets;     // rows of y; offsets has sets + 1 entries
  int64_t members;  // entries of members
  int64_t width;    // elements per row
};

void segmented_mean_forward(const float* x, const int32_t* offsets, const int32_t* members, float* y,
                            const SegmentShape& s, cudaStream_t stream);

// dx = 0, then dx[members[j]] += dy[s] / m_s, without float atomics: the member -> sets
// transpose is built in `workspace` (segmented_mean_backward_workspace_bytes) and each row of dx
// sums its contributions in ascending j, the CPU reference's order.
size_t segmented_mean_backward_workspace_bytes(const SegmentShape& s);
void segmented_mean_backward(const float* dy, const int32_t* offsets, const int32_t* members, float* dx,
                             const SegmentShape& s, void* workspace, cudaStream_t stream);

}  // namespace equivae::gpu
