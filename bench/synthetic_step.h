// The whole-training-step benchmark of both benches (equivae_cpu_bench, equivae_bench): the
// default model, Adam, and a fixed synthetic batch (uniform pixels, class = row % 10, each point's
// set = 4 other rows of its class, every image encoded once by h), so the host's sampling stays
// out of the measurement. As in training (train/objective.cpp), the images are kept on the
// device and each step uploads its indices in one copy and gathers its batch with one kernel.
// bench/torch_peer.py measures PyTorch on the real set scheme.
#pragma once
#include <vector>

#include "engine/index_upload.h"
#include "engine/ops.h"
#include "engine/params.h"
#include "engine/rng.h"
#include "engine/step_graph.h"
#include "model/equivae.h"

namespace equivae::bench {

class SyntheticStep {
 public:
  // graphs: every step through engine/step_graph.h (CUDA graphs, one per batch size).
  SyntheticStep(int64_t batch, Device device, bool graphs = false)
      : batch_(batch), model_(ModelConfig{}, params_), indices_(device), graphs_(device, graphs) {
    params_.allocate(1, DType::f32, device);
    adam_ = std::make_unique<Adam>(params_);
    std::vector<double> pixels(size_t(batch * 28 * 28));
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = double(philox_uniform(7, i));
    images_ = Tensor::from(pixels, {batch, 1, 28, 28}, DType::f32, device);
  }

  // One training step on the first `rows` images (0: the whole batch): forward, backward, Adam.
  // Returns the loss, a one-element tensor on the device.
  Tensor operator()(int64_t rows = 0) {
    rows = rows > 0 ? rows : batch_;
    std::vector<int32_t> images, offsets{0}, members;
    for (int64_t b = 0; b < rows; ++b) {
      images.push_back(int32_t(b));
      for (int64_t k = 1; k <= 4; ++k) members.push_back(int32_t((b + 10 * k) % rows));  // same class (row % 10)
      offsets.push_back(int32_t(members.size()));
    }
    const uint64_t offset = step_++ << 32;  // a step draws far fewer than 2^32 numbers
    if (!graphs_.enabled()) return step(indices_.upload({images, offsets, members}), RandomStream{1, offset})[0];
    const StepGraphs::Inputs in = graphs_.upload(rows, step_counters(offset, *adam_), {images, offsets, members});
    const std::vector<Tensor> loss = graphs_.run(rows, in, [&] { return step(in.indices, RandomStream{1, 0}); });
    if (graphs_.replayed()) adam_->set_steps(adam_->steps() + 1);
    return loss[0];
  }

  const ParameterStore& params() const { return params_; }
  const Adam& adam() const { return *adam_; }
  const StepGraphs& graphs() const { return graphs_; }

 private:
  // index: the batch's rows of images_, its sets' offsets and members.
  std::vector<Tensor> step(const std::vector<Tensor>& index, RandomStream noise) {
    params_.zero_grad();
    const Tensor x = gather_rows(images_, index[0]);
    const Var r = model_.class_latent(Var(x), index[1], index[2]);
    const EquiVAE::Terms t = model_.terms(Var(x), x, r, noise);
    const Var loss = scale(sub(sum(t.kl), sum(t.loglik)), 1.0 / double(x.dim(0)));
    loss.backward();
    adam_->step();
    return {loss.value()};
  }

  int64_t batch_;
  ParameterStore params_;
  EquiVAE model_;
  std::unique_ptr<Adam> adam_;
  IndexUpload indices_;
  StepGraphs graphs_;
  Tensor images_;
  uint64_t step_ = 0;
};

}  // namespace equivae::bench
