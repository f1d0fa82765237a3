#!/usr/bin/env python3
"""Figure 1 of SPEC.md section 6, from a run folder that train_mnist / train_svhn wrote:

  learning_curves.png  train and validation ELBO, reconstruction and KL per epoch (metrics.jsonl),
                       and the validation error of the distance classifier on r
  latents.png          r(x) and v of the validation images (latents.tsv) in 2-D, coloured by
                       class: shown as they are when a latent is 2-D (figure 5's scatter of r),
                       else reduced by UMAP (the paper's choice) when umap-learn is installed,
                       else by t-SNE (scikit-learn), else by PCA; the method is in each title.

  python3 tools/figures.py runs/main            # writes runs/main/learning_curves.png, latents.png
  python3 tools/figures.py runs/main --method pca

Needs numpy and matplotlib (Debian: python3-numpy python3-matplotlib; t-SNE: python3-sklearn).
"""
import argparse
import json
import os
import subprocess
import sys
import warnings

try:
    import numpy as np
    import matplotlib
except ImportError as missing:
    # The python3 on PATH may lack them (pyenv, a venv): run again with the one
    # tools/figures_python.sh names (.venv-figures, else Debian's), once.
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    named = subprocess.run(["bash", os.path.join(repo, "tools", "figures_python.sh")], capture_output=True,
                           text=True).stdout.strip()
    if named and not os.path.isabs(named) and os.sep in named:
        named = os.path.join(repo, named)
    if named and not os.environ.get("EQUIVAE_FIGURES_RERUN"):
        os.environ["EQUIVAE_FIGURES_RERUN"] = "1"
        os.execvp(named, [named, os.path.abspath(__file__), *sys.argv[1:]])
    sys.exit(f"figures: {missing}; install python3-numpy and python3-matplotlib "
             "(EQUIVAE_WITH_FIGURES=1 bash tools/setup.sh does)")

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402


def fail(message):
    sys.exit(f"figures: {message}")


def read_metrics(path):
    if not os.path.exists(path):
        fail(f"{path} not found (a run folder holds metrics.jsonl after its first epoch)")
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    fail(f"{path} line {number} is not JSON: {e}")
    if not rows:
        fail(f"{path} holds no epoch")
    return rows


def learning_curves(metrics, path):
    epochs = [m["epoch"] for m in metrics]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, key, title in zip(axes, ["elbo", "recon", "kl"], ["ELBO", "reconstruction log p(x | r, v)", "KL(q(v) || p(v))"]):
        for split, style in [("train", "-"), ("validation", "--")]:
            ax.plot(epochs, [m[split][key] for m in metrics], style, marker=".", label=split)
        ax.set_title(f"{title} per example")
        ax.legend()
    errors = [100 * m["validation"]["distance_error"] for m in metrics]
    axes[3].plot(epochs, errors, marker=".", color="C3")
    if min(errors) > 0 and max(errors) > 10 * min(errors):  # from ~50 % after epoch 1 to ~1 %
        axes[3].set_yscale("log")
        axes[3].yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    axes[3].set_title("validation error, distance on r (%)")
    axes[3].grid(alpha=0.3, which="both")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_latents(path):
    if not os.path.exists(path):
        fail(f"{path} not found (train_mnist writes it with the figures at the end of a run)")
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
    if not header or header[0] != "label":
        fail(f"{path}: the first column must be 'label', found {header[:1]}")
    try:
        table = np.loadtxt(path, delimiter="\t", skiprows=1, ndmin=2)
    except ValueError as e:  # a short or non-numeric row
        fail(f"{path}: {e}")
    if table.shape[1] != len(header):
        fail(f"{path}: {table.shape[1]} columns in the rows, {len(header)} in the header")
    if not np.all(np.isfinite(table)):
        fail(f"{path}: holds NaN or Inf")
    columns = np.array(header)
    labels = table[:, 0].astype(int)
    r = table[:, [c.startswith("r") for c in columns]]
    v = table[:, [c.startswith("v") for c in columns]]
    return labels, r, v


def reduce_2d(x, method, seed):
    """x in 2-D and the name of how it got there."""
    if x.shape[1] <= 2:
        return (x if x.shape[1] == 2 else np.hstack([x, np.zeros_like(x)])), "as learned"
    if method == "auto":
        for candidate in ["umap", "tsne"]:
            try:
                __import__("umap" if candidate == "umap" else "sklearn.manifold")
                method = candidate
                break
            except ImportError:
                pass
        else:
            method = "pca"
    if method == "umap":
        import umap
        warnings.filterwarnings("ignore", message="n_jobs value")  # a seed makes UMAP single-threaded, as wanted
        return umap.UMAP(random_state=seed).fit_transform(x), "UMAP"
    if method == "tsne":
        from sklearn.manifold import TSNE
        return TSNE(n_components=2, init="pca", random_state=seed).fit_transform(x), "t-SNE"
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # the two leading principal axes
    return centred @ vt[:2].T, "PCA"


def read_class_names(run):
    """Class names from the run's results.json (train_mnist writes them), else None."""
    try:
        with open(os.path.join(run, "results.json")) as f:
            names = json.load(f).get("classes")
    except (OSError, ValueError, AttributeError):
        return None
    return names if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


def latents_figure(labels, r, v, path, method, seed, names=None):
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6))
    classes = np.unique(labels)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for ax, x, name in [(axes[0], r, "invariant r(x), m = 1"), (axes[1], v, "equivariant v (posterior mean)")]:
        xy, how = reduce_2d(x, method, seed)
        for i, y in enumerate(classes):
            sel = labels == y
            name = names[y] if names and 0 <= y < len(names) else str(y)
            ax.scatter(xy[sel, 0], xy[sel, 1], s=3, color=cmap(i % cmap.N), label=name, rasterized=True)
        ax.set_title(f"{name}: {x.shape[1]}-D, {how}")
    axes[1].legend(title="class", markerscale=4, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"validation images ({len(labels)}), coloured by class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run folder (holds metrics.jsonl and latents.tsv)")
    ap.add_argument("--method", choices=["auto", "umap", "tsne", "pca"], default="auto",
                    help="2-D reduction of latents wider than 2 (auto: UMAP, else t-SNE, else PCA)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the reduction")
    a = ap.parse_args()
    if not os.path.isdir(a.run):
        fail(f"{a.run} is not a folder")
    out = os.path.join(a.run, "learning_curves.png")
    learning_curves(read_metrics(os.path.join(a.run, "metrics.jsonl")), out)
    print(f"figure: {out}")
    out = os.path.join(a.run, "latents.png")
    latents_figure(*read_latents(os.path.join(a.run, "latents.tsv")), out, a.method, a.seed, read_class_names(a.run))
    print(f"figure: {out}")


if __name__ == "__main__":
    main()
