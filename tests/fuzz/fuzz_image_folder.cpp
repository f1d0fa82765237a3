// libFuzzer harness of the image-folder reader (train/data.cpp load_image_folder: libpng and
// libjpeg-turbo behind train/image_decode.cpp): two images, one per class folder.
#include "tests/fuzz/fuzz_files.h"
#include "tests/fuzz/fuzz_inputs.h"
#include "train/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace equivae::fuzz;
  const auto [first, second] = split_two(data, size);
  const auto folder = scratch_dir() / "images";
  write_file(folder / "a" / "1.png", first);  // the reader decides by content, not by name
  write_file(folder / "b" / "2.jpg", second);
  EQUIVAE_FUZZ_REFUSALS_ARE_FINE(equivae::data::load_image_folder(folder.string(), "fuzz"));
  return 0;
}
