#include "engine/params.h"

#include <cmath>

#include "engine/backend.h"
#include "engine/rng.h"

namespace equivae {

InitScheme init_scheme_from_name(const std::string& name) {
  if (name == "torch") return InitScheme::torch;
  if (name == "he") return InitScheme::he;
  if (name == "glorot") return InitScheme::glorot;
  throw std::invalid_argument(fmt::format("unknown initialisation scheme '{}' (torch, he or glorot)", name));
}

std::string init_scheme_name(InitScheme scheme) {
  switch (scheme) {
    case InitScheme::torch: return "torch";
    case InitScheme::he: return "he";
    case InitScheme::glorot: return "glorot";
  }
  return "?";
}

double Init::bound(InitScheme scheme) const {
  if (kind == constant || (kind == bias && scheme != InitScheme::torch)) return 0.0;
  switch (scheme) {
    case InitScheme::torch: return 1.0 / std::sqrt(double(fan_in));
    case InitScheme::he: return std::sqrt(6.0 / double(fan_in));
    case InitScheme::glorot: return std::sqrt(6.0 / double(fan_in + fan_out));
  }
  return 0.0;
}

Var ParameterStore::declare(const std::string& name, Shape shape, Init init) {
  EQUIVAE_CHECK(!allocated(), "parameters: cannot declare {} after allocate()", name);
  for (const Entry& e : entries_) EQUIVAE_CHECK(e.name != name, "parameters: {} declared twice", name);
  const int64_t n = shape_numel(shape);  // throws on a negative dimension or overflow
  int64_t total = 0, end = 0;
  const int64_t offset = (buffer_numel_ + kParamAlign - 1) / kParamAlign * kParamAlign;
  EQUIVAE_CHECK(!__builtin_add_overflow(total_, n, &total) && !__builtin_add_overflow(offset, n, &end),
                "parameters: {} {} makes more than 2^63 parameters", name, shape_str(shape));
  // Placeholder value (shape only matters) until allocate() points it into the buffer.
  Var var(Tensor(), true);
  entries_.push_back({name, offset, total_, std::move(shape), init, var});
  total_ = total;
  buffer_numel_ = end;
  return var;
}

const ParameterStore::Entry& ParameterStore::find(const std::string& name) const {
  for (const Entry& e : entries_)
    if (e.name == name) return e;
  throw std::out_of_range(fmt::format("parameters: no parameter named {}", name));
}

void ParameterStore::allocate(uint64_t seed, DType dtype, Device device) {
  EQUIVAE_CHECK(!allocated(), "parameters: allocate() called twice");
  Tensor host = Tensor::zeros({buffer_numel_}, dtype, Device::cpu);  // the gaps stay 0
  // Every parameter draws from its own range of the stream, keyed by its packed index (not its
  // padded offset): adding a parameter at the end leaves the others' initial values unchanged.
  for (const Entry& e : entries_) {
    const int64_t n = shape_numel(e.shape);
    const double bound = e.init.bound(scheme_);
    for (int64_t i = 0; i < n; ++i) {
      const double u = philox_uniform(seed, uint64_t(e.index + i));
      const double v = e.init.kind == Init::constant ? e.init.value : (2 * u - 1) * bound;
      if (dtype == DType::f32) host.data<float>()[e.offset + i] = float(v);
      else host.data<double>()[e.offset + i] = v;
    }
  }
  values_ = host.to(device);
  grads_ = Tensor::zeros({buffer_numel_}, dtype, device);
  point_vars();
}

void ParameterStore::point_vars() {
  for (Entry& e : entries_) {
    const int64_t n = shape_numel(e.shape);
    e.var.value() = values_.rows(e.offset, e.offset + n).reshape(e.shape);
    e.var.set_grad_buffer(grads_.rows(e.offset, e.offset + n).reshape(e.shape));
  }
}

void ParameterStore::zero_grad() {
  if (!allocated()) return;
  // One fill for the whole buffer (parameters the loss does not reach must read 0); each
  // parameter's first gradient then overwrites its view in place (grad_destination).
  backend(grads_.device()).fill(grads_, 0.0);
  for (const Entry& e : entries_) e.var.mark_grad_zero();
}

void ParameterStore::to(Device device) {
  values_ = values_.to(device);
  grads_ = grads_.to(device);
  point_vars();
}

Adam::Adam(ParameterStore& params, AdamConfig config) : params_(params), config_(config) {
  EQUIVAE_CHECK(params.allocated(), "adam: parameters are not allocated");
  m_ = Tensor::zeros({params.buffer_numel()}, params.values().dtype(), params.values().device());
  v_ = Tensor::zeros({params.buffer_numel()}, params.values().dtype(), params.values().device());
}

void Adam::step() {
  ++t_;
  const AdamParams p{config_.lr, config_.beta1, config_.beta2, config_.eps, t_};
  backend(params_.values().device()).adam_step(params_.values(), params_.grads(), m_, v_, p);
}

}  // namespace equivae
