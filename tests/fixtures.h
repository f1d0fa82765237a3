// Files in their exact on-disk layouts, written by the tests themselves: IDX (raw or gzipped),
// SVHN-style .mat through matio. Shared by the loader tests (test_data.cpp), the hostile-input
// tests (test_hostile.cpp) and the fuzzers' seed corpus (test_fuzz_seeds.cpp).
#pragma once
#include <matio.h>
#include <unistd.h>
#include <zlib.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace equivae::fixtures {

namespace fs = std::filesystem;

// A fresh directory under the system temp folder, removed with everything in it.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    path = fs::temp_directory_path() / ("equivae_data_test_" + std::to_string(getpid()) + "_" +
                                        std::to_string(now) + "_" + std::to_string(++counter));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes, bool gz) {
  if (gz) {
    gzFile f = gzopen(path.c_str(), "wb");
    REQUIRE(f != nullptr);
    REQUIRE(gzwrite(f, bytes.data(), unsigned(bytes.size())) == int(bytes.size()));
    REQUIRE(gzclose(f) == Z_OK);
  } else {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  }
}

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// An IDX file: big-endian magic and dims, then the bytes.
inline std::vector<uint8_t> idx_bytes(uint32_t magic, const std::vector<uint32_t>& dims,
                               const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out;
  auto put = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(uint8_t(v >> s));
  };
  put(magic);
  for (uint32_t d : dims) put(d);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// n images of rows x cols with pixel (i, r, c) = (i * 31 + r * 7 + c) % 256, labels i % 10.
inline std::vector<uint8_t> test_pixels(uint32_t n, uint32_t rows, uint32_t cols) {
  std::vector<uint8_t> p;
  for (uint32_t i = 0; i < n; ++i)
    for (uint32_t r = 0; r < rows; ++r)
      for (uint32_t c = 0; c < cols; ++c) p.push_back(uint8_t((i * 31 + r * 7 + c) % 256));
  return p;
}
inline std::vector<uint8_t> test_labels(uint32_t n) {
  std::vector<uint8_t> y;
  for (uint32_t i = 0; i < n; ++i) y.push_back(uint8_t(i % 10));
  return y;
}

inline void write_idx_pair(const TempDir& dir, const std::string& prefix, uint32_t n, bool gz) {
  const std::string ext = gz ? ".gz" : "";
  write_bytes(dir / (prefix + "-images-idx3-ubyte" + ext),
              idx_bytes(0x803, {n, 4, 3}, test_pixels(n, 4, 3)), gz);
  write_bytes(dir / (prefix + "-labels-idx1-ubyte" + ext), idx_bytes(0x801, {n}, test_labels(n)),
              gz);
}

// ---- .mat fixtures -----------------------------------------------------------------------------

struct MatVarSpec {
  std::string name;
  matio_classes cls;
  matio_types type;
  std::vector<size_t> dims;
  std::vector<uint8_t> bytes;  // raw element bytes, MATLAB column-major order
};

template <typename T>
inline std::vector<uint8_t> raw(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Returns false when this matio cannot create the format (MAT 7.3 needs HDF5).
inline bool write_mat(const std::string& path, mat_ft version, matio_compression compression,
               std::vector<MatVarSpec> vars) {
  mat_t* mat = Mat_CreateVer(path.c_str(), nullptr, version);
  if (!mat) return false;
  for (auto& v : vars) {
    matvar_t* var = Mat_VarCreate(v.name.c_str(), v.cls, v.type, int(v.dims.size()), v.dims.data(),
                                  v.bytes.data(), MAT_F_DONT_COPY_DATA);
    REQUIRE(var != nullptr);
    REQUIRE(Mat_VarWrite(mat, var, compression) == 0);
    Mat_VarFree(var);
  }
  Mat_Close(mat);
  return true;
}

// SVHN's layout: X(row, col, ch, i) at row + 32 col + 1024 ch + 3072 i, uint8.
inline uint8_t svhn_pixel(size_t row, size_t col, size_t ch, size_t i) {
  return uint8_t((row * 7 + col * 13 + ch * 50 + i * 31) % 256);
}
inline MatVarSpec svhn_x(size_t n, bool drop_singleton = false) {
  std::vector<uint8_t> x(32 * 32 * 3 * n);
  for (size_t i = 0; i < n; ++i)
    for (size_t ch = 0; ch < 3; ++ch)
      for (size_t col = 0; col < 32; ++col)
        for (size_t row = 0; row < 32; ++row)
          x[row + 32 * col + 1024 * ch + 3072 * i] = svhn_pixel(row, col, ch, i);
  std::vector<size_t> dims = {32, 32, 3, n};
  if (drop_singleton && n == 1) dims.pop_back();  // what MATLAB writes for a single image
  return {"X", MAT_C_UINT8, MAT_T_UINT8, dims, x};
}
inline MatVarSpec svhn_y(const std::vector<double>& y) {
  return {"y", MAT_C_DOUBLE, MAT_T_DOUBLE, {y.size(), 1}, raw(y)};
}

}  // namespace equivae::fixtures
