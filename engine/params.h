// All trainable parameters of a model in one contiguous buffer, with the gradients (and Adam's
// moments) in buffers of the same layout and a name -> (offset, shape) table (llm.c's
// malloc_and_point_parameters). Adam is one pass over the buffers; a checkpoint is the table
// plus the buffers; benchmarks and tests walk the table.
#pragma once
#include <string>
#include <vector>

#include "engine/autograd.h"

namespace equivae {

// How a parameter starts: uniform in [-bound, bound] (PyTorch's default for Linear and Conv
// uses bound = 1 / sqrt(fan_in) for weights and biases alike), or a constant.
struct Init {
  enum Kind { uniform, constant } kind = uniform;
  double value = 0;  // the bound, or the constant
  static Init fan_in(int64_t fan_in);
  static Init zeros() { return {constant, 0.0}; }
};

class ParameterStore {
 public:
  struct Entry {
    std::string name;
    int64_t offset;
    Shape shape;
    Init init;
    Var var;
  };

  // Declare every parameter, then allocate once; the returned Var is valid from the start and
  // holds its value after allocate().
  Var declare(const std::string& name, Shape shape, Init init);
  // Allocates the buffers and draws the initial values from Philox keyed by `seed`.
  void allocate(uint64_t seed, DType dtype = DType::f32, Device device = Device::cpu);

  bool allocated() const { return values_.defined(); }
  const std::vector<Entry>& entries() const { return entries_; }
  const Entry& find(const std::string& name) const;
  int64_t numel() const { return total_; }
  Tensor& values() { return values_; }
  Tensor& grads() { return grads_; }
  const Tensor& values() const { return values_; }
  void zero_grad();
  // Moves every buffer to `device` (parameters and gradients keep their Vars).
  void to(Device device);

 private:
  void point_vars();
  std::vector<Entry> entries_;
  int64_t total_ = 0;
  Tensor values_, grads_;
};

struct AdamConfig {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};

// torch.optim.Adam with its defaults: bias-corrected moments, no weight decay.
class Adam {
 public:
  Adam(ParameterStore& params, AdamConfig config = {});
  void step();
  int64_t steps() const { return t_; }
  // For checkpoints: the moments and the step count.
  Tensor& first_moment() { return m_; }
  Tensor& second_moment() { return v_; }
  void set_steps(int64_t t) { t_ = t; }
  const AdamConfig& config() const { return config_; }

 private:
  ParameterStore& params_;
  AdamConfig config_;
  Tensor m_, v_;
  int64_t t_ = 0;
};

}  // namespace equivae
