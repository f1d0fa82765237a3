// Dense layers through Eigen: y = x W^T + b with x [n, in], W [out, in].
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

void CpuBackend::linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  EQUIVAE_DISPATCH_FLOAT(x, "linear", {
    const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
    Map<T> Y(y.data<T>(), n, out);
    Y.noalias() = MapC<T>(x.data<T>(), n, in) * MapC<T>(w.data<T>(), out, in).transpose();
    if (b.defined()) Y.rowwise() += RowVecC<T>(b.data<T>(), out);
  });
}

void CpuBackend::linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor& dx, Tensor& dw,
                                 Tensor& db) {
  EQUIVAE_DISPATCH_FLOAT(x, "linear_backward", {
    const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
    const MapC<T> G(dy.data<T>(), n, out);
    if (dx.defined()) Map<T>(dx.data<T>(), n, in).noalias() = G * MapC<T>(w.data<T>(), out, in);
    if (dw.defined()) Map<T>(dw.data<T>(), out, in).noalias() = G.transpose() * MapC<T>(x.data<T>(), n, in);
    if (db.defined()) RowVec<T>(db.data<T>(), out) = G.colwise().sum();
  });
}

}  // namespace equivae
