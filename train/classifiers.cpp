#include "train/classifiers.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "train/averaging.h"
#include "train/checkpoint.h"
#include "train/progress.h"
#include "train/sampler.h"

namespace equivae {
namespace {

// Inputs of `rows` as one [rows, ...] tensor on the device.
using Gather = std::function<Tensor(const std::vector<int64_t>& rows)>;
using Network = std::function<Var(const Var& x, RandomStream& stream, bool training)>;

// Error rate of `net` (evaluation mode) over n rows.
double error_rate(const Network& net, const Gather& gather, const std::vector<int32_t>& labels, int64_t n) {
  NoGradGuard no_grad;
  RandomStream unused;
  int64_t wrong = 0;
  for (int64_t begin = 0; begin < n; begin += 500) {
    std::vector<int64_t> rows;
    for (int64_t i = begin; i < std::min(n, begin + 500); ++i) rows.push_back(i);
    wrong += wrong_predictions(net(Var(gather(rows)), unused, false).value().to_vector(), labels, rows);
  }
  return double(wrong) / double(n);
}

struct Split {
  Gather gather;
  const std::vector<int32_t>* labels;
  int64_t n;
};

// The checkpoint metadata of a classifier run after `epoch` epochs and `step` steps.
std::map<std::string, std::string> fit_metadata(const ClassifierConfig& c, int epoch, uint64_t step,
                                                const ClassifierResult& best) {
  RunState s = c.run;
  s.epoch = epoch, s.step = step, s.seed = c.seed, s.best_epoch = best.best_epoch, s.best_error = best.validation_error;
  return run_state_metadata(s);
}

ClassifierResult fit(ParameterStore& params, const Network& net, const Split& train, const Split& val,
                     const Split& test, const ClassifierConfig& c, const char* name) {
  Adam adam(params, AdamConfig{.lr = c.lr});
  std::vector<int64_t> all(size_t(train.n));
  for (int64_t i = 0; i < train.n; ++i) all[size_t(i)] = i;
  ClassifierResult best;
  Tensor best_values;
  ParameterAverage average(c.average_from);
  uint64_t step = 0;
  int first_epoch = 0;
  if (!c.resume_from.empty()) {
    const RunState state = read_run_state(c.resume_from);
    EQUIVAE_CHECK(state.benchmark == c.run.benchmark && state.seed == c.seed && state.best_epoch > 0,
                  "checkpoint {}: not a checkpoint of this {} run (seed {})", c.resume_from, name, c.seed);
    load_best_beside(c.resume_from, state.best_epoch, params);
    best_values = params.values().clone();
    load_checkpoint(c.resume_from, params, &adam, average.active(state.epoch) ? &average.mean() : nullptr);
    first_epoch = state.epoch, step = state.step;
    best.best_epoch = state.best_epoch, best.validation_error = state.best_error;
  }
  std::ofstream metrics = open_metrics_log(c.checkpoint_dir, first_epoch);
  const int64_t passes = std::max<int64_t>(1, (c.epoch_images + train.n - 1) / train.n);
  for (int epoch = first_epoch; epoch < c.epochs; ++epoch) {
    std::vector<int64_t> order;
    for (int64_t p = 0; p < passes; ++p) {
      const std::vector<int64_t> pass = data::shuffled(all, c.seed, uint64_t(epoch * passes + p));
      order.insert(order.end(), pass.begin(), pass.end());
    }
    const int64_t n = int64_t(order.size()), batches = (n + c.batch_size - 1) / c.batch_size;
    ProgressBar bar(fmt::format("{} epoch {}/{}", name, epoch + 1, c.epochs), batches, c.progress);
    for (int64_t b = 0; b < batches; ++b) {
      const std::vector<int64_t> rows(order.begin() + b * c.batch_size, order.begin() + std::min(n, (b + 1) * c.batch_size));
      std::vector<int32_t> y;
      for (int64_t r : rows) y.push_back((*train.labels)[size_t(r)]);
      RandomStream stream{c.seed, step++ << 32};
      const Var logits = net(Var(train.gather(rows)), stream, true);
      const Var loss = scale(sum(pick(log_softmax(logits), Tensor::from_indices(y, c.device))),
                             -1.0 / double(rows.size()));
      params.zero_grad();
      loss.backward();
      adam.step();
      throw_if_interrupted(fmt::format("while training the {}", name));
      bar.update(b + 1);
    }
    const int done = epoch + 1;
    const double val_error = error_rate(net, val.gather, *val.labels, val.n);
    // With --average-from, the averaged model's error chooses the best epoch from then on.
    const bool averaging = average.active(done);
    double averaged_error = 0;
    if (averaging) {
      average.add(params.values(), done);
      const ValuesInPlace mean(params.values(), average.mean());
      averaged_error = error_rate(net, val.gather, *val.labels, val.n);
    }
    const std::string status =
        fmt::format("validation error {:.2f} %{}", 100 * val_error,
                    averaging ? fmt::format("; averaged over epochs {}-{}: {:.2f} %", average.from(), done,
                                            100 * averaged_error)
                              : "");
    bar.finish(status);
    if (!c.progress) fmt::print(stderr, "{} epoch {}: {}\n", name, done, status);
    const double selection_error = averaging ? averaged_error : val_error;
    const bool improved = epoch == 0 || selection_error < best.validation_error;
    if (improved) {
      best.validation_error = selection_error, best.best_epoch = done;
      best_values = averaging ? average.mean().clone() : params.values().clone();
    }
    if (!c.checkpoint_dir.empty()) {
      nlohmann::json line = {{"epoch", done}, {"step", step}, {"validation", {{"error", val_error}}}};
      if (averaging) line["validation"]["averaged_error"] = averaged_error;
      metrics << line.dump() << std::endl;
      // The best first: a run stopped between the two saves redoes this epoch bit for bit.
      const auto metadata = fit_metadata(c, done, step, best);
      if (improved) {
        const ValuesInPlace chosen(params.values(), best_values);
        save_checkpoint(c.checkpoint_dir + "/best.safetensors", params, nullptr, metadata);
      }
      save_checkpoint(c.checkpoint_dir + "/checkpoint.safetensors", params, &adam, metadata,
                      averaging ? &average.mean() : nullptr);
    }
  }
  if (best_values.defined()) {  // the test set, once, with the epoch chosen on validation
    params.values().copy_from(best_values);
    best.test_error = error_rate(net, test.gather, *test.labels, test.n);
  }
  return best;
}

Gather feature_gather(const Features& f, Device device) {
  return [&f, device](const std::vector<int64_t>& rows) {
    Tensor t = Tensor::empty({int64_t(rows.size()), f.dim});
    for (size_t i = 0; i < rows.size(); ++i)
      std::memcpy(t.data<float>() + int64_t(i) * f.dim, f.x.data() + rows[i] * f.dim, size_t(f.dim) * 4);
    return t.to(device);
  };
}

Gather image_gather(const data::Dataset& d, Device device) {
  return [&d, device](const std::vector<int64_t>& rows) {
    Tensor t = Tensor::empty({int64_t(rows.size()), d.channels, d.height, d.width});
    for (size_t i = 0; i < rows.size(); ++i)
      std::memcpy(t.data<float>() + int64_t(i) * d.image_size(), d.image(rows[i]), size_t(d.image_size()) * 4);
    return t.to(device);
  };
}

}  // namespace

int64_t wrong_predictions(const std::vector<double>& logits, const std::vector<int32_t>& labels,
                          const std::vector<int64_t>& rows) {
  const int64_t k = int64_t(logits.size() / rows.size());
  int64_t wrong = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto row = logits.begin() + int64_t(i) * k;
    wrong += std::max_element(row, row + k) - row != labels[size_t(rows[i])];
  }
  return wrong;
}

ClassifierResult train_feature_classifier(const Features& train, const Features& validation, const Features& test,
                                          int classes, const ClassifierConfig& c) {
  ParameterStore params;
  const Dense l1 = Dense::declare(params, "mlp.dense1", train.dim, 128), l2 = Dense::declare(params, "mlp.dense2", 128, 64),
              out = Dense::declare(params, "mlp.out", 64, classes);
  params.allocate(c.seed, DType::f32, c.device);
  const Network net = [&](const Var& x, RandomStream& s, bool training) {
    const Var h1 = dropout(l1(x, true), c.dropout, s, training);
    return out(dropout(l2(h1, true), c.dropout, s, training), false);
  };
  return fit(params, net, {feature_gather(train, c.device), &train.y, train.n()},
             {feature_gather(validation, c.device), &validation.y, validation.n()},
             {feature_gather(test, c.device), &test.y, test.n()}, c, "classifier on r");
}

BenchmarkClassifier BenchmarkClassifier::declare(ParameterStore& params, const ModelConfig& a) {
  return {ConvStack::declare(params, "bench", a.channels, a.image_size, a.filters, a.hidden),
          Dense::declare(params, "bench.g.dense", a.hidden, a.hidden), Dense::declare(params, "bench.out", a.hidden, a.num_classes)};
}

Var BenchmarkClassifier::operator()(const Var& images, double rate, RandomStream& stream, bool training) const {
  const Var h1 = dropout(convs(images), rate, stream, training);
  return out(dropout(hidden(h1, true), rate, stream, training), false);
}

ClassifierResult train_benchmark_classifier(const data::Splits& d, const ModelConfig& a, const ClassifierConfig& c) {
  ParameterStore params(a.init);
  const BenchmarkClassifier benchmark = BenchmarkClassifier::declare(params, a);
  params.allocate(c.seed, DType::f32, c.device);
  const Network net = [&](const Var& x, RandomStream& s, bool training) { return benchmark(x, c.dropout, s, training); };
  return fit(params, net, {image_gather(d.train, c.device), &d.train.labels, d.train.n},
             {image_gather(d.validation, c.device), &d.validation.labels, d.validation.n},
             {image_gather(d.test, c.device), &d.test.labels, d.test.n}, c, "benchmark classifier");
}

}  // namespace equivae
