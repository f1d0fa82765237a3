#!/usr/bin/env bash
# Sets up (tools/setup.sh: packages, configure, build) and runs the whole test suite with ctest.
# GPU tests report themselves skipped where no GPU is present; then the same GPU parity suite
# runs on the CPU emulator of CUDA (a second build, EQUIVAE_CUDA=EMULATE: tests/gpu/emulator),
# so the kernels' code is checked on every machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
ctest --test-dir "${EQUIVAE_BUILD_DIR:-build}" -j "$(nproc)" --output-on-failure

emulated="${EQUIVAE_EMULATED_BUILD_DIR:-build-emulated}"
werror=OFF
[[ "${CI:-}" == true ]] && werror=ON
cmake -S . -B "$emulated" -G Ninja -DCMAKE_BUILD_TYPE=Release -DEQUIVAE_WERROR=$werror -DEQUIVAE_CUDA=EMULATE >/dev/null
cmake --build "$emulated" -j "$(nproc)" --target equivae_gpu_tests
ctest --test-dir "$emulated" -R equivae_gpu --output-on-failure
