// The figures a run writes (train/figures.h): every PNG has the grid's size, latents.tsv holds
// each validation image's label, r and v, figure 5's grids appear exactly for 2-D latents, and a
// validation set too small to draw from is refused by name.
#include <catch2/catch.hpp>

#include <stb_image.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/synthetic.h"
#include "train/figures.h"

using namespace equivae;
using namespace equivae::testing;
using Catch::Contains;

namespace {

std::pair<int, int> png_size(const std::string& path) {
  int w = 0, h = 0, channels = 0;
  REQUIRE(stbi_info(path.c_str(), &w, &h, &channels));
  return {w, h};
}

int grid_pixels(int tiles, int tile) { return tiles * (tile + 1) + 1; }  // a 1-pixel gap around tiles

}  // namespace

TEST_CASE("figures: grids, latents and figure 5 for a model with 2-D latents", "[figures]") {
  const data::Splits s = synthetic_splits();
  const std::string out = temp_dir("figures");
  ModelConfig m = small_model();
  m.d_r = 2;
  m.d_v = 2;
  Trainer t(m, small_training(out, 2), s);
  t.train();
  const std::vector<std::string> paths = write_figures(t.model(), Device::cpu, s.validation, out, 7);
  const std::vector<std::string> names = {"samples.png", "swap.png", "interpolation.png", "reconstruction.png",
                                          "latents.tsv", "r_plane.png", "v_grid.png"};
  REQUIRE(paths.size() == names.size());
  for (size_t i = 0; i < names.size(); ++i) CHECK(paths[i] == out + "/" + names[i]);

  // Each grid is its tiles plus the margins of its title and labels (a title on every one).
  const int K = 4, S = 8;
  auto holds_grid = [&](const std::string& name, int cols, int rows) {
    const auto [w, h] = png_size(out + "/" + name);
    INFO(name << " is " << w << " x " << h);
    CHECK(w >= grid_pixels(cols, S));
    CHECK(h > grid_pixels(rows, S) + 8);
    CHECK(h < grid_pixels(rows, S) + 40);
  };
  holds_grid("samples.png", K, 8);
  holds_grid("swap.png", K, K + 1);
  holds_grid("interpolation.png", 10, K);
  holds_grid("reconstruction.png", 2 * K, 2);
  holds_grid("r_plane.png", 11, 11);
  // 4 classes: 2 blocks of 11 x 11 per row, 2 rows, one blank tile between blocks
  holds_grid("v_grid.png", 23, 23);

  std::ifstream latents(out + "/latents.tsv");
  std::string line;
  std::getline(latents, line);
  CHECK(line == "label\tr0\tr1\tv0\tv1");
  const std::vector<float> r = t.represent(s.validation);
  int64_t rows = 0;
  bool v_varies = false;
  double first_v = 0;
  for (; std::getline(latents, line); ++rows) {
    REQUIRE(rows < s.validation.n);
    std::istringstream fields(line);
    int label = -1;
    double r0 = 0, r1 = 0, v0 = 0, v1 = 0;
    fields >> label >> r0 >> r1 >> v0 >> v1;
    REQUIRE(fields);
    CHECK(label == s.validation.labels[size_t(rows)]);
    CHECK(r0 == Approx(r[size_t(rows * 2)]).epsilon(1e-5).margin(1e-6));
    CHECK(r1 == Approx(r[size_t(rows * 2 + 1)]).epsilon(1e-5).margin(1e-6));
    CHECK(std::isfinite(v0));
    CHECK(std::isfinite(v1));
    if (rows == 0) first_v = v0;
    v_varies = v_varies || v0 != first_v;
  }
  CHECK(rows == s.validation.n);
  CHECK(v_varies);  // v is each image's own, not one value for all
  std::filesystem::remove_all(out);
}

TEST_CASE("figures: figure 5's grids only for 2-D latents; too few validation images are refused", "[figures]") {
  const data::Splits s = synthetic_splits();
  const std::string out = temp_dir("figures_wide");
  Trainer t(small_model(), small_training(out, 1), s);  // d_r = 3, d_v = 2
  t.train();
  const std::vector<std::string> paths = write_figures(t.model(), Device::cpu, s.validation, out, 7);
  CHECK(paths.back() == out + "/v_grid.png");
  CHECK(std::filesystem::exists(out + "/reconstruction.png"));
  CHECK_FALSE(std::filesystem::exists(out + "/r_plane.png"));

  const data::Dataset one_per_class = s.validation.slice(0, 4);  // labels 0, 1, 2, 3
  CHECK_THROWS_WITH(write_figures(t.model(), Device::cpu, one_per_class, out, 7), Contains("every class needs two validation images"));
  std::filesystem::remove_all(out);
}

TEST_CASE("figures: a grid's title and labels are drawn in its margins, cut to fit", "[figures]") {
  const std::string out = temp_dir("grid_text");
  const int64_t S = 10;
  const std::vector<float> grey(size_t(2 * 3 * S * S), 0.5f);
  write_png_grid(out + "/plain.png", grey, 2, 3, 1, S, S);
  CHECK(png_size(out + "/plain.png") == std::pair(grid_pixels(3, S), grid_pixels(2, S)));
  const GridText text{"A title", {"zero", "a very long class name", "2"}, {"row a", "row b"}};
  write_png_grid(out + "/text.png", grey, 2, 3, 1, S, S, text);
  const auto [W, H] = grid_png_size(2, 3, S, S, text);
  REQUIRE(png_size(out + "/text.png") == std::pair(int(W), int(H)));
  int w = 0, h = 0, c = 0;
  unsigned char* pixels = stbi_load((out + "/text.png").c_str(), &w, &h, &c, 1);
  REQUIRE(pixels != nullptr);
  const int64_t top = H - grid_pixels(2, S);
  CHECK(W - grid_pixels(3, S) > 10);  // the row labels' margin (or the title's width)
  CHECK(top > 16);                    // title and column labels
  int64_t dark_top = 0, dark_below = 0, grid_grey = 0;
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      const unsigned char p = pixels[y * W + x];
      if (y < top && p == 0) ++dark_top;
      if (y >= top && p == 0) ++dark_below;  // below the top strip only the row labels are black
      grid_grey += p == 128;
    }
  stbi_image_free(pixels);
  CHECK(dark_top > 30);
  CHECK(dark_below > 20);
  CHECK(grid_grey == 6 * S * S);  // the tiles, untouched by text
  std::filesystem::remove_all(out);
}

TEST_CASE("figures: a confusion matrix is a K x K grid shaded by each row's shares", "[figures]") {
  const std::string out = temp_dir("confusion");
  const std::string path = out + "/confusion.png";
  // rows: true class; 3 classes, no empty cell in the first row, the last row empty
  const std::vector<int64_t> counts = {2, 1, 1, 1, 3, 0, 0, 0, 0};
  write_confusion_png(path, counts, {"a", "b", "c"}, "t");
  int W = 0, H = 0, channels = 0;
  unsigned char* pixels = stbi_load(path.c_str(), &W, &H, &channels, 1);
  REQUIRE(pixels);
  // The tiles' last pixel row carries no text: read each tile's shade there, from the grid's
  // bottom right; the tile width is the run of grey left of the first row's last gap.
  const int height = 16, gap = 1, first_row = H - 2 - 2 * (height + gap);
  int width = 0;
  while (width < W - 2 && pixels[first_row * W + W - 2 - width] != 255) ++width;
  auto shade = [&](int row, int col) {
    const int y = H - 2 - (2 - row) * (height + gap), x = W - 2 - (2 - col) * (width + gap) - width / 2;
    return int(pixels[y * W + x]);
  };
  INFO("tile width " << width);
  REQUIRE(width >= 16);
  auto expected = [](double share) { return int(std::lround(255 * (1 - 0.6 * share))); };
  CHECK(shade(0, 0) == expected(0.5));
  CHECK(shade(0, 1) == expected(0.25));
  CHECK(shade(1, 0) == expected(0.25));
  CHECK(shade(1, 1) == expected(0.75));
  CHECK(shade(1, 2) == 255);
  CHECK(shade(2, 2) == 255);  // an empty row stays white
  stbi_image_free(pixels);
  CHECK_THROWS_WITH(write_confusion_png(path, {1, 2, 3}, {"a", "b"}, "t"), Contains("3 counts for 2 classes"));
  std::filesystem::remove_all(out);
}

TEST_CASE("figures: text keeps every stroke of a long run of many-stroke digits", "[figures]") {
  // Each '8' is 7 quads of stb_easy_font: a buffer sized by stb's average dropped the last ones.
  const std::string out = temp_dir("eights");
  const std::string path = out + "/eights.png";
  write_png_grid(path, std::vector<float>(2 * 16 * 60, 1.0f), 1, 2, 1, 16, 60, {}, {"8", "88888888"});
  int W = 0, H = 0, channels = 0;
  unsigned char* pixels = stbi_load(path.c_str(), &W, &H, &channels, 1);
  REQUIRE(pixels);
  REQUIRE(W == grid_pixels(2, 60));
  int64_t black[2] = {0, 0};
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) black[x > 61] += pixels[y * W + x] == 0;
  stbi_image_free(pixels);
  CHECK(black[0] > 0);
  CHECK(black[1] == 8 * black[0]);
  std::filesystem::remove_all(out);
}
