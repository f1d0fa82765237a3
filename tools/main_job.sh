#!/usr/bin/env bash
# The main job. Until the model lands (issue: supervised EquiVAE end to end) it is the engine's
# smoke run: set up, build, and run the gradient-check suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
"${EQUIVAE_BUILD_DIR:-build}/tests/equivae_tests" "[gradcheck]"
