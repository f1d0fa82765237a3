// conv2d as im2col + one Eigen GEMM per chunk of images. Rows of the column matrix are output
// pixels (image, oy, ox), columns are patch entries (c, ky, kx), so the forward is
// Y[pixels, out_c] = col * W^T, backward-data is dcol = dY * W (then col2im) and
// backward-weight is dW = dY^T * col. A transposed conv calls these same three products.
#include <Eigen/Core>
#include <algorithm>
#include <vector>

#include "engine/cpu/cpu_backend.h"

namespace equivae {
namespace {

template <class T> using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T> using MapC = Eigen::Map<const RowMajor<T>>;
template <class T> using Map = Eigen::Map<RowMajor<T>>;

// Images per GEMM: bounds the column buffer to about 8M elements.
int64_t chunk_images(const ConvShape& s) {
  const int64_t per_image = std::max<int64_t>(1, s.out_h * s.out_w * s.patch());
  return std::clamp<int64_t>((int64_t(1) << 23) / per_image, 1, s.n);
}

template <class T>
void im2col(const T* x, const ConvShape& s, int64_t first, int64_t count, T* col) {
  const int64_t hw = s.out_h * s.out_w, patch = s.patch();
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < count * hw; ++row) {
    const int64_t img = first + row / hw, oy = row % hw / s.out_w, ox = row % s.out_w;
    T* out = col + row * patch;
    for (int64_t c = 0; c < s.in_c; ++c) {
      const T* plane = x + (img * s.in_c + c) * s.in_h * s.in_w;
      for (int64_t ky = 0; ky < s.k; ++ky) {
        const int64_t iy = oy * s.stride - s.pad + ky;
        for (int64_t kx = 0; kx < s.k; ++kx) {
          const int64_t ix = ox * s.stride - s.pad + kx;
          *out++ = (iy >= 0 && iy < s.in_h && ix >= 0 && ix < s.in_w) ? plane[iy * s.in_w + ix] : T(0);
        }
      }
    }
  }
}

// dx += col2im(dcol); parallel over images so no two threads write the same image.
template <class T>
void col2im_add(const T* col, const ConvShape& s, int64_t first, int64_t count, T* dx) {
  const int64_t hw = s.out_h * s.out_w, patch = s.patch();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) {
    const int64_t img = first + i;
    for (int64_t pix = 0; pix < hw; ++pix) {
      const int64_t oy = pix / s.out_w, ox = pix % s.out_w;
      const T* in = col + (i * hw + pix) * patch;
      for (int64_t c = 0; c < s.in_c; ++c) {
        T* plane = dx + (img * s.in_c + c) * s.in_h * s.in_w;
        for (int64_t ky = 0; ky < s.k; ++ky) {
          const int64_t iy = oy * s.stride - s.pad + ky;
          for (int64_t kx = 0; kx < s.k; ++kx, ++in) {
            const int64_t ix = ox * s.stride - s.pad + kx;
            if (iy >= 0 && iy < s.in_h && ix >= 0 && ix < s.in_w) plane[iy * s.in_w + ix] += *in;
          }
        }
      }
    }
  }
}

// NCHW chunk of y  <->  [pixels, out_c] matrix.
template <class T>
void nchw_to_pixels(const T* y, const ConvShape& s, int64_t first, int64_t count, T* pix) {
  const int64_t hw = s.out_h * s.out_w;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i)
    for (int64_t c = 0; c < s.out_c; ++c)
      for (int64_t p = 0; p < hw; ++p) pix[(i * hw + p) * s.out_c + c] = y[((first + i) * s.out_c + c) * hw + p];
}

template <class T>
void conv_forward(const T* x, const T* w, const T* b, bool relu, T* y, const ConvShape& s) {
  const int64_t hw = s.out_h * s.out_w, chunk = chunk_images(s);
  std::vector<T> col(size_t(chunk * hw * s.patch())), out(size_t(chunk * hw * s.out_c));
  const MapC<T> W(w, s.out_c, s.patch());
  for (int64_t first = 0; first < s.n; first += chunk) {
    const int64_t count = std::min(chunk, s.n - first);
    im2col(x, s, first, count, col.data());
    Map<T>(out.data(), count * hw, s.out_c).noalias() = MapC<T>(col.data(), count * hw, s.patch()) * W.transpose();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; ++i)
      for (int64_t c = 0; c < s.out_c; ++c) {
        T* dst = y + ((first + i) * s.out_c + c) * hw;
        const T bias = b ? b[c] : T(0);
        for (int64_t p = 0; p < hw; ++p) {
          const T v = out[size_t((i * hw + p) * s.out_c + c)] + bias;
          dst[p] = (relu && v < T(0)) ? T(0) : v;
        }
      }
  }
}

template <class T>
void conv_backward_data(const T* dy, const T* w, T* dx, const ConvShape& s) {
  const int64_t hw = s.out_h * s.out_w, chunk = chunk_images(s);
  std::vector<T> col(size_t(chunk * hw * s.patch())), pix(size_t(chunk * hw * s.out_c));
  std::fill_n(dx, s.in_numel(), T(0));
  const MapC<T> W(w, s.out_c, s.patch());
  for (int64_t first = 0; first < s.n; first += chunk) {
    const int64_t count = std::min(chunk, s.n - first);
    nchw_to_pixels(dy, s, first, count, pix.data());
    Map<T>(col.data(), count * hw, s.patch()).noalias() = MapC<T>(pix.data(), count * hw, s.out_c) * W;
    col2im_add(col.data(), s, first, count, dx);
  }
}

template <class T>
void conv_backward_weight(const T* x, const T* dy, T* dw, const ConvShape& s) {
  const int64_t hw = s.out_h * s.out_w, chunk = chunk_images(s);
  std::vector<T> col(size_t(chunk * hw * s.patch())), pix(size_t(chunk * hw * s.out_c));
  Map<T> dW(dw, s.out_c, s.patch());
  dW.setZero();
  for (int64_t first = 0; first < s.n; first += chunk) {
    const int64_t count = std::min(chunk, s.n - first);
    im2col(x, s, first, count, col.data());
    nchw_to_pixels(dy, s, first, count, pix.data());
    dW.noalias() += MapC<T>(pix.data(), count * hw, s.out_c).transpose() * MapC<T>(col.data(), count * hw, s.patch());
  }
}

}  // namespace

void CpuBackend::conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, Tensor& y,
                                const ConvShape& s) {
  EQUIVAE_DISPATCH_FLOAT(x, "conv2d",
                         conv_forward(x.data<T>(), w.data<T>(), b.defined() ? b.data<T>() : nullptr, relu,
                                      y.data<T>(), s));
}

void CpuBackend::conv2d_backward_data(const Tensor& dy, const Tensor& w, Tensor& dx, const ConvShape& s) {
  EQUIVAE_DISPATCH_FLOAT(dy, "conv2d_backward_data", conv_backward_data(dy.data<T>(), w.data<T>(), dx.data<T>(), s));
}

void CpuBackend::conv2d_backward_weight(const Tensor& x, const Tensor& dy, Tensor& dw, const ConvShape& s) {
  EQUIVAE_DISPATCH_FLOAT(x, "conv2d_backward_weight",
                         conv_backward_weight(x.data<T>(), dy.data<T>(), dw.data<T>(), s));
}

void CpuBackend::channel_sum(const Tensor& dy, Tensor& db) {
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
    for (int64_t i = 0; i < n; ++i)
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t p = 0; p < hw; ++p) out[(i * c + ch) * hw + p] += bias[ch];
  });
}

}  // namespace equivae
