#include "train/npz.h"

#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

namespace equivae {
namespace {

void put(std::string& out, uint64_t value, int bytes) {  // little-endian
  for (int i = 0; i < bytes; ++i) out.push_back(char((value >> (8 * i)) & 0xff));
}

int64_t checked_count(const std::string& name, const std::vector<int64_t>& shape, size_t values) {
  int64_t n = 1;
  for (int64_t d : shape)
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) throw std::invalid_argument(fmt::format("npz: {}: bad shape", name));
  if (uint64_t(n) != values)
    throw std::invalid_argument(fmt::format("npz: {}: {} values for a shape of {}", name, values, n));
  return n;
}

// UTF-8 -> code points; a malformed sequence gives U+FFFD and resynchronises on the next byte.
std::u32string utf32(const std::string& s) {
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    char32_t cp = extra == 0 ? c : extra == 1 ? (c & 0x1f) : extra == 2 ? (c & 0x0f) : (c & 0x07);
    bool ok = extra >= 0 && i + size_t(extra) < s.size();
    for (int k = 1; ok && k <= extra; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + size_t(k)]);
      ok = (d >> 6) == 2;
      cp = (cp << 6) | (d & 0x3f);
    }
    ok = ok && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
    out.push_back(ok ? cp : U'\ufffd');
    i += ok ? size_t(extra) + 1 : 1;
  }
  return out;
}

}  // namespace

void NpzWriter::add_array(const std::string& name, const std::string& dtype, const std::vector<int64_t>& shape,
                          const void* data, size_t bytes) {
  std::string dims;
  for (int64_t d : shape) dims += std::to_string(d) + ", ";
  if (shape.size() == 1) dims.pop_back();  // "(5,)"
  else if (!shape.empty()) dims.resize(dims.size() - 2);
  std::string header =
      fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", dtype, dims);
  // Format 1.0: magic, version, a 2-byte header length; header padded with spaces to 64 bytes, then \n.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  if (header.size() > 65535) throw std::invalid_argument(fmt::format("npz: {}: header too long", name));
  std::string npy("\x93NUMPY\x01\x00", 8);
  put(npy, header.size(), 2);
  npy += header;
  npy.append(static_cast<const char*>(data), bytes);
  members_.push_back({name + ".npy", std::move(npy)});
}

void NpzWriter::add(const std::string& name, const std::vector<float>& values, const std::vector<int64_t>& shape) {
  checked_count(name, shape, values.size());
  add_array(name, "<f4", shape, values.data(), values.size() * sizeof(float));
}

void NpzWriter::add(const std::string& name, const std::vector<int32_t>& values, const std::vector<int64_t>& shape) {
  checked_count(name, shape, values.size());
  add_array(name, "<i4", shape, values.data(), values.size() * sizeof(int32_t));
}

void NpzWriter::add(const std::string& name, const std::vector<std::string>& values) {
  std::vector<std::u32string> wide;
  size_t width = 1;
  for (const std::string& v : values) wide.push_back(utf32(v)), width = std::max(width, wide.back().size());
  std::vector<char32_t> cells(values.size() * width, U'\0');
  for (size_t i = 0; i < wide.size(); ++i) std::copy(wide[i].begin(), wide[i].end(), cells.begin() + long(i * width));
  static_assert(sizeof(char32_t) == 4);
  add_array(name, fmt::format("<U{}", width), {int64_t(values.size())}, cells.data(), cells.size() * 4);
}

void NpzWriter::write(const std::string& path) const {
  if (members_.size() > 65535) throw std::invalid_argument("npz: more than 65,535 arrays");
  std::string out, directory;
  for (const Member& m : members_) {
    if (out.size() + m.bytes.size() + 30 + m.name.size() > std::numeric_limits<uint32_t>::max())
      throw std::invalid_argument(fmt::format("npz {}: over 4 GiB (zip64 is not written)", path));
    const uint32_t crc = uint32_t(crc32_z(0L, reinterpret_cast<const Bytef*>(m.bytes.data()), m.bytes.size()));
    const uint64_t offset = out.size();
    // Local file header: version 2.0, no flags, stored, no time, CRC, sizes, name.
    put(out, 0x04034b50, 4), put(out, 20, 2), put(out, 0, 2), put(out, 0, 2), put(out, 0, 4);
    put(out, crc, 4), put(out, m.bytes.size(), 4), put(out, m.bytes.size(), 4), put(out, m.name.size(), 2), put(out, 0, 2);
    out += m.name;
    out += m.bytes;
    // Its central directory entry.
    put(directory, 0x02014b50, 4), put(directory, 20, 2), put(directory, 20, 2), put(directory, 0, 2);
    put(directory, 0, 2), put(directory, 0, 4), put(directory, crc, 4), put(directory, m.bytes.size(), 4);
    put(directory, m.bytes.size(), 4), put(directory, m.name.size(), 2), put(directory, 0, 2), put(directory, 0, 2);
    put(directory, 0, 2), put(directory, 0, 2), put(directory, 0, 4), put(directory, offset, 4);
    directory += m.name;
  }
  const uint64_t directory_at = out.size();
  if (directory_at + directory.size() > std::numeric_limits<uint32_t>::max())
    throw std::invalid_argument(fmt::format("npz {}: over 4 GiB (zip64 is not written)", path));
  out += directory;
  put(out, 0x06054b50, 4), put(out, 0, 2), put(out, 0, 2), put(out, members_.size(), 2), put(out, members_.size(), 2);
  put(out, directory.size(), 4), put(out, directory_at, 4), put(out, 0, 2);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(out.data(), std::streamsize(out.size()));
    f.flush();
    if (!f) throw std::runtime_error(fmt::format("npz: cannot write {}", tmp));
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace equivae
