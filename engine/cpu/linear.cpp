// Dense layers through Eigen: y = x W^T + b with x [n, in], W [out, in].
#include <omp.h>

#include <Eigen/Core>

#include "engine/cpu/cpu_backend.h"

namespace equivae {
namespace {
template <class T> using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T> using MapC = Eigen::Map<const RowMajor<T>>;
template <class T> using Map = Eigen::Map<RowMajor<T>>;
template <class T> using RowVec = Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>;
template <class T> using RowVecC = Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>;
// The model's dense layers are a few MFLOP: splitting one across threads costs more in
// barriers than it saves, so Eigen runs single-threaded (convolutions split the batch instead).
const bool kSerialEigen = [] {
  Eigen::setNbThreads(1);
  return true;
}();
}  // namespace

// Rows of the batch (forward, dx) or rows of dW split across threads when the product is large
// enough to pay for waking them: each element is computed by one thread, in the same order
// whatever the split, so results are deterministic.
template <class Fn> void split_rows(int64_t rows, double flops, Fn&& fn) {
  if (flops < 2e6 || omp_get_max_threads() == 1 || rows < 2) return fn(int64_t(0), rows);
#pragma omp parallel
  {
    const int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
    const int64_t lo = rows * t / threads, hi = rows * (t + 1) / threads;
    if (hi > lo) fn(lo, hi);
  }
}

void CpuBackend::linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  EQUIVAE_DISPATCH_FLOAT(x, "linear", {
    const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
    const T* X = x.data<T>();
    const T* W = w.data<T>();
    const T* B = b.defined() ? b.data<T>() : nullptr;
    T* Yp = y.data<T>();
    split_rows(n, 2.0 * double(n * in * out), [&](int64_t lo, int64_t hi) {
      Map<T> Y(Yp + lo * out, hi - lo, out);
      Y.noalias() = MapC<T>(X + lo * in, hi - lo, in) * MapC<T>(W, out, in).transpose();
      if (B) Y.rowwise() += RowVecC<T>(B, out);
    });
  });
}

void CpuBackend::linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor& dx, Tensor& dw,
                                 Tensor& db) {
  EQUIVAE_DISPATCH_FLOAT(x, "linear_backward", {
    const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
    const T* G = dy.data<T>();
    const double flops = 2.0 * double(n * in * out);
    if (dx.defined())
      split_rows(n, flops, [&](int64_t lo, int64_t hi) {
        Map<T>(dx.data<T>() + lo * in, hi - lo, in).noalias() =
            MapC<T>(G + lo * out, hi - lo, out) * MapC<T>(w.data<T>(), out, in);
      });
    if (dw.defined())
      split_rows(out, flops, [&](int64_t lo, int64_t hi) {  // dW rows lo..hi = G[:, lo..hi]^T X
        using Cols = Eigen::Map<const RowMajor<T>, 0, Eigen::OuterStride<>>;
        Map<T>(dw.data<T>() + lo * in, hi - lo, in).noalias() =
            Cols(G + lo, n, hi - lo, Eigen::OuterStride<>(out)).transpose() * MapC<T>(x.data<T>(), n, in);
      });
    if (db.defined()) RowVec<T>(db.data<T>(), out) = MapC<T>(G, n, out).colwise().sum();
  });
}

}  // namespace equivae
