// libFuzzer harness of checkpoint reading (train/checkpoint.cpp) and of its model metadata
// (train/run_state.cpp checkpoint_model): what train_mnist --evaluate does with a file (the model
// it declares, built and loaded) and what --resume does (loaded into fuzz_model() with Adam).
#include <climits>
#include <memory>

#include "tests/fuzz/fuzz_files.h"
#include "tests/fuzz/fuzz_inputs.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace {

struct Model {
  equivae::ParameterStore params;
  std::unique_ptr<equivae::EquiVAE> model;
  std::unique_ptr<equivae::Adam> adam;
  Model() : model(std::make_unique<equivae::EquiVAE>(equivae::fuzz::fuzz_model(), params)) {
    params.allocate(1);
    adam = std::make_unique<equivae::Adam>(params);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace equivae;
  static Model m;
  const std::string path = fuzz::write_file(fuzz::scratch_dir() / "checkpoint.safetensors", data, size);
  EQUIVAE_FUZZ_REFUSALS_ARE_FINE({
    const auto meta = read_checkpoint_metadata(path);
    metadata_count(path, meta, "epoch", INT_MAX);
    ParameterStore declared;
    const EquiVAE model(checkpoint_model(path, meta), declared);
    declared.allocate(1);
    load_checkpoint(path, declared, nullptr);
  });
  EQUIVAE_FUZZ_REFUSALS_ARE_FINE(load_checkpoint(path, m.params, m.adam.get()));
  return 0;
}
