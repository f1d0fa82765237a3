// Hostile files: every reader of a downloaded file (checkpoints and their model metadata, IDX,
// .mat, image folders) refuses a malformed or lying file with a message naming the file and the
// field, before allocating what the file claims: no crash, no undefined behaviour, no gigabytes.
// Each hostile input is built here, byte by byte where the writers would not produce it.
#include <stb_image_write.h>  // PNG, JPEG and BMP fixtures (Debian's libstb holds the writer)
#include <zlib.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "model/equivae.h"
#include "tests/fixtures.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/trainer.h"

using namespace equivae;
using namespace equivae::fixtures;
using Catch::Contains;
using json = nlohmann::json;

namespace {

// A safetensors file with this header and data; __metadata__.crc32 is filled in (when the
// header has a __metadata__ object without one) so that the file reaches the checks behind it.
std::string write_safetensors(const TempDir& dir, const std::string& name, json header, const std::string& data) {
  if (header.is_object() && header.contains("__metadata__") && header["__metadata__"].is_object() &&
      !header["__metadata__"].contains("crc32"))
    header["__metadata__"]["crc32"] =
        std::to_string(crc32(0L, reinterpret_cast<const Bytef*>(data.data()), uInt(data.size())));
  const std::string text = header.dump();
  const uint64_t len = text.size();
  const std::string path = dir / name;
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << text << data;
  return path;
}

std::string floats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// A store of two parameters, a [2] and b [3], and the header entries of a file that holds them.
struct TwoParameters {
  ParameterStore store;
  TwoParameters() {
    store.declare("a", {2}, Init::zeros());
    store.declare("b", {3}, Init::zeros());
    store.allocate(1);
  }
};
json good_entries() {
  return {{"a", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}},
          {"b", {{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {8, 20}}}},
          {"__metadata__", json::object()}};
}
const std::string kFiveValues = floats({1, 2, 3, 4, 5});

// Loading `header` + `data` into TwoParameters must throw a message with the file and `problem`,
// and leave the parameters untouched.
void check_refused(const TempDir& dir, const json& header, const std::string& data, const std::string& problem) {
  static int count = 0;
  const std::string path = write_safetensors(dir, "bad" + std::to_string(++count) + ".safetensors", header, data);
  TwoParameters p;
  INFO(header.dump());
  CHECK_THROWS_WITH(load_checkpoint(path, p.store, nullptr), Contains(path) && Contains(problem));
  CHECK(p.store.values().to_vector() == std::vector<double>(7, 0.0));  // a [2], gap [2], b [3]
}

std::string model_text(const std::function<void(json&)>& edit) {
  json j = json::parse(model_json(ModelConfig{}));
  edit(j);
  return j.dump();
}

}  // namespace

// ---- sizes and the parameter store --------------------------------------------------------------

TEST_CASE("hostile: shape_numel refuses negative dimensions and overflow instead of wrapping", "[hostile]") {
  CHECK(shape_numel({3, 4, 5}) == 60);
  CHECK(shape_numel({}) == 1);
  CHECK(shape_numel({7, 0, int64_t(1) << 62}) == 0);
  CHECK_THROWS_WITH(shape_numel({4, -1}), Contains("negative") && Contains("[4,-1]"));
  CHECK_THROWS_WITH(shape_numel({int64_t(1) << 31, int64_t(1) << 31, 4}), Contains("2^63"));
  CHECK_THROWS_WITH(shape_numel({int64_t(1) << 62, 2}), Contains("2^63"));
  // A tensor larger than the address space is an error, not a bad_alloc or a short buffer.
  CHECK_THROWS_AS(Tensor::empty({int64_t(1) << 62}, DType::f64), ShapeError);
}

TEST_CASE("hostile: the parameter store and the model refuse negative sizes before allocating", "[hostile]") {
  ParameterStore store;
  CHECK_THROWS_WITH(store.declare("w", {1, -1, 5, 5}, Init::zeros()), Contains("negative"));
  CHECK(store.numel() == 0);
  store.declare("big", {int64_t(1) << 62}, Init::zeros());
  CHECK_THROWS_WITH(store.declare("bigger", {int64_t(1) << 62, 2}, Init::zeros()), Contains("2^63"));
  CHECK_THROWS_WITH(store.declare("more", {int64_t(1) << 62}, Init::zeros()), Contains("more") && Contains("2^63"));

  ModelConfig m;
  m.filters = {1, -1, 1};  // what issue 14's 206-byte checkpoint declared
  ParameterStore params;
  CHECK_THROWS_WITH(EquiVAE(m, params), Contains("bad model configuration") && Contains("filters (1,-1,1)"));
  m.filters = {1, 0, 1};
  ParameterStore params0;
  CHECK_THROWS_AS(EquiVAE(m, params0), ShapeError);
}

// ---- checkpoint headers ----------------------------------------------------------------------------

TEST_CASE("hostile: checkpoint tensor entries missing a field are refused by name", "[hostile][checkpoint]") {
  TempDir dir;
  {
    TwoParameters p;  // the good file loads
    const std::string path = write_safetensors(dir, "good.safetensors", good_entries(), kFiveValues);
    load_checkpoint(path, p.store, nullptr);
    CHECK(p.store.values().to_vector() == std::vector<double>{1, 2, 0, 0, 3, 4, 5});  // b starts aligned
  }
  for (const char* field : {"shape", "dtype", "data_offsets"}) {
    json h = good_entries();
    h["b"].erase(field);
    check_refused(dir, h, kFiveValues, fmt::format("tensor b has no \"{}\"", field));
  }
  json empty = good_entries();
  empty["a"] = json::object();  // "h.conv0.weight":{} of the issue
  check_refused(dir, empty, kFiveValues, "tensor a has no \"dtype\"");
  json not_object = good_entries();
  not_object["a"] = 7;
  check_refused(dir, not_object, kFiveValues, "tensor a is 7, expected an object");
}

TEST_CASE("hostile: checkpoint numbers that are not integers in range are refused, not converted", "[hostile][checkpoint]") {
  TempDir dir;
  auto with = [](const std::string& tensor, const std::string& key, json value) {
    json h = good_entries();
    h[tensor][key] = std::move(value);
    return h;
  };
  check_refused(dir, with("a", "shape", {1e300}), kFiveValues, "tensor a: a dimension of its shape is 1e+300");
  check_refused(dir, with("a", "shape", {2.5}), kFiveValues, "tensor a: a dimension of its shape is 2.5");
  check_refused(dir, with("a", "shape", {-2}), kFiveValues, "tensor a: a dimension of its shape is -2");
  check_refused(dir, with("a", "shape", {"2"}), kFiveValues, "tensor a: a dimension of its shape is \"2\"");
  check_refused(dir, with("a", "shape", {int64_t(1) << 62, int64_t(1) << 62}), kFiveValues, "more than 2^63 elements");
  check_refused(dir, with("a", "shape", {1, 1, 1, 1, 1, 1, 1, 1, 2}), kFiveValues, "at most 8 dimensions");
  check_refused(dir, with("a", "data_offsets", {0, 1e300}), kFiveValues, "tensor a: data_offsets end is 1e+300");
  check_refused(dir, with("a", "data_offsets", {0.0, 8.0}), kFiveValues, "tensor a: data_offsets begin is 0.0");
  check_refused(dir, with("a", "data_offsets", {0, 8, 9}), kFiveValues, "data_offsets [0,8,9] is not [begin, end]");
  check_refused(dir, with("b", "data_offsets", {8, 24}), kFiveValues, "tensor b: data_offsets end is 24, expected an integer in [0, 20]");
  check_refused(dir, with("b", "data_offsets", {12, 8}), kFiveValues, "do not hold its [3] F32 values");
  check_refused(dir, with("a", "dtype", "BF16"), kFiveValues, "tensor a: dtype \"BF16\" is not one of");
  check_refused(dir, with("a", "dtype", 4), kFiveValues, "tensor a: dtype 4 is not one of");
  // a [2] and b [3] share bytes 4..8.
  check_refused(dir, with("b", "data_offsets", {4, 16}), kFiveValues, "tensors a and b overlap");
}

TEST_CASE("hostile: checkpoint metadata of the wrong type is refused by field", "[hostile][checkpoint]") {
  TempDir dir;
  json h = good_entries();
  h["__metadata__"]["epoch"] = 3;  // safetensors metadata values are strings
  check_refused(dir, h, kFiveValues, "metadata field epoch is 3, expected a string");
  h["__metadata__"] = json::array();
  check_refused(dir, h, kFiveValues, "__metadata__ is [], expected an object");
  check_refused(dir, json::array({1, 2}), kFiveValues, "header is a JSON array, expected an object");
  json none = good_entries();
  none.erase("__metadata__");
  check_refused(dir, none, kFiveValues, "header has no \"__metadata__\"");

  const std::string path = write_safetensors(dir, "meta.safetensors", good_entries(), kFiveValues);
  const std::map<std::string, std::string> meta = {{"seed", "12abc"}, {"epoch", "-1"}, {"step", "1e3"},
                                                   {"big", "99999999999999999999999"}, {"ok", "42"}};
  CHECK(metadata_count(path, meta, "ok", 100) == 42);
  for (const char* field : {"seed", "epoch", "step", "big"})
    CHECK_THROWS_WITH(metadata_count(path, meta, field, UINT64_MAX),
                      Contains(path) && Contains(fmt::format("metadata field {} is \"{}\"", field, meta.at(field))));
  CHECK_THROWS_WITH(metadata_count(path, meta, "ok", 41), Contains("expected an integer in [0, 41]"));
  CHECK_THROWS_WITH(metadata_count(path, meta, "absent", 1), Contains(path) && Contains("no absent in the metadata"));
}

TEST_CASE("hostile: NaN or Inf weights in a checkpoint are refused on load", "[hostile][checkpoint]") {
  TempDir dir;
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()})
    check_refused(dir, good_entries(), floats({1, 2, 3, bad, 5}), "tensor b holds NaN or Inf");
}

// ---- a checkpoint's model metadata ---------------------------------------------------------------

TEST_CASE("hostile: model metadata fields are checked by type and range, naming the field", "[hostile][checkpoint]") {
  CHECK(model_json(model_from_json(model_json(ModelConfig{}))) == model_json(ModelConfig{}));
  struct Case {
    std::function<void(json&)> edit;
    std::string problem;
  };
  const std::vector<Case> cases = {
      {[](json& j) { j["filters"] = {1, -1, 1}; }, "model.filters[1] is -1, expected an integer in [1, 65536]"},
      {[](json& j) { j["filters"] = json::array(); }, "model.filters is [], expected 1 to 16"},
      {[](json& j) { j["filters"] = std::vector<int>(17, 4); }, "model.filters is"},
      {[](json& j) { j["filters"] = 16; }, "model.filters is 16"},
      {[](json& j) { j["hidden"] = 1e300; }, "model.hidden is 1e+300"},
      {[](json& j) { j["hidden"] = 12.5; }, "model.hidden is 12.5"},
      {[](json& j) { j["hidden"] = "128"; }, "model.hidden is \"128\""},
      {[](json& j) { j["image_size"] = 0; }, "model.image_size is 0"},
      {[](json& j) { j["channels"] = -3; }, "model.channels is -3"},
      {[](json& j) { j["num_classes"] = 1; }, "model.num_classes is 1"},
      {[](json& j) { j["d_v"] = 18446744073709551615ull; }, "model.d_v is 18446744073709551615"},
      {[](json& j) { j.erase("d_r"); }, "model has no \"d_r\""},
      {[](json& j) { j["likelihood"] = "poisson"; }, "model.likelihood is \"poisson\""},
      {[](json& j) { j["semi_supervised"] = 1; }, "model.semi_supervised is 1"},
      {[](json& j) { j["classifier_dropout"] = 1.0; }, "model.classifier_dropout is 1.0"},
  };
  for (const Case& c : cases) {
    const std::string text = model_text(c.edit);
    INFO(text);
    CHECK_THROWS_WITH(model_from_json(text), Contains(c.problem));
  }
  CHECK_THROWS_WITH(model_from_json("[1,2"), Contains("model is not valid JSON"));
  CHECK_THROWS_WITH(model_from_json("[1,2]"), Contains("model is [1,2], expected an object"));
}

TEST_CASE("hostile: a checkpoint whose model is larger than the file is refused before allocating", "[hostile][checkpoint]") {
  TempDir dir;
  json h = good_entries();
  h["__metadata__"]["model"] = model_text([](json& j) { j["hidden"] = 10000; });  // the huge model
  const std::string path = write_safetensors(dir, "huge.safetensors", h, kFiveValues);
  const auto meta = read_checkpoint_metadata(path);
  CHECK_THROWS_WITH(checkpoint_model(path, meta),
                    Contains(path) && Contains("H 10000") && Contains("parameters, more than the") && Contains("file holds"));
  h["__metadata__"]["model"] = model_text([](json& j) { j["filters"] = {1, -1, 1}; });
  const std::string negative = write_safetensors(dir, "negative.safetensors", h, kFiveValues);
  CHECK_THROWS_WITH(checkpoint_model(negative, read_checkpoint_metadata(negative)),
                    Contains(negative) && Contains("metadata field model.filters[1] is -1"));
  // A real (small) model in a file that holds its parameters passes.
  ModelConfig small;
  small.filters = {2, 2};
  small.hidden = 4, small.d_r = 2, small.d_v = 2;
  ParameterStore params;
  EquiVAE model(small, params);
  params.allocate(3);
  const std::string real = dir / "real.safetensors";
  save_checkpoint(real, params, nullptr, {{"model", model_json(small)}});
  CHECK(model_json(checkpoint_model(real, read_checkpoint_metadata(real))) == model_json(small));
}

// ---- IDX -----------------------------------------------------------------------------------------

TEST_CASE("hostile: IDX headers the file cannot back are refused before inflating", "[hostile][data]") {
  TempDir dir;
  write_bytes(dir / "labels.gz", idx_bytes(0x801, {64}, test_labels(64)), true);
  // 64 MB promised by a gzip file of about 100 bytes: at most 1032 x its size inflates.
  write_bytes(dir / "small.gz", idx_bytes(0x803, {64, 1000, 1000}, test_pixels(2, 4, 4)), true);
  CHECK_THROWS_WITH(data::load_idx(dir / "small.gz", dir / "labels.gz", "bomb"),
                    Contains("bomb: " + dir / "small.gz") && Contains("the header promises 64000000 bytes") &&
                        Contains("gzip file can hold"));
  // The same lie in a raw file.
  write_bytes(dir / "small.raw", idx_bytes(0x803, {64, 1000, 1000}, test_pixels(2, 4, 4)), false);
  CHECK_THROWS_WITH(data::load_idx(dir / "small.raw", dir / "labels.gz", "lie"),
                    Contains("truncated: the header promises 64000000 bytes of data, the file has 32"));
  // 2^32 - 1 images of 65536 x 65536: the figure, not an attempt.
  write_bytes(dir / "absurd.gz", idx_bytes(0x803, {0xffffffffu, 65536, 65536}, {}), true);
  CHECK_THROWS_WITH(data::load_idx(dir / "absurd.gz", dir / "labels.gz", "absurd"),
                    Contains("absurd: " + dir / "absurd.gz") && Contains("GiB of memory"));
  // Promised 16 bytes, holds 17: the one byte read past the promise is the excess.
  write_bytes(dir / "long.gz", idx_bytes(0x803, {1, 4, 4}, test_pixels(2, 4, 4)), true);
  CHECK_THROWS_WITH(data::load_idx(dir / "long.gz", dir / "labels.gz", "long"),
                    Contains("16 bytes of data expected, but the file is longer"));
}

TEST_CASE("hostile: a data set larger than the machine's memory is refused with the figure", "[hostile][data]") {
  CHECK_NOTHROW(data::require_memory("set", "p", 1000, 4, "its rows"));
  CHECK_THROWS_WITH(data::require_memory("set", "/d/p", uint64_t(1) << 40, 1 << 20, "its 2^40 rows"),
                    Contains("set: /d/p: its 2^40 rows need") && Contains("GiB), more than this machine's"));
  // count x bytes overflowing 2^64 counts as too much, not as a small wrapped number.
  CHECK_THROWS_WITH(data::require_memory("set", "p", uint64_t(1) << 62, 8, "x"), Contains("18446744073709551615 bytes"));
}

// ---- .mat ------------------------------------------------------------------------------------------

TEST_CASE("hostile: a .mat variable declaring more than the file holds is refused before matio reads it", "[hostile][data]") {
  TempDir dir;
  const std::string path = dir / "lie.mat";
  REQUIRE(write_mat(path, MAT_FT_MAT5, MAT_COMPRESSION_NONE, {svhn_x(2), svhn_y({1, 2})}));
  // X's dimensions array (int32 32, 32, 3, 2) gets a billion images.
  std::vector<uint8_t> bytes = read_bytes(path);
  const int32_t dims[4] = {32, 32, 3, 2}, lie = 1000000000;
  const auto at = std::search(bytes.begin(), bytes.end(), reinterpret_cast<const uint8_t*>(dims),
                              reinterpret_cast<const uint8_t*>(dims) + sizeof dims);
  REQUIRE(at != bytes.end());
  std::memcpy(&*at + 12, &lie, 4);
  write_bytes(path, bytes, false);
  CHECK_THROWS_WITH(data::load_svhn_mat(path, "svhn/x"),
                    Contains("svhn/x: " + path) && Contains("X declares 1000000000 images") &&
                        Contains("more than the") && Contains("file can hold"));
}

// ---- image folders ------------------------------------------------------------------------------

namespace {

std::vector<uint8_t> png_bytes(const TempDir& dir, int w, int h, int comp, uint8_t value) {
  const std::vector<uint8_t> px(size_t(w * h * comp), value);
  REQUIRE(stbi_write_png((dir / "tmp.png").c_str(), w, h, comp, px.data(), w * comp) != 0);
  return read_bytes(dir / "tmp.png");
}

// A PNG whose IHDR claims width x height (CRC fixed up, so only the size lies).
std::vector<uint8_t> png_claiming(std::vector<uint8_t> png, uint32_t width, uint32_t height) {
  for (int i = 0; i < 4; ++i) png[16 + i] = uint8_t(width >> (24 - 8 * i)), png[20 + i] = uint8_t(height >> (24 - 8 * i));
  const uint32_t crc = uint32_t(crc32(0L, png.data() + 12, 17));  // "IHDR" + its 13 bytes
  for (int i = 0; i < 4; ++i) png[29 + i] = uint8_t(crc >> (24 - 8 * i));
  return png;
}

// Writes one image as the only file of class folder "c" of a fresh folder and loads it.
data::Dataset load_one(const TempDir& dir, const std::string& file, const std::vector<uint8_t>& bytes,
                       int64_t max_pixels = data::kDefaultMaxImagePixels) {
  fs::remove_all(dir.path / "set");
  fs::create_directories(dir.path / "set" / "c");
  write_bytes(dir / ("set/c/" + file), bytes, false);
  return data::load_image_folder(dir / "set", "folder", max_pixels);
}

}  // namespace

TEST_CASE("hostile: images above the pixel limit are refused before decoding", "[hostile][data]") {
  TempDir dir;
  const std::vector<uint8_t> small = png_bytes(dir, 300, 200, 1, 9);
  CHECK(load_one(dir, "ok.png", small).width == 300);
  CHECK_THROWS_WITH(load_one(dir, "big.png", small, 50000),
                    Contains("big.png") && Contains("300 x 200 pixels, more than the limit of 50000") &&
                        Contains("--max-image-pixels"));
  // A few hundred bytes claiming 16384 x 16384 (1 GB of RGBA at 4 bytes a pixel).
  CHECK_THROWS_WITH(load_one(dir, "claims.png", png_claiming(png_bytes(dir, 4, 4, 4, 1), 16384, 16384)),
                    Contains("claims.png") && Contains("16384 x 16384 pixels, more than the limit"));
  // A file larger than any image within the limit is refused unread.
  CHECK_THROWS_WITH(load_one(dir, "fat.png", std::vector<uint8_t>(2 << 20, 0), 1000), Contains("fat.png") &&
                    Contains("more than an image of at most 1000 pixels needs"));
}

TEST_CASE("hostile: image folders read PNG and JPEG with maintained decoders and refuse the rest", "[hostile][data]") {
  TempDir dir;
  // JPEG through libjpeg-turbo: a constant grey image comes back within JPEG's rounding (stb
  // writes every JPEG as YCbCr, so it reads back as RGB).
  const std::vector<uint8_t> grey(64, 128);
  REQUIRE(stbi_write_jpg((dir / "tmp.jpg").c_str(), 8, 8, 1, grey.data(), 95) != 0);
  const std::vector<uint8_t> jpeg = read_bytes(dir / "tmp.jpg");
  const data::Dataset d = load_one(dir, "a.jpg", jpeg);
  REQUIRE(d.channels == 3);
  REQUIRE(d.width == 8);
  for (float v : d.images) CHECK(std::abs(v * 255.0f - 128.0f) <= 2.0f);
  // A truncated JPEG is an error (libjpeg would fill the rest with grey and warn).
  CHECK_THROWS_WITH(load_one(dir, "cut.jpg", {jpeg.begin(), jpeg.begin() + long(jpeg.size() / 2)}),
                    Contains("cut.jpg: cannot decode JPEG image"));
  const std::vector<uint8_t> png = png_bytes(dir, 5, 4, 3, 7);
  CHECK_THROWS_WITH(load_one(dir, "cut.png", {png.begin(), png.begin() + long(png.size() - 20)}),
                    Contains("cut.png: cannot decode PNG image"));
  // BMP, TGA and the other formats stb_image read are refused by their first bytes, whatever
  // the file's name says.
  REQUIRE(stbi_write_bmp((dir / "tmp.bmp").c_str(), 2, 2, 3, std::vector<uint8_t>(12, 1).data()) != 0);
  CHECK_THROWS_WITH(load_one(dir, "x.png", read_bytes(dir / "tmp.bmp")),
                    Contains("x.png: not a PNG or JPEG file"));
  // JPEG's start-of-image marker followed by garbage.
  CHECK_THROWS_WITH(load_one(dir, "junk.jpg", {0xff, 0xd8, 0xff, 0x00, 0x01, 0x02}),
                    Contains("junk.jpg: cannot decode JPEG image"));
}

TEST_CASE("hostile: .mat variable headers are checked before matio reads them", "[hostile][data]") {
  TempDir dir;
  const std::string path = dir / "head.mat";
  REQUIRE(write_mat(path, MAT_FT_MAT5, MAT_COMPRESSION_NONE, {svhn_x(2), svhn_y({1, 2})}));
  const std::vector<uint8_t> good = read_bytes(path);
  CHECK(data::load_svhn_mat(path, "svhn/x").n == 2);
  // y's dimensions tag (miINT32, 8 bytes: 2 x 1) made to claim 4148819730 bytes, as the fuzzer
  // did: matio would allocate 8 GB for the dimensions before reading them.
  const uint8_t y_dims[16] = {5, 0, 0, 0, 8, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0};
  std::vector<uint8_t> bytes = good;
  const auto at = std::search(bytes.begin(), bytes.end(), y_dims, y_dims + 16);
  REQUIRE(at != bytes.end());
  const uint32_t claim = 4148819730u;
  std::memcpy(&*at + 4, &claim, 4);
  write_bytes(path, bytes, false);
  CHECK_THROWS_WITH(data::load_svhn_mat(path, "svhn/x"),
                    Contains("svhn/x: " + path) && Contains("variable 1: its dimensions claim 4148819730 bytes"));
  // A top-level variable past the end of the file.
  bytes = good;
  const uint32_t too_long = uint32_t(bytes.size());
  std::memcpy(bytes.data() + 128 + 4, &too_long, 4);
  write_bytes(path, bytes, false);
  CHECK_THROWS_WITH(data::load_svhn_mat(path, "svhn/x"), Contains("variable 0") && Contains("past the end"));
  // Cell arrays are allocated per declared cell while matio reads their headers: refused.
  fs::remove(path);
  {
    mat_t* mat = Mat_CreateVer(path.c_str(), nullptr, MAT_FT_MAT5);
    REQUIRE(mat != nullptr);
    size_t dims[2] = {1, 1};
    matvar_t* cells[2] = {Mat_VarCreate(nullptr, MAT_C_DOUBLE, MAT_T_DOUBLE, 2, dims, nullptr, 0), nullptr};
    matvar_t* cell = Mat_VarCreate("c", MAT_C_CELL, MAT_T_CELL, 2, dims, cells, 0);
    REQUIRE(Mat_VarWrite(mat, cell, MAT_COMPRESSION_NONE) == 0);
    Mat_VarFree(cell);
    Mat_Close(mat);
  }
  CHECK_THROWS_WITH(data::load_svhn_mat(path, "svhn/x"), Contains("variable 0 has class 1 (cell)"));
  // A class byte that is no matio class at all (fuzz_mat: UBSan saw it cast to the enum).
  bytes = good;
  bytes[128 + 16] = 38;  // X's array flags: tag (8 bytes) at 128 + 8, then the class byte
  write_bytes(path, bytes, false);
  CHECK_THROWS_WITH(data::load_svhn_mat(path, "svhn/x"), Contains("variable 0 has class 38 (unknown class)"));
  // MAT 4: matio allocates its name length as declared; SVHN files are never MAT 4.
  fs::remove(path);
  if (write_mat(path, MAT_FT_MAT4, MAT_COMPRESSION_NONE, {svhn_y({1, 2})}))
    CHECK_THROWS_WITH(data::load_svhn_mat(path, "svhn/x"), Contains("not a MAT 5 (v6, v7) or MAT 7.3 file"));
  // Any header without MAT 5's or 7.3's version and byte-order mark is taken by Mat_Open for
  // MAT 4: here a first variable whose name claims 2^31 - 1 bytes, and a 5000 x 5000 matrix.
  std::vector<uint8_t> mat4(128, 0);
  const int32_t mat4_header[5] = {0, 5000, 5000, 0, 0x7fffffff};  // type, rows, columns, imag, name
  std::memcpy(mat4.data(), mat4_header, sizeof mat4_header);
  write_bytes(path, mat4, false);
  CHECK_THROWS_WITH(data::load_svhn_mat(path, "svhn/x"),
                    Contains(path) && Contains("version is 0x0000 with byte-order mark 0x0000"));
  // A MAT 5 header in the wrong byte order's version (0x0001) and a bare 127-byte stub.
  bytes = good;
  std::swap(bytes[124], bytes[125]);
  write_bytes(path, bytes, false);
  CHECK_THROWS_WITH(data::load_svhn_mat(path, "svhn/x"), Contains("version is 0x0001"));
  write_bytes(path, std::vector<uint8_t>(good.begin(), good.begin() + 127), false);
  CHECK_THROWS_WITH(data::load_svhn_mat(path, "svhn/x"), Contains("shorter than their 128-byte header"));
}
