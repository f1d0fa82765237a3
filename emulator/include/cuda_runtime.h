// A CPU emulator of the part of CUDA that kernels/ uses, so that the hand-written kernels run, and
// the GPU parity suite checks them, on machines with no GPU (CI, and every session without one).
// The same kernel source is compiled by g++ against this header instead of nvcc against CUDA's:
//   - each thread of a block is a fiber (ucontext) on the calling OS thread; blocks run one after
//     another, threads in index order until they reach a barrier;
//   - __syncthreads() waits for every live thread of the block, a warp shuffle for every live lane
//     of the warp; a barrier that cannot complete (divergent __syncthreads, a shuffle whose source
//     lane has exited) aborts with a message instead of hanging;
//   - __shared__ variables are function statics: shared by the block's fibers, and blocks never
//     overlap;
//   - device memory is host memory; streams are synchronous; cuBLAS's sgemm is a plain loop;
//   - launch configurations are validated as the driver does (block size, grid limits);
//   - stream capture (CUDA graphs) records each launch, with a copy of its arguments, and each
//     copy, memset and event record instead of running it; launching the graph runs the record
//     in order. Inside a capture, a host wait, a cudaFree or a copy from or to pageable host
//     memory fails and invalidates the capture, as on a GPU.
// What it cannot show: races the real scheduler would expose (threads here run in a fixed order),
// memory-model and occupancy effects, register/shared-memory limits, speed. Those need the GPU.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))

struct uint3 {
  unsigned x, y, z;
};
// CUDA's 128-bit vector type: 16-byte aligned, so a misaligned float4 access faults (UBSan) or
// at least reads what the device would read.
struct alignas(16) float4 {
  float x, y, z, w;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The built-in variables of the thread that is running (set by the scheduler on every switch).
inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

// ---- device functions ----------------------------------------------------------------------------

namespace emu {
// Runs body() once per thread of every block of the grid; returns when all have finished.
void run_grid(dim3 grid, dim3 block, void (*body)(void*), void* context);
void count_kernel(const char* name);
// Stream capture: while the stream captures, the device's work is recorded by record() instead
// of run (the emulated device has one queue, so capture covers all of it).
bool capturing();
void record(std::function<void()> op);
// A kernel launch while capturing: the configuration is checked now, as the driver does.
void record_launch(dim3 grid, dim3 block, std::function<void()> run);
template <class F> void launch(dim3 grid, dim3 block, const char* name, F&& body) {
  count_kernel(name);
  using Body = std::remove_reference_t<F>;
  if (capturing()) {  // `body` holds copies of the arguments (EQUIVAE_LAUNCH captures by value)
    record_launch(grid, block, [grid, block, body]() mutable {
      run_grid(grid, block, [](void* f) { (*static_cast<Body*>(f))(); }, &body);
    });
    return;
  }
  run_grid(grid, block, [](void* f) { (*static_cast<Body*>(f))(); }, &body);
}
// What the code has queued on the device and how often the host waited for it, since the start:
// the [launches] test reads the difference over a training step (a real GPU has no such count
// short of a profiler). Launches are kernels, cuBLAS calls, device-side copies and memsets.
struct Counters {
  uint64_t kernels = 0, blas = 0, copies = 0, memsets = 0;
  uint64_t graphs = 0;       // graph launches (what a replayed step costs the host)
  uint64_t host_waits = 0;   // stream or device synchronisations
  uint64_t event_waits = 0;  // cudaEventSynchronize: a wait for one point of the queue, not all of it
  uint64_t launches() const { return kernels + blas + copies + memsets + graphs; }
};
Counters& counters();
// Kernel launches by name (the first token of EQUIVAE_LAUNCH), for a report of where they go.
std::map<std::string, uint64_t>& kernels_by_name();
// The device memory that cudaMemGetInfo reports as total (an H100's 80 GiB unless a test sets
// less); free is that minus what cudaMalloc holds.
uint64_t& device_memory_bytes();
void sync_block();
// Waits for every live lane of the warp (warp-collective operations: shuffles, wmma).
void sync_warp();
// Stops the run: a kernel broke a rule of CUDA's execution model (what, and which thread).
[[noreturn]] void fail(const char* what);
// Publishes `size` bytes of this lane, waits for the warp, copies lane src's bytes into out.
void warp_exchange(const void* mine, void* out, size_t size, int src_lane);
}  // namespace emu

inline void __syncthreads() { emu::sync_block(); }

template <class T> T __shfl_xor_sync(unsigned /*mask: all lanes in this code*/, T v, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= 8, "emulated shuffles move at most 8 bytes");
  const int lane = int(threadIdx.x & 31);
  const int src = (lane & ~(width - 1)) | ((lane ^ lane_mask) & (width - 1));
  T out;
  emu::warp_exchange(&v, &out, sizeof(T), src);
  return out;
}

// Fibers share one OS thread and never switch inside these, so plain read-modify-writes are atomic.
template <class T> T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

// Blocks run one after another here, so every write of an earlier block is already visible.
inline void __threadfence() {}
template <class T> T __ldcg(const T* p) { return *p; }  // a load that bypasses L1: plain here

// CUDA declares these in the global namespace for device code.
using std::isfinite;
using std::isinf;
using std::isnan;

// CUDA's device max/min are overloaded for every arithmetic pair; std's are not.
template <class A, class B> inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(a) < C(b) ? C(b) : C(a);
}
template <class A, class B> inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(b) < C(a) ? C(b) : C(a);
}

// ---- runtime API -----------------------------------------------------------------------------------

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNoDevice = 100,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureImplicit = 906,
};
typedef struct CUstream_st* cudaStream_t;
typedef struct CUevent_st* cudaEvent_t;
typedef struct CUgraph_st* cudaGraph_t;
typedef struct CUgraphExec_st* cudaGraphExec_t;
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
constexpr unsigned cudaStreamNonBlocking = 0x01;
constexpr unsigned cudaEventDisableTiming = 0x02;

const char* cudaGetErrorString(cudaError_t error);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaMalloc(void** ptr, size_t size);
template <class T> cudaError_t cudaMalloc(T** ptr, size_t size) { return cudaMalloc(reinterpret_cast<void**>(ptr), size); }
cudaError_t cudaMallocHost(void** ptr, size_t size);
template <class T> cudaError_t cudaMallocHost(T** ptr, size_t size) {
  return cudaMallocHost(reinterpret_cast<void**>(ptr), size);
}
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMemGetInfo(size_t* free, size_t* total);
cudaError_t cudaFreeHost(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream = nullptr);
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind kind, cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* ptr, int value, size_t count);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream = nullptr);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaDeviceSynchronize();
// Events: the stream runs each call as it is made, so an event is complete once recorded.
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
// Graphs: stream capture and replay (see the top of this file). Relaxed mode lets cudaMalloc run
// during a capture (an allocator filling a graph's own pool); the other modes refuse it.
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
