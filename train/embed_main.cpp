// equivae_embed: r and the posterior of v for every image of a split, from a checkpoint, into
// one .npz (docs/embeddings.md says exactly what each array is). The data are loaded and
// preprocessed with the checkpoint's run options (train/run_options.h), as the run saw them.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <filesystem>

#include "engine/cpu/denormals.h"
#include "train/evaluation.h"
#include "train/npz.h"
#include "train/run_options.h"

using namespace equivae;

namespace {

struct EmbedOptions {
  std::string checkpoint, dataset, data_dir, split = "test", out, device = "cpu";
  int threads = 0;
  bool images = false, reconstruction = false;
};

int run(const EmbedOptions& e) {
  if (e.threads > 0) omp_set_num_threads(e.threads);
  const Device device = e.device == "cuda" ? Device::cuda : Device::cpu;
  const auto loaded = load_model(e.checkpoint, device);
  const RunState& state = loaded->state;
  // The run's options, checked as train_mnist checks them; then the data set of this command.
  RunOptions o;
  CLI::App unused;
  OptionTable table(unused, o);
  table.restore(state.options, "checkpoint " + e.checkpoint, {});
  if (o.dataset.empty()) o.dataset = state.data.substr(0, state.data.find('/'));  // checkpoints before options
  if (!e.dataset.empty() && e.dataset != o.dataset) o.dataset = e.dataset, o.data_dir.clear(), o.image_size = 0;
  if (!e.data_dir.empty()) o.data_dir = e.data_dir;
  resolve_defaults(o, {});
  const data::Splits splits = load_run_data(o);
  const data::Dataset& t = splits.train;
  const ModelConfig& m = state.model;
  if (t.channels != m.channels || t.height != m.image_size || t.width != m.image_size || t.num_classes != m.num_classes)
    throw std::runtime_error(fmt::format("{} ({}x{}x{}, {} classes) does not fit the model of {} ({})", t.name, t.channels,
                                         t.height, t.width, t.num_classes, e.checkpoint, m.describe()));

  std::vector<std::pair<std::string, const data::Dataset*>> parts;
  if (e.split == "train" || e.split == "all") parts.push_back({"train", &splits.train});
  if (e.split == "validation" || e.split == "all") parts.push_back({"validation", &splits.validation});
  if (e.split == "test" || e.split == "all") parts.push_back({"test", &splits.test});
  std::vector<float> r, v_mean, v_logvar, x, recon;
  std::vector<int32_t> label;
  std::vector<std::string> path, split;
  int64_t n = 0;
  for (const auto& [name, d] : parts) {
    const Embedding emb = embed(*loaded->model, *d, device);
    r.insert(r.end(), emb.r.begin(), emb.r.end());
    v_mean.insert(v_mean.end(), emb.v_mean.begin(), emb.v_mean.end());
    v_logvar.insert(v_logvar.end(), emb.v_logvar.begin(), emb.v_logvar.end());
    label.insert(label.end(), d->labels.begin(), d->labels.end());
    for (int64_t i = 0; i < d->n; ++i) {
      path.push_back(d->paths.empty() ? std::to_string(i) : d->paths[size_t(i)]);
      split.push_back(name);
    }
    if (e.images) x.insert(x.end(), d->images.begin(), d->images.end());
    if (e.reconstruction) {
      const std::vector<float> out = decode_rows(*loaded->model, emb.r, emb.v_mean, d->n, device);
      recon.insert(recon.end(), out.begin(), out.end());
    }
    n += d->n;
    fmt::print(stderr, "equivae_embed: {} images of {} ({})\n", d->n, name, d->name);
  }
  std::vector<std::string> classes = state.classes.empty() ? t.class_names : state.classes;
  NpzWriter npz;
  npz.add("r", r, {n, m.d_r});
  npz.add("v_mean", v_mean, {n, m.d_v});
  npz.add("v_logvar", v_logvar, {n, m.d_v});
  npz.add("label", label, {n});
  npz.add("path", path);
  npz.add("split", split);
  npz.add("classes", classes);
  if (e.images) npz.add("x", x, {n, m.channels, m.image_size, m.image_size});
  if (e.reconstruction) npz.add("reconstruction", recon, {n, m.channels, m.image_size, m.image_size});
  npz.write(e.out);
  fmt::print("embeddings: {} ({} images, d_r {}, d_v {})\n", e.out, n, m.d_r, m.d_v);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  equivae::flush_denormals_to_zero();  // first: the OpenMP threads inherit it
  EmbedOptions e;
  CLI::App app{"Write r (m = 1) and the posterior of v given r(x) for every image of a split, from a train_mnist / "
               "train_svhn checkpoint, into one .npz (docs/embeddings.md). The data are those of the checkpoint's run "
               "(its data set, folder, --train-limit, --image-size, standardisation) unless given."};
  app.option_defaults()->always_capture_default();
  app.add_option("checkpoint", e.checkpoint, "checkpoint.safetensors or best.safetensors of a run")->required();
  app.add_option("--dataset", e.dataset, "mnist, fashion-mnist, svhn or folder (default: the run's)")
      ->check(CLI::IsMember({"mnist", "fashion-mnist", "svhn", "folder"}));
  app.add_option("--data-dir", e.data_dir, "folder of the data set's files (default: the run's)");
  app.add_option("--split", e.split, "which images")->check(CLI::IsMember({"train", "validation", "test", "all"}));
  app.add_option("--out", e.out, "the .npz to write")->required();
  app.add_option("--device", e.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--threads", e.threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 4096));
  app.add_flag("--images", e.images, "also \"x\": the images as the model sees them (after resizing, standardising)");
  app.add_flag("--reconstruction", e.reconstruction,
               "also \"reconstruction\": the decoder's output at (r, v_mean), Bernoulli logits or Gaussian means");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(e);
  } catch (const std::exception& error) {
    fmt::print(stderr, "error: {}\n", error.what());
    return 1;
  }
}
