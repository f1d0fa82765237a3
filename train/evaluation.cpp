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

// Adds each of d's rows `rows` to counts[true * K + predicted], predicted the argmax of its row of
// `scores` ([rows, K]).
void count_argmax(const Var& scores, const data::Dataset& d, const std::vector<int64_t>& rows,
                  std::vector<int64_t>& counts) {
  const int64_t K = scores.shape()[1];
  const std::vector<double> s = scores.value().to_vector();
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto row = s.begin() + int64_t(i) * K;
    ++counts[size_t(d.labels[size_t(rows[i])] * K + (std::max_element(row, row + K) - row))];
  }
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
    count_argmax(model.class_logits(Var(gather_images(d, rows, device)), unused, false), d, rows, counts);
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

std::vector<int64_t> generative_confusion(const EquiVAE& model, const data::Dataset& train,
                                          const std::vector<int64_t>& labelled_rows, const data::Dataset& d,
                                          Device device) {
  NoGradGuard no_grad;
  const int64_t K = model.config().num_classes;
  // The class sets' mean h, accumulated in double over batches of the labelled rows.
  std::vector<double> h_sum;
  std::vector<int64_t> count(size_t(K), 0);
  int64_t width = 0;
  for (size_t begin = 0; begin < labelled_rows.size(); begin += size_t(kEvalBatch)) {
    const std::vector<int64_t> rows(labelled_rows.begin() + int64_t(begin),
                                    labelled_rows.begin() + int64_t(std::min(labelled_rows.size(), begin + size_t(kEvalBatch))));
    const Tensor h = model.embed(Var(gather_images(train, rows, device))).value().to(Device::cpu).to(DType::f32);
    width = h.shape()[1];
    h_sum.resize(size_t(K * width), 0.0);
    for (size_t i = 0; i < rows.size(); ++i) {
      const int64_t y = train.labels[size_t(rows[i])];
      ++count[size_t(y)];
      for (int64_t k = 0; k < width; ++k) h_sum[size_t(y * width + k)] += h.data<float>()[int64_t(i) * width + k];
    }
  }
  for (int64_t y = 0; y < K; ++y)
    if (count[size_t(y)] == 0)
      throw std::invalid_argument(fmt::format("generative classifier: class {} has no labelled image", y));
  Tensor mean_h = Tensor::empty({K, width});
  for (int64_t j = 0; j < K * width; ++j) mean_h.data<float>()[j] = float(h_sum[size_t(j)] / double(count[size_t(j / width)]));
  const Var r_class = model.invariant(Var(mean_h.to(device)));
  std::vector<int64_t> counts(size_t(K * K), 0);
  for_batches(d.n, [&](const std::vector<int64_t>& rows) {
    std::vector<int32_t> class_of;  // row i * K + y: class y
    for (size_t i = 0; i < rows.size(); ++i)
      for (int64_t y = 0; y < K; ++y) class_of.push_back(int32_t(y));
    const Tensor x = gather_images(d, rows, device);
    const Var r_pairs(gather_rows(r_class.value(), Tensor::from_indices(class_of, device)));
    count_argmax(model.class_elbos(Var(x), x, r_pairs, nullptr), d, rows, counts);
  });
  return counts;
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
