// End-to-end gradient check of a tiny encoder-decoder built from the same ops as EquiVAE:
// an invariant path (conv -> dense -> segmented mean over sets, m = 1 included), an
// equivariant path (conv -> dense -> mu, logvar -> reparameterised v), a decoder (dense ->
// reshape -> transposed convs) and the objective log p(x | r, v) - KL.
#include "tests/gradcheck.h"

using namespace equivae;
using namespace equivae::testing;

TEST_CASE("gradcheck: tiny EquiVAE-shaped encoder-decoder, every parameter", "[gradcheck][composite]") {
  std::mt19937_64 rng(41);
  for (bool gaussian : {false, true}) {
    const int64_t n = 3, img = 7, c = 1, f = 2, h = 5, d = 2;
    const Tensor x = random_uniform({n, c, img, img}, rng, 0, 1);
    // Sets of encoded images: set 0 = {1}, set 1 = {0, 2}, set 2 = {0, 1, 2}.
    const Tensor offsets = Tensor::from_indices({0, 1, 3, 6}), members = Tensor::from_indices({1, 0, 2, 0, 1, 2});
    std::vector<Tensor> params{
        random_tensor({f, c, 5, 5}, rng, 0.3), random_tensor({f}, rng, 0.1),          // h: conv (7 -> 4)
        random_tensor({h, f * 16}, rng, 0.3), random_tensor({h}, rng, 0.1),           // h: dense
        random_tensor({d, h}, rng, 0.5), random_tensor({d}, rng, 0.1),                // g: linear -> r
        random_tensor({f, c, 5, 5}, rng, 0.3), random_tensor({f}, rng, 0.1),          // e_x: conv
        random_tensor({2 * d, f * 16 + d}, rng, 0.3), random_tensor({2 * d}, rng, 0.1),  // [e_x, r] -> mu, logvar
        random_tensor({f * 16, 2 * d}, rng, 0.3), random_tensor({f * 16}, rng, 0.1),  // decoder dense
        random_tensor({f, c, 5, 5}, rng, 0.3), random_tensor({c}, rng, 0.1),          // decoder convT (4 -> 7)
        random_tensor({c}, rng, 0.3)};                                                // Gaussian log-variance
    if (!gaussian) params.pop_back();
    const double worst = check_gradients(gaussian ? "composite (Gaussian)" : "composite (Bernoulli)",
        [&](const std::vector<Var>& p) {
          RandomStream stream{77, 0};
          const Var hx = relu(linear(reshape(conv2d(Var(x), p[0], p[1], 2, 2, true), {n, -1}), p[2], p[3]));
          const Var r = linear(segmented_mean(hx, offsets, members), p[4], p[5]);
          const Var ex = reshape(conv2d(Var(x), p[6], p[7], 2, 2, true), {n, -1});
          const auto stats = split(linear(concat({ex, r}), p[8], p[9]), {d, d});
          const Var v = reparameterize(stats[0], stats[1], stream);
          const Var feat = reshape(relu(linear(concat({r, v}), p[10], p[11])), {n, f, 4, 4});
          const Var out = conv_transpose2d(feat, p[12], p[13], 2, 2, 0);
          const Var ll = gaussian ? gaussian_loglik(out, p[14], x) : bernoulli_loglik(out, x);
          return sub(ll, kl_normal(stats[0], stats[1]));
        },
        params, 5, 24);
    CHECK(worst <= 1.0);
  }
}
