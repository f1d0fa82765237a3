#!/usr/bin/env bash
# Sets up (tools/setup.sh: packages, configure, build) and runs the whole test suite with ctest.
# GPU tests report themselves skipped where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
ctest --test-dir "${EQUIVAE_BUILD_DIR:-build}" -j "$(nproc)" --output-on-failure
