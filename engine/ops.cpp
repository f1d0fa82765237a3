#include "engine/ops.h"

#include "engine/backend.h"

namespace equivae {
namespace {

bool g_value_checks = true;

Tensor empty_like(const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); }
Tensor empty_as(Shape shape, const Tensor& like) { return Tensor::empty(std::move(shape), like.dtype(), like.device()); }
Backend& on(const Tensor& t) { return backend(t.device()); }

void check_float(const char* op, const Var& x) {
  EQUIVAE_CHECK(x.defined(), "{}: input is undefined", op);
  EQUIVAE_CHECK(x.value().dtype() != DType::i32, "{}: needs a float tensor, got {}", op, x.describe());
}

// Inputs of an op must share dtype and device.
void check_compatible(const char* op, const Tensor& a, const Tensor& b) {
  EQUIVAE_CHECK(a.dtype() == b.dtype() && a.device() == b.device(), "{}: {} and {} differ in dtype or device", op,
                a.describe(), b.describe());
}

void check_finite(const char* op, const char* what, const Tensor& t) {
  if (g_value_checks && on(t).has_nonfinite(t))
    throw NumericError(fmt::format("{}: {} {} contains NaN or Inf", op, what, t.describe()));
}

void check_indices(const char* op, const char* what, const Tensor& t) {
  EQUIVAE_CHECK(t.defined() && t.dtype() == DType::i32 && t.ndim() == 1, "{}: {} must be a 1-D i32 tensor, got {}",
                op, what, t.describe());
}

int64_t rows_of(const char* op, const Var& x) {
  EQUIVAE_CHECK(x.value().ndim() >= 1 && x.shape()[0] > 0, "{}: needs at least one row, got {}", op, x.describe());
  return x.shape()[0];
}

Var binary_op(BinaryOp kind, const char* op, const Var& a, const Var& b) {
  check_float(op, a);
  check_float(op, b);
  check_same_shape(op, a.value(), b.value());
  Tensor y = empty_like(a.value());
  on(y).binary(kind, a.value(), b.value(), y);
  Tensor av = a.value(), bv = b.value();
  return make_result(y, op, {a, b}, [kind, av, bv](const Tensor& g) -> std::vector<Tensor> {
    if (kind == BinaryOp::add) return {g, g};
    if (kind == BinaryOp::sub) {
      Tensor neg = empty_like(g);
      on(g).scale(g, -1.0, neg);
      return {g, neg};
    }
    Tensor da = empty_like(g), db = empty_like(g);
    on(g).binary(BinaryOp::mul, g, bv, da);
    on(g).binary(BinaryOp::mul, g, av, db);
    return {da, db};
  });
}

// Gradient through an optional fused ReLU (the incoming gradient masked by the output's sign)
// and, when db is defined, the bias gradient (its channel sums), in one pass.
Tensor through_relu(bool relu, const Tensor& y, const Tensor& g, Tensor& db) {
  Tensor masked = relu ? empty_like(g) : g;
  if (relu || db.defined()) on(g).relu_bias_backward(relu ? y : Tensor(), g, masked, db);
  return masked;
}

}  // namespace

void set_value_checks(bool on_) { g_value_checks = on_; }
bool value_checks() { return g_value_checks; }

Var add(const Var& a, const Var& b) { return binary_op(BinaryOp::add, "add", a, b); }
Var sub(const Var& a, const Var& b) { return binary_op(BinaryOp::sub, "sub", a, b); }
Var mul(const Var& a, const Var& b) { return binary_op(BinaryOp::mul, "mul", a, b); }

Var scale(const Var& x, double alpha) {
  check_float("scale", x);
  Tensor y = empty_like(x.value());
  on(y).scale(x.value(), alpha, y);
  return make_result(y, "scale", {x}, [alpha](const Tensor& g) -> std::vector<Tensor> {
    Tensor d = empty_like(g);
    on(g).scale(g, alpha, d);
    return {d};
  });
}

Var relu(const Var& x) {
  check_float("relu", x);
  Tensor y = empty_like(x.value());
  on(y).relu_forward(x.value(), y);
  return make_result(y, "relu", {x}, [y](const Tensor& g) -> std::vector<Tensor> {
    Tensor d = empty_like(g);
    on(g).relu_backward(y, g, d);
    return {d};
  });
}

Var reshape(const Var& x, Shape shape) {
  Tensor y = x.value().reshape(std::move(shape));
  const Shape in_shape = x.shape();
  return make_result(y, "reshape", {x}, [in_shape](const Tensor& g) -> std::vector<Tensor> {
    return {g.reshape(in_shape)};
  });
}

Var concat(const std::vector<Var>& xs) {
  EQUIVAE_CHECK(!xs.empty(), "concat: no inputs");
  const int64_t rows = rows_of("concat", xs[0]);
  int64_t total = 0;
  for (const Var& x : xs) {
    check_float("concat", x);
    check_compatible("concat", xs[0].value(), x.value());
    EQUIVAE_CHECK(x.shape()[0] == rows, "concat: inputs differ in dim 0: {} vs {}", xs[0].describe(), x.describe());
    total += x.value().numel() / rows;
  }
  Tensor y = empty_as({rows, total}, xs[0].value());
  std::vector<Tensor> values;
  std::vector<Shape> shapes;
  for (const Var& x : xs) values.push_back(x.value()), shapes.push_back(x.shape());
  on(y).concat_columns(values, rows, y);
  return make_result(y, "concat", xs, [rows, shapes](const Tensor& g) -> std::vector<Tensor> {
    std::vector<Tensor> grads;
    for (const Shape& shape : shapes) grads.push_back(empty_as(shape, g));
    on(g).split_columns(g, rows, grads);
    return grads;
  });
}

std::vector<Var> split(const Var& x, const std::vector<int64_t>& sizes) {
  check_float("split", x);
  const int64_t rows = rows_of("split", x), width = x.value().numel() / rows;
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  EQUIVAE_CHECK(total == width, "split: sizes add up to {} but {} has {} columns per row", total, x.describe(), width);
  std::vector<Tensor> ys;
  for (int64_t size : sizes) ys.push_back(empty_as({rows, size}, x.value()));
  on(x.value()).split_columns(x.value(), rows, ys);
  std::vector<Var> parts;
  int64_t col = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const Shape in_shape = x.shape();
    parts.push_back(make_result(ys[i], "split", {x}, [in_shape, rows, col](const Tensor& g) -> std::vector<Tensor> {
      Tensor d = empty_as(in_shape, g);
      on(g).place_columns(g, d, col, rows);
      return {d};
    }));
    col += sizes[i];
  }
  return parts;
}

Var sum_rows(const Var& x) {
  check_float("sum_rows", x);
  const int64_t rows = rows_of("sum_rows", x);
  Tensor y = empty_as({rows}, x.value());
  on(y).sum_rows(x.value(), rows, y);
  const Shape in_shape = x.shape();
  return make_result(y, "sum_rows", {x}, [in_shape, rows](const Tensor& g) -> std::vector<Tensor> {
    Tensor d = empty_as(in_shape, g);
    on(g).broadcast_rows(g, rows, d);
    return {d};
  });
}

Var sum(const Var& x) {
  check_float("sum", x);
  return sum_rows(reshape(x, {1, x.value().numel()}));
}

Var mean(const Var& x) {
  check_float("mean", x);
  EQUIVAE_CHECK(x.value().numel() > 0, "mean: empty input {}", x.describe());
  return scale(sum(x), 1.0 / double(x.value().numel()));
}

Var linear(const Var& x, const Var& w, const Var& b, bool relu) {
  check_float("linear", x);
  check_float("linear", w);
  check_shape("linear", "x", x.value(), {-1, -1});
  const int64_t n = x.shape()[0], in = x.shape()[1];
  check_shape("linear", "weight", w.value(), {-1, in});
  const int64_t out = w.shape()[0];
  check_compatible("linear", x.value(), w.value());
  if (b.defined()) {
    check_shape("linear", "bias", b.value(), {out});
    check_compatible("linear", x.value(), b.value());
  }
  Tensor y = empty_as({n, out}, x.value());
  on(y).linear_relu_forward(x.value(), w.value(), b.defined() ? b.value() : Tensor(), relu, y);
  Tensor xv = x.value(), wv = w.value();
  const bool want_dx = x.requires_grad(), want_dw = w.requires_grad(), want_db = b.requires_grad();
  std::vector<Var> inputs{x, w};
  if (b.defined()) inputs.push_back(b);
  return make_result(y, "linear", inputs, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor dx = want_dx ? empty_like(xv) : Tensor(), dw = want_dw ? grad_destination(1, wv.shape(), wv) : Tensor();
    Tensor db = want_db ? grad_destination(2, {out}, g) : Tensor();
    on(g).linear_relu_backward(xv, wv, relu ? y : Tensor(), g, dx, dw, db);
    return {dx, dw, db};
  });
}

namespace {
void check_conv_inputs(const char* op, const Var& x, const Var& w, const Var& b, int64_t bias_size) {
  check_float(op, x);
  check_float(op, w);
  check_shape(op, "input", x.value(), {-1, -1, -1, -1});
  check_shape(op, "weight", w.value(), {-1, -1, -1, -1});
  EQUIVAE_CHECK(w.shape()[2] == w.shape()[3], "{}: weight {} is not square", op, w.describe());
  check_compatible(op, x.value(), w.value());
  if (b.defined()) {
    check_shape(op, "bias", b.value(), {bias_size});
    check_compatible(op, x.value(), b.value());
  }
}

}  // namespace

Var conv2d(const Var& x, const Var& w, const Var& b, int64_t stride, int64_t pad, bool relu) {
  check_conv_inputs("conv2d", x, w, b, w.defined() ? w.shape()[0] : 0);
  EQUIVAE_CHECK(w.shape()[1] == x.shape()[1], "conv2d: weight {} expects {} input channels, input is {}",
                w.describe(), w.shape()[1], x.describe());
  EQUIVAE_CHECK(stride >= 1 && pad >= 0, "conv2d: bad stride {} / padding {}", stride, pad);
  const int64_t k = w.shape()[2];
  ConvShape s{x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3], w.shape()[0], 0, 0, k, stride, pad};
  s.out_h = conv_out_size(s.in_h, k, stride, pad);
  s.out_w = conv_out_size(s.in_w, k, stride, pad);
  EQUIVAE_CHECK(s.out_h > 0 && s.out_w > 0, "conv2d: input {} is too small for a {}x{} kernel with padding {}",
                x.describe(), k, k, pad);
  Tensor y = empty_as({s.n, s.out_c, s.out_h, s.out_w}, x.value());
  on(y).conv2d_forward(x.value(), w.value(), b.defined() ? b.value() : Tensor(), relu, y, s);
  Tensor xv = x.value(), wv = w.value();
  const bool want_dx = x.requires_grad(), want_dw = w.requires_grad(), want_db = b.requires_grad();
  std::vector<Var> inputs{x, w};
  if (b.defined()) inputs.push_back(b);
  return make_result(y, "conv2d", inputs, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor dx = want_dx ? empty_like(xv) : Tensor(), dw = want_dw ? grad_destination(1, wv.shape(), wv) : Tensor();
    Tensor db = want_db ? grad_destination(2, {s.out_c}, g) : Tensor();
    on(g).conv2d_backward(xv, wv, relu ? y : Tensor(), g, dx, dw, db, s);
    return {dx, dw, db};
  });
}

Var conv_transpose2d(const Var& x, const Var& w, const Var& b, int64_t stride, int64_t pad, int64_t output_padding,
                     bool relu) {
  check_conv_inputs("conv_transpose2d", x, w, b, w.defined() ? w.shape()[1] : 0);
  EQUIVAE_CHECK(w.shape()[0] == x.shape()[1], "conv_transpose2d: weight {} expects {} input channels, input is {}",
                w.describe(), w.shape()[0], x.describe());
  EQUIVAE_CHECK(stride >= 1 && pad >= 0 && output_padding >= 0 && output_padding < stride,
                "conv_transpose2d: bad stride {} / padding {} / output_padding {} (needs output_padding < stride)",
                stride, pad, output_padding);
  const int64_t k = w.shape()[2];
  // The conv2d whose backward-data this is: its input is our output, its output our input.
  ConvShape s{x.shape()[0], w.shape()[1], 0, 0, x.shape()[1], x.shape()[2], x.shape()[3], k, stride, pad};
  s.in_h = conv_transpose_out_size(x.shape()[2], k, stride, pad, output_padding);
  s.in_w = conv_transpose_out_size(x.shape()[3], k, stride, pad, output_padding);
  EQUIVAE_CHECK(s.in_h > 0 && s.in_w > 0 && conv_out_size(s.in_h, k, stride, pad) == s.out_h,
                "conv_transpose2d: input {} with kernel {}, stride {}, padding {} gives no valid output", x.describe(),
                k, stride, pad);
  Tensor y = empty_as({s.n, s.in_c, s.in_h, s.in_w}, x.value());
  on(y).conv_transpose2d_forward(x.value(), w.value(), b.defined() ? b.value() : Tensor(), relu, y, s);
  Tensor xv = x.value(), wv = w.value();
  const bool want_dx = x.requires_grad(), want_dw = w.requires_grad(), want_db = b.requires_grad();
  std::vector<Var> inputs{x, w};
  if (b.defined()) inputs.push_back(b);
  return make_result(y, "conv_transpose2d", inputs, [=](const Tensor& g_out) -> std::vector<Tensor> {
    Tensor dx, dw, db = want_db ? grad_destination(2, {s.in_c}, g_out) : Tensor();
    const Tensor g = through_relu(relu, y, g_out, db);
    if (want_dx) on(g).conv2d_forward(g, wv, Tensor(), false, dx = empty_like(xv), s);
    if (want_dw) on(g).conv2d_backward_weight(g, xv, dw = grad_destination(1, wv.shape(), wv), s);
    return {dx, dw, db};
  });
}

Var segmented_mean(const Var& x, const Tensor& offsets, const Tensor& members) {
  check_float("segmented_mean", x);
  check_indices("segmented_mean", "offsets", offsets);
  check_indices("segmented_mean", "members", members);
  EQUIVAE_CHECK(offsets.numel() >= 2, "segmented_mean: offsets {} describe no set", offsets.describe());
  const int64_t rows = rows_of("segmented_mean", x), sets = offsets.numel() - 1;
  // Validated on the host: a bad index would read out of bounds on either device. Reading device
  // indices back is a host wait, done only while the value checks are on.
  if (offsets.device() == Device::cpu || g_value_checks) {
    const std::vector<double> off = offsets.to_vector(), mem = members.to_vector();
    EQUIVAE_CHECK(off.front() == 0 && off.back() == double(members.numel()),
                  "segmented_mean: offsets must run from 0 to members' length {}", members.numel());
    for (int64_t s = 0; s < sets; ++s)
      EQUIVAE_CHECK(off[size_t(s + 1)] > off[size_t(s)], "segmented_mean: set {} is empty (m must be >= 1)", s);
    for (double m : mem)
      EQUIVAE_CHECK(m >= 0 && m < double(rows), "segmented_mean: member {} is not a row of {}", m, x.describe());
  }
  Shape out_shape = x.shape();
  out_shape[0] = sets;
  Tensor y = empty_as(out_shape, x.value());
  on(y).segmented_mean_forward(x.value(), offsets, members, y);
  const Shape in_shape = x.shape();
  return make_result(y, "segmented_mean", {x}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor d = empty_as(in_shape, g);
    on(g).segmented_mean_backward(g, offsets, members, d);
    return {d};
  });
}

Var reparameterize(const Var& mu, const Var& logvar, RandomStream& stream) {
  check_float("reparameterize", mu);
  check_same_shape("reparameterize", mu.value(), logvar.value());
  Tensor v = empty_like(mu.value());
  on(v).reparam_forward(mu.value(), logvar.value(), stream.seed, stream.next(uint64_t(v.numel())), v);
  Tensor muv = mu.value();
  return make_result(v, "reparameterize", {mu, logvar}, [muv, v](const Tensor& g) -> std::vector<Tensor> {
    Tensor dmu = empty_like(g), dlogvar = empty_like(g);
    on(g).reparam_backward(muv, v, g, dmu, dlogvar);
    return {dmu, dlogvar};
  });
}

Var dropout(const Var& x, double p, RandomStream& stream, bool training) {
  check_float("dropout", x);
  EQUIVAE_CHECK(p >= 0 && p < 1, "dropout: probability {} is not in [0, 1)", p);
  if (!training || p == 0) return x;
  Tensor y = empty_like(x.value());
  const uint64_t seed = stream.seed, offset = stream.next(uint64_t(y.numel()));
  on(y).dropout(x.value(), p, seed, offset, y);
  return make_result(y, "dropout", {x}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor d = empty_like(g);
    on(g).dropout(g, p, seed, offset, d);  // the same mask, regenerated
    return {d};
  });
}

Var bernoulli_loglik(const Var& logits, const Tensor& target) {
  check_float("bernoulli_loglik", logits);
  check_same_shape("bernoulli_loglik", logits.value(), target);
  check_finite("bernoulli_loglik", "logits", logits.value());
  check_finite("bernoulli_loglik", "target", target);
  const int64_t rows = rows_of("bernoulli_loglik", logits);
  Tensor y = empty_as({rows}, target);
  on(y).bernoulli_loglik_forward(logits.value(), target, rows, y);
  Tensor lv = logits.value();
  return make_result(y, "bernoulli_loglik", {logits}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor d = empty_like(lv);
    on(g).bernoulli_loglik_backward(lv, target, g, rows, d);
    return {d};
  });
}

Var gaussian_loglik(const Var& mean, const Var& logvar, const Tensor& target) {
  check_float("gaussian_loglik", mean);
  check_float("gaussian_loglik", logvar);
  check_same_shape("gaussian_loglik", mean.value(), target);
  check_compatible("gaussian_loglik", mean.value(), logvar.value());
  const bool per_channel = logvar.shape() != mean.shape();
  if (per_channel) {
    check_shape("gaussian_loglik", "mean (with a per-channel logvar)", mean.value(), {-1, -1, -1, -1});
    check_shape("gaussian_loglik", "logvar", logvar.value(), {mean.shape()[1]});
  }
  check_finite("gaussian_loglik", "mean", mean.value());
  check_finite("gaussian_loglik", "logvar", logvar.value());
  check_finite("gaussian_loglik", "target", target);
  const int64_t rows = rows_of("gaussian_loglik", mean);
  Tensor y = empty_as({rows}, target);
  on(y).gaussian_loglik_forward(mean.value(), logvar.value(), target, rows, y);
  Tensor mv = mean.value(), lv = logvar.value();
  return make_result(y, "gaussian_loglik", {mean, logvar}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor dmean = empty_like(mv), dlogvar = empty_like(lv);
    on(g).gaussian_loglik_backward(mv, lv, target, g, rows, dmean, dlogvar);
    return {dmean, dlogvar};
  });
}

Var kl_normal(const Var& mu, const Var& logvar) {
  check_float("kl_normal", mu);
  check_same_shape("kl_normal", mu.value(), logvar.value());
  check_finite("kl_normal", "mu", mu.value());
  check_finite("kl_normal", "logvar", logvar.value());
  const int64_t rows = rows_of("kl_normal", mu);
  Tensor y = empty_as({rows}, mu.value());
  on(y).kl_normal_forward(mu.value(), logvar.value(), rows, y);
  Tensor mv = mu.value(), lv = logvar.value();
  return make_result(y, "kl_normal", {mu, logvar}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor dmu = empty_like(mv), dlogvar = empty_like(lv);
    on(g).kl_normal_backward(mv, lv, g, rows, dmu, dlogvar);
    return {dmu, dlogvar};
  });
}

namespace {
void check_categorical(const char* op, const Var& x) {
  check_float(op, x);
  check_shape(op, "input", x.value(), {-1, -1});
  EQUIVAE_CHECK(x.shape()[0] > 0 && x.shape()[1] > 0, "{}: empty input {}", op, x.describe());
}
}  // namespace

Var log_softmax(const Var& x) {
  check_categorical("log_softmax", x);
  const int64_t rows = x.shape()[0];
  Tensor y = empty_like(x.value());
  on(y).log_softmax_forward(x.value(), rows, y);
  return make_result(y, "log_softmax", {x}, [y, rows](const Tensor& g) -> std::vector<Tensor> {
    Tensor d = empty_like(g);
    on(g).log_softmax_backward(y, g, rows, d);
    return {d};
  });
}

Var softmax(const Var& x) {
  check_categorical("softmax", x);
  const int64_t rows = x.shape()[0];
  Tensor y = empty_like(x.value());
  on(y).softmax_forward(x.value(), rows, y);
  return make_result(y, "softmax", {x}, [y, rows](const Tensor& g) -> std::vector<Tensor> {
    Tensor d = empty_like(g);
    on(g).softmax_backward(y, g, rows, d);
    return {d};
  });
}

Tensor gather_rows(const Tensor& x, const Tensor& index) {
  check_indices("gather_rows", "index", index);
  EQUIVAE_CHECK(x.defined() && x.ndim() >= 1 && x.device() == index.device(),
                "gather_rows: rows of {} by {}", x.describe(), index.describe());
  Shape shape = x.shape();
  shape[0] = index.numel();
  Tensor y = empty_as(shape, x);
  on(x).gather_rows(x, index, y);
  return y;
}

Var pick(const Var& x, const Tensor& index) {
  check_categorical("pick", x);
  check_indices("pick", "index", index);
  const int64_t rows = x.shape()[0];
  EQUIVAE_CHECK(index.numel() == rows, "pick: {} indices for input {}", index.numel(), x.describe());
  Tensor y = empty_as({rows}, x.value());
  on(y).pick_forward(x.value(), index, rows, y);
  const Shape in_shape = x.shape();
  return make_result(y, "pick", {x}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor d = empty_as(in_shape, g);
    on(g).pick_backward(g, index, rows, d);
    return {d};
  });
}

Var categorical_kl(const Var& logits, const Tensor& log_prior) {
  check_categorical("categorical_kl", logits);
  check_shape("categorical_kl", "log_prior", log_prior, {logits.shape()[1]});
  check_compatible("categorical_kl", logits.value(), log_prior);
  check_finite("categorical_kl", "logits", logits.value());
  check_finite("categorical_kl", "log_prior", log_prior);
  const int64_t rows = logits.shape()[0];
  Tensor y = empty_as({rows}, logits.value());
  on(y).categorical_kl_forward(logits.value(), log_prior, rows, y);
  Tensor lv = logits.value();
  return make_result(y, "categorical_kl", {logits}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor d = empty_like(lv);
    on(g).categorical_kl_backward(lv, log_prior, g, rows, d);
    return {d};
  });
}

Var entropy(const Var& logits) {
  check_categorical("entropy", logits);
  check_finite("entropy", "logits", logits.value());
  const int64_t rows = logits.shape()[0];
  Tensor y = empty_as({rows}, logits.value());
  on(y).entropy_forward(logits.value(), rows, y);
  Tensor lv = logits.value();
  return make_result(y, "entropy", {logits}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor d = empty_like(lv);
    on(g).entropy_backward(lv, g, rows, d);
    return {d};
  });
}

}  // namespace equivae
