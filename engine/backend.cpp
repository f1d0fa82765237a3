#include "engine/backend.h"

#include "engine/cpu/cpu_backend.h"
#ifdef EQUIVAE_WITH_CUDA
#include "engine/cuda/cuda_backend.h"
#endif

namespace equivae {

// The CUDA backend lives in engine/cuda/ (on the launchers of kernels/) and is compiled into this library only when CUDA is on;
// the CPU-only build answers "no CUDA" without referring to it.
bool cuda_available() {
#ifdef EQUIVAE_WITH_CUDA
  static const bool present = cuda_device_present();
  return present;
#else
  return false;
#endif
}

void set_cuda_tf32(bool on) {
#ifdef EQUIVAE_WITH_CUDA
  set_cuda_conv_tf32(on);
#else
  (void)on;
  throw std::runtime_error("cuda: this build has no CUDA backend, so no TF32 convolutions");
#endif
}

Backend& backend(Device device) {
  static CpuBackend cpu;
  if (device == Device::cpu) return cpu;
#ifdef EQUIVAE_WITH_CUDA
  if (!cuda_available()) throw std::runtime_error("cuda: no usable CUDA device is present");
  static Backend* cuda = make_cuda_backend();
  return *cuda;
#else
  throw std::runtime_error("cuda: this build has no CUDA backend (configure with EQUIVAE_CUDA=ON)");
#endif
}

}  // namespace equivae
