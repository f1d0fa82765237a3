// One Adam step over whole buffers (the CUDA side of engine/cpu/adam.cpp): parameters,
// gradients and both moments share one layout, so the whole model is one launch.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "engine/shapes.h"

namespace equivae::gpu {

// corrections: null, or two device floats (StepCounters::adam_step_size, adam_bc2_sqrt) read when
// the kernel runs instead of adam_corrections(p) (a step captured in a CUDA graph).
void adam_step(int64_t n, float* param, const float* grad, float* m, float* v, const AdamParams& p,
               const float* corrections, cudaStream_t stream);

}  // namespace equivae::gpu
