#include "model/layers.h"

#include "engine/shapes.h"

namespace equivae {

std::vector<int64_t> conv_stack_sizes(int64_t image_size, size_t layers) {
  std::vector<int64_t> sizes;
  for (size_t i = 0; i < layers; ++i) {
    image_size = conv_out_size(image_size, kConvKernel, i == 0 ? 1 : 2, kConvPad);
    sizes.push_back(image_size);
  }
  return sizes;
}

Dense Dense::declare(ParameterStore& p, const std::string& name, int64_t in, int64_t out) {
  return {p.declare(name + ".weight", {out, in}, Init::weights(in, out)), p.declare(name + ".bias", {out}, Init::biases(in))};
}

Var Dense::operator()(const Var& x, bool relu_out) const {
  return linear(x, w, b, relu_out);
}

ConvStack ConvStack::declare(ParameterStore& p, const std::string& name, int64_t channels, int64_t image_size,
                             const std::vector<int64_t>& filters, int64_t hidden) {
  ConvStack s;
  int64_t in = channels;
  for (size_t i = 0; i < filters.size(); ++i) {
    const int64_t fan_in = in * kConvKernel * kConvKernel, fan_out = filters[i] * kConvKernel * kConvKernel;
    const std::string layer = fmt::format("{}.conv{}", name, i);
    s.convs.push_back({p.declare(layer + ".weight", {filters[i], in, kConvKernel, kConvKernel}, Init::weights(fan_in, fan_out)),
                       p.declare(layer + ".bias", {filters[i]}, Init::biases(fan_in))});
    in = filters[i];
  }
  const int64_t last = conv_stack_sizes(image_size, filters.size()).back();
  s.dense = Dense::declare(p, name + ".dense", in * last * last, hidden);
  return s;
}

std::vector<Var> ConvStack::activations(const Var& images) const {
  std::vector<Var> out;
  Var x = images;
  for (size_t i = 0; i < convs.size(); ++i) {
    x = conv2d(x, convs[i].w, convs[i].b, i == 0 ? 1 : 2, kConvPad, true);
    out.push_back(x);
  }
  out.push_back(dense(reshape(x, {x.shape()[0], -1}), true));
  return out;
}

}  // namespace equivae
