// Reverse-mode autograd. A Var is a value plus, when it was computed from Vars that need
// gradients, the node that made it: its inputs and a function from the output's gradient to
// theirs. backward() orders the nodes reachable from the loss into a tape (a topological order)
// and runs it in reverse, adding each node's contributions into its inputs' gradients, so a
// value used twice gets the sum. After backward the nodes are released (the graph is single-use,
// like PyTorch's default).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace equivae {

class Var;
// Receives the output's gradient; returns one gradient per input (undefined where not needed).
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_out)>;

struct Node {
  const char* op = "";
  std::vector<Var> inputs;
  BackwardFn backward;
};

struct VarData {
  Tensor value;
  Tensor grad;                 // undefined until a gradient arrives
  bool grad_owned = false;     // grad may be added to in place (else it aliases another tensor)
  bool grad_zero = false;      // an owned grad that holds zeros: its first gradient may overwrite it
  bool requires_grad = false;
  std::shared_ptr<Node> node;  // null for leaves
};

class Var {
 public:
  Var() = default;
  explicit Var(Tensor value, bool requires_grad = false);

  bool defined() const { return data_ != nullptr; }
  const Tensor& value() const { return data_->value; }
  Tensor& value() { return data_->value; }
  const Tensor& grad() const { return data_->grad; }
  bool requires_grad() const { return data_ && data_->requires_grad; }
  const Shape& shape() const { return data_->value.shape(); }
  std::string describe() const { return data_->value.describe(); }

  // d(this)/d(leaf) for every leaf; `this` must hold one element unless a seed is given.
  void backward() const;
  void backward(const Tensor& seed) const;
  // Adds g into this Var's gradient (first arrival adopts g without a copy).
  void accumulate(const Tensor& g) const;
  // For parameters: the gradient lives in caller-owned memory (a view of the gradient buffer).
  void set_grad_buffer(Tensor buffer) const;
  void zero_grad() const;
  // The owned gradient buffer has just been zeroed by its owner (ParameterStore::zero_grad).
  void mark_grad_zero() const;

  VarData* data() const { return data_.get(); }

 private:
  std::shared_ptr<VarData> data_;
};

// Inside a backward function: where to write the gradient of the node's input `input` (of
// `shape`, with like's dtype and device). A parameter whose gradient buffer still holds zeros this step gets the buffer
// itself, so the op writes its gradient in place (returning that tensor then adds nothing more:
// no zero-fill + add); anything else gets a fresh tensor. The op must overwrite all of it.
Tensor grad_destination(size_t input, const Shape& shape, const Tensor& like);

// Builds the result of an op: records a node when grad mode is on and an input needs grad.
Var make_result(Tensor value, const char* op, std::vector<Var> inputs, BackwardFn backward);

// While alive, ops record nothing (evaluation, finite differences).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};
bool grad_enabled();

// The same value, cut from the graph: no gradient flows back through it.
Var stop_grad(const Var& x);

}  // namespace equivae
