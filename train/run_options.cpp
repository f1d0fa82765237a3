#include "train/run_options.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <type_traits>

#include <fmt/format.h>

#include "engine/backend.h"
#include "train/json_checks.h"

namespace equivae {
namespace {

// The whole text as one number of type T (no sign on an unsigned type: "-1" must not wrap).
template <class T>
bool parse_number(const std::string& text, T& value) {
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  if constexpr (std::is_floating_point_v<T>)
    if (!std::isfinite(value)) return false;
  return error == std::errc() && stop == end;
}

// A validator of numbers of type T in [min, max] ((min, max] when min_open): its message names
// the range, CLI11 puts the option's name in front.
template <class T>
CLI::Validator in_range(T min, T max, bool min_open) {
  const std::string range = fmt::format("{}{}, {}]", min_open ? "(" : "[", min, max);
  const std::string kind = std::is_integral_v<T> ? "an integer" : "a number";
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        T v{};
        if (!parse_number(text, v) || v < min || v > max || (min_open && v == min))
          return fmt::format("{} is not {} in {}", text, kind, range);
        return "";
      },
      fmt::format("in {}", range));
}

std::string where_to_get(const std::string& dataset) {
  if (dataset == "mnist") return "the four IDX files from http://yann.lecun.com/exdb/mnist/ (or a mirror)";
  if (dataset == "fashion-mnist") return "Debian's dataset-fashion-mnist package, or github.com/zalandoresearch/fashion-mnist";
  if (dataset == "svhn") return "train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/";
  return "one sub-folder of PNG or JPEG images per class";
}

// Seed of the folder data sets' split: fixed, so a folder splits the same way in every run (and
// in equivae_embed), whatever --seed the run trains with.
constexpr uint64_t kFolderSplitSeed = 12345;

data::Splits load_splits(const RunOptions& o) {
  if (o.dataset == "mnist") return data::load_mnist(o.data_dir);
  if (o.dataset == "fashion-mnist") {
    data::Splits s = data::load_mnist(o.data_dir);
    for (data::Dataset* d : {&s.train, &s.validation, &s.test})
      d->class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                        "Ankle boot"};  // Zalando's label order
    return s;
  }
  if (o.dataset == "svhn") return data::load_svhn(o.data_dir);
  if (o.dataset != "folder") throw std::invalid_argument("unknown data set " + o.dataset);
  // A user's own labelled images: 10 % validation, 10 % test, in a fixed shuffled order.
  const data::Dataset all = data::load_image_folder(o.data_dir, "folder", o.max_image_pixels, o.image_size);
  std::vector<int64_t> rows(size_t(all.n));
  for (int64_t i = 0; i < all.n; ++i) rows[size_t(i)] = i;
  rows = data::shuffled(rows, kFolderSplitSeed, 0);
  const size_t tenth = rows.size() / 10;
  auto part = [&](size_t a, size_t b, const char* split) {
    data::Dataset d = all.subset({rows.begin() + long(a), rows.begin() + long(b)});
    d.name = std::string("folder/") + split;
    d.skipped_files = all.skipped_files;  // of the folder, for the log
    return d;
  };
  return {part(2 * tenth, rows.size(), "train"), part(0, tenth, "validation"), part(tenth, 2 * tenth, "test")};
}

}  // namespace

template <class T>
CLI::Option* OptionTable::add(const std::string& name, T& value, const std::string& help, Kept kept) {
  CLI::Option* option;
  if constexpr (std::is_same_v<T, bool>) option = app_.add_flag("--" + name, value, help);
  else option = app_.add_option("--" + name, value, help);
  entries_.push_back({name, Entry{option, kept, [&value] { return nlohmann::json(value); }}});
  return option;
}

template <class T>
CLI::Option* OptionTable::number(const std::string& name, T& value, T min, T max, const std::string& help, Kept kept) {
  return add(name, value, help, kept)->check(in_range(min, max, false));
}

OptionTable::OptionTable(CLI::App& app, RunOptions& o) : app_(app) {
  app.option_defaults()->always_capture_default();
  constexpr int64_t kWidth = 1 << 16, kImages = int64_t(1) << 40, kEpochs = 1000000;
  const Kept run = Kept::run, here = Kept::invocation;
  add("dataset", o.dataset, "mnist, fashion-mnist, svhn or folder (a folder per class: docs/data.md)", run)
      ->check(CLI::IsMember({"mnist", "fashion-mnist", "svhn", "folder"}));
  add("data-dir", o.data_dir, "folder of the data set's files (default: per data set; a continued run's own)",
      Kept::extendable);
  add("out", o.out, "run folder (default: runs/<dataset>-seed<seed>; --resume PATH: its folder; --evaluate: "
      "<checkpoint's folder>/evaluation)", here);
  add("device", o.device, "cpu or cuda", here)->check(CLI::IsMember({"cpu", "cuda"}));
  number<uint64_t>("seed", o.seed, 0, UINT64_MAX, "seed of initialisation, shuffling, sets and noise", run);
  number("epochs", o.epochs, 1, int(kEpochs), "epochs to train to (paper: about 40 on MNIST, 90 on SVHN); "
         "a resumed run may be given more", Kept::extendable);
  number<int64_t>("batch-size", o.batch_size, 1, kWidth, "batch size at the start", run);
  number("double-every", o.double_every, 0, int(kEpochs), "double the batch size every this many epochs (0: never)", run);
  number<int64_t>("max-batch-size", o.max_batch_size, 1, kWidth, "largest batch size of the schedule", run);
  number("m-max", o.m_max, 1, 1024, "complementary sets have m ~ U{1..m_max} members", run);
  number("average-from", o.average_from, 0, int(kEpochs),
         "from the end of this epoch on, validate the mean of the epoch-end parameters and choose the best epoch on it "
         "(stochastic weight averaging; 0: off; past --epochs: never); a resumed run may change it until either epoch is "
         "reached, since averaging never changes training", Kept::until_reached);
  add("lr", o.lr, "Adam learning rate", run)->check(in_range(0.0, 10.0, true));
  add("init", o.init,
      "initialisation: torch (U(+-1/sqrt(fan_in)) weights and biases), he (He-uniform weights, zero biases) or "
      "glorot (Glorot-uniform weights, zero biases)", run)
      ->check(CLI::IsMember({"torch", "he", "glorot"}));
  add("set-sampling", o.set_sampling,
      "complementary sets from the batch's rows of the class (batch) or from the whole class (class)", run)
      ->check(CLI::IsMember({"batch", "class"}));
  add("unlabelled-sets", o.unlabelled_sets,
      "semi-supervised: an unlabelled image's r_y for class y from all of y's labelled images (all; the paper's "
      "'labelled data set for class y') or from m ~ U{1..min(m_max, labels per class)} random ones (random)", run)
      ->check(CLI::IsMember({"random", "all"}));
  add("teacher-warmup", o.teacher_warmup,
      "semi-supervised: scale the unlabelled term's gradient into q(y|x) by min(1, epochs done / this), so that q(y|x) "
      "first learns from the labels while the generative model that teaches it forms (0: off, the paper's recipe)", run)
      ->check(in_range(0.0, double(kEpochs), false));
  add("filters", o.filters, "conv filters of the 5 encoder layers", run)->expected(5)->check(in_range<int64_t>(1, kWidth, false));
  number<int64_t>("hidden", o.hidden, 1, kWidth, "width H of the dense layers", run);
  number<int64_t>("d-r", o.d_r, 1, kWidth, "invariant latent size", run);
  number<int64_t>("d-v", o.d_v, 1, kWidth, "equivariant latent size", run);
  add("latent", o.latent,
      "the paper's latent sizes (0: --d-r, --d-v and --hidden as given): 8 (d_r = d_v = 8, H halved to 64, its "
      "semi-supervised MNIST runs) or 16 (d_r = d_v = 16, H 128)", run)
      ->check(CLI::IsMember({0, 8, 16}));
  add("likelihood", o.likelihood,
      "bernoulli (pixels in [0, 1]) or gaussian (pixels standardised over the training set, a learned variance per "
      "channel); default: gaussian for svhn, bernoulli otherwise", run)
      ->check(CLI::IsMember({"bernoulli", "gaussian"}));
  number<int64_t>("image-size", o.image_size, 0, 4096,
                  "--dataset folder: resize every image to this many pixels square (0: keep, all must match)", run);
  number<int64_t>("max-image-pixels", o.max_image_pixels, 1, kImages,
                  "--dataset folder: refuse images of more pixels than this, before decoding them", Kept::extendable);
  number<int64_t>("train-limit", o.train_limit, 0, kImages, "train on the first N training images only (0: all)", run);
  number("labels", o.labels, 0, INT_MAX,
         "semi-supervised: keep the labels of only N training images, balanced over classes (0: all)", run);
  add("resume", o.resume, "checkpoint to continue ('auto': the run folder's own, if any); the run's options are "
      "restored, flags given again must agree (--epochs may extend)", here);
  add("evaluate", o.evaluate, "no training: evaluate this checkpoint on the test set and draw figures, with its "
      "run's options", here);
  add("force", o.force, "start afresh in an --out that holds a run, deleting that run's files", here);
  number("threads", o.threads, 0, 4096, "CPU threads (0: all cores)", here);
  number("classifier-epochs", o.classifier_epochs, 0, int(kEpochs), "epochs of the dense classifier on frozen r (0: skip)",
         Kept::extendable);
  add("benchmark", o.benchmark, "train the benchmark classifier (encoder + dropout) instead of EquiVAE", run);
  add("quick", o.quick, "a short CPU schedule (minutes): 2 epochs, batch 32, 3 epochs of the classifier on r", here);
  add("no-progress", o.no_progress, "no progress bar", here);
  add("tf32", o.tf32, "with --device cuda: convolutions on TF32 tensor cores (~1e-3 relative error per product)", here);
  add("cuda-graphs", o.cuda_graphs,
      "with --device cuda: supervised batches as CUDA graphs of fixed (padded) shapes, one per batch size, replayed "
      "(on), run eagerly with the same padding (eager: tells a capture fault from a padding one), or as before (off)",
      here)
      ->check(CLI::IsMember({"on", "off", "eager"}));
  add("skip-self-check", o.skip_self_check,
      "with --device cuda: start without the self-check (every kernel once on small random shapes against the CPU "
      "reference, a second or two; a disagreement stops the run naming the kernel: docs/gpu_session.md)", here);
  add("reproducible-plans", o.reproducible_plans,
      "with --device cuda: split-K and reduction plans made for a 132-SM GPU whatever the device, so that every GPU "
      "gives the same bits (default: plans for the device's SM count, which fill it better; EQUIVAE_REPRODUCIBLE=1 "
      "in the environment also turns this on)", here);
}

nlohmann::json OptionTable::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [name, e] : entries_) j[name] = e.value();
  return j;
}

std::set<std::string> OptionTable::given() const {
  std::set<std::string> names;
  for (const auto& [name, e] : entries_)
    if (e.option->count() > 0) names.insert(name);
  return names;
}

void OptionTable::restore(const nlohmann::json& stored, const std::string& source, const std::set<std::string>& given,
                          int epochs_done) {
  if (!stored.is_object())
    throw std::runtime_error(fmt::format("{}: the run's options are {}, expected an object", source, json_brief(stored)));
  for (const auto& item : stored.items()) {
    // Not a structured binding: clang 14 (the fuzzing build) cannot capture one in a lambda.
    const std::string name = item.key();
    const nlohmann::json& value = item.value();
    const auto found = std::find_if(entries_.begin(), entries_.end(), [&](const auto& e) { return e.first == name; });
    if (found == entries_.end()) throw std::runtime_error(fmt::format("{}: unknown option \"{}\"", source, name));
    const Entry& e = found->second;
    if (e.kept == Kept::invocation) continue;
    if (given.count(name)) {
      const auto reached = [&](const nlohmann::json& epoch) {
        return epoch.is_number_integer() && epoch.get<int64_t>() > 0 && epoch.get<int64_t>() <= epochs_done;
      };
      if (e.kept == Kept::until_reached && e.value() != value && (reached(value) || reached(e.value())))
        throw std::invalid_argument(fmt::format("--{} {} differs from the run's {} ({}), which has done {} epochs: "
                                                "leave it out, or train a new run in another --out",
                                                name, e.value().dump(), value.dump(), source, epochs_done));
      if (e.kept == Kept::run && e.value() != value)
        throw std::invalid_argument(fmt::format("--{} {} differs from the run's {} ({}): leave it out (--resume and "
                                                "--evaluate keep the run's options), or train a new run in another --out",
                                                name, e.value().dump(), value.dump(), source));
      continue;
    }
    // As text through the option's own checks and conversion, as if typed.
    std::vector<std::string> words;
    for (const nlohmann::json& v : value.is_array() ? value : nlohmann::json::array({value})) {
      if (!v.is_number() && !v.is_string() && !v.is_boolean())
        throw std::runtime_error(fmt::format("{}: option \"{}\" is {}", source, name, json_brief(value)));
      words.push_back(v.is_string() ? v.get<std::string>() : v.dump());
    }
    try {
      e.option->clear();
      e.option->add_result(words);
      e.option->run_callback();
    } catch (const CLI::Error& error) {
      throw std::runtime_error(fmt::format("{}: option {}", source, error.what()));
    }
  }
}

void resolve_defaults(RunOptions& o, const std::set<std::string>& given) {
  if (o.quick) {
    if (!given.count("epochs")) o.epochs = 2;
    if (!given.count("classifier-epochs")) o.classifier_epochs = 3;
  }
  if (o.data_dir.empty()) {
    if (o.dataset == "mnist") o.data_dir = "../shared/data/mnist";
    if (o.dataset == "fashion-mnist") o.data_dir = "/usr/share/datasets/fashion-mnist";
    if (o.dataset == "svhn") o.data_dir = "../shared/data/svhn";
  }
  if (o.likelihood.empty()) o.likelihood = o.dataset == "svhn" ? "gaussian" : "bernoulli";
}

void check_options(const RunOptions& o) {
  if (o.max_batch_size < o.batch_size)
    throw std::invalid_argument(
        fmt::format("--max-batch-size {} is below --batch-size {}", o.max_batch_size, o.batch_size));
  if (o.tf32 && o.device != "cuda") throw std::invalid_argument("--tf32 needs --device cuda");
  if (o.reproducible_plans && o.device != "cuda") throw std::invalid_argument("--reproducible-plans needs --device cuda");
  if (o.image_size > 0 && o.dataset != "folder")
    throw std::invalid_argument(fmt::format("--image-size is for --dataset folder, not {}", o.dataset));
  if (o.dataset == "folder" && o.data_dir.empty()) throw std::invalid_argument("--dataset folder needs --data-dir");
  if (!o.resume.empty() && !o.evaluate.empty()) throw std::invalid_argument("--resume and --evaluate exclude each other");
}

void apply_device_options(RunOptions& o) {
  if (o.device != "cuda") return;
  backend(Device::cuda);  // fails early, with the reason
  set_cuda_tf32(o.tf32);
  if (o.reproducible_plans) set_cuda_reproducible_plans(true);
  o.reproducible_plans = cuda_reproducible_plans();
}

data::Splits load_run_data(const RunOptions& o) {
  data::Splits s;
  try {
    s = load_splits(o);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(fmt::format("{}\n  --data-dir must hold {}", e.what(), where_to_get(o.dataset)));
  }
  if (o.train_limit > 0 && o.train_limit < s.train.n) s.train = s.train.slice(0, o.train_limit);
  if (o.likelihood == "gaussian") {
    const data::ChannelStats stats = data::compute_channel_stats(s.train);  // the training set only
    for (data::Dataset* d : {&s.train, &s.validation, &s.test}) data::standardize(*d, stats);
  }
  return s;
}

ModelConfig model_config(const RunOptions& o, const data::Splits& splits) {
  ModelConfig m;
  m.channels = splits.train.channels;
  m.image_size = splits.train.height;
  m.num_classes = splits.train.num_classes;
  m.filters = o.filters;
  m.hidden = o.hidden, m.d_r = o.d_r, m.d_v = o.d_v;
  if (o.latent > 0) set_paper_latents(m, o.latent);
  m.likelihood = o.likelihood == "gaussian" ? Likelihood::gaussian : Likelihood::bernoulli;
  m.init = init_scheme_from_name(o.init);
  if (o.labels % m.num_classes != 0)
    throw std::invalid_argument(fmt::format("--labels {} is not a multiple of the {} classes", o.labels, m.num_classes));
  m.semi_supervised = o.labels > 0;
  return m;
}

TrainConfig train_config(const RunOptions& o, const ModelConfig& model) {
  TrainConfig t;
  t.epochs = o.epochs;
  t.batch_size = o.batch_size, t.double_every = o.double_every, t.max_batch_size = o.max_batch_size;
  t.m_max = o.m_max;
  t.set_sampling = data::set_sampling_from_name(o.set_sampling);
  t.labels_per_class = o.labels / model.num_classes;
  t.unlabelled_sets_all = o.unlabelled_sets == "all";
  t.teacher_warmup_epochs = o.teacher_warmup;
  t.lr = o.lr;
  t.average_from = o.average_from;
  t.seed = o.seed;
  t.device = o.device == "cuda" ? Device::cuda : Device::cpu;
  t.cuda_graphs = o.cuda_graphs == "off"     ? TrainConfig::Graphs::off
                  : o.cuda_graphs == "eager" ? TrainConfig::Graphs::eager
                                             : TrainConfig::Graphs::on;
  t.out_dir = o.out;
  t.progress = !o.no_progress;
  return t;
}

}  // namespace equivae
