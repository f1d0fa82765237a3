#include "engine/autograd.h"

#include <map>
#include <mutex>
#include <unordered_set>

#include "engine/backend.h"

namespace equivae {
namespace {
thread_local bool g_grad_enabled = true;
thread_local const std::vector<Var>* g_backward_inputs = nullptr;  // of the node whose backward runs
}

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

Var::Var(Tensor value, bool requires_grad) : data_(std::make_shared<VarData>()) {
  data_->value = std::move(value);
  data_->requires_grad = requires_grad;
}

Var make_result(Tensor value, const char* op, std::vector<Var> inputs, BackwardFn backward) {
  bool needs = false;
  for (const Var& in : inputs) needs = needs || in.requires_grad();
  Var out(std::move(value), needs && grad_enabled());
  if (out.requires_grad()) {
    auto node = std::make_shared<Node>();
    node->op = op;
    node->inputs = std::move(inputs);
    node->backward = std::move(backward);
    out.data()->node = std::move(node);
  }
  return out;
}

Var stop_grad(const Var& x) { return Var(x.value(), false); }

Tensor grad_destination(size_t input, const Shape& shape, const Tensor& like) {
  if (g_backward_inputs && input < g_backward_inputs->size()) {
    VarData& d = *(*g_backward_inputs)[input].data();
    if (d.grad_owned && d.grad_zero && d.grad.shape() == shape && d.grad.dtype() == like.dtype() &&
        d.grad.device() == like.device()) {
      d.grad_zero = false;  // claimed: a second contribution this step is added as usual
      return d.grad;
    }
  }
  return Tensor::empty(shape, like.dtype(), like.device());
}

void Var::accumulate(const Tensor& g) const {
  VarData& d = *data_;
  check_same_shape(d.node ? d.node->op : "accumulate_grad", d.value, g);
  if (d.grad_owned && g.raw() == d.grad.raw()) return;  // written in place (grad_destination)
  d.grad_zero = false;
  if (!d.grad.defined()) {
    d.grad = g;
    d.grad_owned = false;
  } else if (d.grad_owned) {
    backend(g.device()).axpy(1.0, g, d.grad);
  } else {
    Tensor sum = Tensor::empty(g.shape(), g.dtype(), g.device());
    backend(g.device()).binary(BinaryOp::add, d.grad, g, sum);
    d.grad = sum;
    d.grad_owned = true;
  }
}

void Var::set_grad_buffer(Tensor buffer) const {
  check_same_shape("set_grad_buffer", data_->value, buffer);
  data_->grad = std::move(buffer);
  data_->grad_owned = true;
  data_->grad_zero = false;  // unknown contents
}

void Var::mark_grad_zero() const { data_->grad_zero = data_->grad_owned; }

void Var::zero_grad() const {
  if (!data_->grad.defined()) return;
  if (data_->grad_owned) {
    backend(data_->grad.device()).fill(data_->grad, 0.0);
    data_->grad_zero = true;
  } else {
    data_->grad = Tensor();
  }
}

void Var::backward() const {
  EQUIVAE_CHECK(value().numel() == 1, "backward: the loss must have one element, got {}", describe());
  // The seed d(loss)/d(loss) = 1, made once per dtype and device (a fill saved every step): safe
  // to share because no backward function writes into the gradient it is given, and a gradient
  // not owned by its Var (as the seed is) is replaced, never added into. Never destroyed, like the
  // CUDA backend, so that no device memory is freed during static destruction.
  static std::mutex mutex;
  static auto* ones = new std::map<std::pair<DType, Device>, Tensor>;
  Tensor one;
  {
    const std::lock_guard<std::mutex> lock(mutex);
    Tensor& cached = (*ones)[{value().dtype(), value().device()}];
    if (!cached.defined()) cached = Tensor::full({1}, 1.0, value().dtype(), value().device());
    one = cached;
  }
  backward(one.reshape(value().shape()));
}

void Var::backward(const Tensor& seed) const {
  EQUIVAE_CHECK(requires_grad(), "backward: {} does not depend on anything that requires grad", describe());
  // The tape: nodes in topological order (inputs before outputs), by iterative DFS. It holds
  // Vars (not raw pointers) because releasing a node may drop the last other reference.
  std::vector<Var> tape;
  std::unordered_set<const VarData*> seen{data()};
  std::vector<std::pair<Var, size_t>> stack{{*this, 0}};
  while (!stack.empty()) {
    auto& [v, next] = stack.back();
    const Node* node = v.data()->node.get();
    if (node && next < node->inputs.size()) {
      const Var& in = node->inputs[next++];
      if (in.requires_grad() && in.data()->node && seen.insert(in.data()).second) stack.push_back({in, 0});
    } else {
      tape.push_back(v);
      stack.pop_back();
    }
  }
  accumulate(seed);
  NoGradGuard no_grad;  // backward computations are not themselves recorded
  for (auto it = tape.rbegin(); it != tape.rend(); ++it) {
    VarData* v = it->data();
    const std::shared_ptr<Node> node = std::move(v->node);  // release the graph as we go
    if (!v->grad.defined()) continue;                     // nothing flowed here
    struct Inputs {  // what grad_destination sees, also if the backward function throws
      explicit Inputs(const std::vector<Var>* in) { g_backward_inputs = in; }
      ~Inputs() { g_backward_inputs = nullptr; }
    } inputs(&node->inputs);
    const std::vector<Tensor> grads = node->backward(v->grad);
    for (size_t i = 0; i < node->inputs.size(); ++i)
      if (node->inputs[i].requires_grad() && i < grads.size() && grads[i].defined())
        node->inputs[i].accumulate(grads[i]);
    if (v != data()) v->grad = Tensor();  // intermediate gradients are not kept
  }
}

}  // namespace equivae
