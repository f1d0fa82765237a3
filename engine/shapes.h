// Plain shape descriptions shared by the CPU reference (engine/cpu) and the CUDA kernels
// (kernels/): no STL, so .cu files can include it.
#pragma once
#include <cmath>
#include <cstdint>

namespace equivae {

// A 2-D convolution in the conv2d frame: input [n, in_c, in_h, in_w] -> output
// [n, out_c, out_h, out_w] with weights [out_c, in_c, k, k]. A transposed convolution is
// described by the conv2d whose backward-data it is (its input is this conv's output).
struct ConvShape {
  int64_t n, in_c, in_h, in_w;
  int64_t out_c, out_h, out_w;
  int64_t k, stride, pad;
  int64_t in_numel() const { return n * in_c * in_h * in_w; }
  int64_t out_numel() const { return n * out_c * out_h * out_w; }
  int64_t weight_numel() const { return out_c * in_c * k * k; }
  int64_t patch() const { return in_c * k * k; }  // one im2col row
};

// conv2d output size along one axis.
inline int64_t conv_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad) {
  return (in + 2 * pad - k) / stride + 1;
}
// conv_transpose2d output size along one axis (PyTorch's formula).
inline int64_t conv_transpose_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad,
                                       int64_t output_padding) {
  return (in - 1) * stride - 2 * pad + k + output_padding;
}

// What a training step captured into a CUDA graph reads from device memory rather than from its
// launch arguments (issue 15), so that a replay is the captured step with these numbers changed:
// the step's random draws' base offset and Adam's bias corrections for the step's update.
struct StepCounters {
  uint64_t rng_offset = 0;  // added to the offset of every random draw
  float adam_step_size = 0, adam_bc2_sqrt = 0;  // adam_corrections() of the update, as float32
};

// Adam hyperparameters plus the step count t (>= 1) used for bias correction.
struct AdamParams {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  int64_t t = 1;
};

// Adam's bias corrections for step p.t, in double: the step size lr / (1 - beta1^t) and
// sqrt(1 - beta2^t). One formula for the CPU reference, the kernel and the device counters.
struct AdamCorrections {
  double step_size, bc2_sqrt;
};
inline AdamCorrections adam_corrections(const AdamParams& p) {
  return {p.lr / (1 - std::pow(p.beta1, double(p.t))), std::sqrt(1 - std::pow(p.beta2, double(p.t)))};
}

}  // namespace equivae
