#!/usr/bin/env bash
# CPU training speed of equivae against the current PyTorch from PyPI (bench/torch_peer.py: the
# same model, step and complementary-set scheme), eager and torch.compile, measured in the same
# run on the same cores, interleaved over ROUNDS rounds (the median of the rounds is reported).
#   ours:   train_mnist's own images/s (metrics.jsonl) over one epoch of TRAIN_LIMIT images
#   peer:   torch_peer.py, STEPS steps after a warm-up (compile: after compiling)
#   peak:   equivae_cpu_bench's FMA loop (12 chains of 256-bit FMAs per thread, all threads)
#   memory: max RSS (GNU time) of a batch-256 run of each
#   semi:   the semi-supervised step (--labels: a tenth of the TRAIN_LIMIT images labelled, the
#           rest unlabelled, batch SEMI_BATCH) of both, in the same rounds, in unlabelled images/s
#           (train_mnist's images_per_s of a --labels run; torch_peer.py --labels counts the same)
# The peer's venv (TORCH_VENV, default .venv-torch: torch and numpy from PyPI) is created on first
# use. Debian's python3-torch (1.13) is never used: its convolutions are several times slower than
# a current PyTorch's on this kind of CPU, so it is no peer.
#   THREADS (default: all cores) BATCHES ("32 128 512") ROUNDS (2) TRAIN_LIMIT (8192) STEPS (40)
#   OUT (runs/cpu_vs_torch): logs and summary.json
#   SEMI_BATCH (32)
#   BEFORE: another build's train_mnist (e.g. of an older commit), timed in the same rounds
#   ONLY_SEMI=1: the semi-supervised step only (no supervised batches, no max RSS)
#   M_MAX: complementary sets of m ~ U{1..M_MAX} on both sides (default: both programs' default,
#          train_mnist's recipe); more members mean more images through h per step
set -euo pipefail
cd "$(dirname "$0")/.."
build="${EQUIVAE_BUILD_DIR:-build}"
threads="${THREADS:-$(nproc)}"
batches="${BATCHES:-32 128 512}"
rounds="${ROUNDS:-2}"
limit="${TRAIN_LIMIT:-8192}"
steps="${STEPS:-40}"
out="${OUT:-runs/cpu_vs_torch}"
semi_batch="${SEMI_BATCH:-32}"
labels=$((limit / 100 * 10))
only_semi="${ONLY_SEMI:-0}"
m_max=(${M_MAX:+--m-max "$M_MAX"})
data="${EQUIVAE_DATA_DIR:-../shared/data/mnist}"
mkdir -p "$out"

venv="${TORCH_VENV:-.venv-torch}"
if ! "$venv/bin/python" -c "import torch, numpy" 2>/dev/null; then
  echo "cpu_vs_torch: creating $venv with torch and numpy from PyPI"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch numpy
fi
py="$venv/bin/python"
[[ -x /usr/bin/time ]] || { echo "cpu_vs_torch: needs GNU time (apt-get install time)"; exit 1; }

"$build/bench/equivae_cpu_bench" --threads "$threads" --no-convs --batch 32 --steps 3 > "$out/peak.txt"
cat "$out/peak.txt"

ours() {  # batch round [binary] -> images/s; SEMI=1: a --labels run (unlabelled images/s)
  local dir="$out/ours${SEMI:+-semi}${3:+-before}-b$1-r$2"
  rm -rf "$dir"
  "${3:-$build/train/train_mnist}" --train-limit "$limit" ${SEMI:+--labels $labels} --epochs 1 --double-every 0 \
    --batch-size "$1" --max-batch-size "$1" --classifier-epochs 0 --threads "$threads" --no-progress --out "$dir" \
    "${m_max[@]}" > "$dir.log" 2>&1
  "$py" -c "import json; print(json.loads(open('$dir/metrics.jsonl').readline())['images_per_s'])"
}
peer() {  # batch round mode -> images/s; SEMI=1: the semi-supervised step
  local flag="" name="torch${SEMI:+-semi}-$3-b$1-r$2"
  [[ "$3" == compile ]] && flag="--compile"
  "$py" bench/torch_peer.py --threads "$threads" --batch-size "$1" --steps "$steps" --data-dir "$data" $flag \
    ${SEMI:+--labels $labels} "${m_max[@]}" 2> "$out/$name.err" | tee "$out/$name.json" |
    "$py" -c "import json, sys; print(json.loads(sys.stdin.read())['images_per_s'])"
}

results="$out/rows.tsv" semi_results="$out/semi.tsv"
: > "$results"
: > "$semi_results"
for r in $(seq 1 "$rounds"); do
  if [[ "$only_semi" != 1 ]]; then
    for b in $batches; do
      o=$(ours "$b" "$r"); e=$(peer "$b" "$r" eager); c=$(peer "$b" "$r" compile)
      before=0
      [[ -n "${BEFORE:-}" ]] && before=$(ours "$b" "$r" "$BEFORE")
      printf "%s\t%s\t%s\t%s\t%s\t%s\n" "$b" "$r" "$o" "$e" "$c" "$before" | tee -a "$results"
    done
  fi
  # The semi-supervised step, in the same round.
  o=$(SEMI=1 ours "$semi_batch" "$r"); e=$(SEMI=1 peer "$semi_batch" "$r" eager)
  c=$(SEMI=1 peer "$semi_batch" "$r" compile)
  before=0
  [[ -n "${BEFORE:-}" ]] && before=$(SEMI=1 ours "$semi_batch" "$r" "$BEFORE")
  printf "semi\t%s\t%s\t%s\t%s\t%s\t%s\n" "$semi_batch" "$r" "$o" "$e" "$c" "$before" | tee -a "$semi_results"
done

# Max RSS of a batch-256 run of each (KiB).
for f in ours torch before; do echo 0 > "$out/rss-$f.txt"; done
if [[ "$only_semi" != 1 ]]; then
rm -rf "$out/rss"
/usr/bin/time -f %M -o "$out/rss-ours.txt" "$build/train/train_mnist" --train-limit 2048 --epochs 1 --double-every 0 \
  --batch-size 256 --classifier-epochs 0 --threads "$threads" --no-progress --out "$out/rss" > /dev/null 2>&1
/usr/bin/time -f %M -o "$out/rss-torch.txt" "$py" bench/torch_peer.py --threads "$threads" --batch-size 256 \
  --steps 8 --data-dir "$data" > /dev/null 2>&1
if [[ -n "${BEFORE:-}" ]]; then
  rm -rf "$out/rss-before"
  /usr/bin/time -f %M -o "$out/rss-before.txt" "$BEFORE" --train-limit 2048 --epochs 1 --double-every 0 \
    --batch-size 256 --classifier-epochs 0 --threads "$threads" --no-progress --out "$out/rss-before" > /dev/null 2>&1
fi
fi

"$py" - "$results" "$out/peak.txt" "$semi_results" "$out/rss-ours.txt" "$out/rss-torch.txt" "$out/rss-before.txt" \
  "$out/summary.json" <<'PY'
import json, re, statistics, sys
rows, peak_txt, semi_rows, rss_ours, rss_torch, rss_before, summary = sys.argv[1:]
text = open(peak_txt).read()
peak = float(re.search(r"([0-9.]+) on \d+ threads", text).group(1))
flop = float(re.search(r"FLOP per trained image .*: ([0-9.]+) M", text).group(1)) * 1e6
by_batch = {}
for line in open(rows):
    b, _, o, e, c, before = line.split()
    by_batch.setdefault(int(b), []).append((float(o), float(e), float(c), float(before)))
out = {"peak_gflops": peak, "flop_per_image": flop, "batches": {}}
print(f"\nmedian over rounds; peak {peak:.1f} GFLOP/s (FMA loop), {flop / 1e6:.1f} MFLOP per image")
print(f"{'batch':>6} {'equivae':>9} {'eager':>9} {'compile':>9} {'vs eager':>9} {'vs compile':>11} {'peak':>6} {'before':>8}")
for b in sorted(by_batch):
    o, e, c, before = (statistics.median(x[i] for x in by_batch[b]) for i in range(4))
    frac = o * flop / 1e9 / peak
    out["batches"][b] = {"equivae": o, "torch_eager": e, "torch_compile": c, "ratio_eager": o / e,
                         "ratio_compile": o / c, "fraction_of_peak": frac}
    if before:
        out["batches"][b]["before"] = before
    print(f"{b:>6} {o:>9.0f} {e:>9.0f} {c:>9.0f} {o / e:>8.2f}x {o / c:>10.2f}x {100 * frac:>5.0f}% {before:>8.0f}")
semi = [[float(v) for v in line.split()[3:]] for line in open(semi_rows)]
o, e, c, before = (statistics.median(x[i] for x in semi) for i in range(4))
semi_batch = int(open(semi_rows).readline().split()[1])
out["semi_supervised_unlabelled_images_per_s"] = {"equivae": o, "torch_eager": e, "torch_compile": c,
                                                  "ratio_eager": o / e, "ratio_compile": o / c, "before": before,
                                                  "batch_size": semi_batch}
print(f"semi-supervised step (a tenth labelled, batch {semi_batch}),"
      f" unlabelled images/s: equivae {o:.0f}, eager {e:.0f}, compile {c:.0f}: {o / e:.2f}x eager, {o / c:.2f}x compile"
      f" (before: {before:.0f})")
rss = {k: int(open(f).read().split()[-1]) for k, f in (("equivae", rss_ours), ("torch", rss_torch), ("before", rss_before))}
if rss["equivae"]:  # not measured under ONLY_SEMI=1
    out["max_rss_kib_batch256"] = rss
    print(f"max RSS at batch 256: equivae {rss['equivae'] / 1024:.0f} MiB, PyTorch {rss['torch'] / 1024:.0f} MiB, "
          f"before {rss['before'] / 1024:.0f} MiB")
json.dump(out, open(summary, "w"), indent=1)
PY
