#include "engine/backend.h"

#include "engine/cpu/cpu_backend.h"
#ifdef EQUIVAE_WITH_CUDA
#include "engine/cuda/cuda_backend.h"
#endif

namespace equivae {

// The CUDA backend lives in engine/cuda/ (on the launchers of kernels/) and is compiled into this library only when CUDA is on;
// the CPU-only build answers "no CUDA" without referring to it.
bool cuda_available() {
#ifdef EQUIVAE_WITH_CUDA
  static const bool present = cuda_device_present();
  return present;
#else
  return false;
#endif
}

void set_cuda_tf32(bool on) {
#ifdef EQUIVAE_WITH_CUDA
  set_cuda_conv_tf32(on);
#else
  (void)on;
  throw std::runtime_error("cuda: this build has no CUDA backend, so no TF32 convolutions");
#endif
}

void set_cuda_reproducible_plans(bool on) {
#ifdef EQUIVAE_WITH_CUDA
  set_cuda_plans_reproducible(on);
#else
  (void)on;
  throw std::runtime_error("cuda: this build has no CUDA backend, so no CUDA plans to make reproducible");
#endif
}

bool cuda_reproducible_plans() {
#ifdef EQUIVAE_WITH_CUDA
  return cuda_plans_reproducible();
#else
  return false;
#endif
}

void Backend::linear_relu_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, Tensor& y) {
  linear_forward(x, w, b, y);
  if (relu) relu_forward(y, y);
}

void Backend::conv_transpose2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, Tensor& y,
                                       const ConvShape& s) {
  conv2d_backward_data(x, w, y, s);
  if (b.defined()) add_channel_bias(b, y);
  if (relu) relu_forward(y, y);
}

void Backend::place_columns(const Tensor& src, Tensor& dst, int64_t dst_col, int64_t rows) {
  fill(dst, 0.0);
  copy_columns(src, 0, dst, dst_col, rows, rows ? src.numel() / rows : 0);
}

void Backend::concat_columns(const std::vector<Tensor>& parts, int64_t rows, Tensor& y) {
  int64_t col = 0;
  for (const Tensor& p : parts) {
    const int64_t width = rows ? p.numel() / rows : 0;
    copy_columns(p, 0, y, col, rows, width);
    col += width;
  }
}

void Backend::split_columns(const Tensor& x, int64_t rows, std::vector<Tensor>& parts) {
  int64_t col = 0;
  for (Tensor& p : parts) {
    const int64_t width = rows ? p.numel() / rows : 0;
    copy_columns(x, col, p, 0, rows, width);
    col += width;
  }
}

namespace {
// dy through the ReLU whose output is y (undefined: none), and db from it.
Tensor masked_gradient(Backend& b, const Tensor& y, const Tensor& dy, Tensor& db) {
  Tensor g = y.defined() ? Tensor::empty(dy.shape(), dy.dtype(), dy.device()) : dy;
  if (y.defined() || db.defined()) b.relu_bias_backward(y, dy, g, db);
  return g;
}
}  // namespace

void Backend::conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& dy, Tensor& dx,
                              Tensor& dw, Tensor& db, const ConvShape& s) {
  const Tensor g = masked_gradient(*this, y, dy, db);
  if (dx.defined()) conv2d_backward_data(g, w, dx, s);
  if (dw.defined()) conv2d_backward_weight(x, g, dw, s);
}

void Backend::linear_relu_backward(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& dy, Tensor& dx,
                                   Tensor& dw, Tensor& db) {
  const Tensor g = masked_gradient(*this, y, dy, db);
  Tensor no_db;
  linear_backward(x, w, g, dx, dw, no_db);
}

void Backend::relu_bias_backward(const Tensor& y, const Tensor& dy, Tensor& dx, Tensor& db) {
  if (y.defined()) relu_backward(y, dy, dx);
  if (db.defined()) channel_sum(y.defined() ? dx : dy, db);
}

Backend& backend(Device device) {
  static CpuBackend cpu;
  if (device == Device::cpu) return cpu;
#ifdef EQUIVAE_WITH_CUDA
  if (!cuda_available()) throw std::runtime_error("cuda: no usable CUDA device is present");
  static Backend* cuda = make_cuda_backend();
  return *cuda;
#else
  throw std::runtime_error("cuda: this build has no CUDA backend (configure with EQUIVAE_CUDA=ON)");
#endif
}

}  // namespace equivae
