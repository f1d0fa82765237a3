// All trainable parameters of a model in one contiguous buffer, with the gradients (and Adam's
// moments) in buffers of the same layout and a name -> (offset, shape) table (llm.c's
// malloc_and_point_parameters). Adam is one pass over the buffers; a checkpoint is the table
// plus the buffers; benchmarks and tests walk the table.
//
// Every parameter's view starts at a multiple of kParamAlign elements (16 bytes in f32, 32 in
// f64) so kernels may read and write it with 128-bit accesses; the gaps are zeros that stay zero
// (zero gradient, zero Adam moments). Each parameter also keeps its index in the packed order
// (no gaps), which keys its initial values and lays out Adam's moments in a checkpoint, so
// neither depends on the padding.
#pragma once
#include <string>
#include <vector>

#include "engine/autograd.h"

namespace equivae {

// How weights start (SPEC.md section 1 leaves it open). torch: PyTorch's default for Linear and
// Conv, U(+-1/sqrt(fan_in)) for weights and biases alike. he: He-uniform weights
// U(+-sqrt(6/fan_in)), zero biases. glorot: Glorot-uniform weights U(+-sqrt(6/(fan_in+fan_out))),
// zero biases (TensorFlow's default, which the paper's code likely used).
enum class InitScheme { torch, he, glorot };
InitScheme init_scheme_from_name(const std::string& name);  // throws std::invalid_argument
std::string init_scheme_name(InitScheme scheme);

// How one parameter starts: a weight or bias drawn under the store's scheme, or a constant. Fans
// follow the frameworks: a dense [out, in] weight has fan_in = in, fan_out = out; a conv weight
// [out, in, k, k] fan_in = in k k, fan_out = out k k; a transposed conv's [in, out, k, k] the
// other way round (fan_in = out k k), as PyTorch and Keras count them.
struct Init {
  enum Kind { weight, bias, constant } kind = constant;
  int64_t fan_in = 0, fan_out = 0;
  double value = 0;  // of a constant
  static Init weights(int64_t fan_in, int64_t fan_out) { return {weight, fan_in, fan_out, 0.0}; }
  static Init biases(int64_t fan_in) { return {bias, fan_in, 0, 0.0}; }
  static Init zeros() { return {constant, 0, 0, 0.0}; }
  // The half-width of the uniform draw under `scheme`; 0 for a constant or a zero bias.
  double bound(InitScheme scheme) const;
};

inline constexpr int64_t kParamAlign = 4;

class ParameterStore {
 public:
  explicit ParameterStore(InitScheme scheme = InitScheme::torch) : scheme_(scheme) {}
  struct Entry {
    std::string name;
    int64_t offset;  // of its view in the buffers: a multiple of kParamAlign
    int64_t index;   // of its first element among all parameters, packed (no gaps)
    Shape shape;
    Init init;
    Var var;
  };

  // Declare every parameter, then allocate once; the returned Var is valid from the start and
  // holds its value after allocate().
  Var declare(const std::string& name, Shape shape, Init init);
  // Allocates the buffers and draws the initial values under the store's scheme from Philox
  // keyed by `seed`.
  void allocate(uint64_t seed, DType dtype = DType::f32, Device device = Device::cpu);

  bool allocated() const { return values_.defined(); }
  const std::vector<Entry>& entries() const { return entries_; }
  const Entry& find(const std::string& name) const;
  int64_t numel() const { return total_; }                 // parameters (the gaps not counted)
  int64_t buffer_numel() const { return buffer_numel_; }   // elements of each buffer (gaps counted)
  InitScheme init_scheme() const { return scheme_; }
  Tensor& values() { return values_; }
  Tensor& grads() { return grads_; }
  const Tensor& values() const { return values_; }
  void zero_grad();
  // Moves every buffer to `device` (parameters and gradients keep their Vars).
  void to(Device device);

 private:
  void point_vars();
  InitScheme scheme_;
  std::vector<Entry> entries_;
  int64_t total_ = 0, buffer_numel_ = 0;
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
