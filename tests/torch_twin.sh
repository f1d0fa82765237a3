#!/usr/bin/env bash
# ctest torch_twin: tools/equivae_torch.py, built from real checkpoints alone, gives the engine's
# r, the mean and log-variance of q(v | r, x) and the reconstruction (equivae_embed --images
# --reconstruction) to 1e-4, on two runs: MNIST (Bernoulli) and a folder of RGB PNGs of mixed
# sizes resized to 12 pixels (--likelihood gaussian, standardised). Needs MNIST.
#   tests/torch_twin.sh <train_mnist> <equivae_embed>      (run from the repository root)
# Exits 77 (ctest: skipped) when no python3 has torch and numpy (Debian: python3-torch).
set -euo pipefail
train=$1 embed=$2
python=
for candidate in python3 /usr/bin/python3; do
  if "$candidate" -c "import torch, numpy" 2>/dev/null; then python=$candidate; break; fi
done
[[ -n "$python" ]] || { echo "skipped: no python3 with torch and numpy (apt-get install python3-torch)"; exit 77; }
run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
small=(--filters 4 4 8 8 8 --hidden 16 --d-r 4 --d-v 3 --classifier-epochs 0 --no-progress --epochs 1)

"$train" --train-limit 256 "${small[@]}" --out "$run/mnist" > "$run/mnist.log" 2>&1 || { cat "$run/mnist.log"; exit 1; }

# A folder data set: 3 classes of RGB PNGs of two sizes, and a stray text file.
$python - "$run/images" <<'PY'
import struct, sys, zlib, os
import numpy as np
def png(path, pixels):  # pixels: h x w x 3 uint8
    h, w, _ = pixels.shape
    raw = b"".join(b"\0" + pixels[y].tobytes() for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
rng = np.random.default_rng(0)
for c, name in enumerate(["circle", "square", "stripe"]):
    os.makedirs(f"{sys.argv[1]}/{name}")
    for i in range(60):
        size = 12 if i % 2 else 16
        base = np.zeros((size, size, 3)); base[..., c] = 200
        png(f"{sys.argv[1]}/{name}/{i:02d}.png", np.clip(base + rng.integers(0, 55, (size, size, 3)), 0, 255).astype(np.uint8))
open(f"{sys.argv[1]}/circle/notes.txt", "w").write("not an image")
PY
"$train" --dataset folder --data-dir "$run/images" --image-size 12 --likelihood gaussian "${small[@]}" --batch-size 16 \
  --out "$run/folder" > "$run/folder.log" 2>&1 || { cat "$run/folder.log"; exit 1; }
grep -q "skipped 1 file(s)" "$run/folder.log" || { echo "FAIL: the stray notes.txt was not counted"; cat "$run/folder.log"; exit 1; }

for name in mnist folder; do
  "$embed" "$run/$name/checkpoint.safetensors" --split validation --images --reconstruction --out "$run/$name.npz" \
    > "$run/embed-$name.log" 2>&1 || { cat "$run/embed-$name.log"; exit 1; }
  PYTHONPATH=tools $python - "$run/$name/checkpoint.safetensors" "$run/$name.npz" <<'PY'
import sys
import numpy as np
import torch
import equivae_torch
model = equivae_torch.load(sys.argv[1])
e = np.load(sys.argv[2])
x = torch.from_numpy(e["x"])
with torch.no_grad():
    r = model.represent(x)
    mu, logvar = model.encode_v(x, r)
    recon = model.decode(r, mu)
worst = 0.0
for name, ours in [("r", r), ("v_mean", mu), ("v_logvar", logvar), ("reconstruction", recon)]:
    engine = torch.from_numpy(e[name])
    assert engine.shape == ours.shape, f"{name}: engine {tuple(engine.shape)}, torch {tuple(ours.shape)}"
    # 1e-4 of the value plus 1e-4: float32 sums in another order.
    err = ((ours - engine).abs() / (1e-4 + 1e-4 * engine.abs())).max().item()
    print(f"{sys.argv[2]}: {name} {tuple(engine.shape)}: worst error {err:.3f} of the 1e-4 bound")
    assert err <= 1.0, f"{name} differs beyond 1e-4"
    worst = max(worst, err)
assert r.abs().max() > 1e-3 and recon.std() > 1e-3, "a constant output proves nothing"
assert list(model.classes) == list(e["classes"]), f"classes {model.classes} vs {e['classes']}"
print(f"ok: torch twin of {sys.argv[1]} ({model.config['likelihood']}) matches, classes {list(e['classes'])}")
PY
done
echo "torch_twin: all checks passed"
