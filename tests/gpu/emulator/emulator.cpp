// The CPU emulator's scheduler, runtime API and cuBLAS (what it is and is not: include/cuda_runtime.h).
#include <ucontext.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "cublas_v2.h"
#include "cuda_runtime.h"

namespace emu {
namespace {

// Why the emulator stops: a kernel broke a rule of CUDA's execution model. No exception can cross
// a fiber's stack, and the run is wrong anyway: say what happened and stop.
[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "cuda emulator: %s (block %u,%u,%u thread %u,%u,%u)\n", what.c_str(), blockIdx.x, blockIdx.y,
               blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
  std::abort();
}

enum class State { runnable, at_block_barrier, at_warp_barrier, done };

constexpr size_t kStackBytes = 64 << 10;

struct Fiber {
  ucontext_t context;
  State state = State::runnable;
};

// The block being run: one fiber per thread, and the shuffle slots of its lanes.
struct Block {
  std::vector<Fiber> fibers;
  std::unique_ptr<char[]> stacks;
  size_t stack_count = 0;
  std::vector<uint64_t> slots;  // a lane's published shuffle value
  ucontext_t scheduler;
  int current = -1;  // the running fiber, -1 in the scheduler
  void (*body)(void*) = nullptr;
  void* context = nullptr;
} block;

cudaError_t last_error = cudaSuccess;

void set_thread_index(int t) {
  threadIdx.x = unsigned(t) % blockDim.x;
  threadIdx.y = unsigned(t) / blockDim.x % blockDim.y;
  threadIdx.z = unsigned(t) / (blockDim.x * blockDim.y);
}

void fiber_main() {
  block.body(block.context);
  block.fibers[size_t(block.current)].state = State::done;
}  // returns to uc_link: the scheduler

// Back to the scheduler until this thread's barrier opens.
void wait(State barrier) {
  if (block.current < 0) fail("a barrier outside a kernel");
  Fiber& self = block.fibers[size_t(block.current)];
  self.state = barrier;
  swapcontext(&self.context, &block.scheduler);
  set_thread_index(block.current);
}

void run_block(int threads) {
  if (block.stack_count < size_t(threads)) {
    block.stacks.reset(new char[size_t(threads) * kStackBytes]);
    block.stack_count = size_t(threads);
  }
  block.fibers.assign(size_t(threads), Fiber{});
  block.slots.resize(size_t(threads));
  for (int t = 0; t < threads; ++t) {
    ucontext_t& c = block.fibers[size_t(t)].context;
    getcontext(&c);
    c.uc_stack.ss_sp = block.stacks.get() + size_t(t) * kStackBytes;
    c.uc_stack.ss_size = kStackBytes;
    c.uc_link = &block.scheduler;
    makecontext(&c, fiber_main, 0);
  }
  const int warps = (threads + 31) / 32;
  for (;;) {
    for (int t = 0; t < threads; ++t) {
      if (block.fibers[size_t(t)].state != State::runnable) continue;
      block.current = t;
      set_thread_index(t);
      swapcontext(&block.scheduler, &block.fibers[size_t(t)].context);
    }
    block.current = -1;
    // Every thread now waits at a barrier or is done: open what can open.
    int live = 0, at_block = 0;
    for (const Fiber& f : block.fibers) {
      live += f.state != State::done;
      at_block += f.state == State::at_block_barrier;
    }
    if (live == 0) return;
    if (at_block == live) {
      for (Fiber& f : block.fibers) f.state = State::runnable;
      continue;
    }
    bool opened = false;
    for (int w = 0; w < warps; ++w) {
      int warp_live = 0, warp_waiting = 0;
      for (int t = w * 32; t < std::min(threads, w * 32 + 32); ++t) {
        warp_live += block.fibers[size_t(t)].state != State::done;
        warp_waiting += block.fibers[size_t(t)].state == State::at_warp_barrier;
      }
      if (warp_live > 0 && warp_waiting == warp_live) {
        for (int t = w * 32; t < std::min(threads, w * 32 + 32); ++t)
          if (block.fibers[size_t(t)].state == State::at_warp_barrier) block.fibers[size_t(t)].state = State::runnable;
        opened = true;
      }
    }
    if (!opened)
      fail("deadlock: some threads wait at __syncthreads while others of the block wait at a warp shuffle");
  }
}

}  // namespace

void run_grid(dim3 grid, dim3 threads, void (*body)(void*), void* context) {
  const uint64_t per_block = uint64_t(threads.x) * threads.y * threads.z;
  if (per_block == 0 || per_block > 1024 || threads.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
    last_error = cudaErrorInvalidConfiguration;  // reported by the next cudaGetLastError, like a real launch
    return;
  }
  if (block.current >= 0) fail("a kernel launched from inside a kernel");
  block.body = body;
  block.context = context;
  gridDim = grid;
  blockDim = threads;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = {x, y, z};
        run_block(int(per_block));
      }
}

void sync_block() { wait(State::at_block_barrier); }

void warp_exchange(const void* mine, void* out, size_t size, int src_lane) {
  const int t = block.current, threads = int(block.fibers.size());
  if (t < 0) fail("a warp shuffle outside a kernel");
  std::memcpy(&block.slots[size_t(t)], mine, size);
  wait(State::at_warp_barrier);  // every live lane has published
  const int src = t / 32 * 32 + src_lane;
  if (src >= threads || block.fibers[size_t(src)].state == State::done)
    fail("a warp shuffle reads lane " + std::to_string(src_lane) + ", which has exited or does not exist");
  std::memcpy(out, &block.slots[size_t(src)], size);
  wait(State::at_warp_barrier);  // every lane has read before any slot is written again
}

}  // namespace emu

// ---- runtime API -----------------------------------------------------------------------------------

namespace {
int emulated_sm_count() {  // the H100's 132 by default, so that grids and split-K plans match it
  const char* v = std::getenv("EQUIVAE_EMULATOR_SMS");
  return v ? std::max(1, std::atoi(v)) : 132;
}
bool valid_kind(cudaMemcpyKind kind) { return kind >= cudaMemcpyHostToHost && kind <= cudaMemcpyDefault; }
}  // namespace

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
  }
  return "unknown error";
}
cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::last_error;
  emu::last_error = cudaSuccess;
  return e;
}
cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0 || attr != cudaDevAttrMultiProcessorCount) return cudaErrorInvalidValue;
  *value = emulated_sm_count();
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** ptr, size_t size) {
  *ptr = size ? std::aligned_alloc(256, (size + 255) / 256 * 256) : nullptr;  // cudaMalloc aligns to 256
  return size && !*ptr ? cudaErrorMemoryAllocation : cudaSuccess;
}
cudaError_t cudaMallocHost(void** ptr, size_t size) { return cudaMalloc(ptr, size); }
cudaError_t cudaFree(void* ptr) {
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* ptr) { return cudaFree(ptr); }
cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  if (!valid_kind(kind)) return cudaErrorInvalidValue;
  if (count) std::memmove(dst, src, count);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, count, kind);
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind kind, cudaStream_t) {
  if (!valid_kind(kind) || width > dpitch || width > spitch) return cudaErrorInvalidValue;
  for (size_t r = 0; r < height; ++r)
    std::memmove(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* ptr, int value, size_t count) {
  if (count) std::memset(ptr, value, count);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t) { return cudaMemset(ptr, value, count); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  static int token;  // streams are synchronous here: any non-null handle will do
  *stream = reinterpret_cast<cudaStream_t>(&token);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

// ---- cuBLAS --------------------------------------------------------------------------------------------

struct cublasContext {};

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t) {
  return handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void*, size_t) {
  return handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}
const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}
cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                           int k, const float* alpha, const float* A, int lda, const float* B, int ldb,
                           const float* beta, float* C, int ldc) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
  // cuBLAS's own argument checks: leading dimensions cover the stored rows.
  if (m < 0 || n < 0 || k < 0 || lda < std::max(1, ta ? k : m) || ldb < std::max(1, tb ? n : k) ||
      ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double acc = 0;
      for (int l = 0; l < k; ++l)
        acc += double(ta ? A[l + size_t(i) * lda] : A[i + size_t(l) * lda]) *
               double(tb ? B[j + size_t(l) * ldb] : B[l + size_t(j) * ldb]);
      float& c = C[i + size_t(j) * ldc];
      c = float(*alpha * acc + (*beta == 0 ? 0.0 : double(*beta) * c));
    }
  return CUBLAS_STATUS_SUCCESS;
}
