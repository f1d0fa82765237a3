// 2-D convolution (the CUDA side of engine/cpu/conv2d.cpp), float32, NCHW, any ConvShape: the
// three products of a conv2d plus its bias pieces. A transposed conv is the backward-data of the
// conv2d whose shape describes it (engine/ops.cpp), so it has no kernels of its own.
//
// Launchers that split their reduction across blocks (few output tiles, long reductions) need
// scratch: pass at least the matching *_workspace_bytes (0 means none; null is then fine).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "engine/shapes.h"

namespace equivae::gpu {

// The products' arithmetic: exact FP32 on the CUDA cores (default), or TF32 on the tensor cores
// (operands rounded to 10-bit mantissas, sums in FP32: ~1e-3 relative error per product) for the
// GEMMs more than 4 columns wide (N = out_c, or in_c for backward-data; narrower ones stay FP32).
// EQUIVAE_TF32=1 in the environment turns it on at start.
void set_conv_tf32(bool on);
bool conv_tf32();

// Reproducible plans (common.cuh, plan_sm_count): split-K and reduction plans made for a nominal
// 132-SM GPU whatever the device, so results are the same bits on every GPU. Off by default
// (plans for the device's own SM count, which fill it better); EQUIVAE_REPRODUCIBLE=1 in the
// environment turns it on at start.
void set_reproducible_plans(bool on);
bool reproducible_plans();
// For tests: plan as if the device had `sms` SMs (0: the device's own count).
void set_plan_device_sms(int sms);

// How a product runs (tests, the bench): the GEMM's block tile, its split-K and the grid; or,
// direct, a kernel for narrow layers (tile 0): forward and backward-data with <= 4 output channels
// (no split), backward-weight with <= 4 channels on either side (slices of chunk output rows).
enum class ConvProduct { forward, backward_data, backward_weight };
struct ConvPlan {
  int tile_m, tile_n, blocks_per_sm, slices, chunk;  // blocks_per_sm: resident at once (a wave / SMs)
  int64_t blocks;
  bool direct;
  bool operator==(const ConvPlan& o) const {  // the .cu files are C++17: no defaulted ==
    return tile_m == o.tile_m && tile_n == o.tile_n && blocks_per_sm == o.blocks_per_sm && slices == o.slices &&
           chunk == o.chunk && blocks == o.blocks && direct == o.direct;
  }
  bool operator!=(const ConvPlan& o) const { return !(*this == o); }
};
ConvPlan conv2d_plan(ConvProduct product, const ConvShape& s, bool bias = false);

// Which GEMM tile loaders of a call read 128 bits at a time (tests, the bench), chosen per call
// from the shape and the pointers (a, b: the launcher's two inputs in its order; mask: dy_mask):
// forward's A where it is rows of x (a dense layer: 1x1 images and kernel, in_c % 4 == 0) and its
// B (rows of w: in_c k k % 4 == 0); backward-data's A where it is rows of dy (dense, out_c % 4 ==
// 0); backward-weight's B (rows of dy's pixels: out_h out_w % 4 == 0). Each also needs its pointers
// 16-byte aligned. The rest gather (taps, strides, padding) and read 32 bits; so do direct kernels.
struct ConvLoads {
  bool a, b;
};
ConvLoads conv2d_vector_loads(ConvProduct product, const ConvShape& s, const float* a, const float* b,
                              const float* mask = nullptr);

// y = relu?(conv(x, w) + b); b may be null. x [n, in_c, in_h, in_w], w [out_c, in_c, k, k].
size_t conv2d_forward_workspace_bytes(const ConvShape& s);
void conv2d_forward(const float* x, const float* w, const float* b, bool relu, float* y, const ConvShape& s,
                    void* workspace, cudaStream_t stream);

// dx = conv2d's adjoint in x applied to dy (overwrites dx); with a bias [in_c] and relu, the
// forward of a transposed conv with both in its epilogue: dx = relu?(adjoint(dy) + b).
size_t conv2d_backward_data_workspace_bytes(const ConvShape& s);
// dy_mask (the forward's output, or null): dy is read as dy * (dy_mask > 0), the gradient through
// the forward's fused ReLU, with no pass of its own.
void conv2d_backward_data(const float* dy, const float* w, float* dx, const ConvShape& s, void* workspace,
                          cudaStream_t stream, const float* bias = nullptr, bool relu = false,
                          const float* dy_mask = nullptr);

// dw = sum over images and output pixels of dy x-patch (overwrites dw); dy_mask as above; with db
// (the bias gradient, sum of dy per channel) computed in the same GEMM as a row of ones.
size_t conv2d_backward_weight_workspace_bytes(const ConvShape& s, bool bias = false);
void conv2d_backward_weight(const float* x, const float* dy, float* dw, const ConvShape& s, void* workspace,
                            cudaStream_t stream, const float* dy_mask = nullptr, float* db = nullptr);

// Per-channel bias pieces on [n, c, hw] tensors: db[c] = sum_{n, p} dy[n, c, p]; y[n, c, p] += b[c].
struct ChannelShape {
  int64_t n, c, hw;
};
size_t channel_sum_workspace_bytes(const ChannelShape& s);
void channel_sum(const float* dy, float* db, const ChannelShape& s, void* workspace, cudaStream_t stream);
// The backward of a layer's fused bias + ReLU in one pass: dx = dy * (y > 0) and db[c] = sum over
// n, p of dx[n, c, p] (channel_sum's workspace). y null: no ReLU; dx null: not written; db null: no bias.
void relu_bias_backward(const float* y, const float* dy, float* dx, float* db, const ChannelShape& s, void* workspace,
                        cudaStream_t stream);
void add_channel_bias(const float* b, float* y, const ChannelShape& s, cudaStream_t stream);

}  // namespace equivae::gpu
