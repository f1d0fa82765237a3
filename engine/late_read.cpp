#include "engine/late_read.h"

#ifdef EQUIVAE_WITH_CUDA
#include "engine/cuda/cuda_backend.h"
#endif

namespace equivae {

LateScalars::LateScalars() = default;
LateScalars::~LateScalars() = default;

void LateScalars::push(const std::vector<Tensor>& scalars) {
  EQUIVAE_CHECK(scalars.size() <= kMaxScalars, "late read: {} scalars, at most {}", scalars.size(), kMaxScalars);
  Pending p;
  const bool on_gpu = !scalars.empty() && scalars[0].device() == Device::cuda;
  for (const Tensor& s : scalars)
    EQUIVAE_CHECK(s.numel() == 1 && (s.device() == Device::cuda) == on_gpu,
                  "late read: one-element tensors on one device, got {}", s.describe());
  if (!on_gpu) {
    for (const Tensor& s : scalars) p.values.push_back(s.item());
  } else {
#ifdef EQUIVAE_WITH_CUDA
    std::vector<const float*> device;
    for (const Tensor& s : scalars) device.push_back(s.data<float>());
    if (free_.empty()) free_.push_back(std::make_shared<CudaLateRead>(kMaxScalars));
    p.read = std::move(free_.back());
    free_.pop_back();
    p.read->start(device);
#endif
  }
  queue_.push_back(std::move(p));
}

std::vector<double> LateScalars::pop() {
  EQUIVAE_CHECK(!queue_.empty(), "late read: nothing pushed");
  Pending p = std::move(queue_.front());
  queue_.pop_front();
#ifdef EQUIVAE_WITH_CUDA
  if (p.read) {
    p.values = p.read->finish();
    free_.push_back(std::move(p.read));
  }
#endif
  return std::move(p.values);
}

}  // namespace equivae
