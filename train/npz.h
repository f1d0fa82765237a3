// A NumPy .npz writer: a zip archive (stored, not compressed) of .npy arrays, what np.load reads
// with its defaults (no pickles): float32 and int32 arrays of any shape, and arrays of strings as
// fixed-width UTF-32 ('<U' dtype). Sizes are checked: an archive that would need zip64 (4 GiB or
// 65,535 arrays) is refused, not written wrong.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace equivae {

class NpzWriter {
 public:
  void add(const std::string& name, const std::vector<float>& values, const std::vector<int64_t>& shape);
  void add(const std::string& name, const std::vector<int32_t>& values, const std::vector<int64_t>& shape);
  // UTF-8 strings; invalid UTF-8 becomes U+FFFD.
  void add(const std::string& name, const std::vector<std::string>& values);
  // Writes the archive to `path` (through path + ".tmp", renamed: a reader never sees half a file).
  void write(const std::string& path) const;

 private:
  void add_array(const std::string& name, const std::string& dtype, const std::vector<int64_t>& shape,
                 const void* data, size_t bytes);
  struct Member {
    std::string name;
    std::string bytes;  // the whole .npy file
  };
  std::vector<Member> members_;
};

}  // namespace equivae
