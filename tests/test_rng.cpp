// Philox 4x32-10 against the Random123 known-answer vectors (kat_vectors, philox4x32 10), and
// the distributions drawn from it.
#include <catch2/catch.hpp>

#include <cmath>

#include "engine/ops.h"
#include "engine/rng.h"

using namespace equivae;

TEST_CASE("rng: Philox4x32-10 matches the Random123 known-answer vectors", "[rng]") {
  struct Kat { Philox4x32 ctr; uint32_t k0, k1; Philox4x32 want; };
  const Kat kats[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}}, 0xffffffff, 0xffffffff,
       {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822, 0x299f31d0,
       {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
  };
  for (const Kat& k : kats) {
    const Philox4x32 got = philox4x32_10(k.ctr, k.k0, k.k1);
    for (int i = 0; i < 4; ++i) CHECK(got.v[i] == k.want.v[i]);
  }
}

TEST_CASE("rng: uniform and normal draws have the right moments", "[rng]") {
  const int n = 200000;
  double su = 0, sn = 0, sn2 = 0, sn4 = 0;
  float lo = 1, hi = 0;
  for (int i = 0; i < n; ++i) {
    const float u = philox_uniform(42, uint64_t(i));
    lo = std::min(lo, u);
    hi = std::max(hi, u);
    su += u;
    const double z = philox_normal(42, uint64_t(i));
    sn += z;
    sn2 += z * z;
    sn4 += z * z * z * z;
  }
  CHECK(lo >= 0.0f);
  CHECK(hi < 1.0f);
  CHECK(su / n == Approx(0.5).margin(0.005));
  CHECK(sn / n == Approx(0.0).margin(0.01));
  CHECK(sn2 / n == Approx(1.0).margin(0.015));
  CHECK(sn4 / n == Approx(3.0).margin(0.08));  // Gaussian kurtosis, not a uniform's 1.8
}

TEST_CASE("rng: streams are reproducible and disjoint", "[rng]") {
  RandomStream a{5, 0}, b{5, 0};
  CHECK(a.next(7) == 0);
  CHECK(a.next(1) == 8);  // block-aligned
  CHECK(a.offset == 12);
  const Tensor mu = Tensor::zeros({3, 5}), logvar = Tensor::zeros({3, 5});
  const Var v1 = reparameterize(Var(mu), Var(logvar), b);
  const Var v2 = reparameterize(Var(mu), Var(logvar), b);
  RandomStream again{5, 0};
  const Var v3 = reparameterize(Var(mu), Var(logvar), again);
  CHECK(v1.value().to_vector() == v3.value().to_vector());
  CHECK(v1.value().to_vector() != v2.value().to_vector());
  // element i of a draw at offset o is philox_normal(seed, o + i)
  CHECK(v1.value().to_vector()[4] == double(philox_normal(5, 4)));
}

TEST_CASE("rng: dropout keeps about 1-p of the values, scaled by 1/(1-p)", "[rng]") {
  RandomStream s{3, 0};
  const Tensor x = Tensor::full({100, 100}, 2.0);
  const std::vector<double> y = dropout(Var(x), 0.25, s, true).value().to_vector();
  int kept = 0;
  for (double v : y) {
    CHECK((v == 0.0 || v == Approx(2.0 / 0.75)));
    kept += v != 0.0;
  }
  CHECK(kept / 10000.0 == Approx(0.75).margin(0.02));
  CHECK(dropout(Var(x), 0.25, s, false).value().to_vector() == x.to_vector());  // eval: identity
}
