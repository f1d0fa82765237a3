// A whole EquiVAE training step (forward, backward, Adam) on the GPU at the paper's MNIST model,
// batch 64 and 512: images/s, on bench/synthetic_step.h's fixed batch, launched eagerly and
// replayed from a CUDA graph (engine/step_graph.h); bench/torch_peer.py --device cuda measures
// PyTorch on the real set scheme.
#include <fmt/format.h>

#include <vector>

#include "bench/bench.h"
#include "bench/synthetic_step.h"
#include "engine/ops.h"

namespace equivae::bench {

void bench_training_step(const BenchContext& ctx, std::vector<Result>& out) {
  const ValueChecks off(false);  // their read-backs would synchronise every step
  for (int64_t batch : {64, 512})
    for (bool graphs : {false, true}) {
      SyntheticStep train_step(batch, Device::cuda, graphs);
      Result r;
      r.group = fmt::format("mnist b{}", batch);
      r.op = graphs ? "training step, CUDA graph" : "training step";
      train_step(), train_step();  // with graphs: the warm-up and the capture, not timed
      r.ms = median_ms(ctx, [&] { train_step(); });
      r.shape = fmt::format("{:.0f} images/s", double(batch) / (r.ms / 1000.0));
      out.push_back(r);
    }
}

}  // namespace equivae::bench
