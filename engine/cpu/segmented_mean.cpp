// r_y's set mean: one output row per complementary set, the mean of its member rows.
#include <algorithm>

#include "engine/cpu/cpu_backend.h"

namespace equivae {

void CpuBackend::segmented_mean_forward(const Tensor& x, const Tensor& offsets, const Tensor& members, Tensor& y) {
  EQUIVAE_DISPATCH_FLOAT(x, "segmented_mean", {
    const int64_t sets = offsets.numel() - 1, d = x.numel() / x.dim(0);
    const int32_t* off = offsets.data<int32_t>();
    const int32_t* mem = members.data<int32_t>();
    const T* in = x.data<T>();
    T* out = y.data<T>();
    for (int64_t s = 0; s < sets; ++s) {
      T* row = out + s * d;
      std::fill_n(row, d, T(0));
      for (int32_t j = off[s]; j < off[s + 1]; ++j)
        for (int64_t k = 0; k < d; ++k) row[k] += in[int64_t(mem[j]) * d + k];
      const T inv = T(1) / T(off[s + 1] - off[s]);
      for (int64_t k = 0; k < d; ++k) row[k] *= inv;
    }
  });
}

void CpuBackend::segmented_mean_backward(const Tensor& dy, const Tensor& offsets, const Tensor& members,
                                         Tensor& dx) {
  EQUIVAE_DISPATCH_FLOAT(dy, "segmented_mean_backward", {
    const int64_t sets = offsets.numel() - 1, d = dy.numel() / std::max<int64_t>(1, sets);
    const int32_t* off = offsets.data<int32_t>();
    const int32_t* mem = members.data<int32_t>();
    const T* g = dy.data<T>();
    T* out = dx.data<T>();
    std::fill_n(out, dx.numel(), T(0));
    for (int64_t s = 0; s < sets; ++s) {
      const T inv = T(1) / T(off[s + 1] - off[s]);
      for (int32_t j = off[s]; j < off[s + 1]; ++j)
        for (int64_t k = 0; k < d; ++k) out[int64_t(mem[j]) * d + k] += g[s * d + k] * inv;
    }
  });
}

}  // namespace equivae
