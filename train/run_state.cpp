#include "train/run_state.h"

#include <climits>
#include <filesystem>

#include <fmt/format.h>

#include "train/checkpoint.h"
#include "train/classifiers.h"
#include "train/data.h"
#include "train/json_checks.h"

namespace equivae {

std::string model_json(const ModelConfig& m) {
  nlohmann::json j = {{"channels", m.channels}, {"image_size", m.image_size}, {"filters", m.filters},
                      {"hidden", m.hidden},     {"d_r", m.d_r},               {"d_v", m.d_v},
                      {"num_classes", m.num_classes},
                      {"likelihood", m.likelihood == Likelihood::bernoulli ? "bernoulli" : "gaussian"}};
  // Only when set, so supervised checkpoints keep the metadata they were written with.
  if (m.semi_supervised) j["semi_supervised"] = true, j["classifier_dropout"] = m.classifier_dropout;
  return j.dump();
}

// The metadata field that marks a benchmark classifier's checkpoint; absent in EquiVAE's.
constexpr const char* kModelKind = "model_kind";
constexpr const char* kBenchmarkKind = "benchmark-classifier";

bool benchmark_metadata(const std::string& path, const std::map<std::string, std::string>& metadata) {
  const auto kind = metadata.find(kModelKind);
  if (kind == metadata.end()) return false;
  if (kind->second != kBenchmarkKind)
    throw std::runtime_error(fmt::format("checkpoint {}: metadata {} is \"{}\", expected \"{}\" or no such field",
                                         path, kModelKind, kind->second, kBenchmarkKind));
  return true;
}

// Bounds on a model read from a file: no layer of this model is wider than 2^16 nor the stack
// deeper than 16 convolutions, which keeps every product of sizes far from overflow. The
// parameter count is bounded by the checkpoint's own size (checkpoint_model).
constexpr int64_t kMaxWidth = 1 << 16, kMaxLayers = 16, kMaxChannels = 64;

ModelConfig model_from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(fmt::format("model is not valid JSON ({})", e.what()));
  }
  auto integer = [&](const std::string& key, int64_t min, int64_t max) {
    return json_integer(json_member(j, "model", key), "model." + key, min, max);
  };
  ModelConfig m;
  m.channels = integer("channels", 1, kMaxChannels);
  m.image_size = integer("image_size", 1, kMaxWidth);
  m.hidden = integer("hidden", 1, kMaxWidth);
  m.d_r = integer("d_r", 1, kMaxWidth);
  m.d_v = integer("d_v", 1, kMaxWidth);
  m.num_classes = int(integer("num_classes", 2, kMaxWidth));
  const nlohmann::json& filters = json_member(j, "model", "filters");
  if (!filters.is_array() || filters.empty() || filters.size() > size_t(kMaxLayers))
    throw std::runtime_error(fmt::format("model.filters is {}, expected 1 to {} filter counts", json_brief(filters),
                                         kMaxLayers));
  m.filters.clear();
  for (size_t i = 0; i < filters.size(); ++i)
    m.filters.push_back(json_integer(filters[i], fmt::format("model.filters[{}]", i), 1, kMaxWidth));
  const nlohmann::json& likelihood = json_member(j, "model", "likelihood");
  if (likelihood != "bernoulli" && likelihood != "gaussian")
    throw std::runtime_error(fmt::format("model.likelihood is {}, expected \"bernoulli\" or \"gaussian\"",
                                         json_brief(likelihood)));
  m.likelihood = likelihood == "gaussian" ? Likelihood::gaussian : Likelihood::bernoulli;
  const nlohmann::json semi = j.value("semi_supervised", nlohmann::json(false));
  if (!semi.is_boolean())
    throw std::runtime_error(fmt::format("model.semi_supervised is {}, expected true or false", json_brief(semi)));
  m.semi_supervised = semi.get<bool>();
  const nlohmann::json dropout = j.value("classifier_dropout", nlohmann::json(m.classifier_dropout));
  if (!dropout.is_number() || !(dropout.get<double>() >= 0 && dropout.get<double>() < 1))
    throw std::runtime_error(fmt::format("model.classifier_dropout is {}, expected a number in [0, 1)", json_brief(dropout)));
  m.classifier_dropout = dropout.get<double>();
  return m;
}

ModelConfig checkpoint_model(const std::string& path, const std::map<std::string, std::string>& metadata) {
  const auto found = metadata.find("model");
  if (found == metadata.end()) throw std::runtime_error(fmt::format("checkpoint {}: no model in the metadata", path));
  ModelConfig m;
  ParameterStore declared;  // declared only: nothing is allocated
  try {
    m = model_from_json(found->second);
    if (benchmark_metadata(path, metadata)) {
      BenchmarkClassifier::declare(declared, m);
    } else {
      const EquiVAE probe(m, declared);
    }
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("checkpoint {}: metadata field {}", path, e.what()));
  }
  // The file holds every parameter's value as f32 or f64: a model larger than that is a lie
  // that would otherwise cost an allocation (and an initialisation) of its size.
  const uint64_t file_bytes = std::filesystem::file_size(path);
  if (uint64_t(declared.numel()) > file_bytes / sizeof(float))
    throw std::runtime_error(fmt::format("checkpoint {}: its model ({}) has {} parameters, more than the {}-byte file holds",
                                         path, m.describe(), declared.numel(), file_bytes));
  // Values, gradients and Adam's two moments.
  data::require_memory("checkpoint", path, uint64_t(declared.numel()), 4 * sizeof(float), "the model's parameters");
  return m;
}

std::map<std::string, std::string> run_state_metadata(const RunState& s) {
  std::map<std::string, std::string> m = {
      {"format", "equivae-checkpoint-1"},       {"model", model_json(s.model)},
      {"epoch", std::to_string(s.epoch)},         {"step", std::to_string(s.step)},
      {"seed", std::to_string(s.seed)},           {"m_max", std::to_string(s.m_max)},
      {"labels_per_class", std::to_string(s.labels_per_class)},
      {"data", s.data},
      {"init", init_scheme_name(s.model.init)},
      {"set_sampling", data::set_sampling_name(s.set_sampling)},
      {"options", s.options.dump()},
      {"classes", nlohmann::json(s.classes).dump()}};
  if (s.benchmark) m[kModelKind] = kBenchmarkKind;
  if (s.best_epoch > 0)
    m["best_epoch"] = std::to_string(s.best_epoch), m["best_validation_error"] = fmt::format("{:.17g}", s.best_error);
  return m;
}

RunState read_run_state(const std::string& path) {
  const auto meta = read_checkpoint_metadata(path);
  auto count = [&](const std::string& field, uint64_t max, uint64_t absent) {
    return meta.count(field) ? metadata_count(path, meta, field, max) : absent;
  };
  auto json_field = [&](const std::string& field) {
    try {
      return nlohmann::json::parse(meta.at(field));
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(fmt::format("checkpoint {}: metadata field {} is not valid JSON ({})", path, field, e.what()));
    }
  };
  RunState s;
  s.model = checkpoint_model(path, meta);
  s.benchmark = benchmark_metadata(path, meta);
  s.epoch = int(metadata_count(path, meta, "epoch", INT_MAX));
  s.step = count("step", UINT64_MAX, 0);
  s.seed = metadata_count(path, meta, "seed", UINT64_MAX);
  s.m_max = int(count("m_max", INT_MAX, 7));  // checkpoints from before the field were trained with 7
  s.labels_per_class = int(count("labels_per_class", INT_MAX, 0));
  s.data = meta.count("data") ? meta.at("data") : "";
  try {  // checkpoints from before these options were torch and batch
    s.model.init = meta.count("init") ? init_scheme_from_name(meta.at("init")) : InitScheme::torch;
    s.set_sampling = meta.count("set_sampling") ? data::set_sampling_from_name(meta.at("set_sampling")) : data::SetSampling::batch;
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("checkpoint {}: {}", path, e.what()));
  }
  if (meta.count("best_epoch")) {
    s.best_epoch = int(metadata_count(path, meta, "best_epoch", INT_MAX));
    const std::string text = meta.count("best_validation_error") ? meta.at("best_validation_error") : "";
    char* end = nullptr;
    s.best_error = std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size() || !(s.best_error >= 0 && s.best_error <= 1))
      throw std::runtime_error(fmt::format("checkpoint {}: metadata best_validation_error is \"{}\", expected a "
                                           "number in [0, 1]", path, text));
  }
  if (meta.count("classes")) {
    const nlohmann::json names = json_field("classes");
    const bool ok = names.is_array() && (names.empty() || names.size() == size_t(s.model.num_classes)) &&
                    std::all_of(names.begin(), names.end(), [](const nlohmann::json& n) { return n.is_string(); });
    if (!ok)
      throw std::runtime_error(fmt::format("checkpoint {}: metadata classes is {}, expected {} class names", path,
                                           json_brief(names), s.model.num_classes));
    s.classes = names.get<std::vector<std::string>>();
  }
  if (meta.count("options")) {
    s.options = json_field("options");  // checked option by option when restored (OptionTable::restore)
  } else {  // what the older metadata says of the options
    s.options = {{"seed", s.seed},           {"init", init_scheme_name(s.model.init)},
                 {"set-sampling", data::set_sampling_name(s.set_sampling)},
                 {"filters", s.model.filters}, {"hidden", s.model.hidden}, {"d-r", s.model.d_r}, {"d-v", s.model.d_v},
                 {"likelihood", s.model.likelihood == Likelihood::gaussian ? "gaussian" : "bernoulli"},
                 {"labels", int64_t(s.labels_per_class) * s.model.num_classes}, {"m-max", s.m_max}};
  }
  return s;
}

namespace {

// Drops the lines of metrics log `path` whose epoch is after `epoch` (lines that are not a JSON
// object with an integer epoch stay: the log is the user's record, not ours to judge).
void keep_metrics_up_to(const std::string& path, int epoch) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  bool dropped = false;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("epoch") && j["epoch"].is_number_integer() && j["epoch"].get<int64_t>() > epoch) {
      dropped = true;
      continue;
    }
    kept += line + "\n";
  }
  in.close();
  if (!dropped) return;
  std::ofstream out(path, std::ios::trunc);
  out << kept;
  if (!out) throw std::runtime_error("cannot rewrite " + path);
}

}  // namespace

std::ofstream open_metrics_log(const std::string& dir, int epochs_done) {
  std::ofstream metrics;
  if (dir.empty()) return metrics;
  const std::string path = dir + "/metrics.jsonl";
  if (epochs_done > 0) keep_metrics_up_to(path, epochs_done);
  metrics.open(path, epochs_done > 0 ? std::ios::app : std::ios::trunc);
  if (!metrics) throw std::runtime_error("cannot open " + path);
  return metrics;
}

}  // namespace equivae
