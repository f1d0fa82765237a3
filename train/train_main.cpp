// train_mnist / train_svhn: one source, two defaults (EQUIVAE_DEFAULT_DATASET). Trains EquiVAE
// on the chosen data into a run folder, evaluating each epoch on validation, then reports the
// test errors of the epoch chosen on validation; or, with --evaluate, only that report for a
// checkpoint, with its run's options.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/cpu/denormals.h"
#include "engine/backend.h"
#include "engine/cpu/conv2d_fast.h"
#include "engine/self_check.h"
#include "train/classifiers.h"
#include "train/evaluation.h"
#include "train/figures.h"
#include "train/progress.h"
#include "train/run_options.h"
#include "train/trainer.h"

using namespace equivae;
namespace fs = std::filesystem;

namespace {

// Issue 15's self-check on first use of a GPU: every kernel family once against the CPU reference
// (engine/self_check.h), in the convolutions' mode of this run; refuses to start on a
// disagreement, naming the kernel and its error against its tolerance.
void self_check_gpu(bool tf32) {
  const auto start = std::chrono::steady_clock::now();
  SelfCheckOptions options;
  if (tf32) options.gemm = kTf32Tolerance;  // dense layers run on the conv kernels: TF32 too
  const std::vector<KernelCheck> checks = require_self_check(
      backend(Device::cuda), Device::cuda, backend(Device::cpu), options,
      "\nThe kernels do not hold on this GPU: please report it with this message (docs/gpu_session.md). "
      "--skip-self-check starts anyway.");
  double worst = 0;
  for (const KernelCheck& c : checks) worst = std::max(worst, c.result.worst);
  fmt::print(stderr, "equivae: self-check: {} kernel outputs agree with the CPU reference (worst error {:.2g} of its "
                     "tolerance) in {:.1f} s\n",
             checks.size(), worst, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

// What a run folder holds: a second run into it without --resume must not mix with these.
const std::vector<std::string> kRunFiles = {
    "config.json", "checkpoint.safetensors", "best.safetensors", "metrics.jsonl", "results.json", "latents.tsv",
    "samples.png", "swap.png", "interpolation.png", "reconstruction.png", "r_plane.png", "v_grid.png",
    "learning_curves.png", "latents.png"};

std::string description(const std::string& dataset) {
  if (dataset == "svhn")
    return "Train EquiVAE (Feige, ICML 2019) on SVHN cropped digits and report the test error of the distance "
           "classifier on r.\nData: train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ "
           "in --data-dir (default ../shared/data/svhn); 70,000 train / 3,257 validation (the last rows of the train "
           "file) / 26,032 test images, pixels standardised over the training set, Gaussian likelihood with a learned "
           "variance per channel. The paper trains about 90 epochs (--epochs 90).";
  return "Train EquiVAE (Feige, ICML 2019) on MNIST and report the test error of the distance classifier on r.\n"
         "Data: the four IDX files in --data-dir (default ../shared/data/mnist); 55,000 train / 5,000 validation "
         "(the last rows of the train file) / 10,000 test images, Bernoulli likelihood. Also --dataset "
         "fashion-mnist, svhn or folder (docs/data.md).";
}

std::vector<std::string> run_files_in(const std::string& dir) {
  std::vector<std::string> found;
  for (const std::string& f : kRunFiles)
    if (fs::exists(fs::path(dir) / f)) found.push_back(f);
  return found;
}

// Refuses an --out that already holds a run unless this command continues it, or --force
// (which deletes that run's files first, so nothing old stays beside the new results).
void claim_run_folder(const RunOptions& o, bool continues) {
  const std::vector<std::string> found = run_files_in(o.out);
  if (!found.empty() && !continues) {
    if (!o.force && !o.evaluate.empty())
      throw std::invalid_argument(fmt::format("--out {} already holds {}: choose another --out, or replace them with "
                                              "--force", o.out, fmt::join(found, ", ")));
    if (!o.force)
      throw std::invalid_argument(fmt::format(
          "--out {} already holds a run ({}): continue it with --resume auto, evaluate it with --evaluate {}/"
          "best.safetensors, or delete it and start afresh with --force",
          o.out, fmt::join(found, ", "), o.out));
    for (const std::string& f : found) fs::remove(fs::path(o.out) / f);
    fmt::print(stderr, "equivae: --force: deleted {} from {}\n", fmt::join(found, ", "), o.out);
  }
  fs::create_directories(o.out);
}

// The checkpoint whose run this command continues or evaluates; "" for a fresh run.
std::string continued_checkpoint(const RunOptions& o) {
  if (!o.evaluate.empty()) return o.evaluate;
  if (o.resume != "auto") return o.resume;
  const std::string own = (fs::path(o.out) / "checkpoint.safetensors").string();
  return fs::exists(own) ? own : "";
}

void write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  if (!out) throw std::runtime_error("cannot write " + path);
}

// The report of a trained model (SPEC.md section 4 and the figures), into results.json.
void report(const EquiVAE& model, Device device, const data::Splits& splits, const std::vector<int64_t>& labelled_rows,
            const RunOptions& o, const ClassifierConfig& classifier, nlohmann::json& results) {
  // A fixed few thousand training images: enough to see every unit that ever fires.
  constexpr int64_t kDeadUnitImages = 3000;
  const std::vector<DeadUnits> layers = dead_units(model, splits.train, kDeadUnitImages, device);
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
  const double test_error = distance_error(model, splits.train, labelled_rows, splits.test, device);
  results["test_error_distance"] = test_error;
  fmt::print("test error (distance classifier on r, {} test images): {:.2f} %\n", splits.test.n, 100 * test_error);
  const bool semi = model.config().semi_supervised;
  if (semi) {
    results["labels"] = int64_t(labelled_rows.size());
    // Validation beside test, so that where q(y|x) errs can be studied without reading the test set.
    for (const auto& [split, d] : {std::pair{"validation", &splits.validation}, std::pair{"test", &splits.test}}) {
      const std::vector<int64_t> confusion = classifier_confusion(model, *d, device);
      const double q_error = confusion_error(confusion);
      results[fmt::format("{}_error_classifier", split)] = q_error;
      results[fmt::format("{}_confusion_classifier", split)] = confusion;  // [true * K + predicted]
      fmt::print("{} error (q(y|x), {} labels): {:.2f} %\n", split, labelled_rows.size(), 100 * q_error);
      const std::string figure = o.out + (split == std::string("test") ? "/confusion.png" : "/confusion_validation.png");
      write_confusion_png(figure, confusion, d->class_names,
                          fmt::format("q(y|x) on the {} set, {} labels: row = true class, column = predicted", split,
                                      labelled_rows.size()));
      fmt::print("figure: {}\n", figure);
      // The generative classifier, q(y|x)'s teacher on the unlabelled images.
      const double error = confusion_error(generative_confusion(model, splits.train, labelled_rows, *d, device));
      results[fmt::format("{}_error_generative", split)] = error;
      fmt::print("{} error (generative classifier, argmax_y ELBO(x, y)): {:.2f} %\n", split, 100 * error);
    }
  }
  if (classifier.epochs > 0) {
    auto features = [&](const data::Dataset& d) { return Features{represent(model, d, device), d.labels, model.config().d_r}; };
    // What the run knows: the labelled rows only (a copy of them) when semi-supervised.
    const Features train_features = semi ? features(splits.train.subset(labelled_rows)) : features(splits.train);
    const ClassifierResult c = train_feature_classifier(train_features, features(splits.validation),
                                                        features(splits.test), model.config().num_classes, classifier);
    results["test_error_neural"] = c.test_error;
    results["neural_best_epoch"] = c.best_epoch;
    fmt::print("test error (dense classifier on frozen r, epoch {} chosen on validation): {:.2f} %\n", c.best_epoch,
               100 * c.test_error);
  }
  write_json(o.out + "/results.json", results);
  for (const std::string& path : write_figures(model, device, splits.validation, o.out, o.seed))
    fmt::print("figure: {}\n", path);
}

int run(RunOptions& o, OptionTable& table) {
  const std::set<std::string> given = table.given();
  resolve_defaults(o, given);
  // Default run folders: a resumed checkpoint's own, else runs/<dataset>-seed<seed>.
  if (o.out.empty() && !o.resume.empty() && o.resume != "auto")
    o.out = fs::path(o.resume).has_parent_path() ? fs::path(o.resume).parent_path().string() : ".";
  if (o.out.empty() && o.evaluate.empty()) o.out = fmt::format("runs/{}-seed{}", o.dataset, o.seed);
  const std::string checkpoint = continued_checkpoint(o);
  RunState state;
  if (!checkpoint.empty()) {
    state = read_run_state(checkpoint);
    if (!o.evaluate.empty() && state.benchmark)
      throw std::invalid_argument(fmt::format("--evaluate {}: a benchmark classifier's checkpoint; --evaluate takes an "
                                              "EquiVAE run's", o.evaluate));
    table.restore(state.options, "checkpoint " + checkpoint, given, state.epoch);
  }
  if (o.out.empty()) o.out = (fs::path(o.evaluate).parent_path() / "evaluation").string();
  check_options(o);
  const fs::path checkpoint_dir = fs::path(checkpoint).parent_path().empty() ? "." : fs::path(checkpoint).parent_path();
  const bool in_checkpoint_folder = !checkpoint.empty() && fs::exists(o.out) && fs::equivalent(checkpoint_dir, o.out);
  if (!o.evaluate.empty() && in_checkpoint_folder)
    throw std::invalid_argument(fmt::format("--evaluate {} --out {}: the evaluation's results and figures go into a "
                                            "folder of their own, not the run's", o.evaluate, o.out));
  // Training continues a run in place only in that run's own folder (or restarts one that
  // stopped before its first checkpoint).
  claim_run_folder(o, !o.resume.empty() && (checkpoint.empty() || in_checkpoint_folder));
  apply_device_options(o);  // before config.json, which records the plans in use
  write_json(o.out + "/config.json", table.to_json());

  if (o.threads > 0) omp_set_num_threads(o.threads);
  const Device device = o.device == "cuda" ? Device::cuda : Device::cpu;
  if (device == Device::cuda && !o.skip_self_check) self_check_gpu(o.tf32);
  data::Splits splits = load_run_data(o);
  if (splits.train.skipped_files > 0)
    fmt::print(stderr, "equivae: skipped {} file(s) of {} that are not .png, .jpg or .jpeg\n",
               splits.train.skipped_files, o.data_dir);
  if (o.latent > 0 && (given.count("d-r") || given.count("d-v") || given.count("hidden")))
    throw std::invalid_argument("--latent sets --d-r, --d-v and --hidden: give either --latent or those");
  const ModelConfig model = model_config(o, splits);
  TrainConfig train = train_config(o, model);
  train.options = table.to_json();
  const std::string device_text =
      o.device == "cpu" ? fmt::format("cpu ({} convolutions, {} threads)", cpu_conv_path(), omp_get_max_threads())
                        : o.device;
  fmt::print(stderr, "equivae: {} on {} ({} train / {} validation / {} test), {}, seed {}\n", model.describe(),
             o.dataset, splits.train.n, splits.validation.n, splits.test.n, device_text, o.seed);
  ClassifierConfig classifier;
  classifier.epochs = o.classifier_epochs, classifier.batch_size = 64, classifier.lr = 1e-3, classifier.dropout = 0.5;
  classifier.seed = o.seed, classifier.device = device, classifier.progress = !o.no_progress;
  nlohmann::json results = {{"dataset", o.dataset}, {"seed", o.seed}, {"train_images", splits.train.n},
                            {"device", o.device}, {"tf32", o.tf32}, {"classes", splits.train.class_names}};

  if (o.benchmark) {
    classifier.epochs = o.epochs, classifier.average_from = o.average_from;
    if (train.labels_per_class > 0) {  // the same labelled subset a semi-supervised run of this seed sees
      const auto labelled = data::balanced_label_subset(splits.train, train.labels_per_class, o.seed);
      // An epoch shows the benchmark as many labelled images as an epoch of that run shows its
      // labelled part (one per unlabelled image), so both are judged on validation as often.
      classifier.epoch_images = splits.train.n - int64_t(labelled.size());
      splits.train = splits.train.subset(labelled);
    }
    // Checkpointed every epoch like an EquiVAE run, so that --resume auto continues it.
    classifier.checkpoint_dir = o.out, classifier.resume_from = checkpoint;
    classifier.run = RunState{.model = model, .seed = o.seed, .labels_per_class = train.labels_per_class,
                              .data = splits.train.name, .options = table.to_json(),
                              .classes = splits.train.class_names, .benchmark = true};
    if (!checkpoint.empty()) fmt::print(stderr, "equivae: continuing the benchmark classifier of {}\n", checkpoint);
    const auto start = std::chrono::steady_clock::now();
    const ClassifierResult b = train_benchmark_classifier(splits, model, classifier);
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    results.update({{"model", "benchmark classifier"}, {"train_images", splits.train.n}, {"epochs", classifier.epochs},
                    {"wall_seconds", wall}, {"best_epoch", b.best_epoch}, {"validation_error", b.validation_error},
                    {"test_error", b.test_error}});
    write_json(o.out + "/results.json", results);
    fmt::print("test error (benchmark classifier, epoch {} chosen on validation): {:.2f} %\n", b.best_epoch,
               100 * b.test_error);
    return 0;
  }

  if (!o.evaluate.empty()) {
    // No Trainer: the checkpoint's parameters, evaluated as they are.
    if (model_json(state.model) != model_json(model))
      throw std::runtime_error(fmt::format("checkpoint {}: its model ({}) does not fit these data ({})", o.evaluate,
                                           state.model.describe(), model.describe()));
    const auto loaded = load_model(o.evaluate, device);
    fmt::print(stderr, "equivae: evaluating {} (epoch {} of its run; nothing is trained but the dense classifier)\n",
               o.evaluate, state.epoch);
    std::vector<int64_t> labelled_rows;
    if (train.labels_per_class > 0) labelled_rows = data::balanced_label_subset(splits.train, train.labels_per_class, o.seed);
    else for (int64_t i = 0; i < splits.train.n; ++i) labelled_rows.push_back(i);
    results.update({{"evaluated", o.evaluate}, {"epoch", state.epoch}, {"parameters", loaded->params.numel()}});
    report(*loaded->model, device, splits, labelled_rows, o, classifier, results);
    return 0;
  }

  Trainer trainer(model, train, splits);
  fmt::print(stderr, "equivae: {} parameters; run folder {}\n", trainer.params().numel(), o.out);
  if (!checkpoint.empty()) {
    trainer.resume(checkpoint);
    fmt::print(stderr, "equivae: resumed from {} after epoch {}\n", checkpoint, trainer.epochs_done());
    if (trainer.epochs_done() >= o.epochs)
      fmt::print(stderr, "equivae: the run has trained {} epochs of --epochs {}: nothing to train (give --epochs N "
                         "to go further)\n", trainer.epochs_done(), o.epochs);
  }
  const int epochs_before = trainer.epochs_done();
  const auto start = std::chrono::steady_clock::now();
  trainer.train();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  results.update({{"epochs", trainer.epochs_done()}, {"epochs_this_command", trainer.epochs_done() - epochs_before},
                  {"init", o.init}, {"set_sampling", o.set_sampling}, {"m_max", o.m_max}, {"average_from", o.average_from},
                  {"wall_seconds", wall},
                  {"parameters", trainer.params().numel()}});
  if (trainer.best_epoch() > 0) {
    // Everything below is of the epoch chosen on validation.
    trainer.use_best();
    results["best_epoch"] = trainer.best_epoch();
    results["best_validation_error"] = trainer.best_validation_error();
    fmt::print("best epoch on validation: {} (validation error {:.2f} %), evaluated below\n", trainer.best_epoch(),
               100 * trainer.best_validation_error());
  }
  report(trainer.model(), device, splits, trainer.labelled_rows(), o, classifier, results);
  if (fs::exists(trainer.checkpoint_path())) fmt::print("checkpoint: {}\n", trainer.checkpoint_path());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  equivae::flush_denormals_to_zero();  // first: the OpenMP threads inherit it
  RunOptions o;
  o.dataset = EQUIVAE_DEFAULT_DATASET;
  CLI::App app{description(o.dataset)};
  OptionTable table(app, o);
  CLI11_PARSE(app, argc, argv);
  install_interrupt_handler();
  try {
    return run(o, table);
  } catch (const Interrupted& e) {
    fmt::print(stderr, "equivae: {}\n", e.what());
    return 130;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
