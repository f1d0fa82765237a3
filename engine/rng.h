// Counter-based random numbers (Philox 4x32-10, Salmon et al., SC'11), usable from host and
// device code so that the CPU reference and the CUDA kernels draw the same numbers from the same
// (seed, offset). Element i of a draw that starts at `offset` uses block (offset + i) / 4 and
// lane (offset + i) % 4 of the generator keyed by the seed: no state, so any element can be
// recomputed anywhere (dropout masks are regenerated in backward instead of stored).
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define EQUIVAE_HD __host__ __device__ __forceinline__
#else
#define EQUIVAE_HD inline
#endif

namespace equivae {

struct Philox4x32 {
  uint32_t v[4];
};

EQUIVAE_HD Philox4x32 philox4x32_10(Philox4x32 ctr, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(kMul0) * ctr.v[0];
    const uint64_t p1 = uint64_t(kMul1) * ctr.v[2];
    const uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    const uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    ctr = Philox4x32{{hi1 ^ ctr.v[1] ^ key0, lo1, hi0 ^ ctr.v[3] ^ key1, lo0}};
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  return ctr;
}

// The 4 raw 32-bit words of block `block` of the stream keyed by `seed`.
EQUIVAE_HD Philox4x32 philox_block(uint64_t seed, uint64_t block) {
  return philox4x32_10(Philox4x32{{uint32_t(block), uint32_t(block >> 32), 0u, 0u}},
                       uint32_t(seed), uint32_t(seed >> 32));
}

EQUIVAE_HD uint32_t philox_bits(uint64_t seed, uint64_t index) {
  return philox_block(seed, index >> 2).v[index & 3];
}

// Uniform in [0, 1) with 24 random bits (exactly representable in float).
EQUIVAE_HD float bits_to_uniform(uint32_t bits) { return float(bits >> 8) * (1.0f / 16777216.0f); }

EQUIVAE_HD float philox_uniform(uint64_t seed, uint64_t index) {
  return bits_to_uniform(philox_bits(seed, index));
}

// Standard normal by Box-Muller on the lane pair (0,1) or (2,3) of the element's block; computed
// in float on both paths so the CPU and the GPU agree to a few ulps.
EQUIVAE_HD float philox_normal(uint64_t seed, uint64_t index) {
  const Philox4x32 b = philox_block(seed, index >> 2);
  const unsigned pair = unsigned(index & 2);
  const float u1 = float((b.v[pair] >> 8) + 1u) * (1.0f / 16777216.0f);  // (0, 1]: log is finite
  const float u2 = bits_to_uniform(b.v[pair + 1]);
  const float radius = sqrtf(-2.0f * logf(u1));
  const float angle = 6.2831853071795864f * u2;
  return (index & 1) ? radius * sinf(angle) : radius * cosf(angle);
}

// Hands out disjoint ranges of one Philox stream: every random op asks for as many numbers as
// it draws. Its whole state is (seed, offset), so a checkpoint resumes the exact stream.
struct RandomStream {
  uint64_t seed = 0;
  uint64_t offset = 0;
  uint64_t next(uint64_t count) {
    const uint64_t start = offset;
    offset += (count + 3) & ~uint64_t(3);  // keep draws block-aligned
    return start;
  }
};

}  // namespace equivae
