// The CUDA backend: the Backend interface on float32 CUDA tensors. Each method checks dtypes,
// sizes its kernel scratch and calls the launcher of its op family (kernels/*.cuh) on the one
// stream; nothing here synchronises except copies to or from the host and the two ops that
// must return a verdict to the host (has_nonfinite, and pick's index check while the value
// checks of engine/ops.h are on). Every host wait is counted (cuda_host_waits).
#include "engine/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <string>

#include "engine/backend.h"
#include "engine/ops.h"
#include "kernels/adam.cuh"
#include "engine/cuda/allocator.h"
#include "kernels/check.h"
#include "kernels/conv2d.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/kl.cuh"
#include "kernels/likelihood.cuh"
#include "kernels/random.cuh"
#include "kernels/segmented_mean.cuh"
#include "kernels/softmax.cuh"

namespace equivae {
namespace {

using gpu::DeviceScratch;

// The backend computes in float32 only (the CPU backend is the float64 reference).
float* f32(const char* op, const Tensor& t) {
  EQUIVAE_CHECK(t.dtype() == DType::f32 && t.device() == Device::cuda,
                "{}: the CUDA backend takes float32 tensors on cuda, got {}", op, t.describe());
  return t.data<float>();
}
float* f32_or_null(const char* op, const Tensor& t) { return t.defined() ? f32(op, t) : nullptr; }
int32_t* i32(const char* op, const Tensor& t) {
  EQUIVAE_CHECK(t.dtype() == DType::i32 && t.device() == Device::cuda, "{}: needs an i32 tensor on cuda, got {}",
                op, t.describe());
  return t.data<int32_t>();
}

// cols of x viewed as [rows, cols] (0 for no rows, as on the CPU).
int64_t cols_of(const Tensor& x, int64_t rows) { return rows ? x.numel() / rows : 0; }

// The parts of a concat or split as one kernel's table (float32, at most kMaxColumnParts, each
// part whole rows of `whole`'s columns); false when they do not fit it: copy part by part.
bool column_parts(const char* op, const std::vector<Tensor>& parts, int64_t rows, const Tensor& whole,
                  gpu::ColumnParts& c) {
  if (parts.empty() || parts.size() > size_t(gpu::kMaxColumnParts) || rows <= 0) return false;
  c.count = int(parts.size());
  c.begin[0] = 0;
  for (size_t p = 0; p < parts.size(); ++p) {
    c.part[p] = f32(op, parts[p]);
    c.begin[p + 1] = c.begin[p] + parts[p].numel() / rows;
  }
  EQUIVAE_CHECK(c.begin[c.count] * rows == whole.numel(), "{}: parts of {} columns in all for {} as {} rows", op,
                c.begin[c.count], whole.describe(), rows);
  return true;
}

gpu::ChannelShape channels_of(const Tensor& t) {
  const int64_t n = t.dim(0), c = t.dim(1);
  return {n, c, n * c != 0 ? t.numel() / (n * c) : 0};
}

gpu::GaussianShape gaussian_shape(const Tensor& mean, const Tensor& logvar, int64_t rows) {
  const bool per_channel = logvar.numel() != mean.numel();
  return {rows, cols_of(mean, rows), per_channel ? logvar.numel() : 0};
}

ConvShape dense_as_conv(const Tensor& x, const Tensor& w) {
  return ConvShape{x.dim(0), x.dim(1), 1, 1, w.dim(0), 1, 1, 1, 1, 0};
}

class CudaBackend final : public Backend {
 public:
  CudaBackend() {
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    flag_ = static_cast<int*>(gpu::device_allocator().allocate(sizeof(int)));
    void* pinned = nullptr;
    CUDA_CHECK(cudaMallocHost(&pinned, sizeof(int)));
    host_flag_ = static_cast<int*>(pinned);
  }
  // Never destroyed (see make_cuda_backend), so no destructor releases the handles.

  const char* name() const override { return "cuda"; }
  cudaStream_t stream() const { return stream_; }

  void* allocate(size_t bytes) override { return gpu::device_allocator().allocate(bytes); }
  void deallocate(void* ptr) override { gpu::device_allocator().deallocate(ptr); }

  // Queued on the stream. A copy to host memory waits for it (the host may read the destination
  // as soon as copy() returns). A copy from host memory does not need to: CPU tensors are pageable,
  // and cudaMemcpyAsync from pageable memory returns only once the source has been staged
  // (CUDA's documented behaviour), so the host may reuse or free it at once.
  void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) override {
    if (bytes == 0) return;
    const bool to_host = dst_device == Device::cpu, from_host = src_device == Device::cpu;
    const cudaMemcpyKind kind = from_host ? (to_host ? cudaMemcpyHostToHost : cudaMemcpyHostToDevice)
                                          : (to_host ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice);
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream_));
    if (to_host) wait();
  }

  // ---- elementwise --------------------------------------------------------------------------
  void fill(Tensor& x, double value) override {
    if (x.dtype() == DType::i32) return gpu::fill(i32("fill", x), x.numel(), int32_t(value), stream_);
    gpu::fill(f32("fill", x), x.numel(), float(value), stream_);
  }
  void axpy(double alpha, const Tensor& x, Tensor& y) override {
    gpu::axpy(x.numel(), float(alpha), f32("axpy", x), f32("axpy", y), stream_);
  }
  void scale(const Tensor& x, double alpha, Tensor& y) override {
    gpu::scale(x.numel(), float(alpha), f32("scale", x), f32("scale", y), stream_);
  }
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& y) override {
    const gpu::BinaryKind kind = op == BinaryOp::add   ? gpu::BinaryKind::add
                                 : op == BinaryOp::sub ? gpu::BinaryKind::sub
                                                       : gpu::BinaryKind::mul;
    gpu::binary(kind, a.numel(), f32("binary", a), f32("binary", b), f32("binary", y), stream_);
  }
  void relu_forward(const Tensor& x, Tensor& y) override {
    gpu::relu_forward(x.numel(), f32("relu", x), f32("relu", y), stream_);
  }
  void relu_backward(const Tensor& y, const Tensor& dy, Tensor& dx) override {
    gpu::relu_backward(y.numel(), f32("relu_backward", y), f32("relu_backward", dy), f32("relu_backward", dx),
                       stream_);
  }
  void copy_columns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t rows,
                    int64_t cols) override {
    EQUIVAE_CHECK(src.dtype() == dst.dtype() && src.device() == Device::cuda && dst.device() == Device::cuda,
                  "copy_columns: {} into {}", src.describe(), dst.describe());
    const gpu::ColumnCopy c{rows, cols, cols_of(src, rows), src_col, cols_of(dst, rows), dst_col,
                            dtype_size(src.dtype())};
    gpu::copy_columns(src.raw(), dst.raw(), c, stream_);
  }
  void place_columns(const Tensor& src, Tensor& dst, int64_t dst_col, int64_t rows) override {
    const int64_t src_cols = cols_of(src, rows), dst_cols = cols_of(dst, rows);
    EQUIVAE_CHECK(dst_col >= 0 && dst_col + src_cols <= dst_cols, "place_columns: {} as {} columns from column {} of {}",
                  src.describe(), src_cols, dst_col, dst.describe());
    gpu::place_columns(f32("place_columns", src), f32("place_columns", dst), rows, src_cols, dst_cols, dst_col, stream_);
  }
  void concat_columns(const std::vector<Tensor>& parts, int64_t rows, Tensor& y) override {
    gpu::ColumnParts c{};
    if (!column_parts("concat_columns", parts, rows, y, c)) return Backend::concat_columns(parts, rows, y);
    gpu::join_columns(c, rows, f32("concat_columns", y), stream_);
  }
  void split_columns(const Tensor& x, int64_t rows, std::vector<Tensor>& parts) override {
    gpu::ColumnParts c{};
    if (!column_parts("split_columns", parts, rows, x, c)) return Backend::split_columns(x, rows, parts);
    gpu::split_columns(f32("split_columns", x), rows, c, stream_);
  }
  // The flag's memset and read only while value checks are on: a training step on the GPU gathers
  // with one launch and no wait (its indices come from the sampler, in range by construction).
  void gather_rows(const Tensor& x, const Tensor& index, Tensor& y) override {
    EQUIVAE_CHECK(x.dtype() == y.dtype() && x.device() == Device::cuda && y.device() == Device::cuda,
                  "gather_rows: {} into {}", x.describe(), y.describe());
    const int64_t count = index.numel();
    if (count == 0) return;
    const bool checked = value_checks();
    gpu::gather_rows(x.raw(), x.dim(0), int64_t(y.bytes()) / count, i32("gather_rows", index), count, y.raw(),
                     checked ? flag_ : nullptr, stream_);
    if (checked)
      EQUIVAE_CHECK(!read_flag(), "gather_rows: an index of {} is outside [0, {})", index.describe(), x.dim(0));
  }
  void sum_rows(const Tensor& x, int64_t rows, Tensor& y) override {
    gpu::sum_rows(f32("sum_rows", x), rows, cols_of(x, rows), f32("sum_rows", y), stream_);
  }
  void broadcast_rows(const Tensor& dy, int64_t rows, Tensor& dx) override {
    gpu::broadcast_rows(f32("broadcast_rows", dy), rows, cols_of(dx, rows), f32("broadcast_rows", dx), stream_);
  }
  bool has_nonfinite(const Tensor& x) override {
    gpu::scan_nonfinite(f32("has_nonfinite", x), x.numel(), flag_, stream_);
    return read_flag();
  }

  // ---- dense ----------------------------------------------------------------------------------
  // A dense layer is a 1x1 convolution of [n, in, 1, 1] images, so it runs on the conv kernels:
  // bias and ReLU in the GEMM's epilogue (one launch where cuBLAS + a bias pass took two).
  void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override {
    linear_relu_forward(x, w, b, false, y);
  }
  void linear_relu_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, Tensor& y) override {
    conv2d_forward(x, w, b, relu, y, dense_as_conv(x, w));
  }
  void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor& dx, Tensor& dw,
                       Tensor& db) override {
    conv2d_backward(x, w, Tensor(), dy, dx, dw, db, dense_as_conv(x, w));
  }
  void linear_relu_backward(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& dy, Tensor& dx,
                            Tensor& dw, Tensor& db) override {
    conv2d_backward(x, w, y, dy, dx, dw, db, dense_as_conv(x, w));
  }

  // ---- convolution ----------------------------------------------------------------------------
  void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, Tensor& y,
                      const ConvShape& s) override {
    DeviceScratch ws(gpu::conv2d_forward_workspace_bytes(s));
    gpu::conv2d_forward(f32("conv2d", x), f32("conv2d", w), f32_or_null("conv2d", b), relu, f32("conv2d", y), s,
                        ws.get(), stream_);
  }
  void conv2d_backward_data(const Tensor& dy, const Tensor& w, Tensor& dx, const ConvShape& s) override {
    const char* op = "conv2d_backward_data";
    DeviceScratch ws(gpu::conv2d_backward_data_workspace_bytes(s));
    gpu::conv2d_backward_data(f32(op, dy), f32(op, w), f32(op, dx), s, ws.get(), stream_);
  }
  // The ReLU's mask is applied as the GEMMs load dy, and db is a row of the weight-gradient GEMM:
  // no pass of their own. Without dw, db comes from a channel sum.
  void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& dy, Tensor& dx, Tensor& dw,
                       Tensor& db, const ConvShape& s) override {
    const char* op = "conv2d_backward";
    const float* mask = f32_or_null(op, y);
    if (dx.defined()) {
      DeviceScratch ws(gpu::conv2d_backward_data_workspace_bytes(s));
      gpu::conv2d_backward_data(f32(op, dy), f32(op, w), f32(op, dx), s, ws.get(), stream_, nullptr, false, mask);
    }
    if (dw.defined()) {
      DeviceScratch ws(gpu::conv2d_backward_weight_workspace_bytes(s, db.defined()));
      gpu::conv2d_backward_weight(f32(op, x), f32(op, dy), f32(op, dw), s, ws.get(), stream_, mask, f32_or_null(op, db));
    } else if (db.defined()) {
      Tensor unused;
      relu_bias_backward(y, dy, unused, db);
    }
  }
  void conv_transpose2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, Tensor& y,
                                const ConvShape& s) override {
    const char* op = "conv_transpose2d";
    DeviceScratch ws(gpu::conv2d_backward_data_workspace_bytes(s));
    gpu::conv2d_backward_data(f32(op, x), f32(op, w), f32(op, y), s, ws.get(), stream_, f32_or_null(op, b), relu);
  }
  void conv2d_backward_weight(const Tensor& x, const Tensor& dy, Tensor& dw, const ConvShape& s) override {
    const char* op = "conv2d_backward_weight";
    DeviceScratch ws(gpu::conv2d_backward_weight_workspace_bytes(s));
    gpu::conv2d_backward_weight(f32(op, x), f32(op, dy), f32(op, dw), s, ws.get(), stream_);
  }
  void channel_sum(const Tensor& dy, Tensor& db) override {
    const gpu::ChannelShape s = channels_of(dy);
    DeviceScratch ws(gpu::channel_sum_workspace_bytes(s));
    gpu::channel_sum(f32("channel_sum", dy), f32("channel_sum", db), s, ws.get(), stream_);
  }
  void relu_bias_backward(const Tensor& y, const Tensor& dy, Tensor& dx, Tensor& db) override {
    const char* op = "relu_bias_backward";
    const gpu::ChannelShape s = channels_of(dy);
    DeviceScratch ws(db.defined() ? gpu::channel_sum_workspace_bytes(s) : 0);
    gpu::relu_bias_backward(f32_or_null(op, y), f32(op, dy), y.defined() ? f32_or_null(op, dx) : nullptr,
                            f32_or_null(op, db), s, ws.get(), stream_);
  }
  void add_channel_bias(const Tensor& b, Tensor& y) override {
    gpu::add_channel_bias(f32("add_channel_bias", b), f32("add_channel_bias", y), channels_of(y), stream_);
  }

  // ---- segmented mean -------------------------------------------------------------------------
  void segmented_mean_forward(const Tensor& x, const Tensor& offsets, const Tensor& members, Tensor& y) override {
    const char* op = "segmented_mean";
    const int64_t sets = offsets.numel() - 1;
    const gpu::SegmentShape s{x.dim(0), sets, members.numel(), cols_of(x, x.dim(0))};
    gpu::segmented_mean_forward(f32(op, x), i32(op, offsets), i32(op, members), f32(op, y), s, stream_);
  }
  void segmented_mean_backward(const Tensor& dy, const Tensor& offsets, const Tensor& members,
                               Tensor& dx) override {
    const char* op = "segmented_mean_backward";
    const int64_t sets = offsets.numel() - 1;
    const gpu::SegmentShape s{dx.dim(0), sets, members.numel(), dy.numel() / std::max<int64_t>(1, sets)};
    DeviceScratch ws(gpu::segmented_mean_backward_workspace_bytes(s));
    gpu::segmented_mean_backward(f32(op, dy), i32(op, offsets), i32(op, members), f32(op, dx), s, ws.get(),
                                 stream_);
  }

  // ---- random ---------------------------------------------------------------------------------
  void reparam_forward(const Tensor& mu, const Tensor& logvar, uint64_t seed, uint64_t offset, Tensor& v) override {
    gpu::reparam_forward(mu.numel(), f32("reparam", mu), f32("reparam", logvar), seed, offset, rng_offset(),
                         f32("reparam", v), stream_);
  }
  void reparam_backward(const Tensor& mu, const Tensor& v, const Tensor& dv, Tensor& dmu, Tensor& dlogvar) override {
    const char* op = "reparam_backward";
    gpu::reparam_backward(mu.numel(), f32(op, mu), f32(op, v), f32(op, dv), f32(op, dmu), f32(op, dlogvar), stream_);
  }
  void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, Tensor& y) override {
    gpu::dropout(x.numel(), f32("dropout", x), p, seed, offset, rng_offset(), f32("dropout", y), stream_);
  }

  // ---- likelihoods and KL ---------------------------------------------------------------------
  void bernoulli_loglik_forward(const Tensor& logits, const Tensor& target, int64_t rows, Tensor& y) override {
    const char* op = "bernoulli_loglik";
    gpu::bernoulli_loglik_forward(f32(op, logits), f32(op, target), f32(op, y), {rows, cols_of(logits, rows)},
                                  stream_);
  }
  void bernoulli_loglik_backward(const Tensor& logits, const Tensor& target, const Tensor& dy, int64_t rows,
                                 Tensor& dlogits) override {
    const char* op = "bernoulli_loglik_backward";
    gpu::bernoulli_loglik_backward(f32(op, logits), f32(op, target), f32(op, dy), f32(op, dlogits),
                                   {rows, cols_of(logits, rows)}, stream_);
  }
  void gaussian_loglik_forward(const Tensor& mean, const Tensor& logvar, const Tensor& target, int64_t rows,
                               Tensor& y) override {
    const char* op = "gaussian_loglik";
    gpu::gaussian_loglik_forward(f32(op, mean), f32(op, logvar), f32(op, target), f32(op, y),
                                 gaussian_shape(mean, logvar, rows), stream_);
  }
  void gaussian_loglik_backward(const Tensor& mean, const Tensor& logvar, const Tensor& target, const Tensor& dy,
                                int64_t rows, Tensor& dmean, Tensor& dlogvar) override {
    const char* op = "gaussian_loglik_backward";
    const gpu::GaussianShape s = gaussian_shape(mean, logvar, rows);
    DeviceScratch ws(gpu::gaussian_loglik_backward_workspace_bytes(s));
    gpu::gaussian_loglik_backward(f32(op, mean), f32(op, logvar), f32(op, target), f32(op, dy), f32(op, dmean),
                                  f32(op, dlogvar), s, ws.get(), stream_);
  }
  void kl_normal_forward(const Tensor& mu, const Tensor& logvar, int64_t rows, Tensor& y) override {
    gpu::kl_normal_forward(f32("kl_normal", mu), f32("kl_normal", logvar), f32("kl_normal", y),
                           {rows, cols_of(mu, rows)}, stream_);
  }
  void kl_normal_backward(const Tensor& mu, const Tensor& logvar, const Tensor& dy, int64_t rows, Tensor& dmu,
                          Tensor& dlogvar) override {
    const char* op = "kl_normal_backward";
    gpu::kl_normal_backward(f32(op, mu), f32(op, logvar), f32(op, dy), f32(op, dmu), f32(op, dlogvar),
                            {rows, cols_of(mu, rows)}, stream_);
  }

  // ---- categorical ----------------------------------------------------------------------------
  void log_softmax_forward(const Tensor& x, int64_t rows, Tensor& y) override {
    gpu::log_softmax_forward(f32("log_softmax", x), f32("log_softmax", y), {rows, cols_of(x, rows)}, stream_);
  }
  void log_softmax_backward(const Tensor& y, const Tensor& dy, int64_t rows, Tensor& dx) override {
    const char* op = "log_softmax_backward";
    gpu::log_softmax_backward(f32(op, y), f32(op, dy), f32(op, dx), {rows, cols_of(y, rows)}, stream_);
  }
  void softmax_forward(const Tensor& x, int64_t rows, Tensor& y) override {
    gpu::softmax_forward(f32("softmax", x), f32("softmax", y), {rows, cols_of(x, rows)}, stream_);
  }
  void softmax_backward(const Tensor& y, const Tensor& dy, int64_t rows, Tensor& dx) override {
    const char* op = "softmax_backward";
    gpu::softmax_backward(f32(op, y), f32(op, dy), f32(op, dx), {rows, cols_of(y, rows)}, stream_);
  }
  // Reads the index check back (one synchronisation): an out-of-range label is a caller's bug
  // that must raise the same error as on the CPU, not return garbage.
  void pick_forward(const Tensor& x, const Tensor& index, int64_t rows, Tensor& y) override {
    const int64_t k = cols_of(x, rows);
    gpu::pick_forward(f32("pick", x), i32("pick", index), f32("pick", y), {rows, k}, flag_, stream_);
    // (Out-of-range indices read nothing: the kernel writes 0 and raises the flag.)
    if (value_checks()) EQUIVAE_CHECK(!read_flag(), "pick: an index of {} is outside [0, {})", index.describe(), k);
  }
  void pick_backward(const Tensor& dy, const Tensor& index, int64_t rows, Tensor& dx) override {
    gpu::pick_backward(f32("pick_backward", dy), i32("pick_backward", index), f32("pick_backward", dx),
                       {rows, cols_of(dx, rows)}, stream_);
  }
  void categorical_kl_forward(const Tensor& logits, const Tensor& log_prior, int64_t rows, Tensor& y) override {
    const char* op = "categorical_kl";
    gpu::categorical_kl_forward(f32(op, logits), f32(op, log_prior), f32(op, y), {rows, cols_of(logits, rows)},
                                stream_);
  }
  void categorical_kl_backward(const Tensor& logits, const Tensor& log_prior, const Tensor& dy, int64_t rows,
                               Tensor& dlogits) override {
    const char* op = "categorical_kl_backward";
    gpu::categorical_kl_backward(f32(op, logits), f32(op, log_prior), f32(op, dy), f32(op, dlogits),
                                 {rows, cols_of(logits, rows)}, stream_);
  }
  void entropy_forward(const Tensor& logits, int64_t rows, Tensor& y) override {
    gpu::entropy_forward(f32("entropy", logits), f32("entropy", y), {rows, cols_of(logits, rows)}, stream_);
  }
  void entropy_backward(const Tensor& logits, const Tensor& dy, int64_t rows, Tensor& dlogits) override {
    const char* op = "entropy_backward";
    gpu::entropy_backward(f32(op, logits), f32(op, dy), f32(op, dlogits), {rows, cols_of(logits, rows)}, stream_);
  }

  void adam_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamParams& p) override {
    gpu::adam_step(param.numel(), f32("adam", param), f32("adam", grad), f32("adam", m), f32("adam", v), p,
                   counters_ ? &counters_->adam_step_size : nullptr, stream_);
  }

  // Device counters for a captured step (CudaCountersScope), or null.
  void set_counters(const StepCounters* counters) {
    EQUIVAE_CHECK(!counters || !counters_, "cuda: step counters are already set (scopes do not nest)");
    counters_ = counters;
  }

 private:
  const uint64_t* rng_offset() const { return counters_ ? &counters_->rng_offset : nullptr; }
  const StepCounters* counters_ = nullptr;  // device memory

  // The device flag set by the last scan, through pinned memory.
  bool read_flag() {
    CUDA_CHECK(cudaMemcpyAsync(host_flag_, flag_, sizeof(int), cudaMemcpyDeviceToHost, stream_));
    wait();
    return *host_flag_ != 0;
  }

 public:
  // The host waits for the stream: every such wait is counted (cuda_host_waits).
  void wait() {
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    ++host_waits_;
  }
  uint64_t host_waits() const { return host_waits_; }

 private:
  uint64_t host_waits_ = 0;

  cudaStream_t stream_ = nullptr;
  int* flag_ = nullptr;       // device
  int* host_flag_ = nullptr;  // pinned host
};

CudaBackend& instance() {
  static CudaBackend* backend = new CudaBackend;  // never deleted: tensors may be freed at exit
  return *backend;
}

}  // namespace

bool cuda_device_present() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device / no driver" error
    return false;
  }
  return count > 0;
}

Backend* make_cuda_backend() { return &instance(); }

void set_cuda_conv_tf32(bool on) { gpu::set_conv_tf32(on); }
void set_cuda_plans_reproducible(bool on) { gpu::set_reproducible_plans(on); }
bool cuda_plans_reproducible() { return gpu::reproducible_plans(); }

CudaMemoryStats cuda_memory_stats() { return gpu::device_allocator().stats(); }

CUstream_st* cuda_stream() { return instance().stream(); }

void cuda_synchronize() { instance().wait(); }

uint64_t cuda_host_waits() { return instance().host_waits(); }

CudaPinnedUpload::CudaPinnedUpload() {
  cudaEvent_t event = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  event_ = event;
}

CudaPinnedUpload::~CudaPinnedUpload() {
  cudaEventSynchronize(static_cast<cudaEvent_t>(event_));  // the copy may still read the buffer
  cudaEventDestroy(static_cast<cudaEvent_t>(event_));
  cudaFreeHost(host_);
}

void* CudaPinnedUpload::host(size_t bytes) {
  CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));  // an unrecorded event is complete
  if (bytes > capacity_) {
    // Doubling: a step's index count varies a little, so the buffer settles after a few steps.
    const size_t grown = std::max(bytes, 2 * capacity_);
    CUDA_CHECK(cudaFreeHost(host_));
    host_ = nullptr, capacity_ = 0;
    CUDA_CHECK(cudaMallocHost(&host_, grown));
    capacity_ = grown;
  }
  return host_;
}

void CudaPinnedUpload::start(void* device_dst, size_t bytes) {
  if (bytes) CUDA_CHECK(cudaMemcpyAsync(device_dst, host_, bytes, cudaMemcpyHostToDevice, cuda_stream()));
  CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), cuda_stream()));
}

CudaGraph::CudaGraph() : pool_(std::make_unique<gpu::AllocatorPool>()) {}

CudaGraph::~CudaGraph() {
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  gpu::device_allocator().release_pool(*pool_);
}

void CudaGraph::capture(const std::function<void()>& step) {
  EQUIVAE_CHECK(!exec_, "cuda graph: captured already");
  cudaStream_t stream = cuda_stream();
  // Relaxed: the pool may cudaMalloc while the step is captured (a first capture has no blocks).
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
  gpu::device_allocator().use_pool(pool_.get());
  std::string failed;
  try {
    step();
  } catch (const std::exception& e) {
    failed = e.what();
  }
  gpu::device_allocator().use_pool(nullptr);
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  cudaGetLastError();  // a failed capture leaves its error behind
  if (failed.empty() && ended != cudaSuccess)
    failed = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(ended);
  if (!failed.empty()) {
    if (graph) cudaGraphDestroy(graph);
    throw std::runtime_error("cuda graph: the training step could not be captured (a captured step may not wait "
                             "for the GPU, read values back or free memory; --cuda-graphs off runs it eagerly): " +
                             failed);
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  CUDA_CHECK(made);
  exec_ = exec;
}

void CudaGraph::launch() {
  EQUIVAE_CHECK(exec_, "cuda graph: launched before it was captured");
  CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), cuda_stream()));
}

CudaCountersScope::CudaCountersScope(const StepCounters* device_counters) { instance().set_counters(device_counters); }
CudaCountersScope::~CudaCountersScope() { instance().set_counters(nullptr); }

CudaMemoryInfo cuda_memory_info() {
  size_t free = 0, total = 0;
  CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return {free, total};
}

CudaLateRead::CudaLateRead(size_t capacity) : capacity_(capacity) {
  void* pinned = nullptr;
  CUDA_CHECK(cudaMallocHost(&pinned, capacity * sizeof(float)));
  host_ = static_cast<float*>(pinned);
  cudaEvent_t event = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  event_ = event;
}

CudaLateRead::~CudaLateRead() {
  cudaEventDestroy(static_cast<cudaEvent_t>(event_));
  cudaFreeHost(host_);
}

void CudaLateRead::start(const std::vector<const float*>& device_scalars) {
  EQUIVAE_CHECK(device_scalars.size() <= capacity_, "late read: {} scalars, room for {}", device_scalars.size(),
                capacity_);
  count_ = device_scalars.size();
  for (size_t i = 0; i < count_; ++i)
    CUDA_CHECK(cudaMemcpyAsync(host_ + i, device_scalars[i], sizeof(float), cudaMemcpyDeviceToHost, cuda_stream()));
  CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), cuda_stream()));
}

std::vector<double> CudaLateRead::finish() {
  CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));
  return std::vector<double>(host_, host_ + count_);
}

}  // namespace equivae
