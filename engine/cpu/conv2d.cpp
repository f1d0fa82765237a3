// conv2d as im2col + GEMM, parallel over images: each thread takes a contiguous range of the
// batch and runs its own single-threaded GEMMs (the model's matrices are small, so Eigen's own
// threading spent its time in barriers). The column matrix of a range of images is
// col[patch][image * pixels], patch entry = (c, ky, kx) and column = (image, oy, ox), so its
// rows are filled by contiguous copies of input rows. Then:
//   forward           Y[out_c][columns] = W[out_c][patch] * col          (+ bias, ReLU)
//   backward-data     dcol = W^T * dY, scattered back by col2im
//   backward-weight   dW = sum over threads (in thread order: deterministic) of dY * col^T
// A transposed conv calls these same three products.
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstdlib>
#include <vector>

#include "engine/cpu/conv2d_fast.h"
#include "engine/cpu/cpu_backend.h"

namespace equivae {
namespace {

template <class T> using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T> using MapC = Eigen::Map<const RowMajor<T>>;
template <class T> using Map = Eigen::Map<RowMajor<T>>;

// Scratch that lives as long as its thread: no allocation (or page faults) per call.
template <class T> T* scratch(int slot, size_t n) {
  thread_local std::vector<T> buffers[2];
  if (buffers[slot].size() < n) buffers[slot].resize(n);
  return buffers[slot].data();
}

struct Range { int64_t first, count; };

// Calls fn(range) for this thread's share of the images, in pieces whose column matrix stays
// under about 4M elements (bounded scratch at any batch size).
template <class Fn> void for_thread_images(const ConvShape& s, Fn&& fn) {
  const int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
  const int64_t first = s.n * t / threads, last = s.n * (t + 1) / threads;
  const int64_t piece = std::max<int64_t>(1, (int64_t(1) << 22) / std::max<int64_t>(1, s.out_h * s.out_w * s.patch()));
  for (int64_t f = first; f < last; f += piece) fn(Range{f, std::min(piece, last - f)});
}

// Output columns ox whose input column ox * stride - pad + kx lies inside [0, in_w).
struct Span { int64_t lo, hi; };
Span valid_span(int64_t in, int64_t out, int64_t k_offset, const ConvShape& s) {
  const int64_t shift = s.pad - k_offset;  // ix = ox * stride - shift
  const int64_t lo = shift > 0 ? (shift + s.stride - 1) / s.stride : 0;
  const int64_t top = in - 1 + shift;      // ix <= in - 1  <=>  ox * stride <= top
  const int64_t hi = top < 0 ? 0 : std::min(out, top / s.stride + 1);
  return {lo, std::max(lo, hi)};
}

template <class T>
void im2col(const T* x, const ConvShape& s, Range r, T* col) {
  const int64_t hw = s.out_h * s.out_w, cols = r.count * hw, in_hw = s.in_h * s.in_w;
  for (int64_t c = 0; c < s.in_c; ++c)
    for (int64_t ky = 0; ky < s.k; ++ky)
      for (int64_t kx = 0; kx < s.k; ++kx) {
        T* row = col + ((c * s.k + ky) * s.k + kx) * cols;
        const Span span = valid_span(s.in_w, s.out_w, kx, s);
        for (int64_t i = 0; i < r.count; ++i) {
          const T* plane = x + ((r.first + i) * s.in_c + c) * in_hw;
          for (int64_t oy = 0; oy < s.out_h; ++oy) {
            T* out = row + i * hw + oy * s.out_w;
            const int64_t iy = oy * s.stride - s.pad + ky;
            if (iy < 0 || iy >= s.in_h) {
              std::fill_n(out, s.out_w, T(0));
              continue;
            }
            const T* in = plane + iy * s.in_w + kx - s.pad;
            std::fill_n(out, span.lo, T(0));
            for (int64_t ox = span.lo; ox < span.hi; ++ox) out[ox] = in[ox * s.stride];
            std::fill(out + span.hi, out + s.out_w, T(0));
          }
        }
      }
}

// dx += col2im(dcol) for this thread's images (their dx planes are its own).
template <class T>
void col2im_add(const T* col, const ConvShape& s, Range r, T* dx) {
  const int64_t hw = s.out_h * s.out_w, cols = r.count * hw, in_hw = s.in_h * s.in_w;
  for (int64_t c = 0; c < s.in_c; ++c)
    for (int64_t ky = 0; ky < s.k; ++ky)
      for (int64_t kx = 0; kx < s.k; ++kx) {
        const T* row = col + ((c * s.k + ky) * s.k + kx) * cols;
        const Span span = valid_span(s.in_w, s.out_w, kx, s);
        for (int64_t i = 0; i < r.count; ++i) {
          T* plane = dx + ((r.first + i) * s.in_c + c) * in_hw;
          for (int64_t oy = 0; oy < s.out_h; ++oy) {
            const int64_t iy = oy * s.stride - s.pad + ky;
            if (iy < 0 || iy >= s.in_h) continue;
            const T* in = row + i * hw + oy * s.out_w;
            T* out = plane + iy * s.in_w + kx - s.pad;
            for (int64_t ox = span.lo; ox < span.hi; ++ox) out[ox * s.stride] += in[ox];
          }
        }
      }
}

// dy of this thread's images, NCHW -> [out_c][image * pixels].
template <class T>
void gather_channels(const T* y, const ConvShape& s, Range r, T* out) {
  const int64_t hw = s.out_h * s.out_w, cols = r.count * hw;
  for (int64_t c = 0; c < s.out_c; ++c)
    for (int64_t i = 0; i < r.count; ++i) std::copy_n(y + ((r.first + i) * s.out_c + c) * hw, hw, out + c * cols + i * hw);
}

template <class T>
void conv_forward(const T* x, const T* w, const T* b, bool relu, T* y, const ConvShape& s) {
  const int64_t hw = s.out_h * s.out_w;
#pragma omp parallel
  for_thread_images(s, [&](Range r) {
    {
      const int64_t cols = r.count * hw;
      T* col = scratch<T>(0, size_t(s.patch() * cols));
      T* out = scratch<T>(1, size_t(s.out_c * cols));
      im2col(x, s, r, col);
      Map<T>(out, s.out_c, cols).noalias() = MapC<T>(w, s.out_c, s.patch()) * MapC<T>(col, s.patch(), cols);
      for (int64_t i = 0; i < r.count; ++i)
        for (int64_t c = 0; c < s.out_c; ++c) {
          const T* src = out + c * cols + i * hw;
          T* dst = y + ((r.first + i) * s.out_c + c) * hw;
          const T bias = b ? b[c] : T(0);
          for (int64_t p = 0; p < hw; ++p) {
            const T v = src[p] + bias;
            dst[p] = (relu && v < T(0)) ? T(0) : v;
          }
        }
    }
  });
}

template <class T>
void conv_backward_data(const T* dy, const T* w, T* dx, const ConvShape& s) {
  const int64_t hw = s.out_h * s.out_w;
#pragma omp parallel
  for_thread_images(s, [&](Range r) {
    {
      const int64_t cols = r.count * hw;
      T* g = scratch<T>(1, size_t(s.out_c * cols));
      T* col = scratch<T>(0, size_t(s.patch() * cols));
      gather_channels(dy, s, r, g);
      Map<T>(col, s.patch(), cols).noalias() = MapC<T>(w, s.out_c, s.patch()).transpose() * MapC<T>(g, s.out_c, cols);
      std::fill_n(dx + r.first * s.in_c * s.in_h * s.in_w, r.count * s.in_c * s.in_h * s.in_w, T(0));
      col2im_add(col, s, r, dx);
    }
  });
}

template <class T>
void conv_backward_weight(const T* x, const T* dy, T* dw, const ConvShape& s) {
  const int64_t hw = s.out_h * s.out_w, wn = s.weight_numel();
  std::vector<T> partial(size_t(omp_get_max_threads() * wn), T(0));
  int used = 1;
#pragma omp parallel
  {
#pragma omp single
    used = omp_get_num_threads();
    for_thread_images(s, [&](Range r) {
      const int64_t cols = r.count * hw;
      T* col = scratch<T>(0, size_t(s.patch() * cols));
      T* g = scratch<T>(1, size_t(s.out_c * cols));
      im2col(x, s, r, col);
      gather_channels(dy, s, r, g);
      Map<T>(partial.data() + omp_get_thread_num() * wn, s.out_c, s.patch()).noalias() +=
          MapC<T>(g, s.out_c, cols) * MapC<T>(col, s.patch(), cols).transpose();
    });
  }
  std::copy_n(partial.data(), wn, dw);
  for (int t = 1; t < used; ++t)
    for (int64_t j = 0; j < wn; ++j) dw[j] += partial[size_t(t * wn + j)];
}

}  // namespace

bool cpu_has_avx2_fma() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !std::getenv("EQUIVAE_CPU_NO_AVX2");
  }();
  return has;
}

const char* cpu_conv_path() {
  return !cpu_has_avx2_fma() ? "im2col-gemm" : cpu_has_avx512() ? "avx512-direct" : "avx2-direct";
}

// float32 goes to the AVX2 kernels where they apply; double (the gradient checks' judge) and
// float on other CPUs to the im2col + GEMM templates above.
void CpuBackend::conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, Tensor& y,
                                const ConvShape& s) {
  if (x.dtype() == DType::f32 && cpu_has_avx2_fma() && avx2::conv_supported(s))
    return avx2::conv_forward(x.data<float>(), w.data<float>(), b.defined() ? b.data<float>() : nullptr, relu,
                              y.data<float>(), s);
  EQUIVAE_DISPATCH_FLOAT(x, "conv2d",
                         conv_forward(x.data<T>(), w.data<T>(), b.defined() ? b.data<T>() : nullptr, relu,
                                      y.data<T>(), s));
}

void CpuBackend::conv2d_backward_data(const Tensor& dy, const Tensor& w, Tensor& dx, const ConvShape& s) {
  if (dy.dtype() == DType::f32 && cpu_has_avx2_fma() && avx2::conv_backward_data_supported(s))
    return avx2::conv_backward_data(dy.data<float>(), w.data<float>(), nullptr, false, dx.data<float>(), s);
  EQUIVAE_DISPATCH_FLOAT(dy, "conv2d_backward_data", conv_backward_data(dy.data<T>(), w.data<T>(), dx.data<T>(), s));
}

void CpuBackend::conv2d_backward_weight(const Tensor& x, const Tensor& dy, Tensor& dw, const ConvShape& s) {
  if (x.dtype() == DType::f32 && cpu_has_avx2_fma() && avx2::conv_backward_weight_supported(s))
    return avx2::conv_backward_weight(x.data<float>(), dy.data<float>(), dw.data<float>(), s);
  EQUIVAE_DISPATCH_FLOAT(x, "conv2d_backward_weight",
                         conv_backward_weight(x.data<T>(), dy.data<T>(), dw.data<T>(), s));
}

// The AVX2 kernels add the bias and apply the ReLU from their registers: no second and third
// pass over the transposed conv's output.
void CpuBackend::conv_transpose2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, Tensor& y,
                                          const ConvShape& s) {
  if (x.dtype() == DType::f32 && cpu_has_avx2_fma() && avx2::conv_backward_data_supported(s))
    return avx2::conv_backward_data(x.data<float>(), w.data<float>(), b.defined() ? b.data<float>() : nullptr, relu,
                                    y.data<float>(), s);
  Backend::conv_transpose2d_forward(x, w, b, relu, y, s);
}

// The masked gradient and its bias sums in one pass over dy and y (a ReLU layer's backward reads
// its two largest tensors once instead of the mask's output a second time).
void CpuBackend::relu_bias_backward(const Tensor& y, const Tensor& dy, Tensor& dx, Tensor& db) {
  if (y.defined() && dy.dtype() == DType::f32 && cpu_has_avx2_fma()) {
    const int64_t n = dy.dim(0), c = dy.dim(1);
    return avx2::relu_channel_sum(y.data<float>(), dy.data<float>(), n, c, dy.numel() / (n * c), dx.data<float>(),
                                  db.defined() ? db.data<float>() : nullptr);
  }
  Backend::relu_bias_backward(y, dy, dx, db);
}

void CpuBackend::channel_sum(const Tensor& dy, Tensor& db) {
  if (dy.dtype() == DType::f32 && cpu_has_avx2_fma()) {
    const int64_t n = dy.dim(0), c = dy.dim(1);
    return avx2::channel_sum(dy.data<float>(), n, c, dy.numel() / (n * c), db.data<float>());
  }
  EQUIVAE_DISPATCH_FLOAT(dy, "channel_sum", {
    const int64_t n = dy.dim(0), c = dy.dim(1), hw = dy.numel() / (n * c);
    const T* g = dy.data<T>();
    T* out = db.data<T>();
    for (int64_t ch = 0; ch < c; ++ch) {
      double acc = 0;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t p = 0; p < hw; ++p) acc += g[(i * c + ch) * hw + p];
      out[ch] = T(acc);
    }
  });
}

void CpuBackend::add_channel_bias(const Tensor& b, Tensor& y) {
  EQUIVAE_DISPATCH_FLOAT(y, "add_channel_bias", {
    const int64_t n = y.dim(0), c = y.dim(1), hw = y.numel() / (n * c);
    const T* bias = b.data<T>();
    T* out = y.data<T>();
    parallel_range(
        n * c,
        [&](int64_t first, int64_t last) {
          for (int64_t q = first; q < last; ++q)
            for (int64_t p = 0; p < hw; ++p) out[q * hw + p] += bias[q % c];
        },
        hw);
  });
}

}  // namespace equivae
