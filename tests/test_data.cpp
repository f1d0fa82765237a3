// Data loaders: every format is written here in its exact on-disk layout (IDX raw and gzipped,
// SVHN .mat through matio, PNG folders written by stb), read back and checked value by value; every
// malformed input must throw a message that names the file and the problem.
#include <matio.h>
#include <stb_image_write.h>  // its implementation is in Debian's libstb (train/CMakeLists.txt)
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

#include "tests/fixtures.h"
#include "train/data.h"

using namespace equivae::data;
using namespace equivae::fixtures;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

void check_svhn_pixels(const Dataset& d) {
  REQUIRE(d.channels == 3);
  REQUIRE(d.height == 32);
  REQUIRE(d.width == 32);
  REQUIRE(d.images.size() == size_t(d.n) * 3072);
  size_t wrong = 0;
  for (size_t i = 0; i < size_t(d.n); ++i)
    for (size_t ch = 0; ch < 3; ++ch)
      for (size_t row = 0; row < 32; ++row)
        for (size_t col = 0; col < 32; ++col)
          wrong += d.images[((i * 3 + ch) * 32 + row) * 32 + col] !=
                   float(svhn_pixel(row, col, ch, i)) / 255.0f;
  REQUIRE(wrong == 0);
}

// Finds shared/data/mnist: $EQUIVAE_MNIST_DIR, else beside $EQUIVAE_REPO_ROOT (ctest sets it),
// else by walking up from the working directory.
std::string find_mnist_dir() {
  if (const char* env = std::getenv("EQUIVAE_MNIST_DIR")) return env;
  std::error_code ec;
  if (const char* root = std::getenv("EQUIVAE_REPO_ROOT")) {
    const fs::path p = fs::path(root).parent_path() / "shared" / "data" / "mnist";
    if (fs::is_directory(p, ec)) return p.string();
  }
  for (fs::path p = fs::current_path(ec); !p.empty(); p = p.parent_path()) {
    if (fs::is_directory(p / "shared" / "data" / "mnist", ec))
      return (p / "shared" / "data" / "mnist").string();
    if (p == p.parent_path()) break;
  }
  return "";
}

}  // namespace

// ---- IDX ---------------------------------------------------------------------------------------

TEST_CASE("data: IDX raw and gzipped files read back exactly") {
  TempDir dir;
  for (bool gz : {false, true}) {
    write_idx_pair(dir, gz ? "gz" : "raw", 13, gz);
    const std::string ext = gz ? ".gz" : "";
    const Dataset d =
        load_idx(dir / ((gz ? "gz" : "raw") + std::string("-images-idx3-ubyte") + ext),
                 dir / ((gz ? "gz" : "raw") + std::string("-labels-idx1-ubyte") + ext), "toy");
    CHECK(d.name == "toy");
    REQUIRE(d.n == 13);
    CHECK(d.channels == 1);
    CHECK(d.height == 4);
    CHECK(d.width == 3);
    CHECK(d.num_classes == 10);
    const auto pixels = test_pixels(13, 4, 3);
    REQUIRE(d.images.size() == pixels.size());
    for (size_t k = 0; k < pixels.size(); ++k) REQUIRE(d.images[k] == float(pixels[k]) / 255.0f);
    for (int64_t i = 0; i < 13; ++i) REQUIRE(d.labels[size_t(i)] == i % 10);
  }
}

TEST_CASE("data: IDX errors name the file and the problem") {
  TempDir dir;
  write_idx_pair(dir, "ok", 5, true);
  const std::string images = dir / "ok-images-idx3-ubyte.gz",
                    labels = dir / "ok-labels-idx1-ubyte.gz";

  SECTION("missing file") {
    const std::string missing = dir / "nope.gz";
    REQUIRE_THROWS_WITH(load_idx(missing, labels, "t"),
                        Contains(missing) && Contains("file not found"));
  }
  SECTION("a directory instead of a file") {
    REQUIRE_THROWS_WITH(load_idx(dir.path.string(), labels, "t"), Contains("not a regular file"));
  }
  SECTION("wrong magic: label and image files swapped") {
    REQUIRE_THROWS_WITH(
        load_idx(labels, images, "mnist"),
        Contains("mnist: " + labels +
                 ": wrong magic 0x00000801, expected 0x00000803 (an IDX image file)"));
    REQUIRE_THROWS_WITH(
        load_idx(images, images, "mnist"),
        Contains(images + ": wrong magic 0x00000803, expected 0x00000801 (an IDX label file)"));
  }
  SECTION("truncated header") {
    const std::string p = dir / "short";
    write_bytes(p, {0, 0, 8, 3, 0, 0}, false);
    REQUIRE_THROWS_WITH(
        load_idx(p, labels, "t"),
        Contains(p) && Contains("truncated header: 6 bytes, an IDX image file needs 16"));
    write_bytes(p, {0, 0}, false);
    REQUIRE_THROWS_WITH(
        load_idx(p, labels, "t"),
        Contains(p) && Contains("truncated header: 2 bytes, not an IDX image file"));
  }
  SECTION("truncated pixel data (raw and gzipped)") {
    for (bool gz : {false, true}) {
      const std::string p = dir / (gz ? "cut.gz" : "cut");
      auto bytes = idx_bytes(0x803, {5, 4, 3}, test_pixels(5, 4, 3));
      bytes.resize(bytes.size() - 7);
      write_bytes(p, bytes, gz);
      REQUIRE_THROWS_WITH(
          load_idx(p, labels, "t"),
          Contains(p) &&
              Contains("truncated: the header promises 60 bytes of data, the file has 53"));
    }
  }
  SECTION("a gzip stream cut short or corrupted") {
    auto gz = read_bytes(images);
    const std::string cut = dir / "cut-stream.gz", bad = dir / "bad-stream.gz";
    write_bytes(cut, std::vector<uint8_t>(gz.begin(), gz.begin() + int64_t(gz.size() / 2)), false);
    REQUIRE_THROWS_WITH(load_idx(cut, labels, "t"),
                        Contains(cut) && (Contains("truncated") || Contains("read error")));
    for (size_t k = 12; k < gz.size() - 8; ++k) gz[k] ^= 0x5a;
    write_bytes(bad, gz, false);
    REQUIRE_THROWS_WITH(load_idx(bad, labels, "t"),
                        Contains(bad) && (Contains("read error") || Contains("truncated")));
  }
  SECTION("trailing bytes") {
    const std::string p = dir / "long";
    auto bytes = idx_bytes(0x803, {5, 4, 3}, test_pixels(5, 4, 3));
    bytes.push_back(0);
    write_bytes(p, bytes, false);
    REQUIRE_THROWS_WITH(load_idx(p, labels, "t"), Contains(p) && Contains("the file is longer"));
  }
  SECTION("zero-sized image dimension") {
    const std::string p = dir / "flat";
    write_bytes(p, idx_bytes(0x803, {5, 0, 3}, {}), false);
    REQUIRE_THROWS_WITH(load_idx(p, labels, "t"), Contains(p) && Contains("bad dimension 1 = 0"));
  }
  SECTION("image and label counts differ") {
    const std::string p = dir / "four-labels";
    write_bytes(p, idx_bytes(0x801, {4}, test_labels(4)), false);
    REQUIRE_THROWS_WITH(load_idx(images, p, "t"),
                        Contains(images + " has 5 images but " + p + " has 4 labels"));
  }
  SECTION("label out of range") {
    const std::string p = dir / "label-ten";
    write_bytes(p, idx_bytes(0x801, {5}, {1, 2, 3, 10, 4}), false);
    REQUIRE_THROWS_WITH(load_idx(images, p, "t"),
                        Contains(p) && Contains("label 10 at index 3 is not a digit 0..9"));
  }
}

TEST_CASE("data: load_mnist splits a small fake MNIST directory") {
  TempDir dir;
  write_idx_pair(dir, "train", 20, true);  // the loader prefers .gz ...
  write_idx_pair(dir, "t10k", 6, false);   // ... and reads raw files too
  const Splits s = load_mnist(dir.path.string(), 4);
  CHECK(s.train.name == "mnist/train");
  CHECK(s.validation.name == "mnist/validation");
  CHECK(s.test.name == "mnist/test");
  REQUIRE(s.train.n == 16);
  REQUIRE(s.validation.n == 4);
  REQUIRE(s.test.n == 6);
  // validation = the LAST rows of the train file
  CHECK(s.validation.labels == std::vector<int32_t>{6, 7, 8, 9});
  CHECK(s.validation.images[0] == float((16 * 31) % 256) / 255.0f);
  CHECK(s.train.images.size() == 16 * 12);
  REQUIRE_THROWS_WITH(load_mnist(dir.path.string(), 20),
                      Contains("validation size 20 must be in [0, 20)"));
  fs::remove(dir / "t10k-labels-idx1-ubyte");
  REQUIRE_THROWS_WITH(
      load_mnist(dir.path.string()),
      Contains(dir.path.string()) &&
          Contains("neither t10k-labels-idx1-ubyte.gz nor t10k-labels-idx1-ubyte found"));
}

TEST_CASE("data: real MNIST (shared/data/mnist) loads with the paper's splits") {
  const std::string mnist = find_mnist_dir();
  if (mnist.empty()) {
    WARN("shared/data/mnist not found (set EQUIVAE_MNIST_DIR): real-MNIST checks not run");
    return;
  }
  const auto start = std::chrono::steady_clock::now();
  const Splits s = load_mnist(mnist);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  INFO("load_mnist took " << seconds << " s");
  REQUIRE(s.train.n == 55000);
  REQUIRE(s.validation.n == 5000);
  REQUIRE(s.test.n == 10000);
  for (const Dataset* d : {&s.train, &s.validation, &s.test}) {
    CHECK(d->channels == 1);
    CHECK(d->height == 28);
    CHECK(d->width == 28);
    const auto freq = class_frequencies(*d);
    CHECK(std::accumulate(freq.begin(), freq.end(), 0.0) == Approx(1.0));
    for (double f : freq) CHECK(f > 0.08);  // every digit is 9-11 % of MNIST
    const auto [lo, hi] = std::minmax_element(d->images.begin(), d->images.end());
    CHECK(*lo == 0.0f);
    CHECK(*hi == 1.0f);
  }
  CHECK(s.train.labels[0] == 5);  // the famous first training image
  CHECK(s.test.labels[0] == 7);
  // Release builds take about 0.4 s; a timing assertion would only make slow CI runs flaky.
  if (seconds > 3.0) WARN("load_mnist took " << seconds << " s, expected < 3 s");
}

// ---- SVHN --------------------------------------------------------------------------------------

TEST_CASE("data: SVHN .mat in SVHN's layout reads back as NCHW with 10 -> 0") {
  TempDir dir;
  const std::vector<double> y = {10, 1, 5, 10, 9};
  struct Case {
    const char* file;
    mat_ft version;
    matio_compression compression;
  };
  for (const Case& c : {Case{"v5.mat", MAT_FT_MAT5, MAT_COMPRESSION_NONE},
                        Case{"v5z.mat", MAT_FT_MAT5, MAT_COMPRESSION_ZLIB},
                        Case{"v73.mat", MAT_FT_MAT73, MAT_COMPRESSION_NONE}}) {
    const std::string path = dir / c.file;
    if (!write_mat(path, c.version, c.compression, {svhn_x(5), svhn_y(y)})) {
      WARN("this matio cannot write " << c.file << " (MAT 7.3 needs HDF5): not tested");
      continue;
    }
    INFO(c.file);
    const Dataset d = load_svhn_mat(path, "svhn/toy");
    REQUIRE(d.n == 5);
    CHECK(d.num_classes == 10);
    CHECK(d.labels == std::vector<int32_t>{0, 1, 5, 0, 9});
    check_svhn_pixels(d);
    // X(row 1, col 30, ch 2, n 3) lands at NCHW [3][2][1][30].
    CHECK(d.images[((3 * 3 + 2) * 32 + 1) * 32 + 30] == float(svhn_pixel(1, 30, 2, 3)) / 255.0f);
  }
  // Some converted copies store y as uint8.
  const std::string small_y = dir / "uint8-y.mat";
  REQUIRE(write_mat(small_y, MAT_FT_MAT5, MAT_COMPRESSION_NONE,
                    {svhn_x(2), MatVarSpec{"y", MAT_C_UINT8, MAT_T_UINT8, {2, 1}, {10, 4}}}));
  CHECK(load_svhn_mat(small_y, "svhn/u8").labels == std::vector<int32_t>{0, 4});
  // One image: MATLAB stores X as 32x32x3.
  const std::string one = dir / "one.mat";
  REQUIRE(write_mat(one, MAT_FT_MAT5, MAT_COMPRESSION_NONE, {svhn_x(1, true), svhn_y({3})}));
  const Dataset d = load_svhn_mat(one, "svhn/one");
  REQUIRE(d.n == 1);
  CHECK(d.labels[0] == 3);
  check_svhn_pixels(d);
}

TEST_CASE("data: bad SVHN .mat files throw clear errors") {
  TempDir dir;
  const std::string p = dir / "bad.mat";
  auto check = [&](std::vector<MatVarSpec> vars, const std::string& problem) {
    fs::remove(p);
    REQUIRE(write_mat(p, MAT_FT_MAT5, MAT_COMPRESSION_NONE, std::move(vars)));
    REQUIRE_THROWS_WITH(load_svhn_mat(p, "svhn/x"), Contains("svhn/x: " + p + ": " + problem));
  };
  check({svhn_x(2)}, "no variable y");
  check({svhn_y({1, 2})}, "no variable X");
  {
    auto x = svhn_x(2);
    x.dims = {32, 32, 6};  // the same bytes with the channel count wrong
    check({x, svhn_y({1, 2})}, "X is 32x32x6, expected 32x32x3xN");
  }
  {
    std::vector<double> xd(32 * 32 * 3 * 2, 0.5);
    check({MatVarSpec{"X", MAT_C_DOUBLE, MAT_T_DOUBLE, {32, 32, 3, 2}, raw(xd)}, svhn_y({1, 2})},
          "X is double, expected real uint8");
  }
  check({svhn_x(2), svhn_y({1, 2, 3})}, "y is 3x1, expected 2x1");
  check({svhn_x(3), svhn_y({1, 11, 2})}, "label 11 at index 1 is not in 1..10");
  check({svhn_x(2), svhn_y({0, 2})}, "label 0 at index 0 is not in 1..10");
  check({svhn_x(2), svhn_y({1.5, 2})}, "label 1.5 at index 0 is not in 1..10");

  {
    const std::vector<uint8_t> text_y = {'1', '2'};
    check({svhn_x(2), MatVarSpec{"y", MAT_C_CHAR, MAT_T_UINT8, {2, 1}, text_y}},
          "y is char, expected a real numeric array");
  }

  const std::string text = dir / "text.mat";
  write_bytes(text, std::vector<uint8_t>(200, 'a'), false);
  REQUIRE_THROWS_WITH(load_svhn_mat(text, "svhn/x"),
                      Contains(text) && Contains("not a MAT 5 (v6, v7) or MAT 7.3 file"));
  REQUIRE_THROWS_WITH(load_svhn_mat(dir / "absent.mat", "svhn/x"),
                      Contains("absent.mat: file not found"));
}

TEST_CASE("data: load_svhn splits train/validation and reads test") {
  TempDir dir;
  REQUIRE(write_mat(dir / "train_32x32.mat", MAT_FT_MAT5, MAT_COMPRESSION_ZLIB,
                    {svhn_x(7), svhn_y({1, 2, 3, 4, 5, 6, 10})}));
  REQUIRE(write_mat(dir / "test_32x32.mat", MAT_FT_MAT5, MAT_COMPRESSION_NONE,
                    {svhn_x(2), svhn_y({10, 10})}));
  Splits s = load_svhn(dir.path.string(), 3);
  REQUIRE(s.train.n == 4);
  REQUIRE(s.validation.n == 3);
  REQUIRE(s.test.n == 2);
  CHECK(s.train.name == "svhn/train");
  CHECK(s.validation.labels == std::vector<int32_t>{5, 6, 0});
  CHECK(s.test.labels == std::vector<int32_t>{0, 0});
  // The spec's normalisation: statistics of the training split, applied to all three.
  const ChannelStats stats = compute_channel_stats(s.train);
  for (Dataset* d : {&s.train, &s.validation, &s.test}) standardize(*d, stats);
  const ChannelStats after = compute_channel_stats(s.train);
  for (int c = 0; c < 3; ++c) {
    CHECK(std::abs(after.mean[size_t(c)]) < 1e-5);
    CHECK(after.stddev[size_t(c)] == Approx(1.0).epsilon(1e-5));
  }
}

// ---- image folders -----------------------------------------------------------------------------

TEST_CASE("data: image folders give sorted classes and CHW pixels") {
  TempDir dir;
  auto png = [&](const std::string& rel, int w, int h, int comp, uint8_t base) {
    fs::create_directories((dir.path / rel).parent_path());
    std::vector<uint8_t> px(size_t(w * h * comp));
    for (size_t k = 0; k < px.size(); ++k) px[k] = uint8_t(base + k);
    REQUIRE(stbi_write_png((dir / rel).c_str(), w, h, comp, px.data(), w * comp) != 0);
    return px;
  };
  SECTION("grey images, two classes") {
    png("zebra/a.png", 4, 3, 1, 100);
    png("cat/b.png", 4, 3, 1, 10);
    png("cat/a.png", 4, 3, 1, 0);
    std::ofstream(dir / "zebra/.hidden") << "skipped";
    std::ofstream(dir / "zebra/notes.txt") << "skipped, counted";
    std::ofstream(dir / "cat/Thumbs.db") << "skipped, counted";
    const Dataset d = load_image_folder(dir.path.string(), "mine");
    CHECK(d.class_names == std::vector<std::string>{"cat", "zebra"});
    CHECK(d.paths == std::vector<std::string>{"cat/a.png", "cat/b.png", "zebra/a.png"});
    CHECK(d.skipped_files == 2);
    REQUIRE(d.n == 3);
    CHECK(d.num_classes == 2);
    CHECK(d.channels == 1);
    CHECK(d.height == 3);
    CHECK(d.width == 4);
    CHECK(d.labels == std::vector<int32_t>{0, 0, 1});
    CHECK(d.image(0)[5] == 5.0f / 255.0f);   // cat/a.png first
    CHECK(d.image(1)[0] == 10.0f / 255.0f);  // then cat/b.png
    CHECK(d.image(2)[11] == 111.0f / 255.0f);
  }
  SECTION("RGB is stored channel-major") {
    const auto px = png("only/x.png", 2, 2, 3, 0);
    const Dataset d = load_image_folder(dir.path.string(), "rgb");
    REQUIRE(d.channels == 3);
    for (int p = 0; p < 4; ++p)
      for (int c = 0; c < 3; ++c)
        CHECK(d.images[size_t(c * 4 + p)] == float(px[size_t(p * 3 + c)]) / 255.0f);
  }
  SECTION("inconsistent sizes name the offending file") {
    png("a/1.png", 4, 3, 1, 0);
    png("b/2.png", 5, 3, 1, 0);
    REQUIRE_THROWS_WITH(load_image_folder(dir.path.string(), "mine"),
                        Contains(dir / "b/2.png") &&
                            Contains("image is 5x3 with 1 channel(s), but") &&
                            Contains("1.png is 4x3 with 1"));
  }
  SECTION("--image-size resizes every image, whatever its size") {
    png("a/1.png", 4, 3, 1, 0);
    png("a/2.png", 8, 8, 1, 0);
    std::vector<uint8_t> flat(size_t(6 * 6), 200);
    fs::create_directories(dir.path / "b");
    REQUIRE(stbi_write_png((dir / "b/3.png").c_str(), 6, 6, 1, flat.data(), 6) != 0);
    const Dataset d = load_image_folder(dir.path.string(), "mine", kDefaultMaxImagePixels, 5);
    REQUIRE(d.n == 3);
    CHECK(d.height == 5);
    CHECK(d.width == 5);
    CHECK(d.images.size() == size_t(3 * 25));
    for (int k = 0; k < 25; ++k) CHECK(d.image(2)[k] == Approx(200.0f / 255.0f).margin(1e-5));  // a flat image stays flat
    CHECK_THROWS_WITH(load_image_folder(dir.path.string(), "mine", 100, 11), Contains("image size 11"));
  }
  SECTION("inconsistent channels") {
    png("a/1.png", 4, 3, 1, 0);
    png("a/2.png", 4, 3, 3, 0);
    REQUIRE_THROWS_WITH(load_image_folder(dir.path.string(), "mine"),
                        Contains("2.png: image is 4x3 with 3 channel(s)"));
  }
  SECTION("undecodable file, empty class, no classes") {
    fs::create_directories(dir.path / "a");
    std::ofstream(dir / "a/notes.png") << "not an image";
    REQUIRE_THROWS_WITH(load_image_folder(dir.path.string(), "mine"),
                        Contains("notes.png: not a PNG or JPEG file"));
    fs::remove(dir / "a/notes.png");
    std::ofstream(dir / "a/notes.txt") << "not an image either, and skipped";
    REQUIRE_THROWS_WITH(load_image_folder(dir.path.string(), "mine"),
                        Contains("class folder has no images"));
    fs::remove(dir / "a/notes.txt");
    fs::remove(dir / "a");
    REQUIRE_THROWS_WITH(load_image_folder(dir.path.string(), "mine"),
                        Contains("no class folders"));
    REQUIRE_THROWS_WITH(load_image_folder(dir / "absent", "mine"),
                        Contains("not a directory"));
  }
}

// ---- statistics, slices, label subsets ---------------------------------------------------------

namespace {
Dataset toy(int64_t n, int classes) {
  Dataset d;
  d.name = "toy";
  d.n = n, d.channels = 2, d.height = 2, d.width = 3;
  d.num_classes = classes;
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < 6; ++k) d.images.push_back(float(i) + 0.1f * float(k));  // channel 0
    for (int k = 0; k < 6; ++k) d.images.push_back(0.25f);                       // constant
    d.labels.push_back(int32_t(i % classes));
  }
  return d;
}
}  // namespace

TEST_CASE("data: channel statistics and standardisation") {
  Dataset d = toy(10, 2);
  const ChannelStats s = compute_channel_stats(d);
  CHECK(s.mean[0] == Approx(4.5 + 0.25));
  CHECK(s.mean[1] == Approx(0.25));
  CHECK(s.stddev[1] == 1.0f);  // a constant channel must not divide by zero
  standardize(d, s);
  const ChannelStats after = compute_channel_stats(d);
  CHECK(std::abs(after.mean[0]) < 1e-5);
  CHECK(after.stddev[0] == Approx(1.0).epsilon(1e-5));
  CHECK(d.images[6] == 0.0f);
  ChannelStats wrong{{0.f}, {1.f}};
  REQUIRE_THROWS_AS(standardize(d, wrong), std::invalid_argument);
  REQUIRE_THROWS(compute_channel_stats(Dataset{}));
}

TEST_CASE("data: slice and subset") {
  const Dataset d = toy(10, 3);
  const Dataset s = d.slice(2, 5);
  CHECK(s.name == "toy[2:5]");
  REQUIRE(s.n == 3);
  CHECK(s.labels == std::vector<int32_t>{2, 0, 1});
  CHECK(s.image(0)[0] == 2.0f);
  const Dataset u = d.subset({9, 0, 9});
  CHECK(u.name == "toy[3 rows]");
  CHECK(u.labels == std::vector<int32_t>{0, 0, 0});
  CHECK(u.image(0)[1] == Approx(9.1f));
  CHECK(d.slice(4, 4).n == 0);
  REQUIRE_THROWS_AS(d.slice(5, 11), std::out_of_range);
  REQUIRE_THROWS_AS(d.subset({10}), std::out_of_range);
}

TEST_CASE("data: a label subset of the MNIST training split is balanced and seeded and never drawn from validation") {
  TempDir dir;
  write_idx_pair(dir, "train", 60, false);  // labels i % 10; the first pixel, (31 i) % 256, names row i
  write_idx_pair(dir, "t10k", 10, false);
  const Splits s = load_mnist(dir.path.string(), 20);  // train: file rows 0-39, validation: 40-59
  std::set<float> validation_images;
  for (int64_t i = 0; i < s.validation.n; ++i) validation_images.insert(s.validation.image(i)[0]);
  REQUIRE(validation_images.size() == 20);
  for (uint64_t seed : {1, 2, 3}) {
    const auto rows = balanced_label_subset(s.train, 3, seed);
    REQUIRE(rows.size() == 30);
    CHECK(balanced_label_subset(s.train, 3, seed) == rows);
    std::vector<int> per_class(10, 0);
    for (int64_t r : rows) {
      REQUIRE(r < s.train.n);
      ++per_class[size_t(s.train.labels[size_t(r)])];
      CHECK(validation_images.count(s.train.image(r)[0]) == 0);
    }
    CHECK(per_class == std::vector<int>(10, 3));
  }
  CHECK(balanced_label_subset(s.train, 3, 1) != balanced_label_subset(s.train, 3, 2));
}

TEST_CASE("data: class frequencies and balanced label subsets") {
  const Dataset d = toy(1000, 10);
  const auto f = class_frequencies(d);
  REQUIRE(f.size() == 10);
  for (double x : f) CHECK(x == Approx(0.1));
  Dataset skewed = toy(4, 2);
  skewed.labels = {0, 0, 0, 1};
  CHECK(class_frequencies(skewed) == std::vector<double>{0.75, 0.25});

  const auto rows = balanced_label_subset(d, 10, 123);
  REQUIRE(rows.size() == 100);
  CHECK(std::is_sorted(rows.begin(), rows.end()));
  CHECK(std::set<int64_t>(rows.begin(), rows.end()).size() == 100);
  std::vector<int> per_class(10, 0);
  for (int64_t r : rows) ++per_class[size_t(d.labels[size_t(r)])];
  CHECK(per_class == std::vector<int>(10, 10));
  CHECK(balanced_label_subset(d, 10, 123) == rows);  // a recorded seed replays the subset
  CHECK(balanced_label_subset(d, 10, 124) != rows);
  CHECK(balanced_label_subset(d, 100, 5).size() == 1000);  // every row
  REQUIRE_THROWS_WITH(balanced_label_subset(d, 101, 5),
                      Contains("class 0 has 100 rows, fewer than the 101"));
  REQUIRE_THROWS_AS(balanced_label_subset(d, 0, 5), std::invalid_argument);
}
