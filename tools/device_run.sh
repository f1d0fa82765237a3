#!/usr/bin/env bash
# Runs on the lent GPU machine over a carried build-device/ (tools/device_bundle.sh): the GPU
# parity suite, the kernel benchmark, the whole-step speed against PyTorch on the same GPU, and
# optionally the paper's MNIST schedule over seeds. Everything it writes goes to $OUT.
#   SEEDS=3 bash tools/device_run.sh     # also train 40 epochs for seeds 1..3
set -uo pipefail
cd "$(dirname "$0")/.."
dir=build-device
export LD_LIBRARY_PATH="$PWD/$dir/lib:${LD_LIBRARY_PATH:-}"
out="${OUT:-/tmp/equivae-device}"
mkdir -p "$out"
mnist="${MNIST_DIR:-../shared/data/mnist}"
[[ -d "$mnist" || ! -d shared/data/mnist ]] || mnist=shared/data/mnist
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
"$dir/tests/gpu/equivae_gpu_tests" 2>&1 | tee "$out/parity.txt" | tail -5
"$dir/bench/equivae_bench" --json "$out/bench.json" 2>&1 | tee "$out/bench.txt" | tail -40
for b in 64 512; do
  python3 bench/torch_peer.py --device cuda --batch-size "$b" --steps 200 --warmup 20 \
    --data-dir "$mnist" 2>&1 | tee -a "$out/torch_peer.txt"
done
for seed in $(seq 1 "${SEEDS:-0}"); do
  "$dir/train/train_mnist" --device cuda --data-dir "$mnist" --epochs 40 --seed "$seed" --out "$out/mnist40-seed$seed" --no-progress \
    2>&1 | tail -4
done
if [[ "${SEEDS:-0}" -gt 0 ]]; then python3 tools/seeds.py --collect-only --seeds "$SEEDS" --out "$out"; fi
