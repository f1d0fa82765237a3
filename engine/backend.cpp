#include "engine/backend.h"

#include "engine/cpu/cpu_backend.h"

namespace equivae {
namespace {
Backend* (*g_cuda_factory)() = nullptr;
bool (*g_cuda_available)() = nullptr;
}  // namespace

void register_cuda_backend(Backend* (*factory)(), bool (*available)()) {
  g_cuda_factory = factory;
  g_cuda_available = available;
}

bool cuda_available() { return g_cuda_available && g_cuda_available(); }

Backend& backend(Device device) {
  static CpuBackend cpu;
  if (device == Device::cpu) return cpu;
  if (!g_cuda_factory) throw std::runtime_error("cuda: this build has no CUDA backend (configure with EQUIVAE_CUDA=ON)");
  if (!cuda_available()) throw std::runtime_error("cuda: no usable CUDA device is present");
  static Backend* cuda = g_cuda_factory();
  return *cuda;
}

}  // namespace equivae
