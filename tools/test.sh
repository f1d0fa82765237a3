#!/usr/bin/env bash
# Sets up (tools/setup.sh: packages, configure, build) and runs the whole test suite with ctest.
# GPU tests report themselves skipped where no GPU is present; then the same GPU parity suite
# runs on the CPU emulator of CUDA (a second build, EQUIVAE_CUDA=EMULATE: emulator/),
# so the kernels' code is checked on every machine. Last, a short libFuzzer run of every file
# reader (tools/fuzz.sh; "skipped" without clang).
set -euo pipefail
cd "$(dirname "$0")/.."
EQUIVAE_WITH_FIGURES=1 bash tools/setup.sh  # numpy + matplotlib for the run_folder test (tools/figures.py)
ctest --test-dir "${EQUIVAE_BUILD_DIR:-build}" -j "$(nproc)" --output-on-failure

emulated="${EQUIVAE_EMULATED_BUILD_DIR:-build-emulated}"
EQUIVAE_BUILD_DIR="$emulated" EQUIVAE_CMAKE_ARGS="-DEQUIVAE_CUDA=EMULATE" EQUIVAE_BUILD_TARGETS=equivae_gpu_tests \
  bash tools/setup.sh
ctest --test-dir "$emulated" -R equivae_gpu --output-on-failure

bash tools/fuzz.sh
