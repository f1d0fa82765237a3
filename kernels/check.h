// Error handling for the CUDA backend: throw, never exit (tiny-cuda-nn's CUDA_CHECK_THROW), with
// the failing call's text, file and line; a check after every kernel launch (llm.c's launchers);
// and EQUIVAE_CUDA_SYNC=1 to synchronise after every launch so that an asynchronous fault is
// reported by the launch that caused it rather than by some later call.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace equivae::gpu {

[[noreturn]] inline void throw_cuda_error(const char* what, const char* detail, const char* file, int line) {
  throw std::runtime_error(std::string("cuda: ") + what + " failed: " + detail + " (" + file + ":" +
                           std::to_string(line) + ")");
}

inline void cuda_check(cudaError_t err, const char* call, const char* file, int line) {
  if (err != cudaSuccess) throw_cuda_error(call, cudaGetErrorString(err), file, line);
}

inline void cublas_check(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) throw_cuda_error(call, cublasGetStatusString(status), file, line);
}

// Read once: whether every launch is followed by a stream synchronisation (debugging aid).
inline bool sync_after_launch() {
  static const bool on = [] {
    const char* v = std::getenv("EQUIVAE_CUDA_SYNC");
    return v && std::string(v) == "1";
  }();
  return on;
}

inline void check_launch(cudaStream_t stream, const char* file, int line) {
  cuda_check(cudaGetLastError(), "kernel launch", file, line);
  if (sync_after_launch()) cuda_check(cudaStreamSynchronize(stream), "kernel (EQUIVAE_CUDA_SYNC=1)", file, line);
}

}  // namespace equivae::gpu

#define CUDA_CHECK(call) ::equivae::gpu::cuda_check((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) ::equivae::gpu::cublas_check((call), #call, __FILE__, __LINE__)
// After every launch: launch-configuration errors now, execution errors with EQUIVAE_CUDA_SYNC=1.
#define CUDA_CHECK_LAUNCH(stream) ::equivae::gpu::check_launch((stream), __FILE__, __LINE__)

// Every kernel launch in kernels/: kernel<<<grid, block, 0, stream>>>(args...) and its check. One
// spelling so that the CPU emulator (emulator/, which g++ compiles and which has no <<<>>>)
// runs the same launches. `kernel` must be one token: name a template instance through a pointer.
// The emulator's lambda takes the arguments by value: a stream capture keeps it to run at replay,
// as the driver keeps a copy of a captured launch's arguments.
#ifdef EQUIVAE_CUDA_EMULATOR
#define EQUIVAE_LAUNCH(kernel, grid, block, stream, ...)            \
  do {                                                              \
    ::emu::launch((grid), (block), #kernel, [=] { kernel(__VA_ARGS__); });   \
    CUDA_CHECK_LAUNCH(stream);                                      \
  } while (0)
#else
#define EQUIVAE_LAUNCH(kernel, grid, block, stream, ...)   \
  do {                                                     \
    kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__); \
    CUDA_CHECK_LAUNCH(stream);                             \
  } while (0)
#endif
