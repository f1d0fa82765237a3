// A dense, contiguous, row-major (NCHW for images) tensor on one device. Copies share storage
// (like torch.Tensor); reshape and row slices are views; everything else allocates.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/error.h"

namespace equivae {

enum class DType : uint8_t { f32, f64, i32 };
enum class Device : uint8_t { cpu, cuda };

using Shape = std::vector<int64_t>;

size_t dtype_size(DType t);
const char* dtype_name(DType t);
const char* device_name(Device d);
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }

// Raw memory on one device, released through that device's backend.
struct Storage {
  void* ptr = nullptr;
  size_t bytes = 0;
  Device device = Device::cpu;
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(Shape shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor zeros(Shape shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor full(Shape shape, double value, DType dtype = DType::f32, Device device = Device::cpu);
  // From host values, converted to `dtype`.
  static Tensor from(const std::vector<double>& values, Shape shape, DType dtype = DType::f32,
                     Device device = Device::cpu);
  static Tensor from_indices(const std::vector<int32_t>& values, Device device = Device::cpu);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return int(shape_.size()); }
  int64_t dim(int i) const;  // negative counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  size_t bytes() const { return size_t(numel()) * dtype_size(dtype_); }
  std::string describe() const;  // e.g. "f32[32,1,28,28]@cpu"

  void* raw() const;
  template <class T> T* data() const {
    EQUIVAE_CHECK(dtype_ == dtype_of<T>(), "tensor: data<{}>() on a {} tensor", dtype_name(dtype_of<T>()),
                  describe());
    return static_cast<T*>(raw());
  }

  Tensor reshape(Shape shape) const;             // a view; one dimension may be -1
  Tensor rows(int64_t begin, int64_t end) const;  // a view of [begin, end) along dim 0
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;                   // converts on the CPU
  Tensor clone() const;
  void copy_from(const Tensor& src);              // same shape and dtype, any devices
  std::vector<double> to_vector() const;          // host copy, converted to double
  double item() const;                            // the value of a one-element tensor

 private:
  std::shared_ptr<Storage> storage_;
  int64_t offset_ = 0;  // in elements
  Shape shape_;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu;
};

// Throws naming `op` unless `t` has exactly `expected` (entries of -1 match any size).
void check_shape(const char* op, const char* what, const Tensor& t, const Shape& expected);
void check_same_shape(const char* op, const Tensor& a, const Tensor& b);

}  // namespace equivae
