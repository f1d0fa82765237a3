#!/usr/bin/env bash
# Installs what equivae builds with, from Debian's packages only (nothing is downloaded at build
# or run time), then configures and builds the project in ./build. Idempotent: packages already
# present are not asked for again, so a second run needs no network.
#   EQUIVAE_BUILD_DIR  build folder (default: build)
#   EQUIVAE_CMAKE_ARGS extra CMake arguments (e.g. -DEQUIVAE_CUDA=OFF)
#   EQUIVAE_BUILD_TARGETS  build only these targets (default: all)
#   EQUIVAE_WITH_FIGURES / EQUIVAE_WITH_PYTHON / EQUIVAE_WITH_UMAP  see below
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake ninja-build pkg-config libeigen3-dev catch2 libfmt-dev zlib1g-dev
          libmatio-dev libcli11-dev libstb-dev nlohmann-json3-dev libpng-dev libjpeg62-turbo-dev)
# Optional Python: EQUIVAE_WITH_FIGURES=1 adds what tools/figures.py draws with (the main job and
# the test suite ask for it); EQUIVAE_WITH_PYTHON=1 adds that and Debian's PyTorch for the
# numerical twin of tests/torch_twin.sh (not the speed peer: bench/cpu_vs_torch.sh installs the current
# PyTorch from PyPI into a venv of its own).
if [[ "${EQUIVAE_WITH_FIGURES:-0}" == 1 || "${EQUIVAE_WITH_PYTHON:-0}" == 1 ]]; then
  packages+=(python3-numpy python3-matplotlib python3-sklearn)
fi
if [[ "${EQUIVAE_WITH_PYTHON:-0}" == 1 ]]; then packages+=(python3-torch); fi
# UMAP, the paper's 2-D reduction for figure 1, is not packaged by Debian: EQUIVAE_WITH_UMAP=1 (the
# main job) puts umap-learn from PyPI into .venv-figures beside Debian's numpy and matplotlib.
# Optional: without it (or without PyPI) tools/figures.py uses t-SNE.
if [[ "${EQUIVAE_WITH_UMAP:-0}" == 1 ]]; then packages+=(python3-numpy python3-matplotlib python3-venv); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [[ "${EQUIVAE_WITH_UMAP:-0}" == 1 ]] && ! .venv-figures/bin/python -c "import umap" 2>/dev/null; then
  { /usr/bin/python3 -m venv --system-site-packages .venv-figures && .venv-figures/bin/pip install -q umap-learn; } ||
    echo "setup: umap-learn not installed; figure 1 will use t-SNE"
fi

build="${EQUIVAE_BUILD_DIR:-build}"
werror=OFF
[[ "${CI:-}" == true ]] && werror=ON
# shellcheck disable=SC2086
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DEQUIVAE_WERROR=$werror ${EQUIVAE_CMAKE_ARGS:-}
# shellcheck disable=SC2086
cmake --build "$build" -j "$(nproc)" ${EQUIVAE_BUILD_TARGETS:+--target $EQUIVAE_BUILD_TARGETS}
