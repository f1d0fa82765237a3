#!/usr/bin/env bash
# ctest run_folder: a real, tiny train_mnist run folder (needs MNIST), then
#  - `train_mnist --evaluate` of its best checkpoint (the epoch the run evaluates), with no
#    architecture flags, gives the run's own test error (seed, epochs and model come from it);
#  - numeric options out of range are refused naming the option and the range; a second run into
#    the folder is refused and touches nothing; --evaluate trains nothing; --resume restores the
#    run's options, refuses a different one and extends --epochs;
#  - tools/figures.py draws figure 1 (learning curves, 2-D latents) from it, and refuses broken
#    run folders naming the file and the problem.
#   tests/run_folder.sh <train_mnist binary>     (run from the repository root)
# Exits 77 (ctest: skipped) only when no python3 has numpy and matplotlib, after the rest passed.
set -euo pipefail
train=$1
run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT

"$train" --train-limit 256 --epochs 2 --filters 4 4 8 8 8 --hidden 16 --d-r 4 --d-v 2 --classifier-epochs 0 \
  --seed 3 --no-progress --out "$run/run" > "$run/train.log" 2>&1 || { cat "$run/train.log"; exit 1; }
"$train" --evaluate "$run/run/best.safetensors" --no-progress \
  --out "$run/evaluated" > "$run/evaluate.log" 2>&1 || { cat "$run/evaluate.log"; exit 1; }
trained=$(grep "^test error (distance" "$run/train.log")
evaluated=$(grep "^test error (distance" "$run/evaluate.log")
[[ -n "$trained" && "$trained" == "$evaluated" ]] || { echo "FAIL: trained '$trained', evaluated '$evaluated'"; exit 1; }
grep -q "seed 3$" "$run/evaluate.log" || { echo "FAIL: --evaluate did not take the checkpoint's seed"; exit 1; }
echo "ok: --evaluate gives the run's $trained"

fail_with() {  # <text the message must hold> <train_mnist arguments...>: must exit non-zero saying it
  local want=$1; shift
  if "$train" "$@" > "$run/refused.log" 2>&1; then echo "FAIL: accepted $*"; cat "$run/refused.log"; exit 1; fi
  grep -qF -- "$want" "$run/refused.log" || { echo "FAIL: '$*' did not say '$want':"; cat "$run/refused.log"; exit 1; }
  echo "ok: refused $* ($want)"
}
# Numbers are checked at start, naming the option and the range.
fail_with "--batch-size: 0 is not an integer in [1, 65536]" --batch-size 0 --out "$run/never"
fail_with "--epochs: -3 is not an integer in [1, 1000000]" --epochs -3 --out "$run/never"
fail_with "--seed: -1 is not an integer in [0, 18446744073709551615]" --seed -1 --out "$run/never"
fail_with "--lr: -1 is not a number in (0, 10]" --lr -1 --out "$run/never"
fail_with "--max-batch-size 16 is below --batch-size 32" --max-batch-size 16 --out "$run/never"
[[ ! -e "$run/never" ]] || { echo "FAIL: a refused command created its --out"; exit 1; }
help=$("$train" --help)  # whole, not piped: grep -q would end the pipe early (pipefail)
grep -qF -- "--batch-size INT:in [1, 65536]=32" <<< "$help" || { echo "FAIL: --help lacks the default"; exit 1; }

# The run folder: a second run into it is refused, nothing touched; --evaluate trains nothing.
before=$(md5sum "$run/run/metrics.jsonl" "$run/run/checkpoint.safetensors")
fail_with "already holds a run" --train-limit 256 --epochs 1 --out "$run/run"
[[ "$(md5sum "$run/run/metrics.jsonl" "$run/run/checkpoint.safetensors")" == "$before" ]] || { echo "FAIL: refused run touched the folder"; exit 1; }
fail_with "--train-limit 300 differs from the run's 256" --resume auto --train-limit 300 --out "$run/run"
[[ ! -e "$run/evaluated/metrics.jsonl" && ! -e "$run/evaluated/checkpoint.safetensors" ]] || { echo "FAIL: --evaluate wrote training files"; exit 1; }
! grep -q "resumed from\|^epoch \|wall_seconds" "$run/evaluate.log" "$run/evaluated/results.json" || { echo "FAIL: --evaluate pretends to train"; exit 1; }
grep -q '"train-limit": 256' "$run/evaluated/config.json" || { echo "FAIL: --evaluate's config.json lacks the run's options"; exit 1; }
# --resume restores the run's options (256 training images, the small model) and extends --epochs
# (in a copy: the figures below read the 2-epoch run).
cp -r "$run/run" "$run/copy"
"$train" --resume auto --epochs 3 --no-progress --out "$run/copy" > "$run/resume.log" 2>&1 || { cat "$run/resume.log"; exit 1; }
grep -q "(256 train / 5000 validation" "$run/resume.log" || { echo "FAIL: --resume did not keep --train-limit"; cat "$run/resume.log"; exit 1; }
[[ $(wc -l < "$run/copy/metrics.jsonl") == 3 ]] || { echo "FAIL: metrics.jsonl does not hold 3 epochs"; exit 1; }
echo "ok: --resume kept the run's options and went on to epoch 3"

if ! python=$(bash tools/figures_python.sh); then
  echo "skipped: no python3 with numpy and matplotlib (EQUIVAE_WITH_FIGURES=1 bash tools/setup.sh installs them)"
  exit 77
fi
$python tools/figures.py "$run/run" --method pca

# Both PNGs exist, with the sizes their figure sizes give at 110 dpi.
$python - "$run/run" <<'PY'
import struct, sys
for name, size in [("learning_curves.png", (1760, 396)), ("latents.png", (1320, 616))]:
    with open(f"{sys.argv[1]}/{name}", "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{name} is not a PNG"
    got = struct.unpack(">II", head[16:24])
    assert got == size, f"{name} is {got}, expected {size}"
    print(f"ok: {name} {got[0]}x{got[1]}")
PY

# Broken run folders: each must fail, naming the file and the problem.
expect_failure() {  # <folder> <text the message must hold>
  if $python tools/figures.py "$1" --method pca > "$run/out.log" 2>&1; then
    echo "FAIL: figures.py accepted $1"; exit 1
  fi
  grep -qF "$2" "$run/out.log" || { echo "FAIL: message lacks '$2':"; cat "$run/out.log"; exit 1; }
  echo "ok: refused ($2)"
}
mkdir "$run/broken"
expect_failure "$run/missing" "is not a folder"
expect_failure "$run/broken" "metrics.jsonl not found"
cp "$run/run/metrics.jsonl" "$run/broken/"
echo "{not json" >> "$run/broken/metrics.jsonl"
expect_failure "$run/broken" "metrics.jsonl line 3 is not JSON"
cp "$run/run/metrics.jsonl" "$run/broken/"
expect_failure "$run/broken" "latents.tsv not found"
{ head -3 "$run/run/latents.tsv"; printf '1\tnan\t0\t0\t0\t0\t0\n'; } > "$run/broken/latents.tsv"
expect_failure "$run/broken" "latents.tsv: holds NaN or Inf"
{ head -3 "$run/run/latents.tsv"; printf '1\t0\t0\n'; } > "$run/broken/latents.tsv"
expect_failure "$run/broken" "latents.tsv: the number of columns changed"
echo "run_folder: all checks passed"
