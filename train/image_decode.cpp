#include "train/image_decode.h"

#include <fmt/format.h>
#include <jpeglib.h>
#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace equivae::data {
namespace {

// Both libraries report errors by calling a function that must not return; they are C, so the
// way out is longjmp, not an exception. The decode functions below therefore create no object
// with a destructor between their setjmp and the library calls (longjmp would skip it), and
// write everything into `out`, which the caller owns.
struct ErrorState {
  std::jmp_buf jump;
  char message[256] = "";
};

void check_pixels(int64_t width, int64_t height, int64_t max_pixels, ErrorState& error) {
  if (width > 0 && height > 0 && width <= max_pixels / height) return;
  std::snprintf(error.message, sizeof error.message,
                "%lld x %lld pixels, more than the limit of %lld (raise it with --max-image-pixels)",
                static_cast<long long>(width), static_cast<long long>(height), static_cast<long long>(max_pixels));
  std::longjmp(error.jump, 1);
}

// ---- PNG (libpng) -----------------------------------------------------------------------------

struct PngSource {
  const uint8_t* data;
  size_t size, at;
};

void png_read_memory(png_structp png, png_bytep dst, size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (n > src->size - src->at) png_error(png, "file truncated");
  std::memcpy(dst, src->data + src->at, n);
  src->at += n;
}

void png_fail(png_structp png, png_const_charp message) {
  auto* error = static_cast<ErrorState*>(png_get_error_ptr(png));
  std::snprintf(error->message, sizeof error->message, "%s", message);
  std::longjmp(error->jump, 1);
}

void png_ignore_warning(png_structp, png_const_charp) {}

bool decode_png(PngSource& source, int64_t max_pixels, DecodedImage& out, ErrorState& error) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &error, png_fail, png_ignore_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    std::snprintf(error.message, sizeof error.message, "libpng could not start");
    return false;
  }
  if (setjmp(error.jump)) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, &source, png_read_memory);
  png_set_chunk_malloc_max(png, 8 << 20);  // ancillary chunks (text, ICC) cannot inflate past 8 MB
  png_read_info(png, info);
  check_pixels(png_get_image_width(png, info), png_get_image_height(png, info), max_pixels, error);
  // To 8 bits per channel, as stb_image gave: palette -> RGB, grey 1/2/4 bits -> 8, tRNS -> alpha,
  // 16 bits -> the high byte.
  png_set_expand(png);
  png_set_strip_16(png);
  const int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  out.width = png_get_image_width(png, info);
  out.height = png_get_image_height(png, info);
  out.channels = png_get_channels(png, info);
  const size_t row_bytes = png_get_rowbytes(png, info);
  if (row_bytes != size_t(out.width * out.channels)) png_error(png, "unexpected row size after expansion");
  out.pixels.resize(row_bytes * size_t(out.height));
  for (int pass = 0; pass < passes; ++pass)
    for (int64_t y = 0; y < out.height; ++y) png_read_row(png, out.pixels.data() + size_t(y) * row_bytes, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

// ---- JPEG (libjpeg-turbo) ---------------------------------------------------------------------

struct JpegError {
  jpeg_error_mgr manager;  // first: libjpeg's err pointer is cast back to JpegError
  ErrorState* state;
};

void jpeg_fail(j_common_ptr cinfo) {
  auto* error = reinterpret_cast<JpegError*>(cinfo->err);
  cinfo->err->format_message(cinfo, error->state->message);
  std::longjmp(error->state->jump, 1);
}

// Warnings (level -1: corrupt or truncated data, which libjpeg would fill with grey) are errors.
void jpeg_message(j_common_ptr cinfo, int level) {
  if (level < 0) jpeg_fail(cinfo);
}

// A progressive JPEG can hold thousands of tiny scans that each cost a pass over the image
// (libjpeg-turbo's documented denial of service): more than this many is refused.
constexpr int kMaxJpegScans = 500;

void jpeg_limit_scans(j_common_ptr cinfo) {
  const auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (d->input_scan_number > kMaxJpegScans) {
    auto* error = reinterpret_cast<JpegError*>(cinfo->err);
    std::snprintf(error->state->message, sizeof error->state->message, "more than %d scans", kMaxJpegScans);
    std::longjmp(error->state->jump, 1);
  }
}

bool decode_jpeg(const std::vector<uint8_t>& bytes, int64_t max_pixels, DecodedImage& out, ErrorState& state) {
  jpeg_decompress_struct cinfo{};
  JpegError error{};
  jpeg_progress_mgr progress{};
  cinfo.err = jpeg_std_error(&error.manager);
  error.manager.error_exit = jpeg_fail;
  error.manager.emit_message = jpeg_message;
  error.state = &state;
  progress.progress_monitor = jpeg_limit_scans;
  if (setjmp(state.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  cinfo.progress = &progress;
  jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  check_pixels(cinfo.image_width, cinfo.image_height, max_pixels, state);
  cinfo.out_color_space = cinfo.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  out.width = cinfo.output_width;
  out.height = cinfo.output_height;
  out.channels = cinfo.output_components;
  const size_t row_bytes = size_t(out.width * out.channels);
  out.pixels.resize(row_bytes * size_t(out.height));
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out.pixels.data() + size_t(cinfo.output_scanline) * row_bytes;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

}  // namespace

DecodedImage decode_image(const std::vector<uint8_t>& bytes, int64_t max_pixels) {
  static const uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  DecodedImage out;
  ErrorState error;
  bool ok = false;
  const char* format = "";
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), png_signature, 8) == 0) {
    PngSource source{bytes.data(), bytes.size(), 0};
    ok = decode_png(source, max_pixels, out, error);
    format = "PNG";
  } else if (bytes.size() >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff) {
    ok = decode_jpeg(bytes, max_pixels, out, error);
    format = "JPEG";
  } else {
    throw std::runtime_error("not a PNG or JPEG file (image folders hold PNG or JPEG images only)");
  }
  if (!ok) throw std::runtime_error(fmt::format("cannot decode {} image: {}", format, error.message));
  return out;
}

}  // namespace equivae::data
