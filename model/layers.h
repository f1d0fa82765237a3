// The two building blocks every network here is made of: a dense layer and the 5x5 conv stack
// of SPEC.md (stride 1, then 2; padding 2; ReLU) followed by a dense layer + ReLU.
#pragma once
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/params.h"

namespace equivae {

constexpr int64_t kConvKernel = 5, kConvPad = 2;

// Spatial size after each conv of the stack (e.g. 28 -> {28, 14, 7, 4, 2}).
std::vector<int64_t> conv_stack_sizes(int64_t image_size, size_t layers);

struct Dense {
  Var w, b;
  // Initialised under the store's scheme (engine/params.h).
  static Dense declare(ParameterStore& p, const std::string& name, int64_t in, int64_t out);
  Var operator()(const Var& x, bool relu_out) const;
};

struct ConvStack {
  std::vector<Dense> convs;  // weight [out, in, 5, 5]
  Dense dense;
  static ConvStack declare(ParameterStore& p, const std::string& name, int64_t channels, int64_t image_size,
                           const std::vector<int64_t>& filters, int64_t hidden);
  // images [n, channels, size, size] -> [n, hidden]
  Var operator()(const Var& images) const { return activations(images).back(); }
  // The ReLU output of every conv, then of the dense layer (the last is operator()'s result).
  std::vector<Var> activations(const Var& images) const;
};

}  // namespace equivae
