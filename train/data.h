// Data sets for EquiVAE: MNIST / Fashion-MNIST (IDX files), SVHN cropped digits (.mat), a user's
// own labelled image folders; the splits of SPEC.md section 3, per-channel standardisation, the
// label prior p(y) and balanced label subsets for the semi-supervised runs.
//
// Every loader throws std::runtime_error whose message names the data set, the file and the
// problem; none returns partial data. Images are NCHW float; labels are int32 in [0, num_classes).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "train/image_decode.h"

namespace equivae::data {

struct Dataset {
  std::string name;  // e.g. "mnist/train"
  int64_t n = 0, channels = 0, height = 0, width = 0;
  std::vector<float> images;    // n * channels * height * width, NCHW
  std::vector<int32_t> labels;  // n entries in [0, num_classes)
  int num_classes = 0;
  std::vector<std::string> class_names;  // num_classes names ("0".."9" for the digit sets)
  std::vector<std::string> paths;        // image folders: each row's file, relative to the folder; else empty
  int64_t skipped_files = 0;             // image folders: files not read (not .png, .jpg or .jpeg)

  int64_t image_size() const { return channels * height * width; }
  const float* image(int64_t row) const { return images.data() + row * image_size(); }
  // Rows [begin, end); the name gets "[begin:end]" appended. Throws std::out_of_range.
  Dataset slice(int64_t begin, int64_t end) const;
  // The given rows in the given order (repeats allowed); the name gets "[k rows]" appended.
  Dataset subset(const std::vector<int64_t>& rows) const;
};

struct Splits {
  Dataset train, validation, test;
};

// One IDX image file (magic 0x00000803, uint8 n x rows x cols) and its IDX label file (magic
// 0x00000801, uint8 n), gzipped or raw (zlib reads both). Pixels are scaled to [0, 1]; labels must
// be < 10. `name` starts every error message and names the result.
Dataset load_idx(const std::string& images_path, const std::string& labels_path,
                 const std::string& name);

// `dir` holds train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
// t10k-labels-idx1-ubyte, each with or without ".gz" (the .gz is used when both exist);
// Fashion-MNIST uses the same names. train = the first (60000 - validation_size) rows of the
// train file, validation = its last validation_size rows, test = the t10k file. Names are
// "mnist/train", "mnist/validation", "mnist/test".
Splits load_mnist(const std::string& dir, int64_t validation_size = 5000);

// One SVHN cropped-digit file: X is 32x32x3xN uint8 in MATLAB order X(row, col, channel, n), y is
// Nx1 (or 1xN) numeric with labels 1..10, where 10 is the digit 0 (mapped to 0 here). MAT5 and,
// when matio has HDF5 support, MAT 7.3 files. Output NCHW float in [0, 1].
Dataset load_svhn_mat(const std::string& path, const std::string& name);

// `dir` holds train_32x32.mat and test_32x32.mat. train = the first (N - validation_size) rows of
// the train file (70,000 of 73,257 by default), validation = its last validation_size rows,
// test = the test file. Pixels stay in [0, 1]: standardise with compute_channel_stats(train).
Splits load_svhn(const std::string& dir, int64_t validation_size = 3257);

// dir/<class name>/<image>, PNG or JPEG images (train/image_decode.h). Classes are the
// sub-folders in name order (label = position, class_names the folder names), images within a
// class in file-name order (paths "<class>/<file>"); hidden files (".*") are skipped, and so are
// files whose names do not end in .png, .jpg or .jpeg (any case), counted in skipped_files. With
// image_size > 0 every image is resized (stb_image_resize, per channel) to image_size square;
// otherwise all must share size. Grey and colour images do not mix. Pixels in [0, 1]. An image
// of more than max_pixels pixels is refused before it is decoded, and a folder whose images need
// more memory than the machine has before it is read.
Dataset load_image_folder(const std::string& dir, const std::string& name,
                          int64_t max_pixels = kDefaultMaxImagePixels, int64_t image_size = 0);

// Throws std::runtime_error "<what>: <path>: <purpose> need N bytes (X GiB), more than this
// machine's Y GiB of memory" when count x bytes_each (overflow counts as too much) exceed the
// physical memory: a data set or model too large for the machine is refused with its figure
// before the allocation, not by std::bad_alloc.
void require_memory(const std::string& what, const std::string& path, uint64_t count, uint64_t bytes_each,
                    const std::string& purpose);

// Per-channel mean and (population) standard deviation over every pixel of `reference`, in
// double. A constant channel gets stddev 1 so that standardising it cannot divide by zero.
struct ChannelStats {
  std::vector<float> mean, stddev;
};
ChannelStats compute_channel_stats(const Dataset& reference);
// x <- (x - mean[c]) / stddev[c], in place. Throws std::invalid_argument on a channel mismatch.
void standardize(Dataset& d, const ChannelStats& s);

// Fraction of rows of each class (size num_classes): the prior p(y). Throws on an empty set.
std::vector<double> class_frequencies(const Dataset& d);

// `per_class` distinct rows of every class, drawn with Philox keyed by `seed` (its own stream, see
// sampler.h); sorted row indices into d. Throws std::runtime_error naming a class that has fewer
// rows, std::invalid_argument if per_class < 1.
std::vector<int64_t> balanced_label_subset(const Dataset& d, int per_class, uint64_t seed);

}  // namespace equivae::data
