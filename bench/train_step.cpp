// A whole EquiVAE training step (forward, backward, Adam) on the GPU at the paper's MNIST model,
// batch 64 and 512: images/s. A fixed synthetic batch (uniform pixels, class = row % 10, each
// point's set = 4 other batch rows of its class, every image encoded once by h) keeps the host
// out of the measurement; bench/torch_peer.py --device cuda measures PyTorch on the same step.
#include <fmt/format.h>

#include <vector>

#include "bench/bench.h"
#include "engine/ops.h"
#include "model/equivae.h"

namespace equivae::bench {

void bench_training_step(const BenchContext& ctx, std::vector<Result>& out) {
  const ValueChecks off(false);  // their read-backs would synchronise every step
  for (int64_t batch : {64, 512}) {
    ParameterStore params;
    const EquiVAE model(ModelConfig{}, params);
    params.allocate(1, DType::f32, Device::cuda);
    Adam adam(params);
    std::vector<double> pixels(size_t(batch * 28 * 28));
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = double(philox_uniform(7, i));
    const Tensor x = Tensor::from(pixels, {batch, 1, 28, 28}, DType::f32, Device::cuda);
    std::vector<int32_t> offsets{0}, members;
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t k = 1; k <= 4; ++k) members.push_back(int32_t((b + 10 * k) % batch));  // same class (row % 10)
      offsets.push_back(int32_t(members.size()));
    }
    const Tensor off = Tensor::from_indices(offsets, Device::cuda), mem = Tensor::from_indices(members, Device::cuda);
    uint64_t step = 0;
    auto train_step = [&] {
      params.zero_grad();
      RandomStream noise{1, step++ << 32};
      const Var r = model.class_latent(Var(x), off, mem);
      const EquiVAE::Terms t = model.terms(Var(x), x, r, noise);
      scale(sub(sum(t.kl), sum(t.loglik)), 1.0 / double(batch)).backward();
      adam.step();
    };
    Result r;
    r.group = fmt::format("mnist b{}", batch);
    r.op = "training step";
    r.ms = median_ms(ctx, train_step);
    r.shape = fmt::format("{:.0f} images/s", double(batch) / (r.ms / 1000.0));
    out.push_back(r);
  }
}

}  // namespace equivae::bench
