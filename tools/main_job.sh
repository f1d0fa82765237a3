#!/usr/bin/env bash
# The main job: set up, build, train EquiVAE on the default data (MNIST in ../shared/data/mnist),
# print the test error, write the checkpoint and the figures into runs/main.
#   With a GPU (EQUIVAE_DEVICE=cuda) it runs the paper's schedule (40 epochs, batch 32 doubling
#   every 10 epochs); on a CPU the short --quick schedule (minutes). Extra arguments are passed
#   to train_mnist (e.g. --epochs 40 to run the full schedule on a CPU anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
device="${EQUIVAE_DEVICE:-cpu}"
schedule=(--quick)
[[ "$device" == cuda ]] && schedule=()
"${EQUIVAE_BUILD_DIR:-build}/train/train_mnist" --device "$device" --out runs/main "${schedule[@]}" "$@"
