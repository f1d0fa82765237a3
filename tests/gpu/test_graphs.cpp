// CUDA graphs of a training step (issue 15, engine/step_graph.h): steps replayed from a graph
// end with the losses, parameters and Adam moments of the same steps run eagerly, bit for bit,
// with batches of two sizes (an epoch's full batches and its short last one, each its own
// graph); a step that waits for the GPU cannot be captured and says so; and, on the emulator,
// what capture and replay do.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>
#include <vector>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "bench/synthetic_step.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/ops.h"
#include "tests/synthetic.h"

#ifdef EQUIVAE_CUDA_EMULATOR
#include <cuda_runtime.h>

#include "kernels/elementwise.cuh"
#endif

using namespace equivae;
using Catch::Contains;

namespace {

bool same_bits(const Tensor& a, const Tensor& b) {
  const Tensor x = a.to(Device::cpu), y = b.to(Device::cpu);
  return x.shape() == y.shape() && x.dtype() == y.dtype() && std::memcmp(x.raw(), y.raw(), x.bytes()) == 0;
}

std::vector<nlohmann::json> read_metrics(const std::string& dir) {
  std::ifstream in(dir + "/metrics.jsonl");
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

}  // namespace

TEST_CASE("CUDA graphs: replayed steps equal eager steps bit for bit, short batches included", "[gpu][graphs]") {
  const ValueChecks off(false);  // as in training on a GPU
  // Two epochs of 40 images in batches of 12: 12, 12, 12 and a short 4, each size its own graph.
  const std::vector<int64_t> epoch{12, 12, 12, 4};
  bench::SyntheticStep eager(12, Device::cuda, false), graphed(12, Device::cuda, true);
  int step = 0;
  for (int e = 0; e < 3; ++e)
    for (const int64_t rows : epoch) {
      const Tensor a = eager(rows), b = graphed(rows);
      INFO("step " << step << ", " << rows << " rows: eager loss " << a.item() << ", replayed " << b.item());
      CHECK(same_bits(a, b));
      ++step;
    }
  // Per size: a warm-up, a capture, then replays (12: 9 steps, 4: 3 steps).
  CHECK(graphed.graphs().captures() == 2);
  CHECK(graphed.graphs().replays() == 7 + 1);
  CHECK(graphed.adam().steps() == eager.adam().steps());
  ParameterStore& pe = const_cast<ParameterStore&>(eager.params());
  ParameterStore& pg = const_cast<ParameterStore&>(graphed.params());
  CHECK(same_bits(pg.values(), pe.values()));
  CHECK(same_bits(pg.grads(), pe.grads()));
  CHECK(same_bits(const_cast<Adam&>(graphed.adam()).first_moment(), const_cast<Adam&>(eager.adam()).first_moment()));
  CHECK(same_bits(const_cast<Adam&>(graphed.adam()).second_moment(), const_cast<Adam&>(eager.adam()).second_moment()));
  std::printf("graphs: %d steps, %llu captured, %llu replayed, losses and parameters bit for bit\n", step,
              (unsigned long long)graphed.graphs().captures(), (unsigned long long)graphed.graphs().replays());
}

TEST_CASE("CUDA graphs: a step that reads values back cannot be captured, and says so", "[gpu][graphs]") {
  const ValueChecks on(true);  // the ops' value checks read index tensors and losses back to the host
  bench::SyntheticStep graphed(6, Device::cuda, true);
  graphed();  // the warm-up runs eagerly
  CHECK_THROWS_WITH(graphed(), Contains("could not be captured") && Contains("--cuda-graphs off"));
}

TEST_CASE("train with CUDA graphs: replayed steps equal the padded steps run eagerly, bit for bit", "[gpu][graphs][train]") {
  using testing::small_model;
  const data::Splits s = testing::synthetic_splits();  // 320 training images
  auto training = [](const std::string& name, TrainConfig::Graphs graphs) {
    TrainConfig c = testing::small_training(testing::temp_dir(name), 2);
    c.device = Device::cuda;
    c.cuda_graphs = graphs;
    c.batch_size = 24;  // per epoch 13 batches of 24 and a short one of 8 padded to 24: one graph
    return c;
  };
  const TrainConfig on = training("graphs_on", TrainConfig::Graphs::on),
                    eager = training("graphs_eager", TrainConfig::Graphs::eager),
                    off = training("graphs_off", TrainConfig::Graphs::off);
  Trainer replayed(small_model(), on, s), reference(small_model(), eager, s), unpadded(small_model(), off, s);
  replayed.train();
  reference.train();
  unpadded.train();
  CHECK(replayed.step_graphs().captures() == 1);
  CHECK(replayed.step_graphs().replays() == 2 * 14 - 2);  // every batch of both epochs, less the warm-up and capture
  CHECK(reference.step_graphs().replays() == 0);
  CHECK(replayed.steps_done() == reference.steps_done());
  const auto a = read_metrics(on.out_dir), b = read_metrics(eager.out_dir), c = read_metrics(off.out_dir);
  REQUIRE(a.size() == 2);
  REQUIRE(b.size() == 2);
  REQUIRE(c.size() == 2);
  for (size_t e = 0; e < a.size(); ++e)
    for (const char* part : {"train", "validation"})
      for (const char* term : {"elbo", "recon", "kl"}) {
        const double x = a[e][part][term], y = b[e][part][term], z = c[e][part][term];
        std::printf("  epoch %zu %s %s: replayed %.9g, padded eagerly %.9g, unpadded %.9g\n", e + 1, part, term, x, y, z);
        CHECK(x == y);  // bit for bit (JSON keeps doubles exactly)
        // The padding changes the sizes of h's products, hence the split-K plans' rounding only.
        CHECK(std::abs(x - z) <= 1e-3 * std::max(std::abs(z), 1.0));
      }
  CHECK(testing::differing_parameters(replayed, reference) == 0);
  CHECK(same_bits(replayed.params().grads(), reference.params().grads()));
}

#ifdef EQUIVAE_CUDA_EMULATOR
TEST_CASE("emulator: a stream capture records launches, copies and memsets, a graph launch runs them", "[gpu][graphs]") {
  cudaStream_t stream = cuda_stream();
  float *device = nullptr, *pinned = nullptr;
  REQUIRE(cudaMalloc(&device, 8 * sizeof(float)) == cudaSuccess);
  REQUIRE(cudaMallocHost(&pinned, 8 * sizeof(float)) == cudaSuccess);
  for (int i = 0; i < 8; ++i) pinned[i] = float(i);
  float scale = 2;
  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed) == cudaSuccess);
  REQUIRE(cudaMemcpyAsync(device, pinned, 8 * sizeof(float), cudaMemcpyHostToDevice, stream) == cudaSuccess);
  gpu::scale(8, scale, device, device, stream);  // the launch keeps scale = 2
  REQUIRE(cudaMemsetAsync(device + 7, 0, sizeof(float), stream) == cudaSuccess);
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
  scale = 100;
  std::vector<float> untouched(8, -1.f);
  std::memcpy(device, untouched.data(), sizeof(float) * 8);  // nothing ran during the capture...
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  for (int i = 0; i < 8; ++i) pinned[i] = float(10 * i);  // ...and a replay reads the pinned buffer as it is then
  REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
  const std::vector<float> want{0, 20, 40, 60, 80, 100, 120, 0};
  CHECK(std::vector<float>(device, device + 8) == want);

  // What a capture cannot hold fails and invalidates it.
  std::vector<float> pageable(8);
  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed) == cudaSuccess);
  CHECK(cudaMemcpyAsync(device, pageable.data(), 8 * sizeof(float), cudaMemcpyHostToDevice, stream) ==
        cudaErrorStreamCaptureUnsupported);
  CHECK(cudaStreamSynchronize(stream) == cudaErrorStreamCaptureUnsupported);
  cudaGraph_t invalid = nullptr;
  CHECK(cudaStreamEndCapture(stream, &invalid) == cudaErrorStreamCaptureInvalidated);
  CHECK(invalid == nullptr);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaFreeHost(pinned);
  cudaFree(device);
}
#endif
