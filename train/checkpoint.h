// Checkpoints in the safetensors format (https://huggingface.co/docs/safetensors): an 8-byte
// little-endian header length, a JSON header naming each tensor's dtype, shape and byte range,
// then the raw little-endian data. PyTorch users load one with safetensors.torch.load_file; the
// tensor names are the parameter names of model/equivae.cpp (e.g. "h.conv0.weight"), plus the
// flat Adam moments "adam.m" and "adam.v" in parameter order, packed (without the buffers' alignment
// gaps, engine/params.h). String metadata carries the training state and a CRC-32 of the data, so a
// corrupt or truncated file is refused.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "engine/params.h"

namespace equivae {

struct CheckpointState {
  std::map<std::string, std::string> metadata;  // epoch, step, seed, model config, ...
};

// Writes `path` atomically: to path + ".tmp", flushed, then renamed over `path`. `average`: the
// running mean of the parameters (TrainConfig::average_from), a buffer of the parameters' layout,
// kept in the same file (so that it and the run's epoch are never out of step) as the packed
// tensor "average".
void save_checkpoint(const std::string& path, const ParameterStore& params, Adam* adam,
                     const std::map<std::string, std::string>& metadata, const Tensor* average = nullptr);

// Loads parameter values (and Adam's moments and step count when `adam` is given) into
// already-declared, allocated parameters. Throws std::runtime_error naming the file and the
// problem: not a safetensors file, truncated, CRC mismatch, a missing tensor or a wrong shape.
// Every header entry is checked before use (a known dtype, integer shapes and byte ranges that
// match, lie inside the file and do not overlap); NaN or Inf values are refused.
// `average` (given: the file must hold one) receives the running mean of the parameters.
std::map<std::string, std::string> load_checkpoint(const std::string& path, ParameterStore& params, Adam* adam,
                                                   Tensor* average = nullptr);

// A run keeps its best epoch's parameters in best.safetensors beside its last checkpoint: loads
// them into `params` (no Adam) and checks that they are epoch `best_epoch`, naming both files if not.
void load_best_beside(const std::string& checkpoint, int best_epoch, ParameterStore& params);

// Only the metadata (to rebuild the model configuration before loading).
std::map<std::string, std::string> read_checkpoint_metadata(const std::string& path);

// The decimal integer of metadata `field`, in [0, max]; throws std::runtime_error naming the file
// and the field when it is missing, not an integer or out of range.
uint64_t metadata_count(const std::string& path, const std::map<std::string, std::string>& metadata,
                        const std::string& field, uint64_t max);

}  // namespace equivae
