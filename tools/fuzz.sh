#!/usr/bin/env bash
# Short fuzzing runs of every file reader (tests/fuzz), for the test command (tools/test.sh):
# builds the libFuzzer harnesses with clang, ASan and UBSan in their own folder, writes the seed
# corpus with the test suite (test_fuzz_seeds.cpp), then runs each harness 4000 times, seeded, and
# prints its executions and coverage (libFuzzer's cov: edges, ft: features). Prints "skipped"
# and succeeds where clang is missing. A crash, a sanitizer report, an uncaught exception, a
# single allocation above 1 GB, a 2 GB resident set or an input running 30 s (generous: a loaded
# machine can stall a file open for seconds) fails the run; the input that did it is kept in
# <fuzz build>/artifacts/.
#   EQUIVAE_BUILD_DIR       the regular build, whose equivae_tests writes the seeds (default: build)
#   EQUIVAE_FUZZ_BUILD_DIR  where the harnesses are built (default: build-fuzz)
#   EQUIVAE_FUZZ_RUNS       executions per harness (default 4000; -1: until EQUIVAE_FUZZ_SECONDS)
#   EQUIVAE_FUZZ_SECONDS    the most seconds per harness (default: 60)
#   EQUIVAE_FUZZ_SEED       libFuzzer's seed (default: 1)
#   EQUIVAE_FUZZ_HARNESSES  which readers to fuzz (default: "idx mat image_folder checkpoint")
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang >/dev/null || ! command -v clang++ >/dev/null; then
  echo "fuzz: skipped (clang/clang++ not installed; libFuzzer needs clang)"
  exit 0
fi
build="${EQUIVAE_BUILD_DIR:-build}"
fuzz="${EQUIVAE_FUZZ_BUILD_DIR:-build-fuzz}"
seconds="${EQUIVAE_FUZZ_SECONDS:-60}"
runs_asked="${EQUIVAE_FUZZ_RUNS:-4000}"
seed="${EQUIVAE_FUZZ_SEED:-1}"
read -r -a harnesses <<<"${EQUIVAE_FUZZ_HARNESSES:-idx mat image_folder checkpoint}"

CC=clang CXX=clang++ cmake -S . -B "$fuzz" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEQUIVAE_FUZZ=ON \
  -DEQUIVAE_CUDA=OFF -DEQUIVAE_NATIVE=OFF >/dev/null
cmake --build "$fuzz" -j "$(nproc)" --target equivae_fuzzers
if [[ -f "$build/build.ninja" ]]; then cmake --build "$build" -j "$(nproc)" --target equivae_tests
else EQUIVAE_BUILD_DIR="$build" EQUIVAE_BUILD_TARGETS=equivae_tests bash tools/setup.sh; fi
rm -rf "$fuzz/seeds"
EQUIVAE_FUZZ_CORPUS="$fuzz/seeds" "$build/tests/equivae_tests" "fuzz: seed corpus*" >/dev/null

mkdir -p "$fuzz/artifacts"
# The harnesses write each input to a file under TMPDIR: a folder in memory where there is one,
# removed at the end.
scratch=$(mktemp -d -p "$( [[ -w /dev/shm ]] && echo /dev/shm || echo "${TMPDIR:-/tmp}")")
trap 'rm -rf "$scratch"' EXIT
export TMPDIR="$scratch"
for h in "${harnesses[@]}"; do
  mkdir -p "$fuzz/corpus/$h"  # what the fuzzer finds; kept between runs, so coverage grows
  log="$fuzz/fuzz_$h.log"
  # A fixed seed and number of runs: the test command gives the same verdict every time (a
  # finding no earlier run made would otherwise turn CI red at random); EQUIVAE_FUZZ_RUNS=-1 and
  # EQUIVAE_FUZZ_SECONDS fuzz for as long as asked instead.
  if ! "$fuzz/tests/fuzz/fuzz_$h" -seed="$seed" -runs="$runs_asked" -max_total_time="$seconds" -timeout=30 \
       -rss_limit_mb=2048 -malloc_limit_mb=1024 -len_control=0 \
       -artifact_prefix="$fuzz/artifacts/${h}-" -print_final_stats=1 "$fuzz/corpus/$h" "$fuzz/seeds/$h" >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: fuzz_$h FAILED (log: $log, input: $fuzz/artifacts/)"
    exit 1
  fi
  runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  coverage=$(grep -E "DONE|INITED" "$log" | tail -n 1 | grep -oE "cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9a-zA-Z]+" || true)
  echo "fuzz: fuzz_$h ran ${runs:-?} executions (seed $seed, at most $runs_asked runs and $seconds s), ${coverage:-no coverage line in $log}"
done
