// The CUDA backend's entry points (engine/cuda, on the raw launchers of kernels/):
// engine/backend.cpp calls them in builds with
// EQUIVAE_WITH_CUDA; GPU tests and benchmarks use the rest. Needs no CUDA header.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "engine/shapes.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace equivae {

class Backend;

// Whether the CUDA runtime sees at least one device. Returns false, never throws, when there is
// no driver or no GPU (cudaGetDeviceCount fails).
bool cuda_device_present() noexcept;

// The process's CUDA backend, created on the first call (device 0, one stream, cuBLAS handle);
// it lives until the process ends, so tensors freed during static destruction stay valid.
Backend* make_cuda_backend();

// The convolutions on TF32 tensor cores or in exact FP32 (engine/backend.h: set_cuda_tf32).
void set_cuda_conv_tf32(bool on);
// Conv and reduction plans independent of the SM count (engine/backend.h: set_cuda_reproducible_plans).
void set_cuda_plans_reproducible(bool on);
bool cuda_plans_reproducible();

// The caching allocator's counters: a training step after warm-up must not raise `mallocs`.
struct CudaMemoryStats {
  uint64_t mallocs = 0;         // cudaMalloc calls so far
  uint64_t bytes_reserved = 0;  // held from the driver (in use + cached)
  uint64_t bytes_in_use = 0;    // handed out and not yet freed
};
CudaMemoryStats cuda_memory_stats();

// The stream every op of the backend is queued on (for CUDA events and for libraries such as
// cuDNN in benchmarks), and a wait for all of it.
CUstream_st* cuda_stream();
void cuda_synchronize();
// How many times the host has waited for the stream so far: copies to or from host memory, flag
// reads (the NaN scans), cuda_synchronize. A training step's waits are its reads of values.
uint64_t cuda_host_waits();

// Float32 scalars read late (issue 15: a step's loss terms, read one step later): start() queues
// copies of them from device memory to pinned host memory on the backend's stream, behind what is
// queued so far, and records an event; finish() waits for that event only (long passed when the
// next step has been queued) and returns the values. Neither is a wait in cuda_host_waits().
class CudaLateRead {
 public:
  explicit CudaLateRead(size_t capacity);  // scalars per start()
  ~CudaLateRead();
  CudaLateRead(const CudaLateRead&) = delete;
  CudaLateRead& operator=(const CudaLateRead&) = delete;
  void start(const std::vector<const float*>& device_scalars);
  std::vector<double> finish();

 private:
  size_t capacity_, count_ = 0;
  float* host_ = nullptr;  // pinned
  void* event_ = nullptr;  // cudaEvent_t
};

// A pinned host buffer for uploads that the host does not wait for (engine/index_upload.h):
// host() waits for the previous copy from it (an event, not the queue), grows it if needed and
// returns it; start() queues the copy of its first `bytes` to device memory and records the event.
class CudaPinnedUpload {
 public:
  CudaPinnedUpload();
  ~CudaPinnedUpload();
  CudaPinnedUpload(const CudaPinnedUpload&) = delete;
  CudaPinnedUpload& operator=(const CudaPinnedUpload&) = delete;
  void* host(size_t bytes);
  void start(void* device_dst, size_t bytes);

 private:
  void* host_ = nullptr;
  size_t capacity_ = 0;
  void* event_ = nullptr;  // cudaEvent_t
};

namespace gpu {
struct AllocatorPool;
}

// One training step as a CUDA graph (engine/step_graph.h). capture() calls step() with the
// backend's stream capturing, so what it queues is recorded, not run, and with the allocator
// drawing from this graph's own pool; launch() runs the record. A step that waits for the GPU
// (a value read back, a free) cannot be captured: capture() throws naming what failed.
class CudaGraph {
 public:
  CudaGraph();
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;
  void capture(const std::function<void()>& step);
  void launch();

 private:
  void* exec_ = nullptr;  // cudaGraphExec_t
  std::unique_ptr<gpu::AllocatorPool> pool_;
};

// While alive, the CUDA backend's random draws add counters->rng_offset to their offsets and its
// Adam step takes its bias corrections from *counters (device memory: a captured step reads them
// when replayed). Scopes do not nest.
class CudaCountersScope {
 public:
  explicit CudaCountersScope(const StepCounters* device_counters);
  ~CudaCountersScope();
  CudaCountersScope(const CudaCountersScope&) = delete;
  CudaCountersScope& operator=(const CudaCountersScope&) = delete;
};

// Free and total memory of the device, in bytes (cudaMemGetInfo).
struct CudaMemoryInfo {
  uint64_t free = 0, total = 0;
};
CudaMemoryInfo cuda_memory_info();

}  // namespace equivae
