#!/usr/bin/env bash
# CPU training speed of equivae against the PyTorch peer (bench/torch_peer.py: same model, same
# step), measured one after the other in one run on the same cores. Ours: one full MNIST epoch
# (55,000 images, batch 32) from train_mnist's own log, with validation and test error; the
# peer: --steps batch-32 steps after a warm-up. Needs Debian's python3-torch
# (EQUIVAE_WITH_PYTHON=1 bash tools/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${EQUIVAE_BUILD_DIR:-build}"
threads="${THREADS:-$(nproc)}"
out="${OUT:-runs/cpu_vs_torch}"
python=python3
$python -c "import torch" 2>/dev/null || python=/usr/bin/python3

start=$(date +%s)
"$build/train/train_mnist" --epochs 1 --out "$out" --threads "$threads" --classifier-epochs 0 --no-progress
ours=$($python -c "import json; print(json.loads(open('$out/metrics.jsonl').readline())['images_per_s'])")
echo "equivae: one epoch in $(( $(date +%s) - start )) s wall (training and evaluation), $ours images/s training"
peer=$($python bench/torch_peer.py --threads "$threads" --steps "${STEPS:-300}" --data-dir ../shared/data/mnist)
echo "pytorch: $peer"
$python - "$ours" "$peer" <<'PY'
import json, sys
ours, peer = float(sys.argv[1]), json.loads(sys.argv[2])["images_per_s"]
print(f"ratio equivae / pytorch images/s: {ours / peer:.2f} ({ours:.0f} vs {peer:.0f})")
PY
