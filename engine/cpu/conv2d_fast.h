// The fast float32 convolutions (conv2d_avx2.cpp), used by the CPU backend for float tensors
// when the CPU has AVX2 and FMA (cpu_has_avx2_fma) and the shape is supported; otherwise the
// im2col + GEMM path of conv2d.cpp runs. Same contracts as Backend::conv2d_*.
#pragma once
#include "engine/shapes.h"

namespace equivae {

// True when this CPU runs the AVX2 + FMA kernels (checked once, at first use).
bool cpu_has_avx2_fma();
// True when the direct convolutions use 512-bit registers (AVX-512F, and EQUIVAE_CPU_NO_AVX512
// unset; conv2d_avx512.cpp), checked once.
bool cpu_has_avx512();
// The CPU convolution path in use for float32: "avx512-direct", "avx2-direct" or "im2col-gemm"
// (for the start-up log).
const char* cpu_conv_path();

namespace avx2 {
bool conv_supported(const ConvShape& s);                 // forward
bool conv_backward_data_supported(const ConvShape& s);
bool conv_backward_weight_supported(const ConvShape& s);
void conv_forward(const float* x, const float* w, const float* b, bool relu, float* y, const ConvShape& s);
// dx = relu?(conv2d_backward_data(dy, w) + b): with b (or null) and relu, a transposed conv's forward.
void conv_backward_data(const float* dy, const float* w, const float* b, bool relu, float* dx, const ConvShape& s);
void conv_backward_weight(const float* x, const float* dy, float* dw, const ConvShape& s);
// db[ch] = sum over images and pixels of dy [n, c, hw]
void channel_sum(const float* dy, int64_t n, int64_t c, int64_t hw, float* db);
// dx = dy * (y > 0) and db = channel_sum(dx) (db may be null) in one pass over dy and y.
void relu_channel_sum(const float* y, const float* dy, int64_t n, int64_t c, int64_t hw, float* dx, float* db);
}  // namespace avx2

}  // namespace equivae
