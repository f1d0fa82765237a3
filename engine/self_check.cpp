#include "engine/self_check.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>

namespace equivae {

Agreement agreement(const Tensor& got_t, const Tensor& want_t, Tolerance tolerance) {
  const std::vector<double> got = got_t.to_vector(), want = want_t.to_vector();
  EQUIVAE_CHECK(got.size() == want.size(), "agreement: {} against {}", got_t.describe(), want_t.describe());
  double max_abs = 0;
  for (double w : want) max_abs = std::max(max_abs, std::abs(w));
  Agreement a;
  a.size = got.size();
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(got[i] - want[i]), bound = tolerance.rel * std::abs(want[i]) + tolerance.abs * max_abs;
    const double frac = std::isnan(err) ? std::numeric_limits<double>::infinity() : err == 0 ? 0 : err / bound;
    if (frac > a.worst) a.worst = frac, a.at = i;
  }
  if (a.size) a.got = got[a.at], a.want = want[a.at];
  return a;
}

std::string KernelCheck::describe() const {
  if (!error.empty()) return fmt::format("{}: threw: {}", kernel, error);
  return fmt::format(
      "{}: worst error {:.3g} of its tolerance (|got - want| <= {:g} |want| + {:g} max |want|; "
      "element {} of {}: got {:.9g}, want {:.9g})",
      kernel, result.worst, tolerance.rel, tolerance.abs, result.at, result.size, result.got, result.want);
}

namespace {

// The same values on both sides: [0] float64 for the reference, [1] float32 for the backend
// under test.
struct Pair {
  Tensor side[2];
  const Tensor& operator[](int s) const { return side[s]; }
  Tensor& operator[](int s) { return side[s]; }
};

std::string conv_name(const char* op, const ConvShape& s) {
  return fmt::format("{} n{} {}x{}x{} -> {} k{} s{} p{}", op, s.n, s.in_c, s.in_h, s.in_w, s.out_c, s.k, s.stride,
                     s.pad);
}

class Checker {
 public:
  Checker(Backend& test, Device device, Backend& reference, const SelfCheckOptions& o)
      : backends_{&reference, &test}, device_(device), options_(o), rng_(o.seed) {}

  Pair values(std::vector<double> v, const Shape& shape) const {
    for (double& x : v) x = double(float(x));  // representable in float32: both sides see the same input
    return {{Tensor::from(v, shape, DType::f64, Device::cpu), Tensor::from(v, shape, DType::f32, device_)}};
  }
  Pair uniform(const Shape& shape, double lo = -1, double hi = 1) {
    std::uniform_real_distribution<double> u(lo, hi);
    std::vector<double> v(size_t(shape_numel(shape)));
    for (double& x : v) x = u(rng_);
    return values(std::move(v), shape);
  }
  // An output: NaN on the tested side until its kernel writes it.
  Pair output(const Shape& shape) const {
    return {{Tensor::empty(shape, DType::f64, Device::cpu),
             Tensor::full(shape, std::numeric_limits<double>::quiet_NaN(), DType::f32, device_)}};
  }
  Pair indices(const std::vector<int32_t>& v) const {
    return {{Tensor::from_indices(v), Tensor::from_indices(v, device_)}};
  }
  Pair copy(const Pair& p) const { return {{p[0].clone(), p[1].clone()}}; }
  // The tested side's output as the input of a next kernel on both sides, so that a kernel's
  // error is not counted again against the kernel that reads its output.
  static Pair tested(const Pair& p) { return {{p[1].to(Device::cpu).to(DType::f64), p[1]}}; }

  struct Out {
    const char* what;  // "" or the output's name ("dx")
    const Pair& pair;
  };
  // Calls `call(backend, side)` on the reference (0) and on the backend under test (1), then
  // compares each of `outs` (gemm: products of the GEMM kernels, convolutions and dense layers,
  // at options.gemm). What the tested backend throws is recorded against every output.
  void run(const std::string& kernel, const std::function<void(Backend&, int)>& call, std::initializer_list<Out> outs,
           bool gemm = false) {
    call(*backends_[0], 0);
    std::string error;
    try {
      call(*backends_[1], 1);
    } catch (const std::exception& e) {
      error = e.what();
    }
    for (const Out& o : outs) {
      KernelCheck c{
          kernel + (*o.what ? std::string(" ") + o.what : ""), gemm ? options_.gemm : options_.tolerance, {}, error};
      if (error.empty()) {
        try {
          c.result = agreement(o.pair[1], o.pair[0], c.tolerance);
        } catch (const std::exception& e) {  // reading the result back is where a launch's error shows
          c.error = e.what();
        }
      }
      checks_.push_back(std::move(c));
    }
  }

  // Runs one family's checks; an error outside its kernels' calls (making or reading its inputs
  // on the device, where an earlier kernel's fault shows) is an entry that did not pass.
  void family(const char* name, const std::function<void()>& checks) {
    try {
      checks();
    } catch (const std::exception& e) {
      checks_.push_back({std::string(name) + " (inputs on the device)", options_.tolerance, {}, e.what()});
    }
  }

  void elementwise();
  void linear();
  void conv(const ConvShape& s);
  void segmented_mean();
  void random();
  void likelihoods();
  void categorical();
  void adam();

  std::vector<KernelCheck> checks() && { return std::move(checks_); }

 private:
  Backend* backends_[2];
  Device device_;
  SelfCheckOptions options_;
  std::mt19937_64 rng_;
  std::vector<KernelCheck> checks_;
};

void Checker::elementwise() {
  const int64_t n = 1001;
  const Pair a = uniform({n}), b = uniform({n});
  Pair y = output({n});
  run("fill", [&](Backend& k, int s) { k.fill(y[s], 0.375); }, {{"", y}});
  Pair acc = uniform({n});
  run("axpy", [&](Backend& k, int s) { k.axpy(-1.7, a[s], acc[s]); }, {{"", acc}});
  run("scale", [&](Backend& k, int s) { k.scale(a[s], 2.5, y[s]); }, {{"", y}});
  for (BinaryOp op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul}) {
    Pair r = output({n});
    const char* name = op == BinaryOp::add ? "binary add" : op == BinaryOp::sub ? "binary sub" : "binary mul";
    run(name, [&](Backend& k, int s) { k.binary(op, a[s], b[s], r[s]); }, {{"", r}});
  }
  Pair yr = output({n}), dr = output({n});
  run("relu_forward", [&](Backend& k, int s) { k.relu_forward(a[s], yr[s]); }, {{"", yr}});
  const Pair yr_in = tested(yr);
  run("relu_backward", [&](Backend& k, int s) { k.relu_backward(yr_in[s], b[s], dr[s]); }, {{"", dr}});

  const int64_t rows = 33, cols = 29;
  const Pair x = uniform({rows, cols});
  Pair sums = output({rows}), spread = output({rows, cols});
  run("sum_rows", [&](Backend& k, int s) { k.sum_rows(x[s], rows, sums[s]); }, {{"", sums}});
  const Pair sums_in = tested(sums);
  run("broadcast_rows", [&](Backend& k, int s) { k.broadcast_rows(sums_in[s], rows, spread[s]); }, {{"", spread}});
  // Rows by index, with a repeat and the first and last rows (a batch from a data set on the GPU).
  const Pair index = indices({32, 0, 5, 5, 17});
  Pair gathered = output({5, cols});
  run("gather_rows", [&](Backend& k, int s) { k.gather_rows(x[s], index[s], gathered[s]); }, {{"", gathered}});
  const Pair part = uniform({rows, 7});
  Pair columns = output({rows, 12});
  run("copy_columns",
      [&](Backend& k, int s) {
        k.fill(columns[s], 0);
        k.copy_columns(part[s], 2, columns[s], 5, rows, 4);
      },
      {{"", columns}});
  const Pair other = uniform({rows, 5});
  Pair joined = output({rows, 12}), left = output({rows, 7}), right = output({rows, 5});
  run("concat_columns",
      [&](Backend& k, int s) {
        k.concat_columns({part[s], other[s]}, rows, joined[s]);
      },
      {{"", joined}});
  const Pair whole = uniform({rows, 12});
  run("split_columns",
      [&](Backend& k, int s) {
        std::vector<Tensor> halves{left[s], right[s]};
        k.split_columns(whole[s], rows, halves);
      },
      {{"left", left}, {"right", right}});
  Pair placed = output({rows, 12});
  run("place_columns", [&](Backend& k, int s) { k.place_columns(part[s], placed[s], 3, rows); }, {{"", placed}});

  std::vector<double> v(4097, 0.5);
  v[1234] = std::numeric_limits<double>::quiet_NaN();
  const Pair finite = values(std::vector<double>(v.size(), 0.5), {int64_t(v.size())}),
             nan = values(v, {int64_t(v.size())});
  Pair flags = {{Tensor::empty({2}, DType::f64), Tensor::empty({2}, DType::f64)}};
  run("has_nonfinite",
      [&](Backend& k, int s) {
        flags[s] = Tensor::from({double(k.has_nonfinite(finite[s])), double(k.has_nonfinite(nan[s]))}, {2}, DType::f64);
      },
      {{"", flags}});
}

void Checker::linear() {
  const int64_t n = 7, in = 33, out = 17;
  const Pair x = uniform({n, in}), w = uniform({out, in}), b = uniform({out}), dy = uniform({n, out});
  Pair y = output({n, out}), yr = output({n, out});
  run("linear_forward", [&](Backend& k, int s) { k.linear_forward(x[s], w[s], b[s], y[s]); }, {{"", y}}, true);
  run("linear_relu_forward", [&](Backend& k, int s) { k.linear_relu_forward(x[s], w[s], b[s], true, yr[s]); },
      {{"", yr}}, true);
  Pair dx = output({n, in}), dw = output({out, in}), db = output({out});
  run("linear_backward", [&](Backend& k, int s) { k.linear_backward(x[s], w[s], dy[s], dx[s], dw[s], db[s]); },
      {{"dx", dx}, {"dw", dw}, {"db", db}}, true);
  const Pair y_out = uniform({n, out});  // the forward's output: its sign masks dy
  Pair rdx = output({n, in}), rdw = output({out, in}), rdb = output({out});
  run("linear_relu_backward",
      [&](Backend& k, int s) { k.linear_relu_backward(x[s], w[s], y_out[s], dy[s], rdx[s], rdw[s], rdb[s]); },
      {{"dx", rdx}, {"dw", rdw}, {"db", rdb}}, true);
}

void Checker::conv(const ConvShape& c) {
  const Shape xs{c.n, c.in_c, c.in_h, c.in_w}, ys{c.n, c.out_c, c.out_h, c.out_w}, ws{c.out_c, c.in_c, c.k, c.k};
  const Pair x = uniform(xs), w = uniform(ws), b = uniform({c.out_c}), dy = uniform(ys), bx = uniform({c.in_c});
  const Pair y_out = uniform(ys);  // a layer's output, whose sign masks the gradient
  Pair y = output(ys), yb = output(ys), dx = output(xs), dw = output(ws), db = output({c.out_c}), t = output(xs);
  run(
      conv_name("conv2d_forward+b+relu", c),
      [&](Backend& k, int s) { k.conv2d_forward(x[s], w[s], b[s], true, y[s], c); }, {{"", y}}, true);
  run(
      conv_name("conv2d_forward", c),
      [&](Backend& k, int s) { k.conv2d_forward(x[s], w[s], Tensor(), false, yb[s], c); }, {{"", yb}}, true);
  run(
      conv_name("conv2d_backward_data", c), [&](Backend& k, int s) { k.conv2d_backward_data(dy[s], w[s], dx[s], c); },
      {{"", dx}}, true);
  run(
      conv_name("conv2d_backward_weight", c),
      [&](Backend& k, int s) { k.conv2d_backward_weight(x[s], dy[s], dw[s], c); }, {{"", dw}}, true);
  run(conv_name("channel_sum", c), [&](Backend& k, int s) { k.channel_sum(dy[s], db[s]); }, {{"", db}});
  Pair biased = copy(dy);
  run(conv_name("add_channel_bias", c), [&](Backend& k, int s) { k.add_channel_bias(b[s], biased[s]); },
      {{"", biased}});
  run(
      conv_name("conv_transpose2d_forward+b+relu", c),
      [&](Backend& k, int s) { k.conv_transpose2d_forward(dy[s], w[s], bx[s], true, t[s], c); }, {{"", t}}, true);
  Pair masked = output(ys), mdb = output({c.out_c});
  run(conv_name("relu_bias_backward", c),
      [&](Backend& k, int s) { k.relu_bias_backward(y_out[s], dy[s], masked[s], mdb[s]); },
      {{"dx", masked}, {"db", mdb}});
  Pair fdx = output(xs), fdw = output(ws), fdb = output({c.out_c});
  run(
      conv_name("conv2d_backward+relu", c),
      [&](Backend& k, int s) { k.conv2d_backward(x[s], w[s], y_out[s], dy[s], fdx[s], fdw[s], fdb[s], c); },
      {{"dx", fdx}, {"dw", fdw}, {"db", fdb}}, true);
}

void Checker::segmented_mean() {
  const int64_t rows = 12, width = 37;
  std::vector<int32_t> offsets{0}, members;
  for (int32_t set = 0; set < 12; ++set) {  // sets of 1..7 rows, members may repeat
    for (int32_t j = 0; j <= set % 7; ++j) members.push_back((set * 5 + j * 7) % int32_t(rows));
    offsets.push_back(int32_t(members.size()));
  }
  const int64_t sets = int64_t(offsets.size()) - 1;
  const Pair off = indices(offsets), mem = indices(members), x = uniform({rows, width}), dy = uniform({sets, width});
  Pair y = output({sets, width}), dx = output({rows, width});
  run("segmented_mean_forward", [&](Backend& k, int s) { k.segmented_mean_forward(x[s], off[s], mem[s], y[s]); },
      {{"", y}});
  run("segmented_mean_backward", [&](Backend& k, int s) { k.segmented_mean_backward(dy[s], off[s], mem[s], dx[s]); },
      {{"", dx}});
}

void Checker::random() {
  const int64_t n = 1001;
  const uint64_t offset = uint64_t(1) << 33;
  const Pair mu = uniform({n}), lv = uniform({n}, -3, 2), dv = uniform({n});
  Pair v = output({n}), dmu = output({n}), dlv = output({n}), kept = output({n});
  run("reparam_forward", [&](Backend& k, int s) { k.reparam_forward(mu[s], lv[s], 1234, offset, v[s]); }, {{"", v}});
  const Pair v_in = tested(v);
  run("reparam_backward", [&](Backend& k, int s) { k.reparam_backward(mu[s], v_in[s], dv[s], dmu[s], dlv[s]); },
      {{"dmu", dmu}, {"dlogvar", dlv}});
  run("dropout", [&](Backend& k, int s) { k.dropout(mu[s], 0.25, 99, offset, kept[s]); }, {{"", kept}});
}

void Checker::likelihoods() {
  const int64_t n = 3, c = 2, h = 9, w = 7;
  const Shape is{n, c, h, w};
  const Pair logits = uniform(is, -30, 30), target = uniform(is, 0, 1), dy = uniform({n});
  Pair y = output({n}), d = output(is);
  run("bernoulli_loglik_forward", [&](Backend& k, int s) { k.bernoulli_loglik_forward(logits[s], target[s], n, y[s]); },
      {{"", y}});
  run("bernoulli_loglik_backward",
      [&](Backend& k, int s) { k.bernoulli_loglik_backward(logits[s], target[s], dy[s], n, d[s]); }, {{"", d}});
  const Pair mean = uniform(is, -2, 2), x = uniform(is, -2, 2);
  for (bool per_channel : {false, true}) {
    const Shape ls = per_channel ? Shape{c} : is;
    const std::string tag = per_channel ? " (per-channel logvar)" : "";
    const Pair lv = uniform(ls, -2, 1);
    Pair gy = output({n}), dmean = output(is), dlv = output(ls);
    run("gaussian_loglik_forward" + tag,
        [&](Backend& k, int s) { k.gaussian_loglik_forward(mean[s], lv[s], x[s], n, gy[s]); }, {{"", gy}});
    run("gaussian_loglik_backward" + tag,
        [&](Backend& k, int s) { k.gaussian_loglik_backward(mean[s], lv[s], x[s], dy[s], n, dmean[s], dlv[s]); },
        {{"dmean", dmean}, {"dlogvar", dlv}});
  }
}

void Checker::categorical() {
  const int64_t rows = 9, k = 10;
  const Pair mu = uniform({rows, k}, -2, 2), lv = uniform({rows, k}, -3, 2), dy = uniform({rows}),
             g = uniform({rows, k});
  Pair y = output({rows}), dmu = output({rows, k}), dlv = output({rows, k});
  run("kl_normal_forward", [&](Backend& b, int s) { b.kl_normal_forward(mu[s], lv[s], rows, y[s]); }, {{"", y}});
  run("kl_normal_backward", [&](Backend& b, int s) { b.kl_normal_backward(mu[s], lv[s], dy[s], rows, dmu[s], dlv[s]); },
      {{"dmu", dmu}, {"dlogvar", dlv}});

  const Pair logits = uniform({rows, k}, -8, 8);
  std::vector<double> prior(static_cast<size_t>(k));  // p_j proportional to j + 1
  for (int64_t j = 0; j < k; ++j) prior[size_t(j)] = std::log(double(j + 1) / double(k * (k + 1) / 2));
  const Pair log_prior = values(prior, {k});
  Pair kl = output({rows}), dkl = output({rows, k}), h = output({rows}), dh = output({rows, k});
  run("categorical_kl_forward",
      [&](Backend& b, int s) { b.categorical_kl_forward(logits[s], log_prior[s], rows, kl[s]); }, {{"", kl}});
  run("categorical_kl_backward",
      [&](Backend& b, int s) { b.categorical_kl_backward(logits[s], log_prior[s], dy[s], rows, dkl[s]); }, {{"", dkl}});
  run("entropy_forward", [&](Backend& b, int s) { b.entropy_forward(logits[s], rows, h[s]); }, {{"", h}});
  run("entropy_backward", [&](Backend& b, int s) { b.entropy_backward(logits[s], dy[s], rows, dh[s]); }, {{"", dh}});

  // The backwards take the forward's output: both sides get the tested backend's (float) one.
  Pair ls = output({rows, k}), dls = output({rows, k}), sm = output({rows, k}), dsm = output({rows, k});
  run("log_softmax_forward", [&](Backend& b, int s) { b.log_softmax_forward(logits[s], rows, ls[s]); }, {{"", ls}});
  const Pair ls_in = tested(ls);
  run("log_softmax_backward", [&](Backend& b, int s) { b.log_softmax_backward(ls_in[s], g[s], rows, dls[s]); },
      {{"", dls}});
  run("softmax_forward", [&](Backend& b, int s) { b.softmax_forward(logits[s], rows, sm[s]); }, {{"", sm}});
  const Pair sm_in = tested(sm);
  run("softmax_backward", [&](Backend& b, int s) { b.softmax_backward(sm_in[s], g[s], rows, dsm[s]); }, {{"", dsm}});

  std::vector<int32_t> labels(static_cast<size_t>(rows));
  for (size_t r = 0; r < labels.size(); ++r) labels[r] = int32_t((r * 7 + 3) % size_t(k));
  const Pair index = indices(labels);
  Pair picked = output({rows}), dpick = output({rows, k});
  run("pick_forward", [&](Backend& b, int s) { b.pick_forward(logits[s], index[s], rows, picked[s]); }, {{"", picked}});
  run("pick_backward", [&](Backend& b, int s) { b.pick_backward(dy[s], index[s], rows, dpick[s]); }, {{"", dpick}});
}

void Checker::adam() {
  const int64_t n = 4099;
  Pair w = uniform({n}), m = values(std::vector<double>(size_t(n), 0.0), {n}), v = copy(m);
  for (int64_t t = 1; t <= 2; ++t) {
    const Pair g = uniform({n}, -0.1, 0.1);
    const AdamParams p{1e-3, 0.9, 0.999, 1e-8, t};
    run(fmt::format("adam_step {}", t), [&](Backend& b, int s) { b.adam_step(w[s], g[s], m[s], v[s], p); },
        {{"param", w}, {"m", m}, {"v", v}});
  }
}

}  // namespace

std::vector<ConvShape> self_check_conv_shapes() {
  auto shape = [](int64_t n, int64_t ch, int64_t h, int64_t w, int64_t oc, int64_t k, int64_t s, int64_t p) {
    return ConvShape{n, ch, h, w, oc, conv_out_size(h, k, s, p), conv_out_size(w, k, s, p), k, s, p};
  };
  return {
      shape(2, 3, 13, 12, 8, 5, 2, 2),     // odd sizes, stride 2, 3 input channels (direct weight gradient)
      shape(2, 16, 14, 14, 1, 5, 1, 2),    // one output channel: the decoder's last layer as a conv
      shape(16, 16, 14, 14, 32, 5, 2, 2),  // a long weight-gradient reduction (split-K)
      shape(4, 1, 28, 28, 16, 5, 1, 2),    // the decoder's last transposed conv (16 -> 1): its weight gradient split
  };
}

std::vector<KernelCheck> self_check(Backend& test, Device device, Backend& reference, const SelfCheckOptions& options) {
  Checker c(test, device, reference, options);
  c.family("elementwise", [&] { c.elementwise(); });
  c.family("linear", [&] { c.linear(); });
  for (const ConvShape& s : self_check_conv_shapes()) c.family("conv", [&] { c.conv(s); });
  c.family("segmented_mean", [&] { c.segmented_mean(); });
  c.family("random", [&] { c.random(); });
  c.family("likelihoods", [&] { c.likelihoods(); });
  c.family("categorical", [&] { c.categorical(); });
  c.family("adam", [&] { c.adam(); });
  return std::move(c).checks();
}

std::vector<KernelCheck> require_self_check(Backend& test, Device device, Backend& reference,
                                            const SelfCheckOptions& options, const std::string& advice) {
  std::vector<KernelCheck> checks = self_check(test, device, reference, options);
  std::string failed;
  size_t failures = 0;
  for (const KernelCheck& c : checks)
    if (!c.passed()) failed += "\n  " + c.describe(), ++failures;
  if (failures)
    throw std::runtime_error(
        fmt::format("self-check of the {} backend: {} of {} kernel outputs disagree with the {} "
                    "reference:{}{}",
                    test.name(), failures, checks.size(), reference.name(), failed, advice));
  return checks;
}

}  // namespace equivae
