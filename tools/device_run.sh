#!/usr/bin/env bash
# Runs on the lent GPU machine over a carried build-device/ (made here by tools/device_bundle.sh).
# Stages, each sized to fit the device tool's 10-minute limit per command (docs/gpu_session.md):
#
#   bash tools/device_run.sh check   # nvidia-smi, library resolution (ldd), GPU parity suite,
#                                    # kernel benchmark (--json), 1-epoch train_mnist smoke test
#   bash tools/device_run.sh peer    # bench/torch_peer.py --device cuda at batch 64 and 512
#   bash tools/device_run.sh train   # train_mnist --device cuda, EPOCHS (40) epochs, SEEDS seeds
#                                    # in parallel on the one GPU, then tools/seeds.py's summary
#   bash tools/device_run.sh check peer     # several stages in one call; "all" = check peer train
# The stage list may also come from STAGE="check peer". Default: check.
#
# Everything worth keeping goes to $OUT (default build-device-out/), few files, no sub-folders:
#   device_run.txt     this script's whole output (every stage)
#   parity.txt bench.txt bench.json          (check)
#   peer.txt           one JSON line per batch size (peer)
#   summary.json       seeds.py's mean +/- s.e.m. (train, when every seed finished)
#   <RUN_NAME>.tar.gz  the run folders <RUN_NAME>/seed<k>/ (results.json, metrics.jsonl, train.log,
#                      figures; no checkpoints unless INCLUDE_CHECKPOINTS=1); unpack it and
#                      `python3 tools/seeds.py --collect-only --seeds N --out <RUN_NAME>` works
#   resume-seed<k>.tar.gz  a seed that did not finish within TRAIN_BUDGET_S, with its checkpoint
#
# Training settings (environment):
#   SEEDS=3 FIRST_SEED=1 EPOCHS=40 TRAIN_ARGS="--filters 32 32 64 64 64"  (extra train_mnist flags)
#   RUN_NAME (default mnist<EPOCHS>, plus the TRAIN_ARGS as a tag: mnist40-filters-32-32-64-64-64)
#   TRAIN_DEVICE=cuda      (cpu: only to try this script's flow on a machine without a GPU)
#   TRAIN_DIR=build-runs   where the run folders live on the device (git-ignored, not carried, so it
#                          survives between calls while the machine stays warm: a second `train`
#                          call resumes unfinished seeds from their checkpoints and skips finished ones)
#   TRAIN_BUDGET_S=510     training processes are stopped (SIGTERM) after this; the checkpoint of
#                          the last finished epoch stays
#   THREADS                CPU threads per training process (default: cores / SEEDS)
# Others: MNIST_DIR (default build-device/data/mnist), PYTHON (default: a python3 with torch),
#   PARITY_TIMEOUT_S=200 BENCH_TIMEOUT_S=240 SMOKE_TIMEOUT_S=120 PEER_TIMEOUT_S=130 PEER_STEPS=200
#
# Exit status: 0 all steps passed; 2 nothing failed but some steps found no GPU; 1 a step failed.
# A failing step never stops the others.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

bundle="build-device"
out="${OUT:-build-device-out}"
mkdir -p "$out"

# The binaries and their libraries come packed (build-device/payload.tar.gz, a third of the raw
# size, for the 64 MiB transfer limit); they are unpacked into build-device-run/ (git-ignored and
# not carried, so the carried folder stays as it came). An unpacked build-device/ works too.
bdir="$bundle" bins=() binlib=""
unpack() {
  if [[ -f "$bundle/payload.tar.gz" ]]; then
    bdir=build-device-run
    if rm -rf "$bdir" && mkdir -p "$bdir" && tar -xzf "$bundle/payload.tar.gz" -C "$bdir"; then
      note "unpacked $bundle/payload.tar.gz into $bdir/"
    else
      note "COULD NOT UNPACK $bundle/payload.tar.gz into $bdir/"
    fi
  fi
  bins=("$bdir/train/train_mnist" "$bdir/tests/gpu/equivae_gpu_tests" "$bdir/bench/equivae_bench")
  # Our binaries get LD_LIBRARY_PATH=$binlib (never exported: python/torch keep their own setup).
  binlib="$PWD/$bdir/lib"
}
statuses=()
worst=0  # 0 ok, 2 no GPU, 1 failure
note() { echo "device_run: $*"; }
record() {  # record STEP STATUS(ok|nogpu|fail|skip) TEXT
  statuses+=("$(printf '%-14s %-6s %s' "$1" "$2" "$3")")
  case "$2" in
    fail) worst=1 ;;
    nogpu) ((worst == 1)) || worst=2 ;;
  esac
}
hms() { date -u +%H:%M:%S; }

# ---- shared libraries -------------------------------------------------------------------------
libs_resolved=0

# Folders where the device may keep CUDA, cuBLAS and cuDNN: the toolkit, the distribution's, and
# the NVIDIA wheels of the PyTorch environment (nvidia/*/lib, nvidia/cu13/lib).
candidate_roots() {
  local d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib \
           /usr/lib/x86_64-linux-gnu /usr/local/cuda-13*/lib64 /usr/local/cuda-13*/targets/x86_64-linux/lib \
           /usr/lib/x86_64-linux-gnu/nvidia/current /usr/local/nvidia/lib64 /usr/lib64; do
    [[ -d "$d" ]] && echo "$d"
  done
  local py
  for py in "${PYTHON:-}" python3 /opt/torch/.venv/bin/python3; do
    [[ -n "$py" ]] && command -v "$py" >/dev/null 2>&1 || continue
    "$py" - 2>/dev/null <<'PY'
import os
try:
    import nvidia
    for p in nvidia.__path__:
        print(p)
except Exception:
    pass
try:
    import site
    for p in site.getsitepackages():
        if os.path.isdir(os.path.join(p, "nvidia")):
            print(os.path.join(p, "nvidia"))
except Exception:
    pass
PY
  done
  for d in /opt/torch/.venv /opt/conda; do [[ -d "$d" ]] && echo "$d"; done
}

# Every "not found" and "version ... not found" for the binaries (and for cuDNN's sub-libraries,
# which libcudnn loads with dlopen, once their folder is known).
ldd_problems() {
  local f
  for f in "${bins[@]}" "$@"; do
    [[ -e "$f" ]] || { echo "MISSING-FILE $f"; continue; }
    LD_LIBRARY_PATH="$binlib" ldd "$f" 2>&1 | sed -n -e "s|^[[:space:]]*\([^ ]*\) => not found|NOTFOUND \1|p" \
      -e "s|.*version \`\([^']*\)' not found.*|VERSION \1|p"
  done | sort -u
}

resolve_libs() {
  ((libs_resolved)) && return 0
  libs_resolved=1
  local problems name root hit roots=() sub=()
  problems=$(ldd_problems)
  # libstdc++ / libgcc_s: the device's own unless missing or too old, then the bundled ones.
  if grep -q -E 'NOTFOUND lib(stdc\+\+|gcc_s)|VERSION (GLIBCXX|CXXABI|GCC)_' <<<"$problems"; then
    binlib="$binlib:$PWD/$bdir/lib/compat"
    note "libstdc++/libgcc_s missing or too old on the device: using $bdir/lib/compat"
    problems=$(ldd_problems)
  fi
  if grep -q NOTFOUND <<<"$problems"; then
    mapfile -t roots < <(candidate_roots | awk '!seen[$0]++')
    note "searching for: $(awk '/NOTFOUND/ {printf "%s ", $2}' <<<"$problems")"
    note "in: ${roots[*]}"
    while read -r _ name; do
      for root in "${roots[@]}"; do
        hit=$(find -L "$root" -name "$name" -not -path "*/stubs/*" \( -type f -o -type l \) -print -quit 2>/dev/null)
        if [[ -n "$hit" ]]; then
          hit=$(dirname "$hit")
          if [[ ":$binlib:" != *":$hit:"* ]]; then binlib="$binlib:$hit"; fi
          note "$name -> $hit (added to LD_LIBRARY_PATH of the binaries)"
          break
        fi
      done
    done < <(grep NOTFOUND <<<"$problems")
  fi
  # cuDNN's sub-libraries (dlopen'ed) must resolve too: check those in the folder that has libcudnn.so.9.
  local cudnn_dir
  cudnn_dir=$(LD_LIBRARY_PATH="$binlib" ldd "$bdir/bench/equivae_bench" 2>/dev/null | awk '$1 ~ /^libcudnn\.so/ && $3 ~ /^\// {print $3}' | head -1)
  if [[ -n "$cudnn_dir" ]]; then
    cudnn_dir=$(dirname "$(readlink -f "$cudnn_dir")")
    [[ ":$binlib:" == *":$cudnn_dir:"* ]] || binlib="$binlib:$cudnn_dir"
    mapfile -t sub < <(find "$cudnn_dir" -maxdepth 1 -name 'libcudnn_*.so.[0-9]*' 2>/dev/null)
    problems=$(ldd_problems "${sub[@]}")
    if grep -q NOTFOUND <<<"$problems"; then  # e.g. libnvrtc for the runtime-compiled engines
      ((${#roots[@]})) || mapfile -t roots < <(candidate_roots | awk '!seen[$0]++')
      while read -r _ name; do
        for root in "${roots[@]}"; do
          hit=$(find -L "$root" -name "$name" -not -path "*/stubs/*" \( -type f -o -type l \) -print -quit 2>/dev/null)
          if [[ -n "$hit" ]]; then
            hit=$(dirname "$hit"); [[ ":$binlib:" == *":$hit:"* ]] || binlib="$binlib:$hit"
            note "$name (for cuDNN) -> $hit"; break
          fi
        done
      done < <(grep NOTFOUND <<<"$problems")
    fi
  else
    problems=$(ldd_problems)
  fi
  problems=$(ldd_problems "${sub[@]}")
  note "LD_LIBRARY_PATH for the binaries: $binlib"
  if [[ -n "$problems" ]]; then
    note "STILL UNRESOLVED (steps needing these will fail):"
    sed 's/^/    /' <<<"$problems"
    record libraries fail "unresolved: $(tr '\n' ' ' <<<"$problems")"
  else
    record libraries ok "every library of the binaries (and of cuDNN) resolves"
  fi
}

print_ldd() {
  local f
  for f in "${bins[@]}"; do
    echo "  $f:"
    LD_LIBRARY_PATH="$binlib" ldd "$f" 2>&1 | grep -E 'cud|cublas|nvrtc|stdc\+\+|gomp|not found|version' | sed 's/^[[:space:]]*/    /'
  done
}

# ---- helpers ----------------------------------------------------------------------------------
pick_python() {
  local py
  for py in "${PYTHON:-}" python3 /opt/torch/.venv/bin/python3 python; do
    [[ -n "$py" ]] && command -v "$py" >/dev/null 2>&1 || continue
    if "$py" -c 'import torch, numpy' >/dev/null 2>&1; then echo "$py"; return 0; fi
  done
  return 1
}

mnist_dir() {
  if [[ -n "${MNIST_DIR:-}" ]]; then echo "$MNIST_DIR"
  elif [[ -d "$bundle/data/mnist" ]]; then echo "$bundle/data/mnist"
  else echo ../shared/data/mnist; fi
}

# run_bin STEP TIMEOUT LOG BINARY ARGS...: one of our binaries with its libraries; output to LOG.
run_bin() {
  local step=$1 t=$2 log=$3
  shift 3
  LD_LIBRARY_PATH="$binlib" timeout -k 15 "$t" "$@" >"$log" 2>&1
}

# classify STEP RC LOG: the status of a finished binary step.
classify() {
  local step=$1 rc=$2 log=$3
  if ((rc == 0)); then record "$step" ok "passed"
  elif ((rc == 77)) || grep -q -i -E 'no (usable )?CUDA device|no CUDA-capable|CUDA driver version is insufficient|cudaErrorNoDevice' "$log"; then
    record "$step" nogpu "no GPU (rc $rc): $(grep -i -m1 -E 'no CUDA|cuda.*(device|driver)' "$log")"
  elif ((rc == 124 || rc == 137)); then record "$step" fail "timed out (rc $rc); partial output in $(basename "$log")"
  elif grep -q 'error while loading shared libraries' "$log"; then
    record "$step" fail "did not start: $(grep -m1 'error while loading shared libraries' "$log")"
  else record "$step" fail "rc $rc: $(grep -m1 -i -E 'error|fail' "$log" | cut -c1-160)"; fi
}

# ---- stage: check -----------------------------------------------------------------------------
stage_check() {
  note "[$(hms)] stage check"
  if command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv; then
    record nvidia-smi ok "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
  else
    record nvidia-smi nogpu "nvidia-smi missing or failed: no GPU visible"
  fi
  note "glibc $(ldd --version 2>/dev/null | head -1 | awk '{print $NF}'), $(nproc) cores, $(python3 --version 2>&1)"
  [[ -f "$bdir/MANIFEST.txt" ]] && head -4 "$bdir/MANIFEST.txt"
  resolve_libs
  print_ldd

  note "[$(hms)] GPU parity suite (timeout ${PARITY_TIMEOUT_S:-200} s)"
  run_bin parity "${PARITY_TIMEOUT_S:-200}" "$out/parity.txt" "$bdir/tests/gpu/equivae_gpu_tests"
  local rc=$?
  grep -E 'FAILED|failed|error' "$out/parity.txt" | head -20
  tail -4 "$out/parity.txt"
  classify parity "$rc" "$out/parity.txt"

  note "[$(hms)] kernel benchmark (timeout ${BENCH_TIMEOUT_S:-240} s)"
  run_bin bench "${BENCH_TIMEOUT_S:-240}" "$out/bench.txt" "$bdir/bench/equivae_bench" --json "$out/bench.json"
  rc=$?
  tail -60 "$out/bench.txt"
  classify bench "$rc" "$out/bench.txt"

  # A short real training run: does train_mnist work on the GPU, and how fast (to size `train`)?
  local smoke="${TRAIN_DIR:-build-runs}/smoke"
  rm -rf "$smoke"
  note "[$(hms)] train_mnist smoke test: 1 epoch on 11000 images, batch 32 (timeout ${SMOKE_TIMEOUT_S:-120} s)"
  run_bin smoke "${SMOKE_TIMEOUT_S:-120}" "$out/smoke.txt" "$bdir/train/train_mnist" --device cuda \
    --data-dir "$(mnist_dir)" --epochs 1 --train-limit 11000 --classifier-epochs 1 --no-progress --out "$smoke"
  rc=$?
  tail -8 "$out/smoke.txt"
  classify smoke "$rc" "$out/smoke.txt"
  if [[ -s "$smoke/metrics.jsonl" ]]; then
    python3 - "$smoke/metrics.jsonl" <<'PY' || true
import json, sys
m = json.loads(open(sys.argv[1]).readline())
ips = m["images_per_s"]
# the paper schedule: 10 epochs each at batch 32, 64, 128, 256; larger batches only get faster
print(f"device_run: smoke: {ips:.0f} images/s at batch 32 -> 40 epochs of 55,000 images take at most "
      f"{40 * 55000 / ips / 60:.1f} min of training alone (one process; evaluation extra)")
PY
  fi
  # smoke.txt is small; fold it into device_run.txt to keep $OUT's file count down
  rm -f "$out/smoke.txt"
}

# ---- stage: peer ------------------------------------------------------------------------------
stage_peer() {
  note "[$(hms)] stage peer: bench/torch_peer.py --device cuda"
  local py
  if ! py=$(pick_python); then
    record peer fail "no python3 with torch and numpy (set PYTHON)"
    return
  fi
  note "python: $py ($("$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -1))"
  local b steps warmup=20 rc log
  for b in ${PEER_BATCHES:-64 512}; do
    # torch_peer.py walks one permutation of 55,000 images without wrapping: keep (warmup + steps) * b <= 55,000
    steps=${PEER_STEPS:-200}
    if (((warmup + steps) * b > 55000)); then steps=$((55000 / b - warmup)); fi
    log=$(mktemp)
    timeout -k 15 "${PEER_TIMEOUT_S:-130}" "$py" bench/torch_peer.py --device cuda --batch-size "$b" --steps "$steps" \
      --warmup "$warmup" --threads "${PEER_THREADS:-4}" --data-dir "$(mnist_dir)" >"$log" 2>&1
    rc=$?
    tail -5 "$log"
    if ((rc == 0)) && grep -q '"images_per_s"' "$log"; then
      grep '"images_per_s"' "$log" >>"$out/peer.txt"
      record "peer b$b" ok "$(grep -o '"images_per_s": [0-9.]*' "$log" | tail -1)"
    elif grep -q -i -E 'no CUDA|CUDA driver|Found no NVIDIA|cuda.*not available|Torch not compiled with CUDA' "$log"; then
      record "peer b$b" nogpu "torch sees no GPU"
    else
      record "peer b$b" fail "rc $rc: $(grep -v '^ ' "$log" | tail -1 | cut -c1-160)"
    fi
    rm -f "$log"
  done
}

# ---- stage: train -----------------------------------------------------------------------------
stage_train() {
  local seeds=${SEEDS:-3} first=${FIRST_SEED:-1} epochs=${EPOCHS:-40}
  # a run name per setting, so that a resumed seed never meets a checkpoint of other flags
  local tag name budget=${TRAIN_BUDGET_S:-510} device=${TRAIN_DEVICE:-cuda}
  tag=$(tr -cs 'A-Za-z0-9.' '-' <<<"${TRAIN_ARGS:-}" | sed 's/^-*//; s/-*$//')
  name=${RUN_NAME:-mnist$epochs${tag:+-$tag}}
  local base=${TRAIN_DIR:-build-runs}
  local dir="$base/$name" threads=${THREADS:-$(( $(nproc) / seeds ))}
  ((threads >= 1)) || threads=1
  local extra=()
  read -r -a extra <<<"${TRAIN_ARGS:-}"
  note "[$(hms)] stage train: $name, seeds $first..$((first + seeds - 1)) in parallel, $epochs epochs, $threads CPU threads each, extra flags: ${extra[*]:-none}, budget $budget s, run folders in $dir"
  resolve_libs
  mkdir -p "$dir"
  local s run pids=() seed_of=() pid
  for ((s = first; s < first + seeds; ++s)); do
    run="$dir/seed$s"
    if [[ -f "$run/results.json" ]]; then note "seed $s: finished already (results.json), skipped"; continue; fi
    mkdir -p "$run"
    [[ -f "$run/checkpoint.safetensors" ]] && note "seed $s: resuming from its checkpoint"
    echo "== $(date -u) train_mnist --device $device --epochs $epochs --seed $s ${extra[*]}" >>"$run/train.log"
    LD_LIBRARY_PATH="$binlib" timeout -s TERM -k 20 "$budget" "$bdir/train/train_mnist" --device "$device" \
      --data-dir "$(mnist_dir)" --epochs "$epochs" --seed "$s" --out "$run" --resume auto --no-progress \
      --threads "$threads" "${extra[@]}" >>"$run/train.log" 2>&1 &
    pids+=("$!"); seed_of+=("$s")
  done
  # progress every 60 s: epochs done per seed
  local alive i n
  while :; do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 5
    if (( SECONDS % 60 < 5 )); then
      local line
      line="[$(hms)] epochs done:"
      for ((s = first; s < first + seeds; ++s)); do
        n=$(cat "$dir/seed$s/metrics.jsonl" 2>/dev/null | wc -l)
        line+=" seed$s=$n"
      done
      note "$line"
    fi
  done
  local rc
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}"; rc=$?
    s=${seed_of[$i]}
    tail -4 "$dir/seed$s/train.log" | sed "s/^/  seed $s: /"
    if ((rc == 0)); then record "train seed$s" ok "$(grep -m1 'test error (distance' "$dir/seed$s/train.log" | tail -1)"
    elif ((rc == 124 || rc == 137)); then
      record "train seed$s" fail "stopped at the $budget s budget after $(wc -l <"$dir/seed$s/metrics.jsonl" 2>/dev/null || echo 0) epochs: run the train stage again to resume"
    else classify "train seed$s" "$rc" "$dir/seed$s/train.log"; fi
  done

  local done_all=1
  for ((s = first; s < first + seeds; ++s)); do [[ -f "$dir/seed$s/results.json" ]] || done_all=0; done
  if ((done_all)); then
    python3 tools/seeds.py --collect-only --seeds "$seeds" --first-seed "$first" --out "$dir" &&
      cp "$dir/summary.json" "$out/summary.json"
  else
    note "not every seed finished: no summary yet"
  fi
  local excl=(--exclude='*.safetensors' --exclude='*.safetensors.tmp')
  [[ "${INCLUDE_CHECKPOINTS:-0}" == 1 ]] && excl=(--exclude='*.tmp')
  tar -czf "$out/$name.tar.gz" "${excl[@]}" -C "$base" "$name" && note "wrote $name.tar.gz ($(du -h "$out/$name.tar.gz" | cut -f1))"
  for ((s = first; s < first + seeds; ++s)); do
    if [[ ! -f "$dir/seed$s/results.json" && -f "$dir/seed$s/checkpoint.safetensors" ]]; then
      tar -czf "$out/resume-seed$s.tar.gz" --exclude='*.tmp' -C "$base" "$name/seed$s"
      note "seed $s unfinished: its checkpoint is in resume-seed$s.tar.gz (see docs/gpu_session.md to carry it back)"
    fi
  done
}

# ---- main -------------------------------------------------------------------------------------
main() {
  local stages=("$@")
  ((${#stages[@]})) || read -r -a stages <<<"${STAGE:-check}"
  local expanded=() st
  for st in "${stages[@]}"; do
    st=${st//,/ }
    for s in $st; do
      if [[ "$s" == all ]]; then expanded+=(check peer train); else expanded+=("$s"); fi
    done
  done
  note "[$(hms)] stages: ${expanded[*]}; output in $out"
  unpack
  for f in "${bins[@]}"; do [[ -x "$f" ]] || note "MISSING $f: carry build-device (tools/device_bundle.sh)"; done
  for st in "${expanded[@]}"; do
    case "$st" in
      check) stage_check ;;
      peer) stage_peer ;;
      train) stage_train ;;
      *) note "unknown stage '$st' (check, peer, train, all)"; record "$st" fail "unknown stage" ;;
    esac
  done
  echo
  note "[$(hms)] summary:"
  printf '  %s\n' "${statuses[@]}"
  local n
  n=$(find "$out" -type f | wc -l)
  ((n <= 8)) || note "WARNING: $n files under $out; the device tool returns at most 8"
  note "files in $out: $(cd "$out" && find . -type f | sed 's|^\./||' | sort | tr '\n' ' ')"
  return "$worst"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then  # (sourcing it, for a test, only defines the functions)
  main "$@" 2>&1 | tee -a "$out/device_run.txt"
  exit "${PIPESTATUS[0]}"
fi
