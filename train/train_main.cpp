// train_mnist / train_svhn: one source, two defaults (EQUIVAE_DEFAULT_DATASET). Trains EquiVAE
// on the chosen data, evaluates each epoch on validation, and prints the test error of the
// distance classifier at the end.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/backend.h"
#include "engine/cpu/conv2d_fast.h"
#include "train/checkpoint.h"
#include "train/classifiers.h"
#include "train/figures.h"
#include "train/trainer.h"

using namespace equivae;

namespace {

struct Options {
  std::string dataset = EQUIVAE_DEFAULT_DATASET, data_dir, out, device = "cpu", resume, evaluate;
  std::string init, set_sampling;  // defaults: ModelConfig's and TrainConfig's
  int64_t train_limit = 0, max_image_pixels = data::kDefaultMaxImagePixels;
  int threads = 0, classifier_epochs = 20, labels = 0, latent = 0;
  bool quick = false, no_progress = false, benchmark = false, tf32 = false;
};

// Where a user gets each data set, for the error message when it is not found.
std::string where_to_get(const std::string& dataset) {
  if (dataset == "mnist") return "the four IDX files from http://yann.lecun.com/exdb/mnist/ (or a mirror)";
  if (dataset == "fashion-mnist") return "Debian's dataset-fashion-mnist package, or github.com/zalandoresearch/fashion-mnist";
  if (dataset == "svhn") return "train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/";
  return "one sub-folder of images per class";
}

data::Splits load_splits(const Options& o) {
  if (o.dataset == "mnist" || o.dataset == "fashion-mnist") return data::load_mnist(o.data_dir);
  if (o.dataset == "svhn") {
    data::Splits s = data::load_svhn(o.data_dir);
    const data::ChannelStats stats = data::compute_channel_stats(s.train);  // training set only
    for (data::Dataset* d : {&s.train, &s.validation, &s.test}) data::standardize(*d, stats);
    return s;
  }
  if (o.dataset == "folder") {
    // A user's own labelled images: 10 % validation, 10 % test, in a fixed shuffled order.
    const data::Dataset all = data::load_image_folder(o.data_dir, nullptr, "folder", o.max_image_pixels);
    std::vector<int64_t> rows(size_t(all.n));
    for (int64_t i = 0; i < all.n; ++i) rows[size_t(i)] = i;
    rows = data::shuffled(rows, 12345, 0);
    const size_t tenth = rows.size() / 10;
    auto part = [&](size_t a, size_t b) { return all.subset({rows.begin() + long(a), rows.begin() + long(b)}); };
    return {part(2 * tenth, rows.size()), part(0, tenth), part(tenth, 2 * tenth)};
  }
  throw std::invalid_argument("unknown --dataset " + o.dataset + " (mnist, fashion-mnist, svhn, folder)");
}

data::Splits load(const Options& o) {
  try {
    return load_splits(o);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(fmt::format("{}\n  --data-dir must hold {}", e.what(), where_to_get(o.dataset)));
  }
}

std::string default_data_dir(const std::string& dataset) {
  if (dataset == "mnist") return "../shared/data/mnist";
  if (dataset == "fashion-mnist") return "/usr/share/datasets/fashion-mnist";
  if (dataset == "svhn") return "../shared/data/svhn";
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  ModelConfig model;
  TrainConfig train;
  o.init = init_scheme_name(model.init);
  o.set_sampling = data::set_sampling_name(train.set_sampling);
  CLI::App app{"Train EquiVAE (Feige, ICML 2019) and report the distance-classifier test error"};
  app.add_option("--dataset", o.dataset, "mnist, fashion-mnist, svhn or folder (a folder per class)");
  app.add_option("--data-dir", o.data_dir, "folder holding the data set's files (default: per data set)");
  app.add_option("--out", o.out, "run folder for checkpoint, metrics and results (default: runs/<dataset>-seed<seed>)");
  app.add_option("--device", o.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--seed", train.seed, "seed of initialisation, shuffling, sets and noise");
  app.add_option("--epochs", train.epochs, "epochs (paper: about 40 on MNIST, 90 on SVHN)");
  app.add_option("--batch-size", train.batch_size, "batch size at the start");
  app.add_option("--double-every", train.double_every, "double the batch size every this many epochs (0: never)");
  app.add_option("--max-batch-size", train.max_batch_size, "largest batch size of the schedule");
  app.add_option("--m-max", train.m_max, "complementary sets have m ~ U{1..m_max} members");
  app.add_option("--lr", train.lr, "Adam learning rate");
  app.add_option("--init", o.init,
                 "initialisation: torch (U(+-1/sqrt(fan_in)) weights and biases), he (He-uniform weights, zero "
                 "biases) or glorot (Glorot-uniform weights, zero biases)")
      ->check(CLI::IsMember({"torch", "he", "glorot"}))
      ->capture_default_str();
  app.add_option("--set-sampling", o.set_sampling,
                 "complementary sets from the batch's rows of the class (batch) or from the whole class (class)")
      ->check(CLI::IsMember({"batch", "class"}))
      ->capture_default_str();
  app.add_option("--filters", model.filters, "conv filters of the 5 encoder layers")->expected(5);
  app.add_option("--hidden", model.hidden, "width H of the dense layers");
  app.add_option("--d-r", model.d_r, "invariant latent size");
  app.add_option("--d-v", model.d_v, "equivariant latent size");
  app.add_option("--latent", o.latent,
                 "the paper's latent sizes: 8 (d_r = d_v = 8, H halved to 64, its semi-supervised MNIST runs) or 16 "
                 "(d_r = d_v = 16, H 128)");
  app.add_option("--max-image-pixels", o.max_image_pixels,
                 "--dataset folder: refuse images of more pixels than this, before decoding them")
      ->check(CLI::PositiveNumber);
  app.add_option("--train-limit", o.train_limit, "train on the first N training images only (0: all)");
  app.add_option("--labels", o.labels,
                 "semi-supervised: keep the labels of only N training images, balanced over classes (0: all)");
  app.add_option("--resume", o.resume, "checkpoint to continue from ('auto': the run folder's own)");
  app.add_option("--evaluate", o.evaluate, "no training: evaluate this checkpoint on the test set and draw figures");
  app.add_option("--threads", o.threads, "CPU threads (default: all cores)");
  app.add_option("--classifier-epochs", o.classifier_epochs, "epochs of the dense classifier on frozen r (0: skip)");
  app.add_flag("--benchmark", o.benchmark, "train the benchmark classifier (encoder + dropout) instead of EquiVAE");
  app.add_flag("--quick", o.quick, "a short CPU schedule (minutes): 2 epochs, batch 32, 3 epochs of the classifier on r");
  app.add_flag("--no-progress", o.no_progress, "no progress bar");
  app.add_flag("--tf32", o.tf32, "with --device cuda: convolutions on TF32 tensor cores (~1e-3 relative error per product)");
  CLI11_PARSE(app, argc, argv);

  try {
    if (o.quick) {
      if (!app.count("--epochs")) train.epochs = 2;
      if (!app.count("--classifier-epochs")) o.classifier_epochs = 3;
    }
    if (o.threads > 0) omp_set_num_threads(o.threads);
    if (o.latent > 0) {
      if (app.count("--d-r") || app.count("--d-v") || app.count("--hidden"))
        throw std::invalid_argument("--latent sets --d-r, --d-v and --hidden: give either --latent or those");
      set_paper_latents(model, o.latent);
    }
    if (!o.evaluate.empty()) {
      // The checkpoint's seed, epoch count (so nothing is trained) and architecture; the data
      // set's own sizes (channels, image size, classes) are checked against it on loading.
      const auto meta = read_checkpoint_metadata(o.evaluate);
      train.seed = metadata_count(o.evaluate, meta, "seed", UINT64_MAX);
      train.epochs = int(metadata_count(o.evaluate, meta, "epoch", INT_MAX));
      model = checkpoint_model(o.evaluate, meta);
      o.init = init_scheme_name(checkpoint_init(meta));
      o.set_sampling = data::set_sampling_name(checkpoint_set_sampling(meta));
      train.labels_per_class =
          meta.count("labels_per_class") ? int(metadata_count(o.evaluate, meta, "labels_per_class", INT_MAX)) : 0;
      o.labels = 0;  // the checkpoint's own
      o.resume = o.evaluate;
    }
    model.init = init_scheme_from_name(o.init);
    train.set_sampling = data::set_sampling_from_name(o.set_sampling);
    if (o.data_dir.empty()) o.data_dir = default_data_dir(o.dataset);
    if (o.out.empty()) o.out = fmt::format("runs/{}-seed{}", o.dataset, train.seed);
    train.out_dir = o.out;
    train.progress = !o.no_progress;
    train.device = o.device == "cuda" ? Device::cuda : Device::cpu;
    if (train.device == Device::cuda) backend(Device::cuda);  // fails early, with the reason
    if (o.tf32 && train.device != Device::cuda) throw std::invalid_argument("--tf32 needs --device cuda");
    if (train.device == Device::cuda) set_cuda_tf32(o.tf32);

    data::Splits splits = load(o);
    if (o.train_limit > 0 && o.train_limit < splits.train.n) splits.train = splits.train.slice(0, o.train_limit);
    model.channels = splits.train.channels;
    model.image_size = splits.train.height;
    model.num_classes = splits.train.num_classes;
    model.likelihood = o.dataset == "svhn" ? Likelihood::gaussian : Likelihood::bernoulli;
    if (o.labels > 0) {
      if (o.labels % model.num_classes != 0)
        throw std::invalid_argument(fmt::format("--labels {} is not a multiple of the {} classes", o.labels,
                                                model.num_classes));
      train.labels_per_class = o.labels / model.num_classes;
    }
    model.semi_supervised = train.labels_per_class > 0;
    const std::string device =
        o.device == "cpu" ? fmt::format("cpu ({} convolutions, {} threads)", cpu_conv_path(), omp_get_max_threads())
                          : o.device;
    fmt::print(stderr, "equivae: {} on {} ({} train / {} validation / {} test), {}, seed {}\n", model.describe(),
               o.dataset, splits.train.n, splits.validation.n, splits.test.n, device, train.seed);

    ClassifierConfig classifier{.epochs = o.classifier_epochs, .batch_size = 64, .lr = 1e-3, .dropout = 0.5,
                                .seed = train.seed, .device = train.device, .progress = train.progress};
    if (o.benchmark) {
      classifier.epochs = train.epochs;
      if (train.labels_per_class > 0) {  // the same labelled subset a semi-supervised run of this seed sees
        const auto labelled = data::balanced_label_subset(splits.train, train.labels_per_class, train.seed);
        // An epoch shows the benchmark as many labelled images as an epoch of that run shows its
        // labelled part (one per unlabelled image), so both are judged on validation as often.
        classifier.epoch_images = splits.train.n - int64_t(labelled.size());
        splits.train = splits.train.subset(labelled);
      }
      const auto start = std::chrono::steady_clock::now();
      const ClassifierResult b = train_benchmark_classifier(splits, model, classifier);
      const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::filesystem::create_directories(o.out);
      std::ofstream(o.out + "/results.json")
          << nlohmann::json({{"dataset", o.dataset}, {"seed", train.seed}, {"model", "benchmark classifier"},
                             {"train_images", splits.train.n}, {"epochs", classifier.epochs},
                             {"wall_seconds", wall}, {"best_epoch", b.best_epoch},
                             {"validation_error", b.validation_error}, {"test_error", b.test_error}})
                 .dump(2)
          << "\n";
      fmt::print("test error (benchmark classifier, epoch {} chosen on validation): {:.2f} %\n", b.best_epoch,
                 100 * b.test_error);
      return 0;
    }
    Trainer trainer(model, train, splits);
    fmt::print(stderr, "equivae: {} parameters; run folder {}\n", trainer.params().numel(), o.out);
    if (o.resume == "auto") o.resume = std::filesystem::exists(trainer.checkpoint_path()) ? trainer.checkpoint_path() : "";
    if (!o.resume.empty()) {
      trainer.resume(o.resume);
      fmt::print(stderr, "equivae: resumed from {} after epoch {}\n", o.resume, trainer.epochs_done());
    }
    const auto start = std::chrono::steady_clock::now();
    trainer.train();
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    nlohmann::json results = {{"dataset", o.dataset}, {"seed", train.seed}, {"epochs", trainer.epochs_done()},
                              {"train_images", splits.train.n}, {"device", o.device}, {"tf32", o.tf32},
                              {"init", o.init}, {"set_sampling", o.set_sampling}, {"m_max", train.m_max},
                              {"wall_seconds", wall},
                              {"parameters", trainer.params().numel()}};
    if (o.evaluate.empty() && trainer.best_epoch() > 0) {
      // Everything below is of the epoch chosen on validation.
      trainer.use_best();
      results["best_epoch"] = trainer.best_epoch();
      results["best_validation_error"] = trainer.best_validation_error();
      fmt::print("best epoch on validation: {} (validation error {:.2f} %), evaluated below\n", trainer.best_epoch(),
                 100 * trainer.best_validation_error());
    }
    // A fixed few thousand training images: enough to see every unit that ever fires.
    constexpr int64_t kDeadUnitImages = 3000;
    const std::vector<DeadUnits> layers = trainer.dead_units(splits.train, kDeadUnitImages);
    nlohmann::json dead = nlohmann::json::object();
    for (const char* part : {"h", "g"}) {
      int64_t units = 0, never = 0;
      for (const DeadUnits& l : layers)
        if (l.layer.rfind(part, 0) == 0) {
          dead[part]["layers"][l.layer] = {{"units", l.units}, {"dead", l.dead}};
          units += l.units, never += l.dead;
        }
      dead[part]["fraction"] = double(never) / double(units);
      fmt::print("never-active ReLU units of {} on {} training images: {} of {} ({:.1f} %)\n", part,
                 std::min(kDeadUnitImages, splits.train.n), never, units, 100.0 * double(never) / double(units));
    }
    results["dead_units"] = dead;
    const double test_error = trainer.distance_error(splits.test);
    results["test_error_distance"] = test_error;
    fmt::print("test error (distance classifier on r, {} test images): {:.2f} %\n", splits.test.n, 100 * test_error);
    if (model.semi_supervised) {
      const double q_error = trainer.classifier_error(splits.test);
      results["labels"] = int64_t(trainer.labelled_rows().size());
      results["test_error_classifier"] = q_error;
      fmt::print("test error (q(y|x), {} labels): {:.2f} %\n", trainer.labelled_rows().size(), 100 * q_error);
    }
    if (o.classifier_epochs > 0) {
      auto features = [&](const data::Dataset& d) { return Features{trainer.represent(d), d.labels, model.d_r}; };
      // What the run knows: the labelled rows only (a copy of them) when semi-supervised.
      const Features train_features = model.semi_supervised ? features(splits.train.subset(trainer.labelled_rows()))
                                                            : features(splits.train);
      const ClassifierResult c = train_feature_classifier(train_features, features(splits.validation),
                                                          features(splits.test), model.num_classes, classifier);
      results["test_error_neural"] = c.test_error;
      results["neural_best_epoch"] = c.best_epoch;
      fmt::print("test error (dense classifier on frozen r, epoch {} chosen on validation): {:.2f} %\n", c.best_epoch,
                 100 * c.test_error);
    }
    std::ofstream(o.out + "/results.json") << results.dump(2) << "\n";
    for (const std::string& path : write_figures(trainer, splits.validation, o.out, train.seed))
      fmt::print("figure: {}\n", path);
    if (o.evaluate.empty()) fmt::print("checkpoint: {}\n", trainer.checkpoint_path());
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
