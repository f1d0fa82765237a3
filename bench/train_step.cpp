// The hook for benchmarking a whole EquiVAE training step (see bench/bench.h). Empty until the
// model's training step lands: build the model and a batch for each ctx.batches entry, warm up,
// time one step (forward, backward, Adam) with median_ms(ctx, ...) on the CUDA device and append
// a Result {group "mnist b<N>", op "training step", ...}; the table and JSON pick it up.
#include "bench/bench.h"

namespace equivae::bench {

void bench_training_step(const BenchContext&, std::vector<Result>&) {}

}  // namespace equivae::bench
