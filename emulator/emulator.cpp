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
#include <unordered_map>
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

namespace {
bool valid_config(dim3 grid, dim3 threads) {
  const uint64_t per_block = uint64_t(threads.x) * threads.y * threads.z;
  return !(per_block == 0 || per_block > 1024 || threads.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
           grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535);
}
}  // namespace

void run_grid(dim3 grid, dim3 threads, void (*body)(void*), void* context) {
  const uint64_t per_block = uint64_t(threads.x) * threads.y * threads.z;
  if (!valid_config(grid, threads)) {
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

// The capture in progress, if any.
namespace {
struct Capture {
  bool active = false, invalidated = false;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::vector<std::function<void()>> ops;
} capture;
}  // namespace

bool capturing() { return capture.active; }
void record(std::function<void()> op) { capture.ops.push_back(std::move(op)); }
void record_launch(dim3 grid, dim3 block, std::function<void()> run) {
  if (!valid_config(grid, block)) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  record(std::move(run));
}

// A call that a capture cannot hold (a host wait, a free, pageable memory): like CUDA, it fails
// and invalidates the capture, whose end then reports it.
cudaError_t refuse_in_capture() {
  capture.invalidated = true;
  return cudaErrorStreamCaptureUnsupported;
}
bool relaxed_capture() { return capture.mode == cudaStreamCaptureModeRelaxed; }

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

uint64_t& device_memory_bytes() {
  static uint64_t bytes = uint64_t(80) << 30;
  return bytes;
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
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit:
      return "operation would make the legacy stream depend on a capturing blocking stream";
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
namespace {
// Device blocks (for cudaMemGetInfo) and pinned host blocks (a capture may copy only to and from
// these), by start address.
using Blocks = std::map<const char*, size_t>;
Blocks device_blocks, pinned_blocks;
uint64_t device_bytes_held = 0;
void* host_alloc(size_t size) { return size ? std::aligned_alloc(256, (size + 255) / 256 * 256) : nullptr; }
bool inside(const Blocks& blocks, const void* p, size_t bytes) {
  const char* c = static_cast<const char*>(p);
  auto it = blocks.upper_bound(c);
  if (it == blocks.begin()) return false;
  --it;
  return c + bytes <= it->first + it->second;
}
// Whether a capture may hold a copy between these: device memory and pinned host memory only.
bool capturable(const void* p, size_t bytes) {
  return inside(device_blocks, p, bytes) || inside(pinned_blocks, p, bytes);
}
}  // namespace

cudaError_t cudaMalloc(void** ptr, size_t size) {
  if (emu::capturing() && !emu::relaxed_capture()) return emu::refuse_in_capture();
  if (device_bytes_held + size > emu::device_memory_bytes()) {
    *ptr = nullptr;
    return cudaErrorMemoryAllocation;
  }
  *ptr = host_alloc(size);  // cudaMalloc aligns to 256
  if (size && !*ptr) return cudaErrorMemoryAllocation;
  if (*ptr) device_blocks[static_cast<const char*>(*ptr)] = size, device_bytes_held += size;
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** ptr, size_t size) {
  if (emu::capturing() && !emu::relaxed_capture()) return emu::refuse_in_capture();
  *ptr = host_alloc(size);
  if (size && !*ptr) return cudaErrorMemoryAllocation;
  if (*ptr) pinned_blocks[static_cast<const char*>(*ptr)] = size;
  return cudaSuccess;
}
// Both wait for the device: refused inside a capture.
cudaError_t cudaFree(void* ptr) {
  if (emu::capturing()) return emu::refuse_in_capture();
  const auto it = device_blocks.find(static_cast<const char*>(ptr));
  if (it != device_blocks.end()) device_bytes_held -= it->second, device_blocks.erase(it);
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* ptr) {
  if (emu::capturing()) return emu::refuse_in_capture();
  pinned_blocks.erase(static_cast<const char*>(ptr));
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  *total = size_t(emu::device_memory_bytes());
  *free = size_t(emu::device_memory_bytes() - std::min(device_bytes_held, emu::device_memory_bytes()));
  return cudaSuccess;
}
// The synchronous forms wait for the device: refused inside a capture.
cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  if (!valid_kind(kind)) return cudaErrorInvalidValue;
  if (emu::capturing()) return emu::refuse_in_capture();
  if (count) std::memmove(dst, src, count);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t) {
  ++emu::counters().copies;
  if (!valid_kind(kind)) return cudaErrorInvalidValue;
  if (emu::capturing()) {
    // A graph's copy node reads and writes its buffers when the graph runs: pageable host memory
    // cannot be one (the driver stages it at the call), so CUDA refuses it in a capture.
    if (count && (!capturable(dst, count) || !capturable(src, count))) return emu::refuse_in_capture();
    emu::record([=] { std::memmove(dst, src, count); });
    return cudaSuccess;
  }
  if (count) std::memmove(dst, src, count);
  return cudaSuccess;
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind kind, cudaStream_t) {
  ++emu::counters().copies;
  if (!valid_kind(kind) || width > dpitch || width > spitch) return cudaErrorInvalidValue;
  auto copy = [=] {
    for (size_t r = 0; r < height; ++r)
      std::memmove(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  };
  if (emu::capturing()) {
    const size_t span = height ? (height - 1) * std::max(dpitch, spitch) + width : 0;
    if (span && (!capturable(dst, (height - 1) * dpitch + width) || !capturable(src, (height - 1) * spitch + width)))
      return emu::refuse_in_capture();
    emu::record(copy);
    return cudaSuccess;
  }
  copy();
  return cudaSuccess;
}
cudaError_t cudaMemset(void* ptr, int value, size_t count) {
  if (emu::capturing()) return emu::refuse_in_capture();
  if (count) std::memset(ptr, value, count);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t) {
  ++emu::counters().memsets;
  if (emu::capturing()) {
    emu::record([=] { std::memset(ptr, value, count); });
    return cudaSuccess;
  }
  if (count) std::memset(ptr, value, count);
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  static int token;  // streams are synchronous here: any non-null handle will do
  *stream = reinterpret_cast<cudaStream_t>(&token);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  if (emu::capturing()) return emu::refuse_in_capture();
  ++emu::counters().host_waits;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  if (emu::capturing()) return emu::refuse_in_capture();
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
  if (emu::capturing()) return emu::refuse_in_capture();
  ++emu::counters().event_waits;
  return event ? cudaSuccess : cudaErrorInvalidValue;
}

// ---- graphs ------------------------------------------------------------------------------------------

struct CUgraph_st {
  std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> ops;
};

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  if (!stream || emu::capture.active) return cudaErrorInvalidValue;  // CUDA cannot capture the legacy stream
  emu::capture = {true, false, mode, {}};
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* graph) {
  if (!emu::capture.active) return cudaErrorInvalidValue;
  emu::capture.active = false;
  *graph = nullptr;
  if (emu::capture.invalidated) return cudaErrorStreamCaptureInvalidated;
  *graph = new CUgraph_st{std::move(emu::capture.ops)};
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!graph) return cudaErrorInvalidValue;
  *exec = new CUgraphExec_st{graph->ops};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t) {
  if (!exec) return cudaErrorInvalidValue;
  ++emu::counters().graphs;
  if (emu::capturing()) {  // a graph launched into a capture becomes part of it
    emu::record([ops = exec->ops] { for (const auto& op : ops) op(); });
    return cudaSuccess;
  }
  for (const auto& op : exec->ops) op();
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
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
  // alpha and beta are host pointers, read at the call (cuBLAS's default pointer mode).
  const float a = *alpha, b = *beta;
  auto gemm = [=] {
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        double acc = 0;
        for (int l = 0; l < k; ++l)
          acc += double(ta ? A[l + size_t(i) * lda] : A[i + size_t(l) * lda]) *
                 double(tb ? B[j + size_t(l) * ldb] : B[l + size_t(j) * ldb]);
        float& c = C[i + size_t(j) * ldc];
        c = float(a * acc + (b == 0 ? 0.0 : double(b) * c));
      }
  };
  if (emu::capturing())
    emu::record(gemm);
  else
    gemm();
  return CUBLAS_STATUS_SUCCESS;
}
