// The image formats an image folder may hold: PNG, decoded by libpng, and JPEG, decoded by
// libjpeg-turbo (Debian's libpng16 and libjpeg62-turbo, both maintained and fuzzed by OSS-Fuzz).
// stb_image is not used for reading: the 2.27 that Debian ships has a known out-of-bounds write
// in its JPEG Huffman code and several other reported decoder bugs (PNM, HDR, progressive JPEG),
// and it decodes any size a header claims. Both decoders here read the header first and refuse
// an image above the pixel limit before allocating or decoding anything; corrupt data is an
// error (libjpeg's "premature end" warnings included), never a partly grey image.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace equivae::data {

// 4096 x 4096: far above any training image, far below what a small hostile file can claim.
constexpr int64_t kDefaultMaxImagePixels = int64_t(1) << 24;

struct DecodedImage {
  int64_t width = 0, height = 0, channels = 0;  // channels: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA
  std::vector<uint8_t> pixels;                   // height x width x channels, interleaved
};

// Decodes a PNG or JPEG held in memory, 8 bits per channel (16-bit PNG keeps the high byte,
// palettes and low bit depths are expanded, a tRNS chunk becomes alpha; JPEG is grey or RGB).
// Throws std::runtime_error with the reason (callers add the file name): not a PNG or JPEG,
// width x height above max_pixels, or the decoder's own error message.
DecodedImage decode_image(const std::vector<uint8_t>& bytes, int64_t max_pixels);

}  // namespace equivae::data
