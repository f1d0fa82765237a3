#!/usr/bin/env bash
# The main job: set up, build, train EquiVAE on the default data (MNIST in ../shared/data/mnist),
# print the test error, write the checkpoint and the figures into runs/main (figures 2-4 by
# train_mnist, figure 1, the learning curves and 2-D latents, by tools/figures.py).
#   With a GPU (EQUIVAE_DEVICE=cuda) it runs the paper's schedule (40 epochs, batch 32 doubling
#   every 10 epochs); on a CPU the short --quick schedule (minutes). Extra arguments are passed
#   to train_mnist (e.g. --epochs 40 to run the full schedule on a CPU anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
EQUIVAE_WITH_FIGURES=1 EQUIVAE_WITH_UMAP=1 bash tools/setup.sh
device="${EQUIVAE_DEVICE:-cpu}"
schedule=(--quick)
[[ "$device" == cuda ]] && schedule=()
# --force: the main job starts runs/main afresh each time (train_mnist refuses to reuse a run folder
# otherwise); continue a stopped one by hand with --resume auto --out runs/main.
"${EQUIVAE_BUILD_DIR:-build}/train/train_mnist" --device "$device" --out runs/main --force "${schedule[@]}" "$@"
"$(bash tools/figures_python.sh)" tools/figures.py runs/main
