#include "train/data.h"

#include <fmt/format.h>
#include <matio.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <stdexcept>

#include <stb_image_resize.h>

#include "train/image_decode.h"
#include "train/sampler.h"

namespace equivae::data {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path, const std::string& why) {
  throw std::runtime_error(fmt::format("{}: {}: {}", what, path, why));
}

// Deflate (gzip, zlib in MAT5, HDF5's filter in MAT 7.3) expands at most 1032:1: the most data a
// compressed file of a given size can hold, known before inflating any of it.
constexpr uint64_t kMaxDeflateRatio = 1032;

// A file that must exist and be a regular file (gzopen would happily open a directory).
void require_file(const std::string& what, const std::string& path) {
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (!fs::exists(st)) fail(what, path, "file not found");
  if (!fs::is_regular_file(st)) fail(what, path, "not a regular file");
}

}  // namespace

void require_memory(const std::string& what, const std::string& path, uint64_t count, uint64_t bytes_each,
                    const std::string& purpose) {
  const uint64_t memory = uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGE_SIZE));
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(count, bytes_each, &bytes)) bytes = UINT64_MAX;
  if (bytes > memory)
    fail(what, path, fmt::format("{} need {} bytes ({:.1f} GiB), more than this machine's {:.1f} GiB of memory", purpose,
                                 bytes, double(bytes) / double(1 << 30), double(memory) / double(1 << 30)));
}

namespace {

// ---- IDX ---------------------------------------------------------------------------------------

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

// A failed gzread: a system error, or corrupt compressed data (zlib's message says which).
[[noreturn]] void gz_fail(gzFile f, const std::string& what, const std::string& path) {
  const int saved_errno = errno;
  int err = 0;
  std::string msg = gzerror(f, &err);
  if (err == Z_ERRNO) msg = std::strerror(saved_errno);
  if (msg.starts_with(path + ": ")) msg.erase(0, path.size() + 2);  // zlib prefixes the path
  fail(what, path, fmt::format("read error ({})", msg));
}

// Reads up to `count` bytes, growing the buffer only as data arrives: a corrupt header that
// claims terabytes then fails as "truncated" instead of as a huge allocation.
std::vector<uint8_t> gz_read(gzFile f, uint64_t count, const std::string& what,
                             const std::string& path) {
  constexpr uint64_t kChunk = uint64_t(1) << 24;
  std::vector<uint8_t> buf;
  buf.reserve(size_t(std::min<uint64_t>(count, uint64_t(1) << 28)));
  while (buf.size() < count) {
    const size_t at = buf.size();
    const unsigned want = unsigned(std::min<uint64_t>(kChunk, count - at));
    buf.resize(at + want);
    const int got = gzread(f, buf.data() + at, want);
    if (got < 0) gz_fail(f, what, path);
    buf.resize(at + size_t(got));
    if (unsigned(got) < want) break;  // end of data
  }
  return buf;
}

uint32_t big_endian(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

struct IdxFile {
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;
};

// One IDX file of uint8 with `rank` dimensions; checks magic, dims, truncation and trailing bytes.
IdxFile read_idx(const std::string& what, const std::string& path, int rank, const char* kind) {
  require_file(what, path);
  GzFile f(gzopen(path.c_str(), "rb"));
  if (!f) fail(what, path, fmt::format("cannot open ({})", std::strerror(errno)));
  gzbuffer(f.get(), 1u << 20);
  // The magic first: a file of the wrong kind is named as such even when it is short.
  const std::vector<uint8_t> magic_bytes = gz_read(f.get(), 4, what, path);
  if (magic_bytes.size() < 4)
    fail(what, path,
         fmt::format("truncated header: {} bytes, not an IDX {}", magic_bytes.size(), kind));
  const uint32_t expected = 0x00000800u | uint32_t(rank);  // type 0x08 = unsigned byte
  const uint32_t magic = big_endian(magic_bytes.data());
  if (magic != expected)
    fail(what, path,
         fmt::format("wrong magic 0x{:08x}, expected 0x{:08x} (an IDX {})", magic, expected, kind));
  const std::vector<uint8_t> header = gz_read(f.get(), 4 * uint64_t(rank), what, path);
  if (header.size() < 4 * size_t(rank))
    fail(what, path,
         fmt::format("truncated header: {} bytes, an IDX {} needs {}", 4 + header.size(), kind,
                     4 + 4 * rank));
  IdxFile out;
  uint64_t count = 1;
  for (int i = 0; i < rank; ++i) {
    const uint32_t dim = big_endian(header.data() + 4 * i);
    // Rows and columns beyond 2^16 are no image anyone trains on; the bound keeps the product
    // of the dims below 2^64 (2^32 x 2^16 x 2^16).
    if (i > 0 && (dim == 0 || dim > 65536))
      fail(what, path, fmt::format("bad dimension {} = {} in the header", i, dim));
    out.dims.push_back(dim);
    count *= dim;
  }
  // Before inflating anything: the bytes, then a float per byte, must fit in memory, and the
  // file must be able to hold them.
  require_memory(what, path, count, 1 + sizeof(float), fmt::format("its {} values", count));
  // A raw file holds what it holds, and a small .gz cannot hold gigabytes.
  const uint64_t file_bytes = fs::file_size(path), header_bytes = 4 + 4 * uint64_t(rank);
  if (gzdirect(f.get()) && count > file_bytes - header_bytes)
    fail(what, path, fmt::format("truncated: the header promises {} bytes of data, the file has {}", count,
                                 file_bytes - header_bytes));
  if (!gzdirect(f.get()) && count / kMaxDeflateRatio > file_bytes)
    fail(what, path, fmt::format("the header promises {} bytes of data, more than a {}-byte gzip file can hold "
                                 "(deflate expands at most {}:1)", count, file_bytes, kMaxDeflateRatio));
  out.data = gz_read(f.get(), count, what, path);
  if (out.data.size() < count)
    fail(what, path,
         fmt::format("truncated: the header promises {} bytes of data, the file has {}", count,
                     out.data.size()));
  // One more read: catches trailing bytes, and makes zlib check the gzip trailer (CRC, length).
  uint8_t extra = 0;
  const int more = gzread(f.get(), &extra, 1);
  if (more < 0) gz_fail(f.get(), what, path);
  if (more > 0)
    fail(what, path, fmt::format("{} bytes of data expected, but the file is longer", count));
  return out;
}

std::string find_mnist_file(const std::string& dir, const std::string& base) {
  for (const std::string& p : {base + ".gz", base}) {
    std::error_code ec;
    if (fs::exists(fs::path(dir) / p, ec)) return (fs::path(dir) / p).string();
  }
  fail("mnist", dir, fmt::format("neither {0}.gz nor {0} found", base));
}

// Splits `all` into its first n - validation_size rows and its last validation_size rows.
void split_train(const std::string& what, const Dataset& all, int64_t validation_size,
                 const std::string& prefix, Splits& out) {
  if (validation_size < 0 || validation_size >= all.n)
    throw std::runtime_error(fmt::format("{}: validation size {} must be in [0, {}) (train rows)",
                                         what, validation_size, all.n));
  out.train = all.slice(0, all.n - validation_size);
  out.validation = all.slice(all.n - validation_size, all.n);
  out.train.name = prefix + "/train";
  out.validation.name = prefix + "/validation";
}

// ---- MAT (matio) -------------------------------------------------------------------------------

// matio reports problems through a log callback (the default one prints, and aborts on errors
// that matio itself treats as fatal). Ours stays silent and keeps the last message for our error.
thread_local std::string matio_last_message;
void matio_log(int /*level*/, char* message) { matio_last_message = message ? message : ""; }
void quiet_matio() {
  static std::once_flag once;
  std::call_once(once, [] { Mat_LogInitFunc("equivae", matio_log); });
}

struct MatCloser {
  void operator()(mat_t* m) const { Mat_Close(m); }
};
struct VarFreer {
  void operator()(matvar_t* v) const { Mat_VarFree(v); }
};
using MatVar = std::unique_ptr<matvar_t, VarFreer>;

std::string dims_text(const matvar_t* v) {
  std::string s;
  for (int i = 0; i < v->rank; ++i) {
    if (i) s += 'x';
    s += std::to_string(v->dims[i]);
  }
  return s;
}

// Takes the number, not the enum: a class byte read from a file may be no matio_classes value.
const char* class_text(uint32_t c) {
  static const char* const names[] = {"empty",  "cell",   "struct", "object", "char",     "sparse",
                                      "double", "single", "int8",   "uint8",  "int16",    "uint16",
                                      "int32",  "uint32", "int64",  "uint64", "function", "opaque"};
  return size_t(c) < std::size(names) ? names[c] : "unknown class";
}

template <typename T>
bool convert(const matvar_t* v, std::vector<double>& out) {
  if (size_t(v->data_size) != sizeof(T) || v->nbytes < out.size() * sizeof(T)) return false;
  for (size_t i = 0; i < out.size(); ++i) {
    T x;  // memcpy: matio's buffer need not be aligned for T
    std::memcpy(&x, static_cast<const char*>(v->data) + i * sizeof(T), sizeof(T));
    out[i] = double(x);
  }
  return true;
}

// All of a real numeric variable as double (out is sized by the caller); false otherwise.
bool read_numeric(const matvar_t* v, std::vector<double>& out) {
  if (v->isComplex || !v->data) return false;
  switch (v->class_type) {
    case MAT_C_DOUBLE: return convert<double>(v, out);
    case MAT_C_SINGLE: return convert<float>(v, out);
    case MAT_C_INT8: return convert<int8_t>(v, out);
    case MAT_C_UINT8: return convert<uint8_t>(v, out);
    case MAT_C_INT16: return convert<int16_t>(v, out);
    case MAT_C_UINT16: return convert<uint16_t>(v, out);
    case MAT_C_INT32: return convert<int32_t>(v, out);
    case MAT_C_UINT32: return convert<uint32_t>(v, out);
    default: return false;
  }
}

// matio trusts the sizes in a MAT5 variable's header: a dimensions tag claiming 4 GB (in a
// 6 KB file) makes Mat_VarReadInfo allocate 8 GB before reading anything, and cell or struct
// variables allocate per declared element. So the header of every top-level variable is checked
// here first, from the file's bytes. MAT5: a 128-byte header (bytes 126-127 read "IM" when the
// file's byte order is ours, "MI" when swapped), then data elements, each an 8-byte tag (uint32
// type, uint32 size) and its bytes. A variable is a miMATRIX (14) element, or a miCOMPRESSED (15)
// one holding a deflated miMATRIX. Its payload starts with sub-elements: array flags (class in
// the low byte), dimensions, name; a small one packs its size into the tag's upper 16 bits.
class Mat5HeaderCheck {
 public:
  Mat5HeaderCheck(std::string what, std::string path) : what_(std::move(what)), path_(std::move(path)) {}

  void run() {
    std::ifstream in(path_, std::ios::binary);
    const uint64_t size = fs::file_size(path_);
    uint8_t header[128];
    if (!in.read(reinterpret_cast<char*>(header), 128)) return;  // matio has refused it already
    swap_ = header[126] == 'M' && header[127] == 'I';
    int index = 0;
    for (uint64_t at = 128; at + 8 <= size; ++index) {
      uint8_t tag[8];
      in.seekg(std::streamoff(at));
      if (!in.read(reinterpret_cast<char*>(tag), 8)) break;
      const uint32_t type = word(tag), bytes = word(tag + 4);
      if (bytes > size - at - 8)
        fail(what_, path_, fmt::format("variable {}: {} bytes declared, past the end of the {}-byte file", index,
                                       bytes, size));
      if (type == 14 || type == 15) {
        std::vector<uint8_t> payload(std::min<uint64_t>(bytes, kHeadBytes));
        in.read(reinterpret_cast<char*>(payload.data()), std::streamsize(payload.size()));
        if (type == 14) check_matrix(index, payload, bytes);
        else check_compressed(index, payload, bytes);
      }
      at += 8 + uint64_t(bytes);
    }
  }

 private:
  // Enough of a variable to hold its flags, dimensions and name.
  static constexpr uint64_t kHeadBytes = 1 << 16;
  static constexpr uint32_t kMaxRank = 32, kMaxNameBytes = 4096;

  uint32_t word(const uint8_t* p) const {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return swap_ ? __builtin_bswap32(v) : v;
  }

  // The first bytes `head` of a miMATRIX payload of `size` bytes.
  void check_matrix(int index, const std::vector<uint8_t>& head, uint64_t size) const {
    uint64_t at = 0;
    for (const char* part : {"array flags", "dimensions", "name"}) {
      if (at + 8 > head.size()) return;  // a short variable: matio reports it
      const uint32_t w0 = word(head.data() + at), w1 = word(head.data() + at + 4);
      const bool small = (w0 >> 16) != 0;
      const uint64_t bytes = small ? w0 >> 16 : w1, end = at + 8 + (small ? 0 : (bytes + 7) / 8 * 8);
      const uint64_t limit = std::string_view(part) == "dimensions" ? 4 * kMaxRank
                             : std::string_view(part) == "name"     ? kMaxNameBytes
                                                                    : 16;
      if (bytes > limit || (!small && at + 8 + bytes > size))
        fail(what_, path_, fmt::format("variable {}: its {} claim {} bytes (at most {} in a {}-byte variable)", index,
                                       part, bytes, std::min(limit, size), size));
      if (std::string_view(part) == "array flags" && !small && bytes >= 4 && at + 12 <= head.size()) {
        // Numeric and char variables only: matio allocates per element of cell, struct,
        // object and sparse variables while reading their headers, and SVHN files hold none.
        const uint32_t cls = word(head.data() + at + 8) & 0xff;
        if (cls != MAT_C_CHAR && (cls < MAT_C_DOUBLE || cls > MAT_C_UINT64))
          fail(what_, path_, fmt::format("variable {} has class {} ({}); an SVHN file holds numeric X and y only",
                                         index, cls, class_text(cls)));
      }
      at = end;
    }
  }

  // A miCOMPRESSED payload: the start of its inflated miMATRIX is checked like an uncompressed one.
  void check_compressed(int index, const std::vector<uint8_t>& head, uint64_t size) const {
    std::vector<uint8_t> out(kHeadBytes);
    z_stream z{};
    if (inflateInit(&z) != Z_OK) return;
    z.next_in = const_cast<Bytef*>(head.data());
    z.avail_in = uInt(head.size());
    z.next_out = out.data();
    z.avail_out = uInt(out.size());
    inflate(&z, Z_SYNC_FLUSH);
    out.resize(out.size() - z.avail_out);
    inflateEnd(&z);
    if (out.size() < 8) return;  // not deflate data: matio reports it
    const uint32_t type = word(out.data()), bytes = word(out.data() + 4);
    if (type == 14 && bytes / kMaxDeflateRatio > size)
      fail(what_, path_, fmt::format("variable {}: {} bytes declared, more than its {} compressed bytes can hold",
                                     index, bytes, size));
    if (type == 14) check_matrix(index, std::vector<uint8_t>(out.begin() + 8, out.end()), bytes);
  }

  std::string what_, path_;
  bool swap_ = false;
};

}  // namespace

// ---- Dataset -----------------------------------------------------------------------------------

Dataset Dataset::slice(int64_t begin, int64_t end) const {
  if (begin < 0 || end < begin || end > n)
    throw std::out_of_range(
        fmt::format("{}: slice [{}, {}) outside the {} rows", name, begin, end, n));
  Dataset d;
  d.name = fmt::format("{}[{}:{}]", name, begin, end);
  d.n = end - begin;
  d.channels = channels, d.height = height, d.width = width;
  d.num_classes = num_classes, d.class_names = class_names;
  d.images.assign(images.begin() + begin * image_size(), images.begin() + end * image_size());
  d.labels.assign(labels.begin() + begin, labels.begin() + end);
  if (!paths.empty()) d.paths.assign(paths.begin() + begin, paths.begin() + end);
  return d;
}

Dataset Dataset::subset(const std::vector<int64_t>& rows) const {
  Dataset d;
  d.name = fmt::format("{}[{} rows]", name, rows.size());
  d.n = int64_t(rows.size());
  d.channels = channels, d.height = height, d.width = width;
  d.num_classes = num_classes, d.class_names = class_names;
  d.images.resize(size_t(d.n * image_size()));
  d.labels.resize(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const int64_t r = rows[i];
    if (r < 0 || r >= n)
      throw std::out_of_range(fmt::format("{}: subset row {} outside the {} rows", name, r, n));
    std::copy_n(image(r), image_size(), d.images.begin() + int64_t(i) * image_size());
    d.labels[i] = labels[r];
    if (!paths.empty()) d.paths.push_back(paths[size_t(r)]);
  }
  return d;
}

// ---- MNIST -------------------------------------------------------------------------------------

Dataset load_idx(const std::string& images_path, const std::string& labels_path,
                 const std::string& name) {
  const IdxFile img = read_idx(name, images_path, 3, "image file");
  const IdxFile lab = read_idx(name, labels_path, 1, "label file");
  if (img.dims[0] != lab.dims[0])
    throw std::runtime_error(fmt::format("{}: {} has {} images but {} has {} labels", name,
                                         images_path, img.dims[0], labels_path, lab.dims[0]));
  Dataset d;
  d.name = name;
  d.n = img.dims[0], d.channels = 1, d.height = img.dims[1], d.width = img.dims[2];
  d.num_classes = 10;
  for (int c = 0; c < 10; ++c) d.class_names.push_back(std::to_string(c));
  d.labels.resize(size_t(d.n));
  for (size_t i = 0; i < lab.data.size(); ++i) {
    if (lab.data[i] >= 10)
      fail(name, labels_path,
           fmt::format("label {} at index {} is not a digit 0..9", lab.data[i], i));
    d.labels[i] = lab.data[i];
  }
  d.images.resize(img.data.size());
  std::transform(img.data.begin(), img.data.end(), d.images.begin(),
                 [](uint8_t p) { return float(p) / 255.0f; });
  return d;
}

Splits load_mnist(const std::string& dir, int64_t validation_size) {
  // Find all four files before reading any, so a missing one is reported at once.
  const std::string train_images = find_mnist_file(dir, "train-images-idx3-ubyte");
  const std::string train_labels = find_mnist_file(dir, "train-labels-idx1-ubyte");
  const std::string test_images = find_mnist_file(dir, "t10k-images-idx3-ubyte");
  const std::string test_labels = find_mnist_file(dir, "t10k-labels-idx1-ubyte");
  Splits s;
  split_train("mnist", load_idx(train_images, train_labels, "mnist/train"), validation_size,
              "mnist", s);
  s.test = load_idx(test_images, test_labels, "mnist/test");
  if (s.test.height != s.train.height || s.test.width != s.train.width)
    fail("mnist", dir,
         fmt::format("test images are {}x{} but train images are {}x{}", s.test.height,
                     s.test.width, s.train.height, s.train.width));
  return s;
}

// ---- SVHN --------------------------------------------------------------------------------------

// SVHN files are MAT 5 (v6, v7) or MAT 7.3 (HDF5, whose library bounds its own headers). Any other
// file must be refused before Mat_Open: where the 128-byte header does not name version 0x0100
// or 0x0200 with a byte-order mark ("IM" ours, "MI" swapped), Mat_Open tries it as MAT 4 and
// allocates the first variable's declared name length and sizes unchecked (fuzz_mat: 1.29 GB
// from a few bytes).
mat_ft mat_file_version(const std::string& what, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  uint8_t header[128];
  if (!in.read(reinterpret_cast<char*>(header), sizeof header))
    fail(what, path, "not a MAT 5 (v6, v7) or MAT 7.3 file: shorter than their 128-byte header");
  const bool ours = header[126] == 'I' && header[127] == 'M', swapped = header[126] == 'M' && header[127] == 'I';
  uint16_t version;
  std::memcpy(&version, header + 124, 2);
  if (swapped) version = __builtin_bswap16(version);
  if ((!ours && !swapped) || (version != 0x0100 && version != 0x0200))
    fail(what, path,
         fmt::format("not a MAT 5 (v6, v7) or MAT 7.3 file: its header's version is 0x{:04x} with byte-order mark "
                     "0x{:02x}{:02x} (MAT 4 and other files are not read)",
                     version, header[126], header[127]));
  return version == 0x0100 ? MAT_FT_MAT5 : MAT_FT_MAT73;
}

Dataset load_svhn_mat(const std::string& path, const std::string& name) {
  require_file(name, path);
  const mat_ft version = mat_file_version(name, path);
  if (version == MAT_FT_MAT5) Mat5HeaderCheck(name, path).run();
  quiet_matio();
  matio_last_message.clear();
  const std::unique_ptr<mat_t, MatCloser> mat(Mat_Open(path.c_str(), MAT_ACC_RDONLY));
  if (!mat || Mat_GetVersion(mat.get()) != version)
    fail(name, path,
         fmt::format("not a readable MAT file{}",
                     matio_last_message.empty() ? std::string() : " (" + matio_last_message + ")"));
  // Then X's and y's headers: their declared sizes are checked against what the file can hold
  // before matio reads (and allocates) the data.
  const MatVar x_info(Mat_VarReadInfo(mat.get(), "X"));
  if (!x_info) fail(name, path, "no variable X (the 32x32x3xN uint8 images)");
  const MatVar y_info(Mat_VarReadInfo(mat.get(), "y"));
  if (!y_info) fail(name, path, "no variable y (the Nx1 labels)");
  const matvar_t* x = x_info.get();
  // MATLAB drops trailing singleton dimensions, so a file with one image has a 32x32x3 X.
  if (x->rank < 3 || x->rank > 4 || x->dims[0] != 32 || x->dims[1] != 32 || x->dims[2] != 3)
    fail(name, path, fmt::format("X is {}, expected 32x32x3xN", dims_text(x)));
  const uint64_t images = x->rank == 4 ? uint64_t(x->dims[3]) : 1;
  if (x->class_type != MAT_C_UINT8 || x->isComplex)
    fail(name, path,
         fmt::format("X is {}{}, expected real uint8", x->isComplex ? "complex " : "",
                     class_text(x->class_type)));
  const size_t image_size = 32 * 32 * 3;
  const bool plain = version != MAT_FT_MAT73 && x->compression == MAT_COMPRESSION_NONE;
  const uint64_t file_bytes = fs::file_size(path), capacity = plain ? file_bytes : file_bytes * kMaxDeflateRatio;
  if (images > capacity / image_size)
    fail(name, path, fmt::format("X declares {} images ({}), more than the {}-byte file can hold", images,
                                 dims_text(x), file_bytes));
  require_memory(name, path, images * image_size, 1 + sizeof(float), fmt::format("its {} images", images));
  const int64_t n = int64_t(images);
  const matvar_t* y = y_info.get();
  const bool column = y->rank == 2 && (y->dims[1] == 1 || y->dims[0] == 1);
  if (!column || int64_t(y->dims[0] * y->dims[1]) != n)
    fail(name, path,
         fmt::format("y is {}, expected {}x1 (one label per image of X)", dims_text(y), n));

  const MatVar x_data(Mat_VarRead(mat.get(), "X"));
  const MatVar y_data(Mat_VarRead(mat.get(), "y"));
  if (!x_data || !y_data)
    fail(name, path, fmt::format("cannot read {}{}", x_data ? "y" : "X",
                                 matio_last_message.empty() ? std::string() : " (" + matio_last_message + ")"));
  x = x_data.get();
  y = y_data.get();
  if (!x->data || x->data_type != MAT_T_UINT8 || x->nbytes != image_size * size_t(n))
    fail(name, path,
         fmt::format("X holds {} bytes of data, expected {} for {} images", x->nbytes,
                     image_size * size_t(n), n));
  std::vector<double> raw(static_cast<size_t>(n));
  if (!read_numeric(y, raw))
    fail(name, path,
         fmt::format("y is {}{}, expected a real numeric array", y->isComplex ? "complex " : "",
                     class_text(y->class_type)));

  Dataset d;
  d.name = name;
  d.n = n, d.channels = 3, d.height = 32, d.width = 32;
  d.num_classes = 10;
  for (int c = 0; c < 10; ++c) d.class_names.push_back(std::to_string(c));
  d.labels.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    const double v = raw[size_t(i)];
    if (!(v >= 1 && v <= 10 && v == std::floor(v)))
      fail(name, path, fmt::format("label {} at index {} is not in 1..10", v, i));
    d.labels[size_t(i)] = int32_t(v) % 10;  // SVHN writes the digit 0 as 10
  }
  // X(row, col, ch, i) sits at row + 32 col + 1024 ch + 3072 i (column-major); NCHW puts it at
  // ((i 3 + ch) 32 + row) 32 + col, i.e. per (i, ch) plane a 32x32 transpose.
  const uint8_t* src = static_cast<const uint8_t*>(x->data);
  d.images.resize(image_size * size_t(n));
  for (int64_t plane = 0; plane < n * 3; ++plane) {
    const uint8_t* s = src + plane * 1024;
    float* o = d.images.data() + plane * 1024;
    for (int row = 0; row < 32; ++row)
      for (int col = 0; col < 32; ++col) o[row * 32 + col] = float(s[row + 32 * col]) / 255.0f;
  }
  return d;
}

Splits load_svhn(const std::string& dir, int64_t validation_size) {
  Splits s;
  const Dataset train = load_svhn_mat((fs::path(dir) / "train_32x32.mat").string(), "svhn/train");
  split_train("svhn", train, validation_size, "svhn", s);
  s.test = load_svhn_mat((fs::path(dir) / "test_32x32.mat").string(), "svhn/test");
  return s;
}

// ---- image folders -----------------------------------------------------------------------------

namespace {

// The whole file, refused unheard when it is larger than any PNG or JPEG of max_pixels pixels
// can be (4 bytes a pixel uncompressed, twice that for slack, plus 1 MB of metadata chunks).
std::vector<uint8_t> read_image_file(const std::string& what, const std::string& path, int64_t max_pixels) {
  const uint64_t size = fs::file_size(path), limit = uint64_t(max_pixels) * 8 + (uint64_t(1) << 20);
  if (size > limit)
    fail(what, path, fmt::format("{} bytes, more than an image of at most {} pixels needs (raise the limit with "
                                 "--max-image-pixels)", size, max_pixels));
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> bytes(size);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(size))) fail(what, path, "read error");
  return bytes;
}

}  // namespace

namespace {

bool has_image_extension(const fs::path& file) {
  std::string ext = file.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

// HWC bytes -> CHW floats in [0, 1], resized to size x size when size > 0 (stb_image_resize's
// default filter, per channel, no alpha weighting: the decoder's channels are kept as they are).
std::vector<float> to_chw(const DecodedImage& image, int64_t size) {
  const size_t ch = size_t(image.channels), plane = size_t(image.height * image.width);
  std::vector<float> hwc(plane * ch);
  for (size_t i = 0; i < hwc.size(); ++i) hwc[i] = float(image.pixels[i]) / 255.0f;
  int64_t h = image.height, w = image.width;
  if (size > 0 && (h != size || w != size)) {
    std::vector<float> resized(size_t(size * size) * ch);
    if (!stbir_resize_float(hwc.data(), int(w), int(h), 0, resized.data(), int(size), int(size), 0, int(ch)))
      throw std::runtime_error(fmt::format("cannot resize {}x{} to {}x{}", w, h, size, size));
    hwc = std::move(resized), h = w = size;
  }
  const size_t out_plane = size_t(h * w);
  std::vector<float> chw(hwc.size());
  for (size_t p = 0; p < out_plane; ++p)
    for (size_t k = 0; k < ch; ++k) chw[k * out_plane + p] = hwc[p * ch + k];
  return chw;
}

}  // namespace

Dataset load_image_folder(const std::string& dir, const std::string& name, int64_t max_pixels, int64_t image_size) {
  if (max_pixels <= 0) throw std::invalid_argument(fmt::format("{}: max_pixels = {} must be positive", name, max_pixels));
  if (image_size < 0 || image_size * image_size > max_pixels)
    throw std::invalid_argument(fmt::format("{}: image size {} outside [0, sqrt(max_pixels {})]", name, image_size, max_pixels));
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail(name, dir, "not a directory");
  std::vector<fs::path> classes;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string()[0] != '.') classes.push_back(e.path());
  std::sort(classes.begin(), classes.end());
  if (classes.empty()) fail(name, dir, "no class folders (expected dir/<class>/<images>)");

  // Every file first, so the memory the whole set needs is known from the first image.
  std::vector<std::pair<fs::path, int32_t>> files;
  Dataset d;
  for (size_t c = 0; c < classes.size(); ++c) {
    std::vector<fs::path> in_class;
    for (const auto& e : fs::directory_iterator(classes[c])) {
      if (!e.is_regular_file() || e.path().filename().string()[0] == '.') continue;
      if (has_image_extension(e.path())) in_class.push_back(e.path());
      else ++d.skipped_files;
    }
    std::sort(in_class.begin(), in_class.end());
    if (in_class.empty()) fail(name, classes[c].string(), "class folder has no images (.png, .jpg, .jpeg)");
    for (const fs::path& f : in_class) files.push_back({f, int32_t(c)});
  }
  d.name = name;
  d.num_classes = int(classes.size());
  for (const fs::path& c : classes) d.class_names.push_back(c.filename().string());
  std::string first;  // the file that fixed the size, for the mismatch message
  for (const auto& [file, label] : files) {
    const std::vector<uint8_t> bytes = read_image_file(name, file.string(), max_pixels);
    DecodedImage image;
    std::vector<float> chw;
    try {
      image = decode_image(bytes, max_pixels);
      chw = to_chw(image, image_size);
    } catch (const std::runtime_error& e) {
      fail(name, file.string(), e.what());
    }
    const int64_t h = image_size > 0 ? image_size : image.height, w = image_size > 0 ? image_size : image.width;
    if (d.n == 0) {
      d.channels = image.channels, d.height = h, d.width = w;
      first = file.string();
      require_memory(name, dir, files.size(), uint64_t(d.image_size()) * sizeof(float),
                     fmt::format("its {} images of {}x{}x{}", files.size(), d.width, d.height, d.channels));
      d.images.reserve(files.size() * size_t(d.image_size()));
    } else if (image.channels != d.channels || h != d.height || w != d.width) {
      fail(name, file.string(),
           fmt::format("image is {}x{} with {} channel(s), but {} is {}x{} with {}{}", image.width, image.height,
                       image.channels, first, d.width, d.height, d.channels,
                       image.channels == d.channels ? " (--image-size resizes them all)" : ""));
    }
    d.images.insert(d.images.end(), chw.begin(), chw.end());
    d.labels.push_back(label);
    d.paths.push_back((file.parent_path().filename() / file.filename()).string());
    ++d.n;
  }
  return d;
}

// ---- statistics --------------------------------------------------------------------------------

ChannelStats compute_channel_stats(const Dataset& reference) {
  if (reference.n == 0)
    throw std::runtime_error(
        fmt::format("{}: no rows to compute channel statistics on", reference.name));
  const int64_t plane = reference.height * reference.width;
  ChannelStats s;
  for (int64_t c = 0; c < reference.channels; ++c) {
    double sum = 0, sum_sq = 0;
    for (int64_t i = 0; i < reference.n; ++i) {
      const float* p = reference.image(i) + c * plane;
      for (int64_t k = 0; k < plane; ++k) sum += p[k], sum_sq += double(p[k]) * p[k];
    }
    const double count = double(reference.n * plane);
    const double mean = sum / count;
    const double var = std::max(0.0, sum_sq / count - mean * mean);
    s.mean.push_back(float(mean));
    s.stddev.push_back(var > 0 ? float(std::sqrt(var)) : 1.0f);
  }
  return s;
}

void standardize(Dataset& d, const ChannelStats& s) {
  if (int64_t(s.mean.size()) != d.channels || int64_t(s.stddev.size()) != d.channels)
    throw std::invalid_argument(
        fmt::format("{}: {} channels but statistics for {}", d.name, d.channels, s.mean.size()));
  const int64_t plane = d.height * d.width;
  for (int64_t i = 0; i < d.n; ++i)
    for (int64_t c = 0; c < d.channels; ++c) {
      float* p = d.images.data() + (i * d.channels + c) * plane;
      const float mean = s.mean[size_t(c)], inv = 1.0f / s.stddev[size_t(c)];
      for (int64_t k = 0; k < plane; ++k) p[k] = (p[k] - mean) * inv;
    }
}

std::vector<double> class_frequencies(const Dataset& d) {
  if (d.n == 0) throw std::runtime_error(fmt::format("{}: no rows for class frequencies", d.name));
  std::vector<double> f(size_t(d.num_classes), 0.0);
  for (int32_t y : d.labels) {
    if (y < 0 || y >= d.num_classes)
      throw std::runtime_error(
          fmt::format("{}: label {} outside [0, {})", d.name, y, d.num_classes));
    f[size_t(y)] += 1;
  }
  for (double& x : f) x /= double(d.n);
  return f;
}

std::vector<int64_t> balanced_label_subset(const Dataset& d, int per_class, uint64_t seed) {
  if (per_class < 1)
    throw std::invalid_argument(fmt::format("{}: per_class = {} < 1", d.name, per_class));
  const ClassIndex index(d.labels, d.num_classes);
  std::vector<int64_t> out;
  for (int c = 0; c < d.num_classes; ++c) {
    std::vector<int64_t> rows = index.rows[size_t(c)];
    if (int64_t(rows.size()) < per_class)
      throw std::runtime_error(fmt::format("{}: class {} has {} rows, fewer than the {} requested",
                                           d.name, c, rows.size(), per_class));
    // Each class has its own counter range, so class c's choice does not depend on the others.
    Draws draws{seed, Stream::LabelSubset, uint64_t(c) << 32};
    for (int i = 0; i < per_class; ++i)  // partial Fisher-Yates
      std::swap(rows[size_t(i)], rows[size_t(i + draws.below(int64_t(rows.size()) - i))]);
    out.insert(out.end(), rows.begin(), rows.begin() + per_class);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace equivae::data
