#include "train/checkpoint.h"

#include <zlib.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "engine/backend.h"
#include "train/data.h"
#include "train/json_checks.h"

namespace equivae {
namespace {

using json = nlohmann::json;

struct Blob {
  std::string name;
  Shape shape;
  std::vector<char> bytes;
};

const char* st_dtype(DType t) { return t == DType::f64 ? "F64" : t == DType::f32 ? "F32" : "I32"; }

std::vector<char> host_bytes(const Tensor& t) {
  const Tensor host = t.to(Device::cpu);
  const char* p = static_cast<const char*>(host.raw());
  return std::vector<char>(p, p + host.bytes());
}

// Adam's moments are buffers in the parameters' padded layout (engine/params.h); a file holds them
// packed, each parameter at its packed index, so files do not depend on the padding (and those
// written before it load unchanged).
std::vector<char> packed_bytes(const ParameterStore& params, const Tensor& buffer) {
  const std::vector<char> all = host_bytes(buffer);
  const size_t elem = dtype_size(buffer.dtype());
  std::vector<char> out(size_t(params.numel()) * elem);
  for (const auto& e : params.entries())
    std::memcpy(out.data() + size_t(e.index) * elem, all.data() + size_t(e.offset) * elem,
                size_t(shape_numel(e.shape)) * elem);
  return out;
}
Tensor padded(const ParameterStore& params, const Tensor& packed, Device device) {
  Tensor out = Tensor::zeros({params.buffer_numel()}, packed.dtype(), Device::cpu);
  const size_t elem = dtype_size(packed.dtype());
  for (const auto& e : params.entries())
    std::memcpy(static_cast<char*>(out.raw()) + size_t(e.offset) * elem,
                static_cast<const char*>(packed.raw()) + size_t(e.index) * elem, size_t(shape_numel(e.shape)) * elem);
  return out.to(device);
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(fmt::format("checkpoint {}: {}", path, what));
}

// One tensor entry of the header, checked: a known dtype, a shape of non-negative integers whose
// byte count matches its range, and a range inside the data section.
struct TensorEntry {
  std::string dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

struct Parsed {
  std::map<std::string, std::string> metadata;
  std::map<std::string, TensorEntry> tensors;
  std::vector<char> data;
};

size_t st_dtype_size(const std::string& dtype) { return dtype == "F64" ? 8 : dtype == "F32" || dtype == "I32" ? 4 : 0; }

// Throws std::runtime_error without the path (parse() adds it).
TensorEntry parse_tensor_entry(const std::string& name, const json& e, uint64_t data_size) {
  const std::string what = "tensor " + name;
  TensorEntry t;
  const json& dtype = json_member(e, what, "dtype");
  if (!dtype.is_string() || st_dtype_size(dtype.get<std::string>()) == 0)
    throw std::runtime_error(fmt::format("{}: dtype {} is not one of \"F32\", \"F64\", \"I32\"", what, json_brief(dtype)));
  t.dtype = dtype.get<std::string>();
  const json& shape = json_member(e, what, "shape");
  if (!shape.is_array() || shape.size() > 8)
    throw std::runtime_error(fmt::format("{}: shape {} is not an array of at most 8 dimensions", what, json_brief(shape)));
  for (const json& d : shape) t.shape.push_back(json_integer(d, what + ": a dimension of its shape", 0, INT64_MAX));
  const json& range = json_member(e, what, "data_offsets");
  if (!range.is_array() || range.size() != 2)
    throw std::runtime_error(fmt::format("{}: data_offsets {} is not [begin, end]", what, json_brief(range)));
  t.begin = uint64_t(json_integer(range[0], what + ": data_offsets begin", 0, int64_t(data_size)));
  t.end = uint64_t(json_integer(range[1], what + ": data_offsets end", 0, int64_t(data_size)));
  uint64_t bytes = 0;
  try {
    bytes = uint64_t(shape_numel(t.shape));
  } catch (const ShapeError&) {
    throw std::runtime_error(fmt::format("{}: shape {} has more than 2^63 elements", what, shape_str(t.shape)));
  }
  if (t.begin > t.end || __builtin_mul_overflow(bytes, st_dtype_size(t.dtype), &bytes) || t.end - t.begin != bytes)
    throw std::runtime_error(fmt::format("{}: data_offsets [{}, {}] do not hold its {} {} values", what, t.begin,
                                         t.end, shape_str(t.shape), t.dtype));
  return t;
}

// Refuses two tensors sharing bytes: each value in the file belongs to one tensor.
void check_disjoint(const std::string& path, const std::map<std::string, TensorEntry>& tensors) {
  std::vector<std::pair<const TensorEntry*, const std::string*>> by_begin;
  for (const auto& [name, t] : tensors)
    if (t.end > t.begin) by_begin.push_back({&t, &name});
  std::sort(by_begin.begin(), by_begin.end(), [](auto a, auto b) { return a.first->begin < b.first->begin; });
  for (size_t i = 1; i < by_begin.size(); ++i)
    if (by_begin[i].first->begin < by_begin[i - 1].first->end)
      fail(path, fmt::format("tensors {} and {} overlap in the data section", *by_begin[i - 1].second,
                             *by_begin[i].second));
}

Parsed parse(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot be opened");
  in.seekg(0, std::ios::end);
  const uint64_t size = uint64_t(in.tellg());
  in.seekg(0);
  uint64_t header_len = 0;
  if (size < 8 || !in.read(reinterpret_cast<char*>(&header_len), 8)) fail(path, "too short to be a safetensors file");
  if (header_len > size - 8) fail(path, fmt::format("header length {} exceeds the file size {}", header_len, size));
  // The whole file is read into memory: refuse one larger than the machine's memory by its figure.
  data::require_memory("checkpoint", path, size, 1, "its contents");
  std::string text(header_len, '\0');
  in.read(text.data(), std::streamsize(header_len));
  json header;
  try {
    header = json::parse(text);
  } catch (const json::exception& e) {
    fail(path, fmt::format("header is not valid JSON ({})", e.what()));
  }
  Parsed p;
  p.data.resize(size - 8 - header_len);
  in.read(p.data.data(), std::streamsize(p.data.size()));
  if (!in) fail(path, "truncated data section");
  try {
    if (!header.is_object()) throw std::runtime_error(fmt::format("header is a JSON {}, expected an object", header.type_name()));
    const json& meta = json_member(header, "header", "__metadata__");
    if (!meta.is_object()) throw std::runtime_error(fmt::format("__metadata__ is {}, expected an object", json_brief(meta)));
    for (const auto& [field, v] : meta.items()) {
      if (!v.is_string()) throw std::runtime_error(fmt::format("metadata field {} is {}, expected a string", field, json_brief(v)));
      p.metadata[field] = v.get<std::string>();
    }
    for (const auto& [name, entry] : header.items())
      if (name != "__metadata__") p.tensors[name] = parse_tensor_entry(name, entry, p.data.size());
  } catch (const std::runtime_error& e) {
    fail(path, e.what());
  }
  check_disjoint(path, p.tensors);
  if (!p.metadata.count("crc32")) fail(path, "no crc32 in the metadata");
  const uLong crc = crc32_z(0L, reinterpret_cast<const Bytef*>(p.data.data()), p.data.size());
  if (std::to_string(crc) != p.metadata.at("crc32")) fail(path, "data CRC-32 mismatch: the file is corrupt");
  return p;
}

// Copies tensor `name` of the file into `dst` (same shape, file dtype must match), refusing NaN
// and Inf: a checkpoint holds the weights of a finished step, which are finite.
void read_into(const std::string& path, const Parsed& p, const std::string& name, Tensor& dst) {
  const auto found = p.tensors.find(name);
  if (found == p.tensors.end()) fail(path, fmt::format("tensor {} is missing", name));
  const TensorEntry& e = found->second;
  if (e.shape != dst.shape())
    fail(path, fmt::format("tensor {} has shape {}, the model expects {}", name, shape_str(e.shape), shape_str(dst.shape())));
  if (e.dtype != st_dtype(dst.dtype()))
    fail(path, fmt::format("tensor {} has dtype {}, expected {}", name, e.dtype, st_dtype(dst.dtype())));
  Tensor host = Tensor::empty(dst.shape(), dst.dtype(), Device::cpu);
  std::memcpy(host.raw(), p.data.data() + e.begin, dst.bytes());
  if (dst.dtype() != DType::i32 && backend(Device::cpu).has_nonfinite(host))
    fail(path, fmt::format("tensor {} holds NaN or Inf", name));
  dst.copy_from(host);
}

}  // namespace

void save_checkpoint(const std::string& path, const ParameterStore& params, Adam* adam,
                     const std::map<std::string, std::string>& metadata, const Tensor* average) {
  std::vector<Blob> blobs;
  for (const auto& e : params.entries()) blobs.push_back({e.name, e.shape, host_bytes(e.var.value())});
  if (adam) {
    blobs.push_back({"adam.m", {params.numel()}, packed_bytes(params, adam->first_moment())});
    blobs.push_back({"adam.v", {params.numel()}, packed_bytes(params, adam->second_moment())});
  }
  if (average) blobs.push_back({"average", {params.numel()}, packed_bytes(params, *average)});
  json header = json::object();
  std::vector<char> data;
  for (const Blob& b : blobs) {
    header[b.name] = {{"dtype", st_dtype(params.values().dtype())},
                      {"shape", b.shape},
                      {"data_offsets", {data.size(), data.size() + b.bytes.size()}}};
    data.insert(data.end(), b.bytes.begin(), b.bytes.end());
  }
  json meta = json::object();
  for (const auto& [k, v] : metadata) meta[k] = v;
  if (adam) meta["adam_step"] = std::to_string(adam->steps());
  meta["crc32"] = std::to_string(crc32_z(0L, reinterpret_cast<const Bytef*>(data.data()), data.size()));
  header["__metadata__"] = meta;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned, as the format recommends
  const uint64_t len = text.size();

  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(tmp, "cannot be created");
    out.write(reinterpret_cast<const char*>(&len), 8);
    out.write(text.data(), std::streamsize(text.size()));
    out.write(data.data(), std::streamsize(data.size()));
    out.flush();
    if (!out) fail(tmp, "write failed (disk full?)");
  }
  std::filesystem::rename(tmp, path);  // atomic on POSIX: a reader sees the old or the new file
}

std::map<std::string, std::string> read_checkpoint_metadata(const std::string& path) { return parse(path).metadata; }

std::map<std::string, std::string> load_checkpoint(const std::string& path, ParameterStore& params, Adam* adam,
                                                   Tensor* average) {
  const Parsed p = parse(path);
  // Read everything into fresh buffers first, so a failure leaves the model untouched.
  // Zeros: the alignment gaps between parameters (engine/params.h) stay zero.
  Tensor values = Tensor::zeros(params.values().shape(), params.values().dtype(), params.values().device());
  for (const auto& e : params.entries()) {
    Tensor view = values.rows(e.offset, e.offset + shape_numel(e.shape)).reshape(e.shape);
    read_into(path, p, e.name, view);
  }
  const std::map<std::string, std::string>& meta = p.metadata;
  Tensor packed_average;
  if (average) {
    packed_average = Tensor::empty({params.numel()}, values.dtype(), Device::cpu);
    read_into(path, p, "average", packed_average);
  }
  if (adam) {
    Tensor m = Tensor::empty({params.numel()}, values.dtype(), Device::cpu);
    Tensor v = Tensor::empty({params.numel()}, values.dtype(), Device::cpu);
    read_into(path, p, "adam.m", m);
    read_into(path, p, "adam.v", v);
    const int64_t steps = int64_t(metadata_count(path, meta, "adam_step", INT64_MAX));
    adam->first_moment().copy_from(padded(params, m, values.device()));
    adam->second_moment().copy_from(padded(params, v, values.device()));
    adam->set_steps(steps);
  }
  if (average) *average = padded(params, packed_average, values.device());
  params.values().copy_from(values);
  return meta;
}

void load_best_beside(const std::string& checkpoint, int best_epoch, ParameterStore& params) {
  const std::string best_file = (std::filesystem::path(checkpoint).parent_path() / "best.safetensors").string();
  const auto meta = load_checkpoint(best_file, params, nullptr);
  EQUIVAE_CHECK(meta.count("epoch") && meta.at("epoch") == std::to_string(best_epoch),
                "checkpoint {}: its best epoch is {}, but {} holds epoch {}", checkpoint, best_epoch, best_file,
                meta.count("epoch") ? meta.at("epoch") : "none");
}

uint64_t metadata_count(const std::string& path, const std::map<std::string, std::string>& metadata,
                        const std::string& field, uint64_t max) {
  const auto found = metadata.find(field);
  if (found == metadata.end()) fail(path, fmt::format("no {} in the metadata", field));
  const std::string& text = found->second;
  uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value > max)
    fail(path, fmt::format("metadata field {} is \"{}\", expected an integer in [0, {}]", field, text, max));
  return value;
}

}  // namespace equivae
