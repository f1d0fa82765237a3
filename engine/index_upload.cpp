#include "engine/index_upload.h"

#include <algorithm>
#include <cstring>

#ifdef EQUIVAE_WITH_CUDA
#include "engine/cuda/cuda_backend.h"
#else
namespace equivae {
class CudaPinnedUpload {};  // never made without CUDA; the ring's destructor still needs the type
}  // namespace equivae
#endif

namespace equivae {

IndexUpload::IndexUpload(Device device) : device_(device) {}
IndexUpload::~IndexUpload() = default;

std::vector<Tensor> IndexUpload::upload(const std::vector<std::span<const int32_t>>& parts, const Tensor& into) {
  std::vector<Tensor> out;
  EQUIVAE_CHECK(!into.defined() || device_ == Device::cuda, "index upload: into a given buffer on the GPU only");
  if (device_ == Device::cpu) {
    for (std::span<const int32_t> p : parts) out.push_back(Tensor::from_indices({p.begin(), p.end()}));
    return out;
  }
#ifdef EQUIVAE_WITH_CUDA
  int64_t total = 0;
  for (std::span<const int32_t> p : parts) total += int64_t(p.size());
  const Tensor all = into.defined() ? into : Tensor::empty({std::max<int64_t>(total, 1)}, DType::i32, device_);
  EQUIVAE_CHECK(all.dtype() == DType::i32 && all.ndim() == 1 && all.device() == device_ &&
                    (all.numel() == total || (total == 0 && !into.defined())),
                "index upload: {} values into {}", total, all.describe());
  if (ring_.empty())
    for (size_t i = 0; i < kRing; ++i) ring_.push_back(std::make_unique<CudaPinnedUpload>());
  CudaPinnedUpload& slot = *ring_[next_];
  next_ = (next_ + 1) % kRing;
  auto* host = static_cast<int32_t*>(slot.host(size_t(total) * sizeof(int32_t)));
  int64_t at = 0;
  for (std::span<const int32_t> p : parts) {
    if (!p.empty()) std::memcpy(host + at, p.data(), p.size_bytes());
    out.push_back(all.rows(at, at + int64_t(p.size())));
    at += int64_t(p.size());
  }
  slot.start(all.raw(), size_t(total) * sizeof(int32_t));
  return out;
#else
  EQUIVAE_CHECK(false, "index upload: this build has no CUDA backend");
#endif
}

}  // namespace equivae
