// libFuzzer harness of the IDX reader (train/data.cpp load_idx): labels and images from one input.
#include "tests/fuzz/fuzz_files.h"
#include "tests/fuzz/fuzz_inputs.h"
#include "train/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace equivae::fuzz;
  const auto [labels, images] = split_two(data, size);
  const std::string labels_path = write_file(scratch_dir() / "labels", labels);
  const std::string images_path = write_file(scratch_dir() / "images", images);
  EQUIVAE_FUZZ_REFUSALS_ARE_FINE(equivae::data::load_idx(images_path, labels_path, "fuzz"));
  return 0;
}
