// The index vectors of a training step (its batch rows, the set images, the sets' CSR lists, ...)
// sent to the step's device together (issue 15): on a GPU they are packed into pinned host memory
// and go in one asynchronous copy into one device buffer, of which the returned tensors are
// views, so the host never waits for the queue and the step makes one copy instead of one per
// vector (from pageable memory, which the driver stages synchronously). On the CPU they are
// tensors of the vectors, as Tensor::from_indices makes them.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/tensor.h"

namespace equivae {

class CudaPinnedUpload;

class IndexUpload {
 public:
  explicit IndexUpload(Device device);
  ~IndexUpload();
  IndexUpload(const IndexUpload&) = delete;
  IndexUpload& operator=(const IndexUpload&) = delete;
  // One 1-D i32 tensor per part, in order, on the device: views of a new buffer, or (GPU only) of
  // `into`, a 1-D i32 buffer of exactly the parts' total size (a CUDA graph's inputs stay put).
  std::vector<Tensor> upload(const std::vector<std::span<const int32_t>>& parts, const Tensor& into = Tensor());

 private:
  Device device_;
  // A ring of pinned buffers: a buffer is written again only once its copy has finished (an event
  // wait, long passed by then: the host runs at most a step or two ahead of the GPU).
  static constexpr size_t kRing = 4;
  std::vector<std::unique_ptr<CudaPinnedUpload>> ring_;
  size_t next_ = 0;
};

}  // namespace equivae
