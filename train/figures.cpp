#include "train/figures.h"

#include <stb_image_write.h>
// Header-only, all static: the functions this file does not call are not warnings.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb_easy_font.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

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

namespace {

// stb_easy_font draws characters about 6 pixels wide and 7 high at scale 1: the title at scale 2.
constexpr int64_t kLabelScale = 1, kTitleScale = 2, kTextHeight = 8;

int64_t text_width(const std::string& text, int64_t scale) {
  return scale * stb_easy_font_width(const_cast<char*>(text.c_str()));
}

// `text`, or its longest beginning that fits with ".." after it, or its first characters, in at
// most `width` pixels ("" when not even one character fits).
std::string fit(const std::string& text, int64_t width, int64_t scale) {
  for (size_t n = text.size(); n > 0; --n) {
    const std::string cut = n == text.size() ? text : text.substr(0, n) + "..";
    if (text_width(cut, scale) <= width) return cut;
  }
  for (size_t n = text.size(); n > 0; --n)
    if (text_width(text.substr(0, n), scale) <= width) return text.substr(0, n);
  return "";
}

// Black text at (x, y) (top left) into white 8-bit pixels of W x H x channels.
void draw_text(std::vector<unsigned char>& pixels, int64_t W, int64_t H, int64_t channels, int64_t x, int64_t y,
               const std::string& text, int64_t scale) {
  static_assert(sizeof(float) == 4);
  // 64 bytes a quad. stb's guide of about 270 bytes a character is an average: '8' takes 7 quads,
  // and a buffer sized by it silently drops the last strokes of a run of such digits. 16 quads
  // bound any glyph.
  std::vector<char> quads(std::max<size_t>(1, text.size()) * 16 * 64);
  const int n = stb_easy_font_print(0, 0, const_cast<char*>(text.c_str()), nullptr, quads.data(), int(quads.size()));
  for (int q = 0; q < n; ++q) {
    float xs[4], ys[4];  // each vertex: x, y, z as floats, then 4 bytes of colour
    for (int v = 0; v < 4; ++v) {
      std::memcpy(&xs[v], quads.data() + (q * 4 + v) * 16, 4);
      std::memcpy(&ys[v], quads.data() + (q * 4 + v) * 16 + 4, 4);
    }
    const int64_t x0 = x + scale * int64_t(*std::min_element(xs, xs + 4)), x1 = x + scale * int64_t(*std::max_element(xs, xs + 4));
    const int64_t y0 = y + scale * int64_t(*std::min_element(ys, ys + 4)), y1 = y + scale * int64_t(*std::max_element(ys, ys + 4));
    for (int64_t py = std::max<int64_t>(0, y0); py < std::min(H, y1); ++py)
      for (int64_t px = std::max<int64_t>(0, x0); px < std::min(W, x1); ++px)
        for (int64_t c = 0; c < channels; ++c) pixels[size_t((py * W + px) * channels + c)] = 0;
  }
}

struct Margins {
  int64_t left, top, title;  // title: the strip of the title within `top`
};

Margins margins(const GridText& text) {
  Margins m{0, 0, 0};
  if (!text.title.empty()) m.title = kTitleScale * kTextHeight + 4;
  m.top = m.title + (text.columns.empty() ? 0 : kLabelScale * kTextHeight + 2);
  for (const std::string& r : text.rows) m.left = std::max(m.left, text_width(r, kLabelScale) + 4);
  return m;
}

}  // namespace

std::pair<int64_t, int64_t> grid_png_size(int64_t rows, int64_t cols, int64_t height, int64_t width,
                                          const GridText& text) {
  const Margins m = margins(text);
  const int64_t gap = 1, grid_w = cols * (width + gap) + gap, grid_h = rows * (height + gap) + gap;
  return {std::max(m.left + grid_w, text.title.empty() ? 0 : text_width(text.title, kTitleScale) + 4), m.top + grid_h};
}

void write_png_grid(const std::string& path, const std::vector<float>& images, int64_t rows, int64_t cols,
                    int64_t channels, int64_t height, int64_t width, const GridText& text,
                    const std::vector<std::string>& cells) {
  const Margins m = margins(text);
  const auto [W, H] = grid_png_size(rows, cols, height, width, text);
  const int64_t gap = 1, out_c = channels == 3 ? 3 : 1;
  std::vector<unsigned char> pixels(size_t(W * H * out_c), 255);  // white gaps and margins
  const int64_t size = channels * height * width;
  for (int64_t i = 0; i < std::min(rows * cols, int64_t(images.size()) / size); ++i) {
    const int64_t r0 = m.top + (i / cols) * (height + gap) + gap, c0 = m.left + (i % cols) * (width + gap) + gap;
    for (int64_t c = 0; c < out_c; ++c)
      for (int64_t y = 0; y < height; ++y)
        for (int64_t x = 0; x < width; ++x) {
          const float v = std::clamp(images[size_t(i * size + (c * height + y) * width + x)], 0.0f, 1.0f);
          pixels[size_t(((r0 + y) * W + c0 + x) * out_c + c)] = static_cast<unsigned char>(std::lround(v * 255));
        }
  }
  if (!text.title.empty()) draw_text(pixels, W, H, out_c, 2, 2, text.title, kTitleScale);
  for (size_t j = 0; j < text.columns.size() && int64_t(j) < cols; ++j)
    draw_text(pixels, W, H, out_c, m.left + int64_t(j) * (width + gap) + gap, m.title,
              fit(text.columns[j], width + gap, kLabelScale), kLabelScale);
  for (size_t i = 0; i < text.rows.size() && int64_t(i) < rows; ++i)
    draw_text(pixels, W, H, out_c, 2, m.top + int64_t(i) * (height + gap) + gap + std::max<int64_t>(0, (height - kTextHeight) / 2),
              text.rows[i], kLabelScale);
  for (size_t i = 0; i < cells.size() && int64_t(i) < rows * cols; ++i)
    draw_text(pixels, W, H, out_c, m.left + int64_t(i) % cols * (width + gap) + gap + 2,
              m.top + int64_t(i) / cols * (height + gap) + gap + std::max<int64_t>(0, (height - kTextHeight) / 2),
              fit(cells[i], width - 2, kLabelScale), kLabelScale);
  if (!stbi_write_png(path.c_str(), int(W), int(H), int(out_c), pixels.data(), int(W * out_c)))
    throw std::runtime_error("figures: cannot write " + path);
}

void write_confusion_png(const std::string& path, const std::vector<int64_t>& counts,
                         const std::vector<std::string>& class_names, const std::string& title) {
  const int64_t K = int64_t(class_names.size());
  if (K == 0 || int64_t(counts.size()) != K * K)
    throw std::invalid_argument(fmt::format("figures: a confusion matrix of {} counts for {} classes", counts.size(), K));
  int64_t width = 16;  // stb_easy_font_width counts a character's advance, its last stroke may run past
  std::vector<std::string> cells;
  for (int64_t c : counts) {
    cells.push_back(std::to_string(c));
    width = std::max(width, text_width(cells.back(), kLabelScale) + 10);
  }
  // Shades from white to 40 % grey, so the black counts stay legible on every cell.
  std::vector<float> tiles;
  const int64_t height = kTextHeight + 8;
  for (int64_t t = 0; t < K; ++t) {
    int64_t row = 0;
    for (int64_t p = 0; p < K; ++p) row += counts[size_t(t * K + p)];
    for (int64_t p = 0; p < K; ++p) {
      const float share = row > 0 ? float(counts[size_t(t * K + p)]) / float(row) : 0.0f;
      tiles.insert(tiles.end(), size_t(height * width), 1.0f - 0.6f * share);
    }
  }
  write_png_grid(path, tiles, K, K, 1, height, width, {title, class_names, class_names}, cells);
}

std::vector<std::string> write_figures(const EquiVAE& model, Device device, const data::Dataset& val,
                                       const std::string& dir, uint64_t seed) {
  NoGradGuard no_grad;
  const ModelConfig& cfg = model.config();
  const int64_t K = cfg.num_classes, dr = cfg.d_r, dv = cfg.d_v, C = val.channels, S = val.height;
  std::vector<std::string> names = val.class_names;  // digits when the data set has none
  for (int64_t y = int64_t(names.size()); y < K; ++y) names.push_back(std::to_string(y));

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
    write_png_grid(paths.back(), decode(rs, vs, rows * K), rows, K, C, S, S,
                   {"Samples: column = class (r_y = its mean r), v ~ N(0, I)", names, {}});
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
    std::vector<std::string> rows{"style"};
    rows.insert(rows.end(), names.begin(), names.end());
    paths.push_back(dir + "/swap.png");
    write_png_grid(paths.back(), images, K + 1, K, C, S, S,
                   {"Swap: row = class r_y, column = v of the top image", names, rows});
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
    std::vector<std::string> columns(size_t(steps + 2));
    columns.front() = "image", columns.back() = "image";
    paths.push_back(dir + "/interpolation.png");
    write_png_grid(paths.back(), images, K, steps + 2, C, S, S,
                   {"Interpolation of v between two images, r_y of their class", columns, names});
  }
  {  // reconstruction: the two example images of each class above their reconstructions
    std::vector<int64_t> shown;
    for (int64_t y = 0; y < K; ++y) shown.push_back(first_rows[size_t(y)]), shown.push_back(second_rows[size_t(y)]);
    const data::Dataset d = val.subset(shown);
    const Embedding e = embed(model, d, device);
    const std::vector<float> decoded = decode(e.r, e.v_mean, d.n);
    std::vector<float> images(d.images.begin(), d.images.end());
    images.insert(images.end(), decoded.begin(), decoded.end());
    std::vector<std::string> columns;
    for (int64_t y = 0; y < K; ++y) columns.push_back(names[size_t(y)]), columns.push_back("");
    paths.push_back(dir + "/reconstruction.png");
    write_png_grid(paths.back(), images, 2, d.n, C, S, S,
                   {"Reconstruction at r(x) and the mean of q(v | r(x), x)", columns, {"input", "output"}});
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
    write_png_grid(paths.back(), decode(rs, vs, n * n), n, n, C, S, S,
                   {fmt::format("r over [{:.2g}, {:.2g}] x [{:.2g}, {:.2g}], v = 0", box[0].first, box[0].second,
                                box[1].first, box[1].second), {}, {}});
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
    std::string order;
    for (int64_t y = 0; y < K; ++y) order += (y ? ", " : "") + names[size_t(y)];
    paths.push_back(dir + "/v_grid.png");
    write_png_grid(paths.back(), images, rows, cols, C, S, S,
                   {"v over [-2, 2]^2 at each class's r_y: " + order, {}, {}});
  }
  return paths;
}

}  // namespace equivae
