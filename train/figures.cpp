#include "train/figures.h"

#include <stb_image_write.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <fstream>

#include "engine/rng.h"
#include "train/evaluation.h"

namespace equivae {
namespace {

// Decoded output -> pixels in [0, 1]: Bernoulli means are sigmoid(logits); Gaussian means
// (standardised data) are stretched to the grid's own range.
std::vector<float> to_pixels(std::vector<float> out, Likelihood likelihood) {
  if (likelihood == Likelihood::bernoulli) {
    for (float& v : out) v = 1.0f / (1.0f + std::exp(-v));
  } else if (!out.empty()) {
    const auto [lo, hi] = std::minmax_element(out.begin(), out.end());
    const float a = *lo, scale = *hi > *lo ? 1.0f / (*hi - *lo) : 1.0f;
    for (float& v : out) v = (v - a) * scale;
  }
  return out;
}

Tensor rows_tensor(const std::vector<float>& values, int64_t rows, int64_t cols, Device device) {
  Tensor t = Tensor::empty({rows, cols});
  std::copy(values.begin(), values.end(), t.data<float>());
  return t.to(device);
}

}  // namespace

void write_png_grid(const std::string& path, const std::vector<float>& images, int64_t rows, int64_t cols,
                    int64_t channels, int64_t height, int64_t width) {
  const int64_t gap = 1, W = cols * (width + gap) + gap, H = rows * (height + gap) + gap;
  const int64_t out_c = channels == 3 ? 3 : 1;
  std::vector<unsigned char> pixels(size_t(W * H * out_c), 255);  // white gaps
  const int64_t size = channels * height * width;
  for (int64_t i = 0; i < std::min(rows * cols, int64_t(images.size()) / size); ++i) {
    const int64_t r0 = (i / cols) * (height + gap) + gap, c0 = (i % cols) * (width + gap) + gap;
    for (int64_t c = 0; c < out_c; ++c)
      for (int64_t y = 0; y < height; ++y)
        for (int64_t x = 0; x < width; ++x) {
          const float v = std::clamp(images[size_t(i * size + (c * height + y) * width + x)], 0.0f, 1.0f);
          pixels[size_t(((r0 + y) * W + c0 + x) * out_c + c)] = static_cast<unsigned char>(std::lround(v * 255));
        }
  }
  if (!stbi_write_png(path.c_str(), int(W), int(H), int(out_c), pixels.data(), int(W * out_c)))
    throw std::runtime_error("figures: cannot write " + path);
}

std::vector<std::string> write_figures(const EquiVAE& model, Device device, const data::Dataset& val,
                                       const std::string& dir, uint64_t seed) {
  NoGradGuard no_grad;
  const ModelConfig& cfg = model.config();
  const int64_t K = cfg.num_classes, dr = cfg.d_r, dv = cfg.d_v, C = val.channels, S = val.height;

  // Class means of r over validation data, and the first two validation images of each class.
  const std::vector<float> r = represent(model, val, device);
  std::vector<float> r_mean(size_t(K * dr), 0.0f);
  std::vector<int64_t> count(static_cast<size_t>(K), 0);
  std::vector<std::vector<int64_t>> examples(static_cast<size_t>(K));
  for (int64_t i = 0; i < val.n; ++i) {
    const int64_t y = val.labels[size_t(i)];
    ++count[size_t(y)];
    for (int64_t k = 0; k < dr; ++k) r_mean[size_t(y * dr + k)] += r[size_t(i * dr + k)];
    if (examples[size_t(y)].size() < 2) examples[size_t(y)].push_back(i);
  }
  for (int64_t y = 0; y < K; ++y)
    for (int64_t k = 0; k < dr; ++k) r_mean[size_t(y * dr + k)] /= float(std::max<int64_t>(1, count[size_t(y)]));
  for (const auto& e : examples)
    if (e.size() < 2) throw std::runtime_error("figures: every class needs two validation images");

  auto decode = [&](const std::vector<float>& rs, const std::vector<float>& vs, int64_t n) {
    return to_pixels(decode_rows(model, rs, vs, n, device), cfg.likelihood);
  };
  auto repeat_r = [&](const std::vector<int64_t>& classes) {
    std::vector<float> out;
    for (int64_t y : classes) out.insert(out.end(), r_mean.begin() + y * dr, r_mean.begin() + (y + 1) * dr);
    return out;
  };
  // v of the K example images (posterior means at their class's r_y).
  std::vector<int64_t> first_rows, second_rows, classes(static_cast<size_t>(K));
  for (int64_t y = 0; y < K; ++y) {
    classes[size_t(y)] = y;
    first_rows.push_back(examples[size_t(y)][0]);
    second_rows.push_back(examples[size_t(y)][1]);
  }
  // Posterior means of v at the class's r_y, in chunks of 500 images (memory of the conv stack).
  auto encode_v = [&](const std::vector<int64_t>& all_rows) {
    std::vector<float> out;
    for (size_t begin = 0; begin < all_rows.size(); begin += 500) {
      const std::vector<int64_t> rows(all_rows.begin() + long(begin),
                                      all_rows.begin() + long(std::min(all_rows.size(), begin + 500)));
      Tensor x = Tensor::empty({int64_t(rows.size()), C, S, S});
      for (size_t i = 0; i < rows.size(); ++i)
        std::memcpy(x.data<float>() + int64_t(i) * C * S * S, val.image(rows[i]), size_t(C * S * S) * 4);
      std::vector<int64_t> ys;
      for (int64_t row : rows) ys.push_back(val.labels[size_t(row)]);
      const Tensor mu =
          model.posterior(Var(x.to(device)), Var(rows_tensor(repeat_r(ys), int64_t(rows.size()), dr, device))).mu.value();
      for (double v : mu.to_vector()) out.push_back(float(v));
    }
    return out;
  };
  const std::vector<float> v_first = encode_v(first_rows), v_second = encode_v(second_rows);
  std::vector<std::string> paths;

  {  // samples: 8 rows of v ~ N(0, I), one column per class
    const int64_t rows = 8;
    std::vector<float> rs, vs;
    for (int64_t i = 0; i < rows * K; ++i) {
      const std::vector<float> ry = repeat_r({i % K});
      rs.insert(rs.end(), ry.begin(), ry.end());
      for (int64_t k = 0; k < dv; ++k) vs.push_back(philox_normal(seed, uint64_t(i * dv + k)));
    }
    paths.push_back(dir + "/samples.png");
    write_png_grid(paths.back(), decode(rs, vs, rows * K), rows, K, C, S, S);
  }
  {  // swap: row = class r_y, column = the style of example image j (first column: the originals)
    std::vector<float> images;
    for (int64_t j = 0; j < K; ++j) images.insert(images.end(), val.image(first_rows[size_t(j)]),
                                                  val.image(first_rows[size_t(j)]) + C * S * S);
    std::vector<float> rs, vs;
    for (int64_t y = 0; y < K; ++y)
      for (int64_t j = 0; j < K; ++j) {
        rs.insert(rs.end(), r_mean.begin() + y * dr, r_mean.begin() + (y + 1) * dr);
        vs.insert(vs.end(), v_first.begin() + j * dv, v_first.begin() + (j + 1) * dv);
      }
    const std::vector<float> decoded = decode(rs, vs, K * K);
    images.insert(images.end(), decoded.begin(), decoded.end());
    paths.push_back(dir + "/swap.png");
    write_png_grid(paths.back(), images, K + 1, K, C, S, S);
  }
  {  // interpolation: originals at both ends, 8 decoded steps between
    const int64_t steps = 8;
    std::vector<float> rs, vs;
    for (int64_t y = 0; y < K; ++y)
      for (int64_t s = 0; s < steps; ++s) {
        const float t = float(s) / float(steps - 1);
        rs.insert(rs.end(), r_mean.begin() + y * dr, r_mean.begin() + (y + 1) * dr);
        for (int64_t k = 0; k < dv; ++k)
          vs.push_back((1 - t) * v_first[size_t(y * dv + k)] + t * v_second[size_t(y * dv + k)]);
      }
    const std::vector<float> decoded = decode(rs, vs, K * steps);
    std::vector<float> images;
    const int64_t size = C * S * S;
    for (int64_t y = 0; y < K; ++y) {
      images.insert(images.end(), val.image(first_rows[size_t(y)]), val.image(first_rows[size_t(y)]) + size);
      images.insert(images.end(), decoded.begin() + y * steps * size, decoded.begin() + (y + 1) * steps * size);
      images.insert(images.end(), val.image(second_rows[size_t(y)]), val.image(second_rows[size_t(y)]) + size);
    }
    paths.push_back(dir + "/interpolation.png");
    write_png_grid(paths.back(), images, K, steps + 2, C, S, S);
  }
  {  // latents.tsv: every validation image's label, r(x) (m = 1) and v, for tools/figures.py
    std::vector<int64_t> all_rows;
    for (int64_t i = 0; i < val.n; ++i) all_rows.push_back(i);
    const std::vector<float> v = encode_v(all_rows);
    paths.push_back(dir + "/latents.tsv");
    std::ofstream out(paths.back());
    out << "label";
    for (int64_t k = 0; k < dr; ++k) out << "\tr" << k;
    for (int64_t k = 0; k < dv; ++k) out << "\tv" << k;
    out << "\n";
    for (int64_t i = 0; i < val.n; ++i) {
      out << val.labels[size_t(i)];
      for (int64_t k = 0; k < dr; ++k) out << '\t' << r[size_t(i * dr + k)];
      for (int64_t k = 0; k < dv; ++k) out << '\t' << v[size_t(i * dv + k)];
      out << '\n';
    }
    if (!out) throw std::runtime_error("figures: cannot write " + paths.back());
  }
  // Figure 5, for a model with 2-D latents: decoded grids over the r plane and over v.
  const int64_t n = 11;  // grid points per axis
  if (dr == 2) {  // r over the box the validation r fill (1st to 99th percentile), at v = 0
    std::vector<float> rs, vs(size_t(n * n * dv), 0.0f);
    std::array<std::pair<float, float>, 2> box;
    for (int64_t k = 0; k < 2; ++k) {
      std::vector<float> values;
      for (int64_t i = 0; i < val.n; ++i) values.push_back(r[size_t(i * 2 + k)]);
      std::sort(values.begin(), values.end());
      box[size_t(k)] = {values[size_t(double(values.size() - 1) * 0.01)], values[size_t(double(values.size() - 1) * 0.99)]};
    }
    for (int64_t a = 0; a < n; ++a)      // rows: r_1 from high to low, so the picture reads as a plot
      for (int64_t b = 0; b < n; ++b) {  // columns: r_0 from low to high
        rs.push_back(box[0].first + (box[0].second - box[0].first) * float(b) / float(n - 1));
        rs.push_back(box[1].second - (box[1].second - box[1].first) * float(a) / float(n - 1));
      }
    paths.push_back(dir + "/r_plane.png");
    write_png_grid(paths.back(), decode(rs, vs, n * n), n, n, C, S, S);
  }
  if (dv == 2) {  // v over [-2, 2]^2 at each class's r_y: one n x n block per class, blocks in 2 rows
    const int64_t size = C * S * S, per_row = (K + 1) / 2, cols = per_row * (n + 1) - 1, rows = 2 * n + 1;
    std::vector<float> images(size_t(rows * cols * size), 1.0f);  // blank tiles between blocks
    for (int64_t y = 0; y < K; ++y) {
      std::vector<float> rs, vs;
      for (int64_t a = 0; a < n; ++a)
        for (int64_t b = 0; b < n; ++b) {
          rs.insert(rs.end(), r_mean.begin() + y * dr, r_mean.begin() + (y + 1) * dr);
          vs.push_back(-2.0f + 4.0f * float(b) / float(n - 1));
          vs.push_back(2.0f - 4.0f * float(a) / float(n - 1));
        }
      const std::vector<float> decoded = decode(rs, vs, n * n);
      const int64_t row0 = (y / per_row) * (n + 1), col0 = (y % per_row) * (n + 1);
      for (int64_t t = 0; t < n * n; ++t)
        std::copy_n(decoded.begin() + t * size, size,
                    images.begin() + ((row0 + t / n) * cols + col0 + t % n) * size);
    }
    paths.push_back(dir + "/v_grid.png");
    write_png_grid(paths.back(), images, rows, cols, C, S, S);
  }
  return paths;
}

}  // namespace equivae
