// nvcuda::wmma for the CPU emulator (see cuda_runtime.h): the TF32 m16n16k8 shapes kernels/ uses.
// Every lane holds the whole tile (the hardware spreads it over the warp in an undocumented way),
// so code that touches fragments only through these calls and element-wise loops over x[] behaves
// as on the GPU. Each call is warp-collective (all live lanes must reach it) and checks wmma's
// rules: 256-bit aligned pointers, leading dimensions a multiple of 4 floats.
#pragma once
#include <cstdint>
#include <cstring>

#include "cuda_runtime.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K> struct dims;
template <int M, int N, int K> struct dims<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K> struct dims<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K> struct dims<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };

// x[r * cols + c] is element (r, c) of the tile.
template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
  static constexpr int rows = dims<Use, M, N, K>::rows, cols = dims<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols;
  float x[num_elements];
};

// Round to nearest, ties away from zero, keeping 10 mantissa bits (PTX cvt.rna.tf32.f32).
inline float __float_to_tf32(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if ((bits & 0x7f800000u) != 0x7f800000u) bits = (bits + 0x1000u) & 0xffffe000u;  // not Inf/NaN
  std::memcpy(&v, &bits, 4);
  return v;
}

namespace detail {
inline void check(const void* p, unsigned ldm) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) emu::fail("wmma: pointer not 256-bit aligned");
  if (ldm % 4 != 0) emu::fail("wmma: leading dimension not a multiple of 4 floats");
}
template <class F> void load(F& f, const float* p, unsigned ldm, bool row_major) {
  check(p, ldm);
  emu::sync_warp();
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c) f.x[r * F::cols + c] = row_major ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r];
  emu::sync_warp();  // no lane writes the memory before every lane has read it
}
}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, float v) {
  for (float& e : f.x) e = v;
}

template <class Use, int M, int N, int K, class T>
void load_matrix_sync(fragment<Use, M, N, K, T, row_major>& f, const float* p, unsigned ldm) {
  detail::load(f, p, ldm, true);
}
template <class Use, int M, int N, int K, class T>
void load_matrix_sync(fragment<Use, M, N, K, T, col_major>& f, const float* p, unsigned ldm) {
  detail::load(f, p, ldm, false);
}

template <int M, int N, int K, class T, class LA, class LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  emu::sync_warp();
  float out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float acc = c.x[i * N + j];
      for (int k = 0; k < K; ++k) acc = std::fma(a.x[i * K + k], b.x[k * N + j], acc);
      out[i * N + j] = acc;
    }
  std::memcpy(d.x, out, sizeof out);
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
  detail::check(p, ldm);
  emu::sync_warp();
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c)
      (layout == mem_row_major ? p[size_t(r) * ldm + c] : p[size_t(c) * ldm + r]) = f.x[r * N + c];
  emu::sync_warp();
}

}  // namespace nvcuda::wmma
