#!/usr/bin/env bash
# ctest run_folder: a real, tiny train_mnist run folder (needs MNIST), then
#  - `train_mnist --evaluate` of its best checkpoint (the epoch the run evaluates), with no
#    architecture flags, gives the run's own test error (seed, epochs and model come from it);
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
"$train" --evaluate "$run/run/best.safetensors" --train-limit 256 --classifier-epochs 0 --no-progress \
  --out "$run/evaluated" > "$run/evaluate.log" 2>&1 || { cat "$run/evaluate.log"; exit 1; }
trained=$(grep "^test error (distance" "$run/train.log")
evaluated=$(grep "^test error (distance" "$run/evaluate.log")
[[ -n "$trained" && "$trained" == "$evaluated" ]] || { echo "FAIL: trained '$trained', evaluated '$evaluated'"; exit 1; }
grep -q "seed 3$" "$run/evaluate.log" || { echo "FAIL: --evaluate did not take the checkpoint's seed"; exit 1; }
echo "ok: --evaluate gives the run's $trained"

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
