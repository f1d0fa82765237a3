// A data set's images where the training step runs (issue 15). With --device cuda they are
// uploaded once, when training starts, and every batch is gathered on the GPU by one kernel from
// an index tensor (engine/index_upload.h brings the indices): no image crosses the bus per step.
// On the CPU the rows are copied from the data set, as gather_images does.
#pragma once
#include "engine/tensor.h"
#include "train/data.h"

namespace equivae {

class DeviceImages {
 public:
  // Throws std::runtime_error naming the data set when its images need more GPU memory than is
  // free.
  DeviceImages(const data::Dataset& d, Device device);
  const data::Dataset& dataset() const { return d_; }
  Device device() const { return device_; }
  // The rows `index` (a 1-D i32 tensor on device(), repeats allowed) as [k, C, H, W].
  Tensor gather(const Tensor& index) const;

 private:
  const data::Dataset& d_;
  Device device_;
  Tensor images_;  // cuda: all n rows; cpu: undefined (the data set's own vector is read)
};

}  // namespace equivae
