#include "kernels/common.cuh"
#include "kernels/segmented_mean.cuh"

namespace equivae::gpu {
namespace {

// Column block of y's set `blockIdx.x`: members summed in order, then scaled, as on the CPU.
__global__ void segment_mean_kernel(const float* x, const int32_t* offsets, const int32_t* members, float* y,
                                    int64_t width) {
  const int64_t set = blockIdx.x, k = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (k >= width) return;
  const int32_t begin = offsets[set], end = offsets[set + 1];
  float acc = 0.f;
  for (int32_t j = begin; j < end; ++j) acc += x[int64_t(members[j]) * width + k];
  y[set * width + k] = acc * (1.0f / float(end - begin));
}

// Exclusive prefix sum of n ints into out[0..n] by one block (n is a batch's row count: small).
__global__ void exclusive_scan_kernel(const int* in, int n, int* out) {
  __shared__ int buf[1024];
  __shared__ int carry;
  if (threadIdx.x == 0) carry = 0;
  for (int base = 0; base < n; base += blockDim.x) {
    const int i = base + threadIdx.x, v = i < n ? in[i] : 0;
    buf[threadIdx.x] = v;
    __syncthreads();
    for (int o = 1; o < int(blockDim.x); o <<= 1) {  // Hillis-Steele inclusive scan
      const int add = int(threadIdx.x) >= o ? buf[threadIdx.x - o] : 0;
      __syncthreads();
      buf[threadIdx.x] += add;
      __syncthreads();
    }
    if (i < n) out[i] = carry + buf[threadIdx.x] - v;
    __syncthreads();
    if (threadIdx.x == blockDim.x - 1) carry += buf[threadIdx.x];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[n] = carry;
}

// dx row `blockIdx.x`: its (sorted) list of member positions j, each giving dy[set(j)] / m.
__global__ void segment_gather_kernel(const float* dy, const int32_t* offsets, const int* starts, const int* list,
                                      const int* set_of, float* dx, int64_t width) {
  const int64_t row = blockIdx.x, k = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (k >= width) return;
  float acc = 0.f;
  for (int p = starts[row]; p < starts[row + 1]; ++p) {
    const int set = set_of[list[p]];
    acc += dy[int64_t(set) * width + k] * (1.0f / float(offsets[set + 1] - offsets[set]));
  }
  dx[row * width + k] = acc;
}

// The transpose's int arrays, carved from the workspace.
struct Transpose {
  int *counts, *filled, *starts, *list, *set_of;
  Transpose(void* workspace, const SegmentShape& s) {
    counts = static_cast<int*>(workspace);
    filled = counts + s.rows;  // counts and filled are adjacent: one memset clears both
    starts = filled + s.rows;
    list = starts + s.rows + 1;
    set_of = list + s.members;
  }
};

dim3 row_grid(int64_t rows, int64_t width) { return dim3(unsigned(rows), unsigned(ceil_div(width, kThreads))); }

}  // namespace

void segmented_mean_forward(const float* x, const int32_t* offsets, const int32_t* members, float* y,
                            const SegmentShape& s, cudaStream_t stream) {
  if (s.sets <= 0 || s.width <= 0) return;
  check_int32(s.sets, "segmented_mean: set count");
  EQUIVAE_LAUNCH(segment_mean_kernel, row_grid(s.sets, s.width), kThreads, stream, x, offsets, members, y, s.width);
}

size_t segmented_mean_backward_workspace_bytes(const SegmentShape& s) {
  return size_t(3 * s.rows + 1 + 2 * s.members) * sizeof(int);
}

void segmented_mean_backward(const float* dy, const int32_t* offsets, const int32_t* members, float* dx,
                             const SegmentShape& s, void* workspace, cudaStream_t stream) {
  if (s.rows <= 0 || s.width <= 0) return;
  check_int32(s.rows, "segmented_mean: row count");
  check_int32(s.members, "segmented_mean: member count");
  const Transpose t(workspace, s);
  const int64_t sets = s.sets;
  int* counts = t.counts;
  int* filled = t.filled;
  int* starts = t.starts;
  int* list = t.list;
  int* set_of = t.set_of;
  CUDA_CHECK(cudaMemsetAsync(counts, 0, size_t(2 * s.rows) * sizeof(int), stream));
  // 1. How many positions name each row; which set each position belongs to (binary search).
  launch_map(s.members, stream, [=] __device__(int64_t j) {
    atomicAdd(&counts[members[j]], 1);  // integer: the counts do not depend on the order
    int64_t lo = 0, hi = sets;          // offsets[lo] <= j < offsets[hi]
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) / 2;
      if (offsets[mid] <= j) lo = mid;
      else hi = mid;
    }
    set_of[j] = int(lo);
  });
  // 2. Where each row's list starts.
  EQUIVAE_LAUNCH(exclusive_scan_kernel, 1, 1024, stream, counts, int(s.rows), starts);
  // 3. Bucket the positions (in arbitrary order) ...
  launch_map(s.members, stream, [=] __device__(int64_t j) {
    const int row = members[j];
    list[starts[row] + atomicAdd(&filled[row], 1)] = int(j);
  });
  // 4. ... and sort each bucket, so that the sums below run in ascending j whatever the atomics did.
  launch_map(s.rows, stream, [=] __device__(int64_t row) {
    for (int p = starts[row] + 1; p < starts[row + 1]; ++p) {
      const int v = list[p];
      int q = p;
      for (; q > starts[row] && list[q - 1] > v; --q) list[q] = list[q - 1];
      list[q] = v;
    }
  });
  // 5. Every row of dx sums its contributions.
  EQUIVAE_LAUNCH(segment_gather_kernel, row_grid(s.rows, s.width), kThreads, stream, dy, offsets, starts, list, set_of,
                 dx, s.width);
}

}  // namespace equivae::gpu
