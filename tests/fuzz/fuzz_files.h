// The harnesses' one piece of plumbing: the readers take paths, so each input is written to a
// file in a folder of this process under the system temp folder.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/error.h"

namespace equivae::fuzz {

inline std::filesystem::path scratch_dir() {
  static const std::filesystem::path dir = [] {
    auto p = std::filesystem::temp_directory_path() / ("equivae_fuzz_" + std::to_string(::getpid()));
    std::filesystem::create_directories(p);
    return p;
  }();
  return dir;
}

inline std::string write_file(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), std::streamsize(size));
  return path.string();
}
inline std::string write_file(const std::filesystem::path& path, const std::vector<uint8_t>& bytes) {
  return write_file(path, bytes.data(), bytes.size());
}

}  // namespace equivae::fuzz

// A refusal is the expected outcome of most inputs: the readers' std::runtime_error (file
// problems) and ShapeError (sizes). Anything else escaping (std::bad_alloc, a JSON type_error,
// std::out_of_range) is a finding, and libFuzzer reports it as a crash.
#define EQUIVAE_FUZZ_REFUSALS_ARE_FINE(...) \
  try {                                     \
    __VA_ARGS__;                            \
  } catch (const std::runtime_error&) {     \
  } catch (const ::equivae::ShapeError&) {  \
  }
