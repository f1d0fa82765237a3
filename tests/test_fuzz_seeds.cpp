// The seed corpus of the fuzzers in tests/fuzz: small valid inputs in each harness's input format
// (tests/fuzz/fuzz_inputs.h), written into $EQUIVAE_FUZZ_CORPUS/<harness>/ when it is set
// (tools/fuzz.sh sets it). Every seed is read back through its reader here, so a seed that the
// reader refuses fails this test instead of silently starving the fuzzer.
#include <stb_image_write.h>

#include <catch2/catch.hpp>
#include <cstdlib>

#include "tests/fixtures.h"
#include "tests/fuzz/fuzz_inputs.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/trainer.h"

using namespace equivae;
using namespace equivae::fixtures;

namespace {

struct Corpus {
  fs::path root;
  void add(const std::string& harness, const std::string& name, const std::vector<uint8_t>& bytes) const {
    fs::create_directories(root / harness);
    write_bytes((root / harness / name).string(), bytes, false);
  }
};

// `bytes` as the file write_bytes makes of them (gzip when gz), read back.
std::vector<uint8_t> file_bytes(const TempDir& dir, const std::vector<uint8_t>& bytes, bool gz) {
  write_bytes(dir / "tmp", bytes, gz);
  return read_bytes(dir / "tmp");
}

}  // namespace

TEST_CASE("fuzz: seed corpus of valid inputs, one set per harness", "[fuzz]") {
  TempDir dir;
  const char* env = std::getenv("EQUIVAE_FUZZ_CORPUS");
  const Corpus corpus{env ? fs::path(env) : dir.path / "corpus"};

  for (bool gz : {false, true}) {
    const auto labels = file_bytes(dir, idx_bytes(0x801, {3}, test_labels(3)), gz);
    const auto images = file_bytes(dir, idx_bytes(0x803, {3, 4, 3}, test_pixels(3, 4, 3)), gz);
    write_bytes(dir / "labels", labels, false);
    write_bytes(dir / "images", images, false);
    CHECK(data::load_idx(dir / "images", dir / "labels", "seed").n == 3);
    corpus.add("idx", gz ? "gzip" : "raw", fuzz::pack_two(labels, images));
  }

  for (const auto compression : {MAT_COMPRESSION_NONE, MAT_COMPRESSION_ZLIB}) {
    const std::string path = dir / "seed.mat";
    fs::remove(path);
    REQUIRE(write_mat(path, MAT_FT_MAT5, compression, {svhn_x(2), svhn_y({10, 3})}));
    CHECK(data::load_svhn_mat(path, "seed").n == 2);
    corpus.add("mat", compression == MAT_COMPRESSION_ZLIB ? "mat5-zlib" : "mat5", read_bytes(path));
  }

  {
    std::vector<uint8_t> rgb(4 * 4 * 3);
    for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = uint8_t(i * 16);
    REQUIRE(stbi_write_png((dir / "seed.png").c_str(), 4, 4, 3, rgb.data(), 12) != 0);
    REQUIRE(stbi_write_jpg((dir / "seed.jpg").c_str(), 4, 4, 3, rgb.data(), 90) != 0);
    const auto png = read_bytes(dir / "seed.png"), jpeg = read_bytes(dir / "seed.jpg");
    fs::create_directories(dir.path / "set" / "a");
    fs::create_directories(dir.path / "set" / "b");
    write_bytes(dir / "set/a/1.png", png, false);
    write_bytes(dir / "set/b/2.jpg", jpeg, false);
    CHECK(data::load_image_folder(dir / "set", "seed").n == 2);
    corpus.add("image_folder", "png-jpeg", fuzz::pack_two(png, jpeg));
    corpus.add("image_folder", "png-png", fuzz::pack_two(png, png));
  }

  {
    ParameterStore params;
    const EquiVAE model(fuzz::fuzz_model(), params);
    params.allocate(5);
    Adam adam(params);
    const std::string path = dir / "seed.safetensors";
    save_checkpoint(path, params, &adam, {{"model", model_json(fuzz::fuzz_model())}, {"epoch", "1"}, {"step", "2"}});
    ParameterStore again;
    const EquiVAE same(checkpoint_model(path, read_checkpoint_metadata(path)), again);
    again.allocate(6);
    Adam adam_again(again);
    load_checkpoint(path, again, &adam_again);
    CHECK(again.values().to_vector() == params.values().to_vector());
    corpus.add("checkpoint", "small-model", read_bytes(path));
  }
}
