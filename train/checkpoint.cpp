#include "train/checkpoint.h"

#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

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

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(fmt::format("checkpoint {}: {}", path, what));
}

struct Parsed {
  json header;
  std::vector<char> data;
};

Parsed parse(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot be opened");
  in.seekg(0, std::ios::end);
  const uint64_t size = uint64_t(in.tellg());
  in.seekg(0);
  uint64_t header_len = 0;
  if (size < 8 || !in.read(reinterpret_cast<char*>(&header_len), 8)) fail(path, "too short to be a safetensors file");
  if (header_len > size - 8) fail(path, fmt::format("header length {} exceeds the file size {}", header_len, size));
  std::string header(header_len, '\0');
  in.read(header.data(), std::streamsize(header_len));
  Parsed p;
  try {
    p.header = json::parse(header);
  } catch (const json::exception& e) {
    fail(path, fmt::format("header is not valid JSON ({})", e.what()));
  }
  p.data.resize(size - 8 - header_len);
  in.read(p.data.data(), std::streamsize(p.data.size()));
  if (!in) fail(path, "truncated data section");
  if (!p.header.is_object() || !p.header.contains("__metadata__")) fail(path, "no __metadata__ in the header");
  const json& meta = p.header["__metadata__"];
  if (!meta.contains("crc32")) fail(path, "no crc32 in the metadata");
  const uLong crc = crc32(0L, reinterpret_cast<const Bytef*>(p.data.data()), uInt(p.data.size()));
  if (std::to_string(crc) != meta["crc32"].get<std::string>())
    fail(path, "data CRC-32 mismatch: the file is corrupt");
  return p;
}

std::map<std::string, std::string> metadata_of(const Parsed& p) {
  std::map<std::string, std::string> out;
  for (auto& [k, v] : p.header["__metadata__"].items()) out[k] = v.get<std::string>();
  return out;
}

// Copies tensor `name` of the file into `dst` (same shape, file dtype must match).
void read_into(const std::string& path, const Parsed& p, const std::string& name, Tensor& dst) {
  if (!p.header.contains(name)) fail(path, fmt::format("tensor {} is missing", name));
  const json& e = p.header[name];
  const Shape shape = e["shape"].get<Shape>();
  if (shape != dst.shape())
    fail(path, fmt::format("tensor {} has shape {}, the model expects {}", name, shape_str(shape), shape_str(dst.shape())));
  if (e["dtype"].get<std::string>() != st_dtype(dst.dtype()))
    fail(path, fmt::format("tensor {} has dtype {}, expected {}", name, e["dtype"].get<std::string>(), st_dtype(dst.dtype())));
  const auto range = e["data_offsets"].get<std::vector<uint64_t>>();
  if (range.size() != 2 || range[1] < range[0] || range[1] > p.data.size() || range[1] - range[0] != dst.bytes())
    fail(path, fmt::format("tensor {} has a bad byte range", name));
  Tensor host = Tensor::empty(dst.shape(), dst.dtype(), Device::cpu);
  std::memcpy(host.raw(), p.data.data() + range[0], dst.bytes());
  dst.copy_from(host);
}

}  // namespace

void save_checkpoint(const std::string& path, const ParameterStore& params, Adam* adam,
                     const std::map<std::string, std::string>& metadata) {
  std::vector<Blob> blobs;
  for (const auto& e : params.entries()) blobs.push_back({e.name, e.shape, host_bytes(e.var.value())});
  if (adam) {
    blobs.push_back({"adam.m", adam->first_moment().shape(), host_bytes(adam->first_moment())});
    blobs.push_back({"adam.v", adam->second_moment().shape(), host_bytes(adam->second_moment())});
  }
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
  meta["crc32"] = std::to_string(crc32(0L, reinterpret_cast<const Bytef*>(data.data()), uInt(data.size())));
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

std::map<std::string, std::string> read_checkpoint_metadata(const std::string& path) { return metadata_of(parse(path)); }

std::map<std::string, std::string> load_checkpoint(const std::string& path, ParameterStore& params, Adam* adam) {
  const Parsed p = parse(path);
  // Read everything into fresh buffers first, so a failure leaves the model untouched.
  Tensor values = Tensor::empty(params.values().shape(), params.values().dtype(), params.values().device());
  for (const auto& e : params.entries()) {
    Tensor view = values.rows(e.offset, e.offset + shape_numel(e.shape)).reshape(e.shape);
    read_into(path, p, e.name, view);
  }
  std::map<std::string, std::string> meta = metadata_of(p);
  if (adam) {
    Tensor m = Tensor::empty(adam->first_moment().shape(), values.dtype(), values.device());
    Tensor v = Tensor::empty(adam->second_moment().shape(), values.dtype(), values.device());
    read_into(path, p, "adam.m", m);
    read_into(path, p, "adam.v", v);
    if (!meta.count("adam_step")) fail(path, "no adam_step in the metadata");
    adam->first_moment().copy_from(m);
    adam->second_moment().copy_from(v);
    adam->set_steps(std::stoll(meta["adam_step"]));
  }
  params.values().copy_from(values);
  return meta;
}

}  // namespace equivae
