#include "train/device_images.h"

#include <cstring>
#include <stdexcept>

#include "engine/backend.h"
#include "engine/ops.h"
#ifdef EQUIVAE_WITH_CUDA
#include "engine/cuda/cuda_backend.h"
#endif

namespace equivae {

DeviceImages::DeviceImages(const data::Dataset& d, Device device) : d_(d), device_(device) {
  if (device != Device::cuda) return;
#ifdef EQUIVAE_WITH_CUDA
  const uint64_t bytes = uint64_t(d.n) * uint64_t(d.image_size()) * sizeof(float);
  const CudaMemoryInfo memory = cuda_memory_info();
  auto size = [](uint64_t b) { return fmt::format("{} bytes ({:.1f} MiB)", b, double(b) / double(1 << 20)); };
  if (bytes > memory.free)
    throw std::runtime_error(fmt::format(
        "--device cuda: the images of {} ({} x {}x{}x{} float32) need {} of GPU memory, but only {} of the GPU's {} "
        "are free (they are kept on the GPU for the whole run); train on --device cpu or free the GPU",
        d.name, d.n, d.channels, d.height, d.width, size(bytes), size(memory.free), size(memory.total)));
#endif
  images_ = Tensor::empty({d.n, d.channels, d.height, d.width}, DType::f32, device);
  if (d.n > 0) backend(device).copy(images_.raw(), device, d.images.data(), Device::cpu, images_.bytes());
}

Tensor DeviceImages::gather(const Tensor& index) const {
  if (device_ == Device::cuda) return gather_rows(images_, index);
  EQUIVAE_CHECK(index.dtype() == DType::i32 && index.ndim() == 1 && index.device() == Device::cpu,
                "gather: {} rows by {}", d_.name, index.describe());
  Tensor out = Tensor::empty({index.numel(), d_.channels, d_.height, d_.width});
  const int64_t size = d_.image_size();
  const int32_t* rows = index.data<int32_t>();
  for (int64_t i = 0; i < index.numel(); ++i) {
    EQUIVAE_CHECK(rows[i] >= 0 && rows[i] < d_.n, "gather: row {} is outside {}'s {} rows", rows[i], d_.name, d_.n);
    std::memcpy(out.data<float>() + i * size, d_.image(rows[i]), size_t(size) * sizeof(float));
  }
  return out;
}

}  // namespace equivae
