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
  const std::vector<std::string> names = {"samples.png", "swap.png", "interpolation.png", "latents.tsv", "r_plane.png",
                                          "v_grid.png"};
  REQUIRE(paths.size() == names.size());
  for (size_t i = 0; i < names.size(); ++i) CHECK(paths[i] == out + "/" + names[i]);

  const int K = 4, S = 8;
  CHECK(png_size(out + "/samples.png") == std::pair(grid_pixels(K, S), grid_pixels(8, S)));
  CHECK(png_size(out + "/swap.png") == std::pair(grid_pixels(K, S), grid_pixels(K + 1, S)));
  CHECK(png_size(out + "/interpolation.png") == std::pair(grid_pixels(10, S), grid_pixels(K, S)));
  CHECK(png_size(out + "/r_plane.png") == std::pair(grid_pixels(11, S), grid_pixels(11, S)));
  // 4 classes: 2 blocks of 11 x 11 per row, 2 rows, one blank tile between blocks
  CHECK(png_size(out + "/v_grid.png") == std::pair(grid_pixels(23, S), grid_pixels(23, S)));

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
  CHECK_FALSE(std::filesystem::exists(out + "/r_plane.png"));

  const data::Dataset one_per_class = s.validation.slice(0, 4);  // labels 0, 1, 2, 3
  CHECK_THROWS_WITH(write_figures(t.model(), Device::cpu, one_per_class, out, 7), Contains("every class needs two validation images"));
  std::filesystem::remove_all(out);
}
