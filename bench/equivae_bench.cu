// equivae_bench: the CUDA backend's kernels at the model's shapes, each against the vendor
// library doing the same work in the same run (llm.c's dev/cuda style). First every kernel is
// validated against the CPU reference (float64) on a small case; then, for MNIST (1x28x28) and
// SVHN (3x32x32) at each batch size, ours and the vendor's are warmed up and timed with CUDA
// events (median of repeats; the L2 flushed before each timed call, as llm.c's dev/cuda
// benchmarks do, so a layer does not find its inputs cached by its own previous repeat as it never
// would in a step; --no-flush-l2 times warm-cache repeats), and the table gives time per call,
// GFLOP/s or GB/s, % of the device's peak (from its SM count and clocks) and the speed relative to
// the vendor. conv2d's L1 backward-data row is the decoder's last transposed conv (16 -> 1: the
// direct kernel for <= 4 channels).
//
//   conv2d: the encoder's five layers (filters 16, 16, 32, 32, 64; 5x5; stride 1 then 2; pad 2).
//     The decoder's transposed convs are the same three products of the same shapes (a
//     transposed conv's forward is conv backward-data), so these cover every conv of the model.
//     Vendor: cuDNN (legacy API), fastest algorithm from cudnnFind*, with FMA math (exact FP32,
//     like ours); its default-math time (TF32 tensor cores allowed) is shown beside it. Our
//     forward includes the fused bias + ReLU, cuDNN's does not.
//   dense: vendor = cuBLAS sgemm (and sgemv for the bias gradient); ours adds the bias pieces.
//   memory-bound ops: GB/s of their compulsory traffic; no vendor.
//
//   equivae_bench [--json FILE] [--batches 32,64,...] [--repeats N] [--warmup N] [--no-flush-l2]
#include <cublas_v2.h>
#include <cudnn.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench/bench.h"
#include "engine/backend.h"
#include "kernels/adam.cuh"
#include "kernels/conv2d.cuh"
#include "engine/cuda/cuda_backend.h"
#include "kernels/elementwise.cuh"
#include "kernels/kl.cuh"
#include "kernels/likelihood.cuh"
#include "kernels/linear.cuh"
#include "kernels/random.cuh"
#include "kernels/segmented_mean.cuh"
#include "kernels/softmax.cuh"

#define CUDNN_CHECK(call) check_cudnn((call), #call, __FILE__, __LINE__)

namespace equivae::bench {
namespace {

void check_cudnn(cudnnStatus_t status, const char* call, const char* file, int line) {
  if (status != CUDNN_STATUS_SUCCESS) gpu::throw_cuda_error(call, cudnnGetErrorString(status), file, line);
}

// ---- the device ---------------------------------------------------------------------------------

// FP32 lanes per SM: 64 on GP100/V100/A100-class parts (x.0, 7.x), 128 on the others since
// Ampere's GA10x (8.6+), Hopper and Blackwell.
int fp32_lanes_per_sm(int major, int minor) {
  if (major == 7 || (major == 8 && minor == 0) || (major == 6 && minor == 0)) return 64;
  return 128;
}

DeviceInfo query_device() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  auto attr = [&](cudaDeviceAttr a) {
    int v = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&v, a, dev));
    return v;
  };
  DeviceInfo d;
  d.name = prop.name;
  d.sms = attr(cudaDevAttrMultiProcessorCount);
  d.cc_major = attr(cudaDevAttrComputeCapabilityMajor);
  d.cc_minor = attr(cudaDevAttrComputeCapabilityMinor);
  d.clock_ghz = attr(cudaDevAttrClockRate) * 1e-6;  // kHz
  d.fp32_peak_gflops = d.sms * fp32_lanes_per_sm(d.cc_major, d.cc_minor) * 2.0 * d.clock_ghz;
  d.mem_peak_gbs = 2.0 * attr(cudaDevAttrMemoryClockRate) * 1e3 * attr(cudaDevAttrGlobalMemoryBusWidth) / 8 * 1e-9;
  d.l2_bytes = size_t(attr(cudaDevAttrL2CacheSize));
  return d;
}

// ---- buffers ------------------------------------------------------------------------------------

Tensor device_uniform(Shape shape, std::mt19937_64& rng, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(size_t(shape_numel(shape)));
  for (double& x : v) x = u(rng);
  return Tensor::from(v, std::move(shape), DType::f32, Device::cuda);
}
Tensor device_empty(Shape shape) { return Tensor::empty(std::move(shape), DType::f32, Device::cuda); }
Tensor device_bytes(size_t bytes) { return device_empty({int64_t((bytes + 3) / 4)}); }
float* f(const Tensor& t) { return t.data<float>(); }

// max |a - b| / max |b|: how far our output is from the vendor's.
double relative_difference(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to_vector(), y = b.to_vector();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, std::abs(x[i] - y[i]));
    scale = std::max(scale, std::abs(y[i]));
  }
  return scale > 0 ? diff / scale : diff;
}
// cuDNN's FFT and Winograd algorithms are exact only to ~1e-5 of the output's scale; a wrong
// kernel is off by O(1).
constexpr double kVendorTolerance = 1e-3;

// ---- validation against the CPU reference -------------------------------------------------------

struct Input {
  Shape shape;
  double lo = -1, hi = 1;
};
using OpFn = std::function<void(Backend&, const std::vector<Tensor>& in, std::vector<Tensor>& out)>;

// Runs op on the CPU backend in float64 and on the CUDA backend in float32 on the same
// (float-representable) inputs; passes when every output element is within
// 1e-4 |cpu| + 1e-5 max |cpu| (the parity test's bound).
bool validate(const std::string& name, const std::vector<Input>& inputs, const std::vector<Shape>& outputs,
              const OpFn& op, std::mt19937_64& rng) {
  std::vector<Tensor> in_cpu, in_gpu, out_cpu, out_gpu;
  for (const Input& in : inputs) {
    std::uniform_real_distribution<double> u(in.lo, in.hi);
    std::vector<double> v(size_t(shape_numel(in.shape)));
    for (double& x : v) x = double(float(u(rng)));
    in_cpu.push_back(Tensor::from(v, in.shape, DType::f64, Device::cpu));
    in_gpu.push_back(Tensor::from(v, in.shape, DType::f32, Device::cuda));
  }
  for (const Shape& s : outputs) {
    out_cpu.push_back(Tensor::empty(s, DType::f64, Device::cpu));
    out_gpu.push_back(Tensor::full(s, std::nan(""), DType::f32, Device::cuda));
  }
  op(backend(Device::cpu), in_cpu, out_cpu);
  op(backend(Device::cuda), in_gpu, out_gpu);
  double worst = 0;
  for (size_t o = 0; o < outputs.size(); ++o) {
    const std::vector<double> got = out_gpu[o].to_vector(), want = out_cpu[o].to_vector();
    double max_abs = 0;
    for (double w : want) max_abs = std::max(max_abs, std::abs(w));
    for (size_t i = 0; i < got.size(); ++i) {
      const double err = std::abs(got[i] - want[i]), bound = 1e-4 * std::abs(want[i]) + 1e-5 * max_abs;
      worst = std::max(worst, std::isnan(err) ? INFINITY : err == 0 ? 0.0 : err / bound);
    }
  }
  std::printf("  validate %-44s worst error %.3g of threshold%s\n", name.c_str(), worst, worst <= 1 ? "" : "  FAILED");
  return worst <= 1;
}

// ---- the model's shapes -------------------------------------------------------------------------

struct Dataset {
  const char* name;
  int64_t channels, side;
};
constexpr Dataset kDatasets[] = {{"mnist", 1, 28}, {"svhn", 3, 32}};
constexpr int64_t kFilters[] = {16, 16, 32, 32, 64};
constexpr int64_t kHidden = 128, kLatent = 16, kClasses = 10, kParams = 480000;

std::vector<ConvShape> encoder_convs(int64_t n, const Dataset& d) {
  std::vector<ConvShape> layers;
  int64_t c = d.channels, side = d.side;
  for (int i = 0; i < 5; ++i) {
    const int64_t stride = i == 0 ? 1 : 2, out = conv_out_size(side, 5, stride, 2);
    layers.push_back({n, c, side, side, kFilters[i], out, out, 5, stride, 2});
    c = kFilters[i];
    side = out;
  }
  return layers;
}

std::string conv_str(const ConvShape& s) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%ldx%ldx%ld -> %ldx%ldx%ld k%ld s%ld", long(s.in_c), long(s.in_h), long(s.in_w),
                long(s.out_c), long(s.out_h), long(s.out_w), long(s.k), long(s.stride));
  return buf;
}

// ---- cuDNN --------------------------------------------------------------------------------------

// One conv2d shape's three cuDNN products with the fastest algorithms cudnnFind* reports under
// a math mode (FMA: exact FP32; default: TF32 tensor cores allowed).
class CudnnConv {
 public:
  CudnnConv(cudnnHandle_t handle, const ConvShape& s, cudnnMathType_t math) : h_(handle) {
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&x_));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&y_));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&w_));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&c_));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(x_, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, int(s.n), int(s.in_c),
                                           int(s.in_h), int(s.in_w)));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(y_, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, int(s.n), int(s.out_c),
                                           int(s.out_h), int(s.out_w)));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(w_, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, int(s.out_c), int(s.in_c),
                                           int(s.k), int(s.k)));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(c_, int(s.pad), int(s.pad), int(s.stride), int(s.stride), 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(c_, math));
    constexpr int kWant = 8;
    int got = 0;
    cudnnConvolutionFwdAlgoPerf_t fwd[kWant];
    CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(h_, x_, w_, c_, y_, kWant, &got, fwd));
    fwd_ = pick(fwd, got, math);
    cudnnConvolutionBwdDataAlgoPerf_t bwd_data[kWant];
    CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(h_, w_, y_, c_, x_, kWant, &got, bwd_data));
    data_ = pick(bwd_data, got, math);
    cudnnConvolutionBwdFilterAlgoPerf_t bwd_filter[kWant];
    CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(h_, x_, y_, c_, w_, kWant, &got, bwd_filter));
    filter_ = pick(bwd_filter, got, math);
    workspace_ = device_bytes(std::max({fwd_.memory, data_.memory, filter_.memory, size_t(4)}));
  }
  ~CudnnConv() {
    cudnnDestroyTensorDescriptor(x_);
    cudnnDestroyTensorDescriptor(y_);
    cudnnDestroyFilterDescriptor(w_);
    cudnnDestroyConvolutionDescriptor(c_);
  }
  CudnnConv(const CudnnConv&) = delete;
  CudnnConv& operator=(const CudnnConv&) = delete;

  void forward(const float* x, const float* w, float* y) {
    CUDNN_CHECK(cudnnSetConvolutionMathType(c_, fwd_.mathType));
    CUDNN_CHECK(cudnnConvolutionForward(h_, &one_, x_, x, w_, w, c_, fwd_.algo, workspace_.raw(), fwd_.memory, &zero_,
                                        y_, y));
  }
  void backward_data(const float* dy, const float* w, float* dx) {
    CUDNN_CHECK(cudnnSetConvolutionMathType(c_, data_.mathType));
    CUDNN_CHECK(cudnnConvolutionBackwardData(h_, &one_, w_, w, y_, dy, c_, data_.algo, workspace_.raw(),
                                             data_.memory, &zero_, x_, dx));
  }
  void backward_filter(const float* x, const float* dy, float* dw) {
    CUDNN_CHECK(cudnnSetConvolutionMathType(c_, filter_.mathType));
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(h_, &one_, x_, x, y_, dy, c_, filter_.algo, workspace_.raw(),
                                               filter_.memory, &zero_, w_, dw));
  }

 private:
  // The fastest successful algorithm (cudnnFind* sorts by time); for the exact variant the
  // fastest FMA-only one, else the fastest that uses no tensor cores.
  template <class Perf> static Perf pick(const Perf* perf, int count, cudnnMathType_t math) {
    auto ok = [&](const Perf& p, bool strict) {
      if (p.status != CUDNN_STATUS_SUCCESS) return false;
      if (math != CUDNN_FMA_MATH) return true;
      return strict ? p.mathType == CUDNN_FMA_MATH
                    : p.mathType != CUDNN_TENSOR_OP_MATH && p.mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
    };
    for (bool strict : {true, false})
      for (int i = 0; i < count; ++i)
        if (ok(perf[i], strict)) return perf[i];
    throw std::runtime_error("cudnn: no usable convolution algorithm");
  }

  cudnnHandle_t h_;
  cudnnTensorDescriptor_t x_, y_;
  cudnnFilterDescriptor_t w_;
  cudnnConvolutionDescriptor_t c_;
  cudnnConvolutionFwdAlgoPerf_t fwd_;
  cudnnConvolutionBwdDataAlgoPerf_t data_;
  cudnnConvolutionBwdFilterAlgoPerf_t filter_;
  Tensor workspace_;
  const float one_ = 1.f, zero_ = 0.f;
};

// ---- the benchmarks -----------------------------------------------------------------------------

struct Libraries {
  cudnnHandle_t cudnn;
  cublasHandle_t cublas;
};

// Our kernels' time with the TF32 tensor-core products switched on (then back off).
double tf32_median_ms(const BenchContext& ctx, const std::function<void()>& fn) {
  gpu::set_conv_tf32(true);
  const double ms = median_ms(ctx, fn);
  gpu::set_conv_tf32(false);
  return ms;
}

void bench_convs(const BenchContext& ctx, Libraries& lib, const std::string& group, const std::vector<ConvShape>& layers,
                 std::mt19937_64& rng, std::vector<Result>& out) {
  const cudaStream_t st = ctx.stream;
  for (size_t l = 0; l < layers.size(); ++l) {
    const ConvShape& s = layers[l];
    const Tensor x = device_uniform({s.n, s.in_c, s.in_h, s.in_w}, rng), w = device_uniform({s.out_c, s.in_c, s.k, s.k}, rng);
    const Tensor b = device_uniform({s.out_c}, rng), dy = device_uniform({s.n, s.out_c, s.out_h, s.out_w}, rng);
    Tensor y = device_empty(dy.shape()), y_ref = device_empty(dy.shape()), dx = device_empty(x.shape());
    Tensor dx_ref = device_empty(x.shape()), dw = device_empty(w.shape()), dw_ref = device_empty(w.shape());
    const Tensor ws_fwd = device_bytes(gpu::conv2d_forward_workspace_bytes(s) + 4);
    const Tensor ws_data = device_bytes(gpu::conv2d_backward_data_workspace_bytes(s) + 4);
    const Tensor ws_weight = device_bytes(gpu::conv2d_backward_weight_workspace_bytes(s) + 4);
    CudnnConv exact(lib.cudnn, s, CUDNN_FMA_MATH), tf32(lib.cudnn, s, CUDNN_DEFAULT_MATH);
    const double flops = 2.0 * double(s.n * s.out_c * s.out_h * s.out_w) * double(s.patch());
    const std::string layer = " L" + std::to_string(l + 1);

    // Same products without bias and ReLU first, to check ours against cuDNN at this shape.
    gpu::conv2d_forward(f(x), f(w), nullptr, false, f(y), s, ws_fwd.raw(), st);
    exact.forward(f(x), f(w), f(y_ref));
    gpu::conv2d_backward_data(f(dy), f(w), f(dx), s, ws_data.raw(), st);
    exact.backward_data(f(dy), f(w), f(dx_ref));
    gpu::conv2d_backward_weight(f(x), f(dy), f(dw), s, ws_weight.raw(), st);
    exact.backward_filter(f(x), f(dy), f(dw_ref));

    Result fwd{group, "conv2d_forward+bias+relu" + layer, conv_str(s)};
    fwd.mismatch = relative_difference(y, y_ref) > kVendorTolerance;
    fwd.ms = median_ms(ctx, [&] { gpu::conv2d_forward(f(x), f(w), f(b), true, f(y), s, ws_fwd.raw(), st); });
    fwd.tf32_ms = tf32_median_ms(ctx, [&] { gpu::conv2d_forward(f(x), f(w), f(b), true, f(y), s, ws_fwd.raw(), st); });
    fwd.vendor_ms = median_ms(ctx, [&] { exact.forward(f(x), f(w), f(y_ref)); });
    fwd.vendor_tf32_ms = median_ms(ctx, [&] { tf32.forward(f(x), f(w), f(y_ref)); });

    Result data{group, "conv2d_backward_data (convT fwd)" + layer, conv_str(s)};
    data.mismatch = relative_difference(dx, dx_ref) > kVendorTolerance;
    data.ms = median_ms(ctx, [&] { gpu::conv2d_backward_data(f(dy), f(w), f(dx), s, ws_data.raw(), st); });
    data.tf32_ms = tf32_median_ms(ctx, [&] { gpu::conv2d_backward_data(f(dy), f(w), f(dx), s, ws_data.raw(), st); });
    data.vendor_ms = median_ms(ctx, [&] { exact.backward_data(f(dy), f(w), f(dx_ref)); });
    data.vendor_tf32_ms = median_ms(ctx, [&] { tf32.backward_data(f(dy), f(w), f(dx_ref)); });

    Result weight{group, "conv2d_backward_weight" + layer, conv_str(s)};
    weight.mismatch = relative_difference(dw, dw_ref) > kVendorTolerance;
    weight.ms = median_ms(ctx, [&] { gpu::conv2d_backward_weight(f(x), f(dy), f(dw), s, ws_weight.raw(), st); });
    weight.tf32_ms = tf32_median_ms(ctx, [&] { gpu::conv2d_backward_weight(f(x), f(dy), f(dw), s, ws_weight.raw(), st); });
    weight.vendor_ms = median_ms(ctx, [&] { exact.backward_filter(f(x), f(dy), f(dw_ref)); });
    weight.vendor_tf32_ms = median_ms(ctx, [&] { tf32.backward_filter(f(x), f(dy), f(dw_ref)); });

    for (Result* r : {&fwd, &data, &weight}) {
      r->flops = flops;
      r->vendor = "cudnn";
      out.push_back(*r);
    }
  }
}

void bench_dense(const BenchContext& ctx, Libraries& lib, const std::string& group, int64_t n, std::mt19937_64& rng,
                 std::vector<Result>& out) {
  // (in, out) of the model's dense layers: flatten -> H, H -> H, H -> d, d -> H, H -> feature map.
  const std::pair<int64_t, int64_t> shapes[] = {{256, kHidden}, {kHidden, kHidden}, {kHidden, kLatent},
                                                {kLatent, kHidden}, {kHidden, 256}};
  const cudaStream_t st = ctx.stream;
  const float one = 1.f, zero = 0.f;
  for (const auto& shape_in_out : shapes) {
    const int64_t in = shape_in_out.first, outf = shape_in_out.second;  // (lambdas cannot capture bindings in C++17)
    const gpu::LinearShape s{n, in, outf};
    const Tensor x = device_uniform({n, in}, rng), w = device_uniform({outf, in}, rng), b = device_uniform({outf}, rng);
    const Tensor dy = device_uniform({n, outf}, rng), ones = Tensor::full({n}, 1.0, DType::f32, Device::cuda);
    Tensor y = device_empty({n, outf}), dx = device_empty({n, in}), dw = device_empty({outf, in}), db = device_empty({outf});
    const Tensor ws = device_bytes(gpu::linear_backward_workspace_bytes(s) + 4);
    const std::string shape = std::to_string(n) + "x" + std::to_string(in) + " -> " + std::to_string(outf);

    Result fwd{group, "linear_forward+bias", shape};
    fwd.ms = median_ms(ctx, [&] { gpu::linear_forward(lib.cublas, f(x), f(w), f(b), f(y), s, st); });
    fwd.vendor_ms = median_ms(ctx, [&] {
      CUBLAS_CHECK(cublasSgemm(lib.cublas, CUBLAS_OP_T, CUBLAS_OP_N, int(outf), int(n), int(in), &one, f(w), int(in),
                               f(x), int(in), &zero, f(y), int(outf)));
    });
    fwd.flops = 2.0 * double(n * in * outf);

    Result bwd{group, "linear_backward (dx, dw, db)", shape};
    bwd.ms = median_ms(ctx, [&] { gpu::linear_backward(lib.cublas, f(x), f(w), f(dy), f(dx), f(dw), f(db), s, ws.raw(), st); });
    bwd.vendor_ms = median_ms(ctx, [&] {
      CUBLAS_CHECK(cublasSgemm(lib.cublas, CUBLAS_OP_N, CUBLAS_OP_N, int(in), int(n), int(outf), &one, f(w), int(in),
                               f(dy), int(outf), &zero, f(dx), int(in)));
      CUBLAS_CHECK(cublasSgemm(lib.cublas, CUBLAS_OP_N, CUBLAS_OP_T, int(in), int(outf), int(n), &one, f(x), int(in),
                               f(dy), int(outf), &zero, f(dw), int(in)));
      CUBLAS_CHECK(cublasSgemv(lib.cublas, CUBLAS_OP_N, int(outf), int(n), &one, f(dy), int(outf), f(ones), 1, &zero,
                               f(db), 1));
    });
    bwd.flops = 4.0 * double(n * in * outf);
    for (Result* r : {&fwd, &bwd}) {
      r->vendor = "cublas";
      out.push_back(*r);
    }
  }
}

// Memory-bound kernels: GB/s of their compulsory traffic (inputs read once, outputs written once).
void bench_memory_bound(const BenchContext& ctx, const std::string& group, int64_t n, const Dataset& d,
                        std::mt19937_64& rng, std::vector<Result>& out) {
  const cudaStream_t st = ctx.stream;
  auto add = [&](const std::string& op, const std::string& shape, double bytes, const std::function<void()>& fn) {
    Result r{group, op, shape};
    r.bytes = bytes;
    r.ms = median_ms(ctx, fn);
    out.push_back(r);
  };
  {  // the first conv layer's activations: ReLU and the bias gradient
    const int64_t c = kFilters[0], hw = d.side * d.side, numel = n * c * hw;
    const Tensor a = device_uniform({n, c, d.side, d.side}, rng);
    Tensor y = device_empty(a.shape()), db = device_empty({c});
    const gpu::ChannelShape cs{n, c, hw};
    const Tensor ws = device_bytes(gpu::channel_sum_workspace_bytes(cs) + 4);
    const std::string shape = std::to_string(n) + "x" + std::to_string(c) + "x" + std::to_string(hw);
    add("relu_forward", shape, 8.0 * double(numel), [&] { gpu::relu_forward(numel, f(a), f(y), st); });
    add("channel_sum (conv bias grad)", shape, 4.0 * double(numel), [&] { gpu::channel_sum(f(a), f(db), cs, ws.raw(), st); });
  }
  {  // the decoder's likelihood: Bernoulli (MNIST) or Gaussian with a per-channel variance (SVHN)
    const int64_t cols = d.channels * d.side * d.side, numel = n * cols;
    const Tensor mean = device_uniform({n, cols}, rng), target = device_uniform({n, cols}, rng, 0, 1);
    const Tensor lv = device_uniform({d.channels}, rng), dy = device_uniform({n}, rng);
    Tensor y = device_empty({n}), dmean = device_empty({n, cols}), dlv = device_empty({d.channels});
    const std::string shape = std::to_string(n) + "x" + std::to_string(cols);
    if (d.channels == 1) {
      const gpu::RowShape s{n, cols};
      add("bernoulli_loglik_forward", shape, 8.0 * double(numel), [&] { gpu::bernoulli_loglik_forward(f(mean), f(target), f(y), s, st); });
      add("bernoulli_loglik_backward", shape, 12.0 * double(numel),
          [&] { gpu::bernoulli_loglik_backward(f(mean), f(target), f(dy), f(dmean), s, st); });
    } else {
      const gpu::GaussianShape s{n, cols, d.channels};
      const Tensor ws = device_bytes(gpu::gaussian_loglik_backward_workspace_bytes(s) + 4);
      add("gaussian_loglik_forward", shape, 8.0 * double(numel),
          [&] { gpu::gaussian_loglik_forward(f(mean), f(lv), f(target), f(y), s, st); });
      add("gaussian_loglik_backward", shape, 12.0 * double(numel),
          [&] { gpu::gaussian_loglik_backward(f(mean), f(lv), f(target), f(dy), f(dmean), f(dlv), s, ws.raw(), st); });
    }
  }
  {  // r_y: n sets of m = 4 members from the n encoded images, width H
    const int64_t m = 4, width = kHidden;
    std::vector<int32_t> offsets{0}, members;
    for (int64_t s = 0; s < n; ++s) {
      for (int64_t j = 1; j <= m; ++j) members.push_back(int32_t((s + j) % n));
      offsets.push_back(int32_t(members.size()));
    }
    const Tensor off = Tensor::from_indices(offsets, Device::cuda), mem = Tensor::from_indices(members, Device::cuda);
    const Tensor x = device_uniform({n, width}, rng), dy = device_uniform({n, width}, rng);
    Tensor y = device_empty({n, width}), dx = device_empty({n, width});
    const gpu::SegmentShape s{n, n, int64_t(members.size()), width};
    const Tensor ws = device_bytes(gpu::segmented_mean_backward_workspace_bytes(s) + 4);
    const std::string shape = std::to_string(n) + " sets of 4 x " + std::to_string(width);
    add("segmented_mean_forward", shape, 4.0 * double((m + 1) * n * width),
        [&] { gpu::segmented_mean_forward(f(x), off.data<int32_t>(), mem.data<int32_t>(), f(y), s, st); });
    add("segmented_mean_backward", shape, 4.0 * double(2 * n * width),
        [&] { gpu::segmented_mean_backward(f(dy), off.data<int32_t>(), mem.data<int32_t>(), f(dx), s, ws.raw(), st); });
  }
  {  // the latent and the classes
    const Tensor mu = device_uniform({n, kLatent}, rng), lv = device_uniform({n, kLatent}, rng);
    const Tensor logits = device_uniform({n, kClasses}, rng);
    Tensor v = device_empty({n, kLatent}), kl = device_empty({n}), ls = device_empty({n, kClasses});
    const std::string latent = std::to_string(n) + "x" + std::to_string(kLatent);
    add("reparam_forward", latent, 12.0 * double(n * kLatent),
        [&] { gpu::reparam_forward(n * kLatent, f(mu), f(lv), 7, 0, nullptr, f(v), st); });
    add("kl_normal_forward", latent, 8.0 * double(n * kLatent),
        [&] { gpu::kl_normal_forward(f(mu), f(lv), f(kl), {n, kLatent}, st); });
    add("log_softmax_forward", std::to_string(n) + "x" + std::to_string(kClasses), 8.0 * double(n * kClasses),
        [&] { gpu::log_softmax_forward(f(logits), f(ls), {n, kClasses}, st); });
  }
}

void bench_adam(const BenchContext& ctx, std::mt19937_64& rng, std::vector<Result>& out) {
  Tensor w = device_uniform({kParams}, rng), m = device_uniform({kParams}, rng), v = device_uniform({kParams}, rng, 0, 1);
  const Tensor g = device_uniform({kParams}, rng);
  Result r{"model", "adam_step", std::to_string(kParams) + " parameters"};
  r.bytes = 28.0 * kParams;  // reads w, g, m, v; writes w, m, v
  AdamParams p;
  r.ms = median_ms(ctx, [&] { gpu::adam_step(kParams, f(w), f(g), f(m), f(v), p, nullptr, ctx.stream); });
  out.push_back(r);
}

// ---- validation of every kernel on small cases ------------------------------------------------

bool validate_all(std::mt19937_64& rng) {
  bool ok = true;
  for (const Dataset& d : kDatasets)
    for (const ConvShape& s : encoder_convs(2, d)) {
      const std::string tag = std::string(" ") + d.name + " " + conv_str(s);
      const Shape xs{s.n, s.in_c, s.in_h, s.in_w}, ys{s.n, s.out_c, s.out_h, s.out_w}, ws{s.out_c, s.in_c, s.k, s.k};
      ok &= validate("conv2d_forward+b+relu" + tag, {{xs}, {ws}, {{s.out_c}}}, {ys},
                     [&](Backend& b, auto& in, auto& o) { b.conv2d_forward(in[0], in[1], in[2], true, o[0], s); }, rng);
      ok &= validate("conv2d_backward_data" + tag, {{ys}, {ws}}, {xs},
                     [&](Backend& b, auto& in, auto& o) { b.conv2d_backward_data(in[0], in[1], o[0], s); }, rng);
      ok &= validate("conv2d_backward_weight" + tag, {{xs}, {ys}}, {ws},
                     [&](Backend& b, auto& in, auto& o) { b.conv2d_backward_weight(in[0], in[1], o[0], s); }, rng);
      ok &= validate("channel_sum" + tag, {{ys}}, {{s.out_c}},
                     [&](Backend& b, auto& in, auto& o) { b.channel_sum(in[0], o[0]); }, rng);
    }
  ok &= validate("linear_forward", {{{5, 256}}, {{128, 256}}, {{128}}}, {{5, 128}},
                 [](Backend& b, auto& in, auto& o) { b.linear_forward(in[0], in[1], in[2], o[0]); }, rng);
  ok &= validate("linear_backward", {{{5, 256}}, {{128, 256}}, {{5, 128}}}, {{5, 256}, {128, 256}, {128}},
                 [](Backend& b, auto& in, auto& o) { b.linear_backward(in[0], in[1], in[2], o[0], o[1], o[2]); }, rng);
  ok &= validate("relu_forward", {{{3, 16, 28, 28}}}, {{3, 16, 28, 28}},
                 [](Backend& b, auto& in, auto& o) { b.relu_forward(in[0], o[0]); }, rng);
  ok &= validate("bernoulli_loglik forward+backward", {{{3, 784}, -8, 8}, {{3, 784}, 0, 1}, {{3}}}, {{3}, {3, 784}},
                 [](Backend& b, auto& in, auto& o) {
                   b.bernoulli_loglik_forward(in[0], in[1], 3, o[0]);
                   b.bernoulli_loglik_backward(in[0], in[1], in[2], 3, o[1]);
                 }, rng);
  ok &= validate("gaussian_loglik forward+backward", {{{3, 3, 32, 32}}, {{3}}, {{3, 3, 32, 32}}, {{3}}},
                 {{3}, {3, 3, 32, 32}, {3}}, [](Backend& b, auto& in, auto& o) {
                   b.gaussian_loglik_forward(in[0], in[1], in[2], 3, o[0]);
                   b.gaussian_loglik_backward(in[0], in[1], in[2], in[3], 3, o[1], o[2]);
                 }, rng);
  {
    const std::vector<int32_t> offsets{0, 1, 3, 7}, members{2, 0, 1, 3, 1, 0, 2};
    const Tensor off_cpu = Tensor::from_indices(offsets), mem_cpu = Tensor::from_indices(members);
    const Tensor off_gpu = off_cpu.to(Device::cuda), mem_gpu = mem_cpu.to(Device::cuda);
    auto idx = [&](Backend& b, bool offs) -> const Tensor& {
      const bool on_cpu = &b == &backend(Device::cpu);
      return offs ? (on_cpu ? off_cpu : off_gpu) : (on_cpu ? mem_cpu : mem_gpu);
    };
    ok &= validate("segmented_mean forward+backward", {{{4, 128}}, {{3, 128}}}, {{3, 128}, {4, 128}},
                   [&](Backend& b, auto& in, auto& o) {
                     b.segmented_mean_forward(in[0], idx(b, true), idx(b, false), o[0]);
                     b.segmented_mean_backward(in[1], idx(b, true), idx(b, false), o[1]);
                   }, rng);
  }
  ok &= validate("reparam_forward", {{{5, 16}}, {{5, 16}}}, {{5, 16}},
                 [](Backend& b, auto& in, auto& o) { b.reparam_forward(in[0], in[1], 7, 4, o[0]); }, rng);
  ok &= validate("kl_normal_forward", {{{5, 16}}, {{5, 16}}}, {{5}},
                 [](Backend& b, auto& in, auto& o) { b.kl_normal_forward(in[0], in[1], 5, o[0]); }, rng);
  ok &= validate("log_softmax_forward", {{{5, 10}, -5, 5}}, {{5, 10}},
                 [](Backend& b, auto& in, auto& o) { b.log_softmax_forward(in[0], 5, o[0]); }, rng);
  ok &= validate("adam_step", {{{1000}}, {{1000}}, {{1000}}, {{1000}, 0, 1}}, {{1000}, {1000}, {1000}},
                 [](Backend& b, auto& in, auto& o) {
                   for (size_t i = 0; i < 3; ++i) o[i].copy_from(in[i == 0 ? 0 : i + 1]);  // w, m, v updated in place
                   b.adam_step(o[0], in[1], o[1], o[2], AdamParams{});
                 }, rng);
  return ok;
}

// ---- report -------------------------------------------------------------------------------------

double peak_fraction(const Result& r, const DeviceInfo& d) {
  if (r.flops > 0) return r.flops / (r.ms * 1e-3) * 1e-9 / d.fp32_peak_gflops;
  return r.bytes / (r.ms * 1e-3) * 1e-9 / d.mem_peak_gbs;
}

void print_table(const std::vector<Result>& results, const DeviceInfo& d) {
  std::printf("\n%-11s %-36s %-28s %10s %12s %7s %10s %8s %12s %12s %10s\n", "group", "op", "shape", "ours us",
              "rate", "% peak", "vendor us", "speed", "ours tf32 us", "vendor tf32", "tf32 speed");
  for (const Result& r : results) {
    const double rate = r.flops > 0 ? r.flops / (r.ms * 1e-3) * 1e-9 : r.bytes / (r.ms * 1e-3) * 1e-9;
    char vendor[24] = "", speed[24] = "", tf32[24] = "", ours_tf32[24] = "", tf32_speed[24] = "";
    if (r.vendor_ms > 0) {
      std::snprintf(vendor, sizeof vendor, "%.2f", r.vendor_ms * 1e3);
      std::snprintf(speed, sizeof speed, "%.2fx%s", r.vendor_ms / r.ms, r.mismatch ? "!" : "");
    }
    if (r.vendor_tf32_ms > 0) std::snprintf(tf32, sizeof tf32, "%.2f", r.vendor_tf32_ms * 1e3);
    if (r.tf32_ms > 0) std::snprintf(ours_tf32, sizeof ours_tf32, "%.2f", r.tf32_ms * 1e3);
    if (r.tf32_ms > 0 && r.vendor_tf32_ms > 0)
      std::snprintf(tf32_speed, sizeof tf32_speed, "%.2fx", r.vendor_tf32_ms / r.tf32_ms);
    std::printf("%-11s %-36s %-28s %10.2f %7.1f %-4s %6.1f%% %10s %8s %12s %12s %10s\n", r.group.c_str(),
                r.op.c_str(), r.shape.c_str(), r.ms * 1e3, rate, r.flops > 0 ? "GF/s" : "GB/s",
                100 * peak_fraction(r, d), vendor, speed, ours_tf32, tf32, tf32_speed);
  }
  std::printf("\nspeed = vendor time / our time (> 1: ours is faster), both exact FP32; tf32 speed = the same with "
              "TF32 tensor cores on both sides (cuDNN's default math); ! = our output differs from the vendor's by "
              "more than %g of its scale. %% peak is of the FP32 CUDA-core peak.\n", kVendorTolerance);
}

void write_json(const std::string& path, const std::vector<Result>& results, const BenchContext& ctx) {
  FILE* out = std::fopen(path.c_str(), "w");
  if (!out) throw std::runtime_error("bench: cannot write " + path);
  const DeviceInfo& d = ctx.device;
  std::fprintf(out,
               "{\n  \"device\": {\"name\": \"%s\", \"sms\": %d, \"compute_capability\": \"%d.%d\", \"clock_ghz\": %.3f, "
               "\"fp32_peak_gflops\": %.1f, \"mem_peak_gbs\": %.1f, \"l2_bytes\": %zu},\n",
               d.name.c_str(), d.sms, d.cc_major, d.cc_minor, d.clock_ghz, d.fp32_peak_gflops, d.mem_peak_gbs, d.l2_bytes);
  std::fprintf(out, "  \"settings\": {\"warmup\": %d, \"repeats\": %d, \"flush_l2\": %s, \"cudnn_version\": %zu},\n",
               ctx.warmup, ctx.repeats, ctx.flush ? "true" : "false", size_t(cudnnGetVersion()));
  std::fprintf(out, "  \"results\": [\n");
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    std::fprintf(out,
                 "    {\"group\": \"%s\", \"op\": \"%s\", \"shape\": \"%s\", \"time_us\": %.3f, \"flops\": %.0f, "
                 "\"bytes\": %.0f, \"peak_fraction\": %.4f, \"vendor\": \"%s\", \"vendor_time_us\": %.3f, "
                 "\"vendor_tf32_time_us\": %.3f, \"tf32_time_us\": %.3f, \"speed_vs_vendor\": %.4f, "
                 "\"mismatch\": %s}%s\n",
                 r.group.c_str(), r.op.c_str(), r.shape.c_str(), r.ms * 1e3, r.flops, r.bytes, peak_fraction(r, d),
                 r.vendor.c_str(), r.vendor_ms * 1e3, r.vendor_tf32_ms * 1e3, r.tf32_ms * 1e3,
                 r.vendor_ms > 0 ? r.vendor_ms / r.ms : 0.0,
                 r.mismatch ? "true" : "false", i + 1 < results.size() ? "," : "");
  }
  std::fprintf(out, "  ]\n}\n");
  std::fclose(out);
}

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> v;
  for (size_t pos = 0; pos < s.size();) {
    const size_t end = s.find(',', pos);
    v.push_back(std::stoi(s.substr(pos, end - pos)));
    pos = end == std::string::npos ? s.size() : end + 1;
  }
  return v;
}

int run(int argc, char** argv) {
  BenchContext ctx;
  ctx.batches = {32, 64, 128, 256, 512};
  std::string json;
  bool flush_l2 = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument("bench: " + a + " needs a value");
      return argv[++i];
    };
    if (a == "--json") json = value();
    else if (a == "--batches") ctx.batches = parse_list(value());
    else if (a == "--repeats") ctx.repeats = std::max(1, std::stoi(value()));
    else if (a == "--warmup") ctx.warmup = std::max(0, std::stoi(value()));
    else if (a == "--flush-l2") flush_l2 = true;  // the default; kept for older scripts
    else if (a == "--no-flush-l2") flush_l2 = false;
    else {
      std::printf("usage: equivae_bench [--json FILE] [--batches 32,64,...] [--repeats N] [--warmup N] [--no-flush-l2]\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  if (!cuda_available()) {
    std::printf("no CUDA device: nothing to benchmark\n");
    return 1;
  }
  ctx.device = query_device();
  ctx.stream = cuda_stream();
  const DeviceInfo& d = ctx.device;
  std::printf("%s: %d SMs, compute %d.%d, %.2f GHz -> FP32 peak %.1f TFLOP/s; memory peak %.0f GB/s; L2 %.0f MiB; "
              "cuDNN %zu\n", d.name.c_str(), d.sms, d.cc_major, d.cc_minor, d.clock_ghz, d.fp32_peak_gflops * 1e-3,
              d.mem_peak_gbs, double(d.l2_bytes) / (1 << 20), size_t(cudnnGetVersion()));
  Tensor flush;
  if (flush_l2) {
    ctx.flush_bytes = 2 * d.l2_bytes;
    flush = device_bytes(ctx.flush_bytes);
    ctx.flush = flush.raw();
  }

  std::mt19937_64 rng(2024);
  std::printf("validation against the CPU reference (float64):\n");
  if (!validate_all(rng)) {
    std::printf("validation FAILED: no timings\n");
    return 2;
  }

  Libraries lib{};
  CUDNN_CHECK(cudnnCreate(&lib.cudnn));
  CUDNN_CHECK(cudnnSetStream(lib.cudnn, ctx.stream));
  CUBLAS_CHECK(cublasCreate(&lib.cublas));
  CUBLAS_CHECK(cublasSetStream(lib.cublas, ctx.stream));
  std::vector<Result> results;
  for (const Dataset& ds : kDatasets)
    for (int n : ctx.batches) {
      const std::string group = std::string(ds.name) + " b" + std::to_string(n);
      std::printf("benchmarking %s ...\n", group.c_str());
      std::fflush(stdout);
      bench_convs(ctx, lib, group, encoder_convs(n, ds), rng, results);
      bench_dense(ctx, lib, group, n, rng, results);
      bench_memory_bound(ctx, group, n, ds, rng, results);
    }
  bench_adam(ctx, rng, results);
  const size_t before_hook = results.size();
  bench_training_step(ctx, results);  // bench/train_step.cpp
  if (results.size() == before_hook) std::printf("(training step: not benchmarked yet; see bench/train_step.cpp)\n");
  CUDNN_CHECK(cudnnDestroy(lib.cudnn));
  CUBLAS_CHECK(cublasDestroy(lib.cublas));

  print_table(results, d);
  if (!json.empty()) {
    write_json(json, results, ctx);
    std::printf("wrote %s\n", json.c_str());
  }
  for (const Result& r : results)
    if (r.mismatch) return 1;
  return 0;
}

}  // namespace
}  // namespace equivae::bench

int main(int argc, char** argv) {
  try {
    return equivae::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "equivae_bench: %s\n", e.what());
    return 1;
  }
}
