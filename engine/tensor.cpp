#include "engine/tensor.h"

#include <cstring>

#include "engine/backend.h"

namespace equivae {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i32: return 4;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::i32: return "i32";
  }
  return "?";
}

const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  // Shapes come from files too (checkpoints, data headers): a negative dimension or a product
  // past int64 is an error, never a wrapped (negative or small) count.
  int64_t n = 1;
  for (int64_t d : s) {
    EQUIVAE_CHECK(d >= 0, "tensor: negative dimension in shape {}", shape_str(s));
    EQUIVAE_CHECK(!__builtin_mul_overflow(n, d, &n), "tensor: shape {} has more than 2^63 elements", shape_str(s));
  }
  return n;
}

Storage::Storage(size_t bytes_, Device device_) : bytes(bytes_), device(device_) {
  ptr = backend(device).allocate(bytes == 0 ? 1 : bytes);
}
Storage::~Storage() { backend(device).deallocate(ptr); }

Tensor Tensor::empty(Shape shape, DType dtype, Device device) {
  const int64_t n = shape_numel(shape);  // throws on a negative dimension or overflow
  EQUIVAE_CHECK(uint64_t(n) <= SIZE_MAX / dtype_size(dtype), "tensor: {} {} elements do not fit in memory",
                shape_str(shape), dtype_name(dtype));
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = std::make_shared<Storage>(size_t(t.numel()) * dtype_size(dtype), device);
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype, Device device) { return full(std::move(shape), 0.0, dtype, device); }

Tensor Tensor::full(Shape shape, double value, DType dtype, Device device) {
  Tensor t = empty(std::move(shape), dtype, device);
  backend(device).fill(t, value);
  return t;
}

Tensor Tensor::from(const std::vector<double>& values, Shape shape, DType dtype, Device device) {
  EQUIVAE_CHECK(int64_t(values.size()) == shape_numel(shape), "tensor: {} values for shape {}", values.size(),
                shape_str(shape));
  Tensor host = empty(std::move(shape), dtype, Device::cpu);
  for (size_t i = 0; i < values.size(); ++i) {
    switch (dtype) {
      case DType::f32: host.data<float>()[i] = float(values[i]); break;
      case DType::f64: host.data<double>()[i] = values[i]; break;
      case DType::i32: host.data<int32_t>()[i] = int32_t(values[i]); break;
    }
  }
  return host.to(device);
}

Tensor Tensor::from_indices(const std::vector<int32_t>& values, Device device) {
  Tensor host = empty({int64_t(values.size())}, DType::i32, Device::cpu);
  if (!values.empty()) std::memcpy(host.raw(), values.data(), values.size() * sizeof(int32_t));
  return host.to(device);
}

int64_t Tensor::dim(int i) const {
  const int n = ndim();
  EQUIVAE_CHECK(i >= -n && i < n, "tensor: dimension {} out of range for {}", i, describe());
  return shape_[size_t(i < 0 ? i + n : i)];
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined";
  return fmt::format("{}{}@{}", dtype_name(dtype_), shape_str(shape_), device_name(device_));
}

void* Tensor::raw() const {
  EQUIVAE_CHECK(defined(), "tensor: access to an undefined tensor");
  return static_cast<char*>(storage_->ptr) + offset_ * int64_t(dtype_size(dtype_));
}

Tensor Tensor::reshape(Shape shape) const {
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      EQUIVAE_CHECK(infer < 0, "reshape: more than one -1 in {}", shape_str(shape));
      infer = int64_t(i);
    } else {
      known *= shape[i];
    }
  }
  EQUIVAE_CHECK(infer < 0 || known > 0, "reshape: cannot view {} as {}", describe(), shape_str(shape));
  if (infer >= 0) shape[size_t(infer)] = numel() / known;
  EQUIVAE_CHECK(shape_numel(shape) == numel(), "reshape: cannot view {} as {}", describe(), shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  EQUIVAE_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= dim(0), "rows: [{}, {}) out of range for {}",
                begin, end, describe());
  Tensor t = *this;
  const int64_t row = dim(0) ? numel() / dim(0) : 0;
  t.offset_ += begin * row;
  t.shape_[0] = end - begin;
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  EQUIVAE_CHECK(src.shape_ == shape_ && src.dtype_ == dtype_, "copy: {} into {}", src.describe(), describe());
  if (bytes() == 0) return;
  // Whichever side is on the GPU does the copy.
  Backend& b = backend(device_ == Device::cuda ? Device::cuda : src.device_);
  b.copy(raw(), device_, src.raw(), src.device_, bytes());
}

Tensor Tensor::to(Device device) const {
  if (device == device_) return *this;
  Tensor t = empty(shape_, dtype_, device);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device_);
  t.copy_from(*this);
  return t;
}

std::vector<double> Tensor::to_vector() const {
  const Tensor host = to(Device::cpu);
  std::vector<double> out(static_cast<size_t>(numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    switch (dtype_) {
      case DType::f32: out[i] = host.data<float>()[i]; break;
      case DType::f64: out[i] = host.data<double>()[i]; break;
      case DType::i32: out[i] = host.data<int32_t>()[i]; break;
    }
  }
  return out;
}

double Tensor::item() const {
  EQUIVAE_CHECK(numel() == 1, "item: {} has more than one element", describe());
  return to_vector()[0];
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  const std::vector<double> v = to_vector();
  return from(v, shape_, dtype, device_);
}

void check_shape(const char* op, const char* what, const Tensor& t, const Shape& expected) {
  bool ok = t.defined() && t.ndim() == int(expected.size());
  for (size_t i = 0; ok && i < expected.size(); ++i) ok = expected[i] < 0 || expected[i] == t.shape()[i];
  if (!ok) {
    std::string want = "[";
    for (size_t i = 0; i < expected.size(); ++i)
      want += (i ? "," : "") + (expected[i] < 0 ? std::string("*") : std::to_string(expected[i]));
    throw ShapeError(fmt::format("{}: {} must have shape {}], got {}", op, what, want, t.describe()));
  }
}

void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  EQUIVAE_CHECK(a.shape() == b.shape() && a.dtype() == b.dtype() && a.device() == b.device(),
                "{}: operands differ: {} vs {}", op, a.describe(), b.describe());
}

}  // namespace equivae
