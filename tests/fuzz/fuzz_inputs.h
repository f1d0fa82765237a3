// What the harnesses of tests/fuzz take as input, shared with the test that writes their seed
// corpus (tests/test_fuzz_seeds.cpp), so that the seeds are inputs the harnesses understand.
//   fuzz_idx           two files: an IDX label file and an IDX image file (pack_two)
//   fuzz_mat           one .mat file
//   fuzz_image_folder  two image files, in class folders a/ and b/ (pack_two)
//   fuzz_checkpoint    one safetensors checkpoint of fuzz_model()
#pragma once
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "model/equivae.h"

namespace equivae::fuzz {

// Two files in one input: the first one's length (2 bytes, little-endian), it, then the second.
inline std::vector<uint8_t> pack_two(const std::vector<uint8_t>& first, const std::vector<uint8_t>& second) {
  const size_t n = first.size() < 0xffff ? first.size() : 0xffff;
  std::vector<uint8_t> out(2 + n + second.size());
  out[0] = uint8_t(n & 0xff), out[1] = uint8_t(n >> 8);
  std::copy_n(first.begin(), n, out.begin() + 2);
  std::copy(second.begin(), second.end(), out.begin() + 2 + long(n));
  return out;
}
inline std::pair<std::vector<uint8_t>, std::vector<uint8_t>> split_two(const uint8_t* data, size_t size) {
  if (size < 2) return {};
  const size_t n = std::min(size - 2, size_t(data[0]) | size_t(data[1]) << 8);
  return {{data + 2, data + 2 + n}, {data + 2 + n, data + size}};
}

// A model small enough that a whole checkpoint of it is a few kilobytes.
inline ModelConfig fuzz_model() {
  ModelConfig m;
  m.image_size = 8;
  m.filters = {2, 2};
  m.hidden = 4, m.d_r = 2, m.d_v = 2, m.num_classes = 3;
  return m;
}

}  // namespace equivae::fuzz
