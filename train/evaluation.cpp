#include "train/evaluation.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "train/checkpoint.h"
#include "train/classifiers.h"

namespace equivae {
namespace {

// Calls f(rows) for consecutive batches of at most kEvalBatch of d's first n rows.
template <class F>
void for_batches(int64_t n, F&& f) {
  for (int64_t begin = 0; begin < n; begin += kEvalBatch) {
    std::vector<int64_t> rows;
    for (int64_t i = begin; i < std::min(n, begin + kEvalBatch); ++i) rows.push_back(i);
    f(rows);
  }
}

void append(std::vector<float>& out, const Var& x) {
  const Tensor host = x.value().to(Device::cpu).to(DType::f32);
  out.insert(out.end(), host.data<float>(), host.data<float>() + host.numel());
}

}  // namespace

Tensor gather_images(const data::Dataset& d, const std::vector<int64_t>& rows, Device device) {
  Tensor host = Tensor::empty({int64_t(rows.size()), d.channels, d.height, d.width});
  float* dst = host.data<float>();
  const int64_t size = d.image_size();
  for (size_t i = 0; i < rows.size(); ++i) std::memcpy(dst + int64_t(i) * size, d.image(rows[i]), size_t(size) * 4);
  return host.to(device);
}

std::unique_ptr<LoadedModel> load_model(const std::string& checkpoint, Device device) {
  auto m = std::make_unique<LoadedModel>();
  m->state = read_run_state(checkpoint);
  if (m->state.benchmark)
    throw std::runtime_error(fmt::format("checkpoint {}: it holds a benchmark classifier, not an EquiVAE model", checkpoint));
  m->model = std::make_unique<EquiVAE>(m->state.model, m->params);
  m->params.allocate(m->state.seed, DType::f32, device);
  load_checkpoint(checkpoint, m->params, nullptr);
  return m;
}

std::vector<float> represent(const EquiVAE& model, const data::Dataset& d, Device device) {
  NoGradGuard no_grad;
  std::vector<float> out;
  out.reserve(size_t(d.n * model.config().d_r));
  for_batches(d.n, [&](const std::vector<int64_t>& rows) { append(out, model.represent(Var(gather_images(d, rows, device)))); });
  return out;
}

Embedding embed(const EquiVAE& model, const data::Dataset& d, Device device) {
  NoGradGuard no_grad;
  Embedding e;
  for_batches(d.n, [&](const std::vector<int64_t>& rows) {
    const Var x(gather_images(d, rows, device));
    const Var r = model.represent(x);
    const EquiVAE::Posterior q = model.posterior(x, r);
    append(e.r, r), append(e.v_mean, q.mu), append(e.v_logvar, q.logvar);
  });
  return e;
}

std::vector<float> decode_rows(const EquiVAE& model, const std::vector<float>& r, const std::vector<float>& v,
                               int64_t n, Device device) {
  NoGradGuard no_grad;
  const int64_t dr = model.config().d_r, dv = model.config().d_v;
  EQUIVAE_CHECK(int64_t(r.size()) == n * dr && int64_t(v.size()) == n * dv, "decode_rows: {} rows of r and v, got {} and {} values",
                n, r.size(), v.size());
  auto rows_of = [&](const std::vector<float>& x, int64_t width, int64_t begin, int64_t end) {
    Tensor t = Tensor::empty({end - begin, width});
    std::copy(x.begin() + begin * width, x.begin() + end * width, t.data<float>());
    return Var(t.to(device));
  };
  std::vector<float> out;
  for (int64_t begin = 0; begin < n; begin += kEvalBatch) {
    const int64_t end = std::min(n, begin + kEvalBatch);
    append(out, model.decode(rows_of(r, dr, begin, end), rows_of(v, dv, begin, end)));
  }
  return out;
}

double distance_error(const EquiVAE& model, const data::Dataset& train, const std::vector<int64_t>& labelled_rows,
                      const data::Dataset& d, Device device) {
  const int64_t dr = model.config().d_r;
  const size_t K = size_t(model.config().num_classes);
  // Centroids over the labelled rows only: a semi-supervised model knows no other labels.
  const std::vector<float> r_train = represent(model, train, device);
  std::vector<std::vector<double>> c(K, std::vector<double>(size_t(dr), 0.0));
  std::vector<int64_t> count(K, 0);
  for (int64_t i : labelled_rows) {
    const size_t y = size_t(train.labels[size_t(i)]);
    ++count[y];
    for (int64_t k = 0; k < dr; ++k) c[y][size_t(k)] += r_train[size_t(i * dr + k)];
  }
  for (size_t y = 0; y < K; ++y)
    for (double& v : c[y]) v /= double(std::max<int64_t>(1, count[y]));
  const std::vector<float> r = represent(model, d, device);
  int64_t wrong = 0;
  for (int64_t i = 0; i < d.n; ++i) {
    double best = std::numeric_limits<double>::infinity();
    int32_t label = -1;
    for (size_t y = 0; y < K; ++y) {
      double dist = 0;
      for (int64_t k = 0; k < dr; ++k) dist += std::pow(double(r[size_t(i * dr + k)]) - c[y][size_t(k)], 2);
      if (dist < best) best = dist, label = int32_t(y);
    }
    wrong += label != d.labels[size_t(i)];
  }
  return double(wrong) / double(d.n);
}

std::vector<int64_t> classifier_confusion(const EquiVAE& model, const data::Dataset& d, Device device) {
  NoGradGuard no_grad;
  RandomStream unused;
  const int64_t K = model.config().num_classes;
  std::vector<int64_t> counts(size_t(K * K), 0);
  for_batches(d.n, [&](const std::vector<int64_t>& rows) {
    const std::vector<double> logits =
        model.class_logits(Var(gather_images(d, rows, device)), unused, false).value().to_vector();
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto row = logits.begin() + int64_t(i) * K;
      ++counts[size_t(d.labels[size_t(rows[i])] * K + (std::max_element(row, row + K) - row))];
    }
  });
  return counts;
}

double confusion_error(const std::vector<int64_t>& counts) {
  const size_t K = size_t(std::llround(std::sqrt(double(counts.size()))));
  if (K * K != counts.size()) throw std::invalid_argument(fmt::format("confusion_error: {} counts is no square matrix", counts.size()));
  int64_t total = 0, right = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    total += counts[i];
    if (i % (K + 1) == 0) right += counts[i];  // the diagonal
  }
  return total > 0 ? double(total - right) / double(total) : 0.0;
}

double classifier_error(const EquiVAE& model, const data::Dataset& d, Device device) {
  return confusion_error(classifier_confusion(model, d, device));
}

std::vector<DeadUnits> dead_units(const EquiVAE& model, const data::Dataset& d, int64_t images, Device device) {
  NoGradGuard no_grad;
  std::vector<DeadUnits> out;
  std::vector<std::vector<bool>> fired;
  for_batches(std::min(images, d.n), [&](const std::vector<int64_t>& rows) {
    const auto layers = model.invariant_activations(Var(gather_images(d, rows, device)));
    for (size_t l = 0; l < layers.size(); ++l) {
      const Tensor a = layers[l].second.value().to(Device::cpu).to(DType::f32);
      const int64_t units = a.shape()[1], per_unit = a.numel() / (a.shape()[0] * units);
      if (out.size() <= l) out.push_back({layers[l].first, units, 0}), fired.emplace_back(size_t(units), false);
      const float* x = a.data<float>();
      for (int64_t i = 0; i < a.numel(); ++i)
        if (x[i] > 0) fired[l][size_t(i / per_unit % units)] = true;
    }
  });
  for (size_t l = 0; l < out.size(); ++l) out[l].dead = std::count(fired[l].begin(), fired[l].end(), false);
  return out;
}

}  // namespace equivae
