// The CPU emulator's scheduler, runtime API and cuBLAS (what it is and is not: include/cuda_runtime.h).
// _longjmp between stacks is what fibers do; glibc's fortified longjmp would call it an error.
#undef _FORTIFY_SOURCE
#include <setjmp.h>
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

// A fiber is a stack that runs thread after thread: thread t of every block runs on fiber t. It is
// entered the first time with setcontext and afterwards, like every switch back to the scheduler,
// with _setjmp/_longjmp, which save and load registers only (swapcontext also makes a
// sigprocmask system call per switch, which made the emulator several times slower).
struct Fiber {
  std::unique_ptr<char[]> stack{new char[kStackBytes]};
  ucontext_t entry;
  jmp_buf resume_at;
  bool started = false;
  State state = State::done;
};

// The block being run, and the scheduler's state.
struct Block {
  std::vector<std::unique_ptr<Fiber>> fibers;  // never shrinks: fibers and stacks are reused
  int threads = 0;                             // of this block: fibers[0 .. threads)
  std::vector<uint64_t> slots;                 // a lane's published shuffle value
  jmp_buf scheduler;
  int current = -1;  // the running fiber, -1 in the scheduler
  void (*body)(void*) = nullptr;
  void* context = nullptr;
} block;

cudaError_t last_error = cudaSuccess;

// Threads run in index order between barriers, or with EQUIVAE_EMULATOR_ORDER=reverse in the
// opposite order: a missing barrier shows up in one order or the other (the test script runs both).
bool reverse_order() {
  static const bool reverse = [] {
    const char* v = std::getenv("EQUIVAE_EMULATOR_ORDER");
    return v && std::string(v) == "reverse";
  }();
  return reverse;
}

Fiber& fiber(int t) { return *block.fibers[size_t(t)]; }

void set_thread_index(int t) {
  threadIdx.x = unsigned(t) % blockDim.x;
  threadIdx.y = unsigned(t) / blockDim.x % blockDim.y;
  threadIdx.z = unsigned(t) / (blockDim.x * blockDim.y);
}

// Back to the scheduler; returns when the scheduler resumes this fiber.
void yield_to_scheduler() {
  if (_setjmp(fiber(block.current).resume_at) == 0) _longjmp(block.scheduler, 1);
}

void fiber_main() {
  for (;;) {  // one thread per turn; a finished fiber waits to be given the next block's thread
    block.body(block.context);
    fiber(block.current).state = State::done;
    yield_to_scheduler();
  }
}

// Runs fiber t until it waits at a barrier or finishes its thread.
void resume(int t) {
  block.current = t;
  set_thread_index(t);
  if (_setjmp(block.scheduler) == 0) {
    Fiber& f = fiber(t);
    if (f.started) _longjmp(f.resume_at, 1);
    f.started = true;
    setcontext(&f.entry);
  }
}

// Back to the scheduler until this thread's barrier opens.
void wait(State barrier) {
  if (block.current < 0) fail("a barrier outside a kernel");
  fiber(block.current).state = barrier;
  yield_to_scheduler();  // (resume() sets the thread index again)
}

void run_block(int threads) {
  while (block.fibers.size() < size_t(threads)) {
    auto f = std::make_unique<Fiber>();
    getcontext(&f->entry);
    f->entry.uc_stack.ss_sp = f->stack.get();
    f->entry.uc_stack.ss_size = kStackBytes;
    f->entry.uc_link = nullptr;  // fiber_main never returns
    makecontext(&f->entry, fiber_main, 0);
    block.fibers.push_back(std::move(f));
  }
  block.threads = threads;
  block.slots.resize(size_t(threads));
  for (int t = 0; t < threads; ++t) fiber(t).state = State::runnable;
  const int warps = (threads + 31) / 32;
  for (;;) {
    for (int i = 0; i < threads; ++i) {
      const int t = reverse_order() ? threads - 1 - i : i;
      if (fiber(t).state == State::runnable) resume(t);
    }
    block.current = -1;
    // Every thread now waits at a barrier or is done: open what can open.
    int live = 0, at_block = 0;
    for (int t = 0; t < threads; ++t) {
      live += fiber(t).state != State::done;
      at_block += fiber(t).state == State::at_block_barrier;
    }
    if (live == 0) return;
    if (at_block == live) {
      for (int t = 0; t < threads; ++t)
        if (fiber(t).state != State::done) fiber(t).state = State::runnable;
      continue;
    }
    bool opened = false;
    for (int w = 0; w < warps; ++w) {
      const int begin = w * 32, end = std::min(threads, begin + 32);
      int warp_live = 0, warp_waiting = 0;
      for (int t = begin; t < end; ++t) {
        warp_live += fiber(t).state != State::done;
        warp_waiting += fiber(t).state == State::at_warp_barrier;
      }
      if (warp_live > 0 && warp_waiting == warp_live) {
        for (int t = begin; t < end; ++t)
          if (fiber(t).state == State::at_warp_barrier) fiber(t).state = State::runnable;
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

Counters& counters() {
  static Counters c;
  return c;
}
std::map<std::string, uint64_t>& kernels_by_name() {
  static std::map<std::string, uint64_t> m;
  return m;
}
void count_kernel(const char* name) {
  ++counters().kernels;
  ++kernels_by_name()[name];
}

void sync_block() { wait(State::at_block_barrier); }
void sync_warp() { wait(State::at_warp_barrier); }
void fail(const char* what) { fail(std::string(what)); }

void warp_exchange(const void* mine, void* out, size_t size, int src_lane) {
  const int t = block.current, threads = block.threads;
  if (t < 0) fail("a warp shuffle outside a kernel");
  std::memcpy(&block.slots[size_t(t)], mine, size);
  wait(State::at_warp_barrier);  // every live lane has published
  const int src = t / 32 * 32 + src_lane;
  if (src >= threads || fiber(src).state == State::done)
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
  ++emu::counters().copies;
  return cudaMemcpy(dst, src, count, kind);
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind kind, cudaStream_t) {
  ++emu::counters().copies;
  if (!valid_kind(kind) || width > dpitch || width > spitch) return cudaErrorInvalidValue;
  for (size_t r = 0; r < height; ++r)
    std::memmove(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* ptr, int value, size_t count) {
  if (count) std::memset(ptr, value, count);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t) {
  ++emu::counters().memsets;
  return cudaMemset(ptr, value, count);
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  static int token;  // streams are synchronous here: any non-null handle will do
  *stream = reinterpret_cast<cudaStream_t>(&token);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  ++emu::counters().host_waits;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  ++emu::counters().host_waits;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned) {
  *event = reinterpret_cast<cudaEvent_t>(new char);  // a distinct non-null handle
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete reinterpret_cast<char*>(event);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) { return event ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  ++emu::counters().event_waits;
  return event ? cudaSuccess : cudaErrorInvalidValue;
}

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
  ++emu::counters().blas;
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
