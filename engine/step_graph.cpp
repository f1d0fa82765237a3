#include "engine/step_graph.h"

#include <cstring>

#include "engine/params.h"
#ifdef EQUIVAE_WITH_CUDA
#include "engine/cuda/cuda_backend.h"
#else
namespace equivae {
class CudaGraph {};  // never made without CUDA; the graphs' destructor still needs the type
}  // namespace equivae
#endif

namespace equivae {

StepCounters step_counters(uint64_t rng_offset, const Adam& adam) {
  const AdamConfig& c = adam.config();
  const AdamCorrections next = adam_corrections({c.lr, c.beta1, c.beta2, c.eps, adam.steps() + 1});
  return {rng_offset, float(next.step_size), float(next.bc2_sqrt)};  // rounded as the kernel rounds them
}

StepGraphs::StepGraphs(Device device, bool enabled, bool capture)
    : device_(device), enabled_(enabled && device == Device::cuda), capture_(capture), staging_(device) {}

StepGraphs::~StepGraphs() = default;

StepGraphs::Inputs StepGraphs::upload(int64_t key, const StepCounters& counters,
                                      const std::vector<std::span<const int32_t>>& parts) {
  EQUIVAE_CHECK(enabled_, "step graphs: upload() with graphs off");
  static_assert(sizeof(StepCounters) % sizeof(int32_t) == 0 && alignof(StepCounters) <= 256);
  int32_t words[sizeof(StepCounters) / sizeof(int32_t)];
  std::memcpy(words, &counters, sizeof(counters));
  std::vector<std::span<const int32_t>> all{words};
  all.insert(all.end(), parts.begin(), parts.end());
  Shape& s = shapes_[key];
  std::vector<int64_t> sizes;
  int64_t total = 0;
  for (std::span<const int32_t> p : all) sizes.push_back(int64_t(p.size())), total += int64_t(p.size());
  if (!s.buffer.defined()) {
    s.buffer = Tensor::empty({total}, DType::i32, device_);
    s.sizes = sizes;
  }
  EQUIVAE_CHECK(sizes == s.sizes, "step graphs: the index vectors of a step of shape {} changed size: a graph's "
                "step must keep its shapes", key);
  std::vector<Tensor> views = staging_.upload(all, s.buffer);  // the counters first: 256-byte aligned
  Inputs in{static_cast<const StepCounters*>(views[0].raw()), {views.begin() + 1, views.end()}};
  return in;
}

std::vector<Tensor> StepGraphs::run(int64_t key, const Inputs& inputs, const std::function<std::vector<Tensor>()>& step) {
  replayed_ = false;
  if (!enabled_) return step();
#ifdef EQUIVAE_WITH_CUDA
  Shape& s = shapes_[key];
  EQUIVAE_CHECK(s.buffer.defined() && inputs.counters == static_cast<const StepCounters*>(s.buffer.raw()),
                "step graphs: run({}) needs the inputs of upload({})", key, key);
  if (s.graph) {
    s.graph->launch();
    ++replays_;
    replayed_ = true;
    return s.outputs;
  }
  const CudaCountersScope counters(inputs.counters);
  if (!capture_) return step();
  if (s.runs == 0) {  // the warm-up
    std::vector<Tensor> out = step();
    s.runs = 1;
    return out;
  }
  auto graph = std::make_unique<CudaGraph>();
  graph->capture([&] { s.outputs = step(); });
  graph->launch();
  s.graph = std::move(graph);
  ++captures_;
  return s.outputs;
#else
  (void)key, (void)inputs;
  EQUIVAE_CHECK(false, "step graphs: this build has no CUDA backend");
#endif
}

}  // namespace equivae
