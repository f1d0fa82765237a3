// The whole-training-step benchmark of both benches (equivae_cpu_bench, equivae_bench): the
// default model, Adam, and a fixed synthetic batch (uniform pixels, class = row % 10, each point's
// set = 4 other rows of its class, every image encoded once by h), so the host's data handling
// stays out of the measurement. bench/torch_peer.py measures PyTorch on the real set scheme.
#pragma once
#include <vector>

#include "engine/ops.h"
#include "engine/params.h"
#include "engine/rng.h"
#include "model/equivae.h"

namespace equivae::bench {

class SyntheticStep {
 public:
  SyntheticStep(int64_t batch, Device device) : batch_(batch), model_(ModelConfig{}, params_) {
    params_.allocate(1, DType::f32, device);
    adam_ = std::make_unique<Adam>(params_);
    std::vector<double> pixels(size_t(batch * 28 * 28));
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = double(philox_uniform(7, i));
    x_ = Tensor::from(pixels, {batch, 1, 28, 28}, DType::f32, device);
    std::vector<int32_t> offsets{0}, members;
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t k = 1; k <= 4; ++k) members.push_back(int32_t((b + 10 * k) % batch));  // same class (row % 10)
      offsets.push_back(int32_t(members.size()));
    }
    offsets_ = Tensor::from_indices(offsets, device);
    members_ = Tensor::from_indices(members, device);
  }

  // One training step: forward, backward, Adam.
  void operator()() {
    params_.zero_grad();
    RandomStream noise{1, step_++ << 32};
    const Var r = model_.class_latent(Var(x_), offsets_, members_);
    const EquiVAE::Terms t = model_.terms(Var(x_), x_, r, noise);
    scale(sub(sum(t.kl), sum(t.loglik)), 1.0 / double(batch_)).backward();
    adam_->step();
  }

  const ParameterStore& params() const { return params_; }

 private:
  int64_t batch_;
  ParameterStore params_;
  EquiVAE model_;
  std::unique_ptr<Adam> adam_;
  Tensor x_, offsets_, members_;
  uint64_t step_ = 0;
};

}  // namespace equivae::bench
