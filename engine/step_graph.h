// Training steps captured into CUDA graphs and replayed (issue 15). A step of fixed shapes queues
// the same ~120 launches with the same arguments every time but for two numbers that change from
// step to step: the random draws' offsets and Adam's bias corrections. A captured step reads
// those from device memory (StepCounters, engine/shapes.h), uploaded before each step together
// with its index vectors into buffers that stay where the capture found them, so replaying the
// graph is that step with the new numbers: one launch instead of ~120.
//
// The protocol, per shape (a key, e.g. the batch size): the first run() calls the step eagerly,
// as a warm-up (it fills the allocator's cache and the kernels' lazily made buffers); the second
// captures it into a graph (which runs nothing) and launches the graph; every later run()
// launches the graph without calling the step. Disabled (or on the CPU), run() calls the step
// every time. Enabled without capture, steps use the fixed buffers and device counters but run
// eagerly every time: the reference a replay must equal bit for bit.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "engine/index_upload.h"
#include "engine/shapes.h"
#include "engine/tensor.h"

namespace equivae {

class Adam;
class CudaGraph;

// The counters of a step: its random draws' base offset, and the corrections of Adam's next update.
StepCounters step_counters(uint64_t rng_offset, const Adam& adam);

class StepGraphs {
 public:
  StepGraphs(Device device, bool enabled, bool capture = true);
  ~StepGraphs();
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;
  bool enabled() const { return enabled_; }

  // A step's inputs for shape `key`: the counters (device memory) and its index vectors (views of
  // the same buffer), one asynchronous copy from pinned memory. Enabled only. The vectors' sizes
  // are the shape: they must be those of the key's first upload.
  struct Inputs {
    const StepCounters* counters = nullptr;
    std::vector<Tensor> indices;
  };
  Inputs upload(int64_t key, const StepCounters& counters, const std::vector<std::span<const int32_t>>& parts);

  // Runs the step of shape `key` as the protocol above says, with the random draws and Adam on
  // `inputs.counters` (its random streams must then start at offset 0: the counters hold the
  // step's base). Returns what step() returns, the tensors its caller reads afterwards; for a
  // replay, those of the capture, which the replay has rewritten.
  std::vector<Tensor> run(int64_t key, const Inputs& inputs, const std::function<std::vector<Tensor>()>& step);
  // Whether the last run() launched a graph without calling step(): its caller then advances the
  // host-side state the step would have (Adam's step count).
  bool replayed() const { return replayed_; }
  uint64_t captures() const { return captures_; }
  uint64_t replays() const { return replays_; }

 private:
  struct Shape {
    int runs = 0;                // eager runs (the warm-up)
    Tensor buffer;               // counters, then the index vectors
    std::vector<int64_t> sizes;  // of the index vectors
    std::unique_ptr<CudaGraph> graph;
    std::vector<Tensor> outputs;  // the capture's
  };
  Device device_;
  bool enabled_, capture_;
  IndexUpload staging_;  // its pinned ring carries each upload
  std::map<int64_t, Shape> shapes_;
  bool replayed_ = false;
  uint64_t captures_ = 0, replays_ = 0;
};

}  // namespace equivae
