// libFuzzer harness of the SVHN .mat reader (train/data.cpp load_svhn_mat, on Debian's matio).
#include "tests/fuzz/fuzz_files.h"
#include "train/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace equivae::fuzz;
  const std::string path = write_file(scratch_dir() / "x.mat", data, size);
  EQUIVAE_FUZZ_REFUSALS_ARE_FINE(equivae::data::load_svhn_mat(path, "fuzz"));
  return 0;
}
