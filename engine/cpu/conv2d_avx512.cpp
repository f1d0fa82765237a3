// The direct convolutions' register tiles (conv2d_tiles.h) on 512-bit registers, compiled with
// -mavx512f for this file only and chosen at run time by conv2d_avx2.cpp, so one binary runs the
// 256-bit tiles on CPUs without AVX-512. Twice the lanes per instruction, and 32 registers; a
// forward tile is 8 pixels x 1 or 2 vectors. Not 12 pixels, which the vector registers would
// hold: each pixel of a tile keeps a pointer in a general register, and with 12 of them (plus
// the loop's index, weight pointer and bound) GCC moved two through xmm registers on every step,
// which made 12-pixel tiles about a tenth slower than 8 or 10 on the 16- and 32-channel layers.
// The same bits as the 256-bit tiles.
#include <immintrin.h>

#include <cstdlib>

#include "engine/cpu/conv2d_tiles.h"

namespace equivae {

bool cpu_has_avx512() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && cpu_has_avx2_fma() && !std::getenv("EQUIVAE_CPU_NO_AVX512");
  }();
  return has;
}

namespace conv_tiles {
namespace {

struct Zmm {
  using V = __m512;
  static constexpr int kLanes = 16, kRegisters = 32, kTilePixels = 8;  // see above
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V relu(V v) { return _mm512_max_ps(_mm512_setzero_ps(), v); }  // this operand order keeps NaN
};

}  // namespace

namespace avx512 {

void run_pass(const Pass& p, int64_t images) { conv_tiles::run_pass<Zmm>(p, images); }
void weight_pass(const WeightPass& w) { conv_tiles::weight_pass<Zmm>(w); }

}  // namespace avx512
}  // namespace conv_tiles
}  // namespace equivae
