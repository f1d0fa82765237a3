// The register tiles of the direct convolutions (conv2d_avx2.cpp), written once for any vector
// width: conv2d_avx2.cpp instantiates them on 256-bit registers, conv2d_avx512.cpp on 512-bit
// ones, each translation unit compiled for its own instruction set. Included by those two files
// only. Everything instantiated from here lives in an anonymous namespace, so an AVX-512
// instantiation can never stand in for an AVX2 one at link time.
//
// Each output lane accumulates its own sum in the same order whatever the width (taps, then the
// reduction, per output channel), so both widths give the same bits.
//
// A vector type `Vec` provides: `V` (the register), kLanes, kRegisters (vector registers),
// kTilePixels (pixels of a forward tile), zero(), load(p), store(p, v),
// broadcast(p) (one float to every lane), fma(a, b, c) = a * b + c, add(a, b), relu(v).
#pragma once
#include <cstdint>

#include "engine/cpu/conv2d_fast.h"
#include "engine/shapes.h"

namespace equivae::conv_tiles {

// One pass of the tap-list direct convolution over a grid of output pixels.
//   src: padded planes of the thread's images, `reduce` planes of `plane` floats per image
//   pixel (n, qy, qx): window origin n * src_image + qy * origin_sy + qx * origin_sx in src;
//                      output n * out_image + (out0 + qy * out_sy + qx * out_sx) + channel * out_plane
//   taps: offsets from the origin; weights packed [tap][reduce][out_c]
// Plain data only: it crosses from the AVX2 translation unit into the AVX-512 one.
struct Pass {
  const float* src;
  int64_t src_image, plane, reduce;
  int64_t qh, qw, origin_sy, origin_sx;
  float* out;
  int64_t out_image, out_plane, out0, out_sy, out_sx, out_c;
  const int64_t* taps;
  int64_t ntaps;
  const float* weights;
  const float* bias;  // or null
  bool relu;
};

// The weight gradient of one chunk of images: dw_t[ci][ky][kx][out_c] += the sum over their output
// pixels of x(ci, oy * stride + ky, ox * stride + kx) * dyt[pixel][co], for every ci, ky, kx, co.
// x: padded planes (`plane` floats apart, rows of wp, `x_image` floats per image); dyt: the
// chunk's dy, pixel-major [image][pixel][out_c]. 5x5 kernels.
struct WeightPass {
  const float* x;
  int64_t x_image, plane, wp;
  const float* dyt;
  int64_t images;
  ConvShape shape;
  float* dw_t;
};

namespace avx512 {  // conv2d_avx512.cpp; only where cpu_has_avx512() (conv2d_fast.h)
// The passes these kernels take: whole 16-channel vectors of output channels.
inline bool takes(int64_t out_c) { return out_c % 16 == 0; }
void run_pass(const Pass& p, int64_t images);
void weight_pass(const WeightPass& w);
}  // namespace avx512

namespace {

template <class Vec, int R, int V>
void tile(const Pass& p, int64_t co0, const int64_t* origin, const int64_t* out_at) {
  using Reg = typename Vec::V;
  constexpr int L = Vec::kLanes;
  // Every loop over r and v is unrolled, so that every index of acc is a constant: one loop
  // with a variable index, even after the reduction, and GCC keeps acc on the stack.
  Reg acc[R][V];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[r][v] = Vec::zero();
  const int64_t ntaps = p.ntaps, reduce = p.reduce, plane = p.plane, out_c = p.out_c;
  const float* src = p.src;
  for (int64_t t = 0; t < ntaps; ++t) {
    const float* q[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) q[r] = src + origin[r] + p.taps[t];
    const float* w = p.weights + t * reduce * out_c + co0;
    for (int64_t c = 0; c < reduce; ++c) {
      Reg b[V];
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) b[v] = Vec::load(w + v * L);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const Reg x = Vec::broadcast(q[r] + c * plane);
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) acc[r][v] = Vec::fma(x, b[v], acc[r][v]);
      }
      w += out_c;
    }
  }
  alignas(64) float lanes[L];
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) {
    const Reg bias = p.bias ? Vec::load(p.bias + co0 + v * L) : Vec::zero();
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      Reg y = Vec::add(acc[r][v], bias);
      if (p.relu) y = Vec::relu(y);
      Vec::store(lanes, y);
      float* dst = p.out + out_at[r] + (co0 + v * L) * p.out_plane;
      for (int l = 0; l < L; ++l) dst[l * p.out_plane] = lanes[l];
    }
  }
}

// The tile of `rest` (1..R) pixels: the full tile, or the last, shorter one.
template <class Vec, int V, int R>
void tile_of(int rest, const Pass& p, int64_t co0, const int64_t* origin, const int64_t* out_at) {
  if constexpr (R > 0) {
    if (rest == R) return tile<Vec, R, V>(p, co0, origin, out_at);
    tile_of<Vec, V, R - 1>(rest, p, co0, origin, out_at);
  }
}

template <class Vec, int V>
void run_pass_v(const Pass& p, int64_t images) {
  constexpr int R = Vec::kTilePixels;
  const int64_t total = images * p.qh * p.qw;
  for (int64_t co0 = 0; co0 < p.out_c; co0 += V * Vec::kLanes) {
    int64_t n = 0, qy = 0, qx = 0;  // the next pixel, walked in order (no divisions per pixel)
    for (int64_t j = 0; j < total; j += R) {
      const int rest = total - j < R ? int(total - j) : R;
      int64_t origin[R], out_at[R];
      for (int r = 0; r < rest; ++r) {
        origin[r] = n * p.src_image + qy * p.origin_sy + qx * p.origin_sx;
        out_at[r] = n * p.out_image + p.out0 + qy * p.out_sy + qx * p.out_sx;
        if (++qx == p.qw) {
          qx = 0;
          if (++qy == p.qh) qy = 0, ++n;
        }
      }
      tile_of<Vec, V, R>(rest, p, co0, origin, out_at);
    }
  }
}

// Two vectors of output channels per tile where they divide out_c (a weight vector then feeds
// kTilePixels pixels, and the weights of one step stay in registers), else one.
template <class Vec>
void run_pass(const Pass& p, int64_t images) {
  if (p.out_c % (2 * Vec::kLanes) == 0) run_pass_v<Vec, 2>(p, images);
  else run_pass_v<Vec, 1>(p, images);
}

// dW tile for one ci and KY kernel rows from ky0: acc[ky][kx][v] += sum over the output pixels of
// the chunk's images of x(ci, oy * stride + ky, ox * stride + kx) * dyt[pixel][co0 + lanes * v],
// into dw_t[ci][ky][kx][out_c]. Every accumulator is updated once per pixel, so a tile needs about
// 8 of them (FMA latency x pipes) to keep the FMA units busy: one 16-channel zmm row has only 5.
template <class Vec, int KY, int V>
void weight_tile(const WeightPass& job, const float* x_plane, int64_t ky0, int64_t co0, float* at) {
  using Reg = typename Vec::V;
  constexpr int L = Vec::kLanes, K = 5;
  const ConvShape& s = job.shape;
  const int64_t row = K * s.out_c;  // floats between two kernel rows of dw_t
  Reg acc[KY][K][V];
#pragma GCC unroll 2
  for (int y = 0; y < KY; ++y)
#pragma GCC unroll 8
    for (int r = 0; r < K; ++r)
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[y][r][v] = Vec::load(at + y * row + r * s.out_c + v * L);
  const int64_t out_h = s.out_h, out_w = s.out_w, out_c = s.out_c, stride = s.stride, wp = job.wp;
  const float* g = job.dyt + co0;  // the images' pixels follow each other
  for (int64_t n = 0; n < job.images; ++n)
    for (int64_t oy = 0; oy < out_h; ++oy) {
      const float* xq = x_plane + n * job.x_image + (oy * stride + ky0) * wp;
      for (int64_t ox = 0; ox < out_w; ++ox, g += out_c, xq += stride) {
        Reg b[V];
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) b[v] = Vec::load(g + v * L);
#pragma GCC unroll 2
        for (int y = 0; y < KY; ++y)
#pragma GCC unroll 8
          for (int r = 0; r < K; ++r) {
            const Reg xv = Vec::broadcast(xq + y * wp + r);
#pragma GCC unroll 8
            for (int v = 0; v < V; ++v) acc[y][r][v] = Vec::fma(xv, b[v], acc[y][r][v]);
          }
      }
    }
#pragma GCC unroll 2
  for (int y = 0; y < KY; ++y)
#pragma GCC unroll 8
    for (int r = 0; r < K; ++r)
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) Vec::store(at + y * row + r * s.out_c + v * L, acc[y][r][v]);
}

// Two kernel rows per tile where the accumulators (2 x 5 x V), V weight vectors and a broadcast
// fit the vector registers; each lane still sums its pixels in order, so the bits do not change.
template <class Vec, int V>
void weight_rows(const WeightPass& w, const float* x_plane, int64_t co0, float* at) {
  constexpr int KY = 2 * 5 * V + V + 1 <= Vec::kRegisters ? 2 : 1;
  const int64_t k = w.shape.k, row = k * w.shape.out_c;
  int64_t ky = 0;
  for (; ky + KY <= k; ky += KY) weight_tile<Vec, KY, V>(w, x_plane, ky, co0, at + ky * row);
  for (; ky < k; ++ky) weight_tile<Vec, 1, V>(w, x_plane, ky, co0, at + ky * row);
}

template <class Vec>
void weight_pass(const WeightPass& w) {
  const ConvShape& s = w.shape;
  const int64_t taps = s.k * s.k, step = s.out_c % (2 * Vec::kLanes) == 0 ? 2 * Vec::kLanes : Vec::kLanes;
  for (int64_t ci = 0; ci < s.in_c; ++ci)
    for (int64_t co0 = 0; co0 < s.out_c; co0 += step) {
      float* at = w.dw_t + ci * taps * s.out_c + co0;
      if (step == 2 * Vec::kLanes) weight_rows<Vec, 2>(w, w.x + ci * w.plane, co0, at);
      else weight_rows<Vec, 1>(w, w.x + ci * w.plane, co0, at);
    }
}

}  // namespace

}  // namespace equivae::conv_tiles
