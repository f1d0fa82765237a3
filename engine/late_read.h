// Scalars of a step read one step late (issue 15): push() the step's one-element tensors, pop()
// the oldest pushed set's values. On a GPU the values travel to pinned host memory behind the
// step's work, and are read once the next step is queued, so the host never drains the queue to
// read a loss (engine/cuda/cuda_backend.h: CudaLateRead); on the CPU they are read at once.
#pragma once
#include <cstddef>
#include <deque>
#include <memory>
#include <vector>

#include "engine/tensor.h"

namespace equivae {

class CudaLateRead;

class LateScalars {
 public:
  LateScalars();
  ~LateScalars();
  LateScalars(const LateScalars&) = delete;
  LateScalars& operator=(const LateScalars&) = delete;
  // One-element float tensors, all on one device (at most kMaxScalars).
  void push(const std::vector<Tensor>& scalars);
  // The values of the oldest set pushed and not yet popped (throws if there is none).
  std::vector<double> pop();
  size_t pending() const { return queue_.size(); }
  static constexpr size_t kMaxScalars = 8;

 private:
  struct Pending {
    std::vector<double> values;          // read at once (CPU)
    std::shared_ptr<CudaLateRead> read;  // or in flight (shared_ptr: CudaLateRead is incomplete without CUDA)
  };
  std::deque<Pending> queue_;
  std::vector<std::shared_ptr<CudaLateRead>> free_;  // pinned buffers to reuse
};

}  // namespace equivae
