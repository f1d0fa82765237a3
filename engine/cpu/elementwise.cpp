#include <cmath>
#include <cstdlib>
#include <malloc.h>

#include <cstring>

#include "engine/cpu/cpu_backend.h"

namespace equivae {

namespace {
// A training step allocates and frees the same few-megabyte activation buffers every step.
// glibc serves blocks above its mmap threshold (128 KiB, raised only after such a block is
// freed) with fresh mmaps, so each step paid page faults and kernel zeroing for them. Keep
// them in the heap for reuse instead.
const bool kHeapForLargeBlocks = [] {
  mallopt(M_MMAP_THRESHOLD, 512 << 20);
  mallopt(M_TRIM_THRESHOLD, 1024 << 20);
  return true;
}();
}  // namespace

void* CpuBackend::allocate(size_t bytes) {
  // A step frees and allocates the same activation sizes every time: keep freed blocks in the
  // heap instead of returning them to the kernel (glibc maps large blocks afresh, and every page
  // of a fresh mapping faults and is zeroed on first touch).
  static const bool heap_kept = [] {
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    return true;
  }();
  (void)heap_kept;
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);  // 64 B: whole cache lines for SIMD
  if (!p) throw std::bad_alloc();
  return p;
}
void CpuBackend::deallocate(void* ptr) { std::free(ptr); }
void CpuBackend::copy(void* dst, Device, const void* src, Device, size_t bytes) { std::memcpy(dst, src, bytes); }

void CpuBackend::fill(Tensor& x, double value) {
  const int64_t n = x.numel();
  if (x.dtype() == DType::i32) {
    std::fill_n(x.data<int32_t>(), n, int32_t(value));
    return;
  }
  EQUIVAE_DISPATCH_FLOAT(x, "fill", parallel_range(n, [&](int64_t a, int64_t b) { std::fill(x.data<T>() + a, x.data<T>() + b, T(value)); }));
}

void CpuBackend::axpy(double alpha, const Tensor& x, Tensor& y) {
  EQUIVAE_DISPATCH_FLOAT(x, "axpy", {
    const T* a = x.data<T>();
    T* b = y.data<T>();
    const T s = T(alpha);
    parallel_range(x.numel(), [a, b, s](int64_t lo, int64_t hi) {
      const T* __restrict in = a;
      T* __restrict out = b;
      for (int64_t i = lo; i < hi; ++i) out[i] += s * in[i];
    });
  });
}

void CpuBackend::scale(const Tensor& x, double alpha, Tensor& y) {
  EQUIVAE_DISPATCH_FLOAT(x, "scale", {
    const T* a = x.data<T>();
    T* b = y.data<T>();
    parallel_range(x.numel(), [a, b, s = T(alpha)](int64_t lo, int64_t hi) {
      const T* __restrict in = a;
      T* __restrict out = b;
      for (int64_t i = lo; i < hi; ++i) out[i] = s * in[i];
    });
  });
}

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& y) {
  EQUIVAE_DISPATCH_FLOAT(a, "binary", {
    const T* p = a.data<T>();
    const T* q = b.data<T>();
    T* r = y.data<T>();
    // No __restrict here: y may be a or b (in-place updates).
    parallel_range(a.numel(), [p, q, r, op](int64_t lo, int64_t hi) {
      switch (op) {
        case BinaryOp::add: for (int64_t i = lo; i < hi; ++i) r[i] = p[i] + q[i]; break;
        case BinaryOp::sub: for (int64_t i = lo; i < hi; ++i) r[i] = p[i] - q[i]; break;
        case BinaryOp::mul: for (int64_t i = lo; i < hi; ++i) r[i] = p[i] * q[i]; break;
      }
    });
  });
}

void CpuBackend::relu_forward(const Tensor& x, Tensor& y) {
  EQUIVAE_DISPATCH_FLOAT(x, "relu", {
    const T* a = x.data<T>();
    T* b = y.data<T>();
    parallel_range(x.numel(), [a, b](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) b[i] = a[i] < T(0) ? T(0) : a[i];  // NaN propagates; may run in place
    });
  });
}

void CpuBackend::relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  EQUIVAE_DISPATCH_FLOAT(y, "relu_backward", {
    const T* out = y.data<T>();
    const T* g = dy.data<T>();
    T* d = dx.data<T>();
    parallel_range(y.numel(), [out, g, d](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const T gi = g[i];  // loaded unconditionally, so the loop vectorises to a blend
        d[i] = out[i] > T(0) ? gi : T(0);
      }
    });
  });
}

void CpuBackend::copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t rows,
                              int64_t cols) {
  const int64_t src_cols = src.numel() / rows, dst_cols = dst.numel() / rows;
  const size_t elem = dtype_size(src.dtype());
  const char* s = static_cast<const char*>(src.raw());
  char* d = static_cast<char*>(dst.raw());
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(d + size_t(r * dst_cols + dst_col) * elem, s + size_t(r * src_cols + src_col) * elem,
                size_t(cols) * elem);
}

void CpuBackend::sum_rows(const Tensor& x, int64_t rows, Tensor& y) {
  EQUIVAE_DISPATCH_FLOAT(x, "sum_rows", {
    const int64_t cols = rows ? x.numel() / rows : 0;
    const T* a = x.data<T>();
    T* out = y.data<T>();
    for (int64_t r = 0; r < rows; ++r) {
      double acc = 0;  // double accumulation: the CPU path is the reference
      for (int64_t c = 0; c < cols; ++c) acc += a[r * cols + c];
      out[r] = T(acc);
    }
  });
}

void CpuBackend::broadcast_rows(const Tensor& dy, int64_t rows, Tensor& dx) {
  EQUIVAE_DISPATCH_FLOAT(dy, "broadcast_rows", {
    const int64_t cols = rows ? dx.numel() / rows : 0;
    const T* g = dy.data<T>();
    T* d = dx.data<T>();
    for (int64_t r = 0; r < rows; ++r) std::fill_n(d + r * cols, cols, g[r]);
  });
}

void CpuBackend::gather_rows(const Tensor& x, const Tensor& index, Tensor& y) {
  const int64_t rows = x.dim(0), count = index.numel();
  const size_t row_bytes = count ? y.bytes() / size_t(count) : 0;
  const int32_t* idx = index.data<int32_t>();
  const char* src = static_cast<const char*>(x.raw());
  char* dst = static_cast<char*>(y.raw());
  for (int64_t i = 0; i < count; ++i) {
    if (idx[i] < 0 || idx[i] >= rows)
      throw ShapeError(fmt::format("gather_rows: index {} of {} is outside [0, {})", idx[i], index.describe(), rows));
    std::memcpy(dst + size_t(i) * row_bytes, src + size_t(idx[i]) * row_bytes, row_bytes);
  }
}

bool CpuBackend::has_nonfinite(const Tensor& x) {
  bool bad = false;
  EQUIVAE_DISPATCH_FLOAT(x, "has_nonfinite", {
    const T* a = x.data<T>();
    // x - x is 0 for finite x and NaN for NaN or +-Inf: a branch-free scan that vectorises.
    T acc = 0;
    for (int64_t i = 0, n = x.numel(); i < n; ++i) acc += a[i] - a[i];
    bad = acc != T(0);
  });
  return bad;
}

}  // namespace equivae
