#!/usr/bin/env bash
# The table runners (tools/table1.py; tools/table2.py shares tools/run_table.py): a real tiny
# table 1 of one seed, started again (the finished runs are skipped, not redone) and again without
# its run folders (the recorded runs are kept), then with another m_max (only EquiVAE runs
# again), one kind of run alone (--only), table 2's runner likewise, a benchmark run
# continued from its checkpoint, then the
# statistics of the collected table on fabricated run folders of known test errors, and a broken
# results.json refused by name. Usage: table_runners.sh TRAIN_MNIST
set -euo pipefail
train_mnist=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

quick=(python3 tools/table1.py --quick --seeds 1 --train-limit 500 --threads 1 --binary "$train_mnist"
       --runs "$work/t1" -- --classifier-epochs 1)
"${quick[@]}" > "$work/first.txt"
"${quick[@]}" > "$work/second.txt"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
t = json.load(open(f"{work}/t1/table1.json"))
assert t["pending_seeds"] == [], t["pending_seeds"]
for key in ("distance", "dense", "benchmark"):
    assert len(t[key]["seeds"]) == 1 and t[key]["seeds"][0] == t[key]["mean"] and 0 <= t[key]["mean"] <= 100, (key, t[key])
for folder in ("seed1", "benchmark/seed1"):
    ledger = json.load(open(f"{work}/t1/{folder}/runner.json"))
    assert len(ledger["invocations"]) == 1, (folder, ledger)  # the second invocation skipped it
assert "table1: " not in open(f"{work}/second.txt").read()
assert "| distance on r (0 parameters) |" in open(f"{work}/t1/results.md").read()
PY

# The table survives its run folders (a new machine): recorded runs are kept, not run again.
rm -rf "$work/t1/seed1" "$work/t1/benchmark"
"${quick[@]}" > "$work/third.txt"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
assert "table1: " not in open(f"{work}/third.txt").read()  # nothing was run again
t = json.load(open(f"{work}/t1/table1.json"))
assert t["pending_seeds"] == [] and len(t["distance"]["seeds"]) == 1, t
PY

# A recipe that changes only EquiVAE's own options (here m_max) runs EquiVAE again and keeps the
# benchmark runs the earlier table records.
mkdir -p "$work/t1-avg" && cp "$work/t1/table1.json" "$work/t1-avg/table1.json"
python3 tools/table1.py --quick --seeds 1 --train-limit 500 --threads 1 --binary "$train_mnist" --runs "$work/t1-avg" \
  -- --classifier-epochs 1 --m-max 2 > "$work/avg.txt"
grep -q -- "--m-max 2" "$work/avg.txt"
if grep -q -- "--benchmark" "$work/avg.txt"; then echo "tools/table1.py ran a recorded benchmark run again"; exit 1; fi
python3 - "$work" <<'PY'
import json, sys
t = json.load(open(f"{sys.argv[1]}/t1-avg/table1.json"))
assert len(t["distance"]["seeds"]) == 1 and len(t["benchmark"]["seeds"]) == 1 and t["pending_seeds"] == [], t
assert "--m-max" in t["recipe"]["train_mnist"] and "--m-max" not in t["recipe"]["benchmark"], t["recipe"]
PY

# --only benchmark runs the benchmark alone, with the weight averaging it reads; the seed stays pending.
python3 tools/table1.py --quick --seeds 1 --train-limit 500 --threads 1 --binary "$train_mnist" --runs "$work/t1-only" \
  --only benchmark -- --classifier-epochs 1 --average-from 1 > "$work/only.txt"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
ran = [line for line in open(f"{work}/only.txt") if line.startswith("table1: ")]
assert len(ran) == 1 and "--benchmark" in ran[0] and "--average-from 1" in ran[0], ran
t = json.load(open(f"{work}/t1-only/table1.json"))
assert t["pending_seeds"] == [1] and t["distance"]["seeds"] == [] and len(t["benchmark"]["seeds"]) == 1, t
metrics = [json.loads(line) for line in open(f"{work}/t1-only/benchmark/seed1/metrics.jsonl")]
assert [m["epoch"] for m in metrics] == [1] and "averaged_error" in metrics[0]["validation"], metrics
PY

# tools/table2.py keeps a recorded row the same way (its two runs side by side, --jobs 2).
t2=(python3 tools/table2.py --quick --rows 100 --jobs 2 --threads 1 --binary "$train_mnist" --runs "$work/t2" --json "$work/t2/t.json"
    --md "$work/t2/r.md")
"${t2[@]}" > /dev/null
python3 - "$work/t2/100/seed1/equivae" <<'PY'
import json, sys
run = sys.argv[1]
# q(y|x)'s validation confusion is of the parameters chosen on validation: its error is their error
r = json.load(open(f"{run}/results.json"))
counts = r["validation_confusion_classifier"]
assert len(counts) == 100 and sum(counts) == 5000, counts
assert abs(r["validation_error_classifier"] - r["best_validation_error"]) < 1e-12, r
assert abs(1 - sum(counts[k * 11] for k in range(10)) / 5000 - r["validation_error_classifier"]) < 1e-12, r
assert open(f"{run}/confusion_validation.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n", "no validation confusion PNG"
PY
# tools/class_marginal.py reads each epoch's confusion: the predicted shares of one epoch sum to 100 %
python3 tools/class_marginal.py "$work/t2/100/seed1/equivae" > "$work/marginal.txt"
python3 - "$work/marginal.txt" "$work/t2/100/seed1/equivae/metrics.jsonl" <<'PY'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip().startswith("epoch")]
metrics = [json.loads(l) for l in open(sys.argv[2])]
assert len(lines) == len(metrics) == 1, (lines, metrics)
shares = [float(w) for w in lines[0].split("predicted %")[1].split()]
assert len(shares) == 10 and abs(sum(shares) - 100) < 0.6, shares
assert f"error {100 * metrics[0]['validation']['classifier_error']:6.2f} %" in lines[0], lines[0]
PY
# A run folder made with another recipe (its ledger's command) is refused when a table is collected,
# not read as this recipe's seed.
if "${t2[@]}" --collect-only --m-max 100=3 2> "$work/err.txt"; then
  echo "tools/table2.py collected a run of m_max 7 as m_max 3"; exit 1
fi
grep -q "$work/t2/100/seed1/equivae was run as" "$work/err.txt"
rm -rf "$work/t2/100"
"${t2[@]}" > "$work/t2.txt"
if grep -q "^table2: " "$work/t2.txt"; then echo "tools/table2.py ran a recorded run again"; exit 1; fi
# ... and so it does under another --runs folder: --out says where a run lives, not what it computes.
python3 tools/table2.py --quick --rows 100 --jobs 2 --threads 1 --binary "$train_mnist" --runs "$work/t2-moved" \
  --json "$work/t2/t.json" --md "$work/t2/r.md" > "$work/t2-moved.txt"
if grep -q "^table2: " "$work/t2-moved.txt"; then echo "tools/table2.py ran a recorded run again under another --runs"; exit 1; fi
python3 - "$work" <<'PY'
import json, sys
t = json.load(open(f"{sys.argv[1]}/t2/t.json"))["100"]
assert [r["seed"] for r in t["equivae"]["seeds"]] == [1] and [r["seed"] for r in t["benchmark"]["seeds"]] == [1], t
# the EquiVAE run's training seconds (its epochs' sum), beside the ledger's wall time
assert t["equivae"]["seeds"][0]["train_seconds"] > 0 and t["benchmark"]["seeds"][0]["train_seconds"] is None, t
PY

# --unlabelled-sets all reaches the EquiVAE runs only; the default is left unsaid, so that the runs
# recorded before the option still match their commands.
python3 - <<'PY'
import sys
sys.path.insert(0, "tools")
import table2
for given in ([], ["--unlabelled-sets", "random"], ["--unlabelled-sets", "all"]):
    sys.argv = ["table2.py", "--binary", "train_mnist"] + given
    (_, equivae, _), (_, benchmark, _) = table2.commands(table2.parse(), 100, 1)
    flags = [w for i, w in enumerate(equivae) if equivae[i - 1] == "--unlabelled-sets"]
    assert flags == (["all"] if "all" in given else []), equivae
    assert "--unlabelled-sets" not in benchmark, benchmark
PY

# --teacher-warmup reaches the EquiVAE runs of the rows it names only, unsaid when off; by default
# 2 epochs for the 100-label row only.
python3 - <<'PY'
import sys
sys.path.insert(0, "tools")
import table2
for given, expected in (([], {100: ["2"], 600: []}), (["--teacher-warmup", "100=3"], {100: ["3"], 600: []}),
                        (["--teacher-warmup", "0"], {100: [], 600: []}),
                        (["--teacher-warmup", "600=1"], {100: ["2"], 600: ["1"]})):
    sys.argv = ["table2.py", "--binary", "train_mnist"] + given
    a = table2.parse()
    for labels in (100, 600):
        (_, equivae, _), (_, benchmark, _) = table2.commands(a, labels, 1)
        assert [w for i, w in enumerate(equivae) if equivae[i - 1] == "--teacher-warmup"] == expected[labels], (given, equivae)
        assert "--teacher-warmup" not in benchmark, benchmark
PY

# --average-from last-batch starts the mean at the first epoch of the batch schedule's last size
# (doubling every 10 epochs, 32 to 256): 11 / 21 / 21 / 31 for the paper's 20 / 25 / 30 / 35 epochs,
# 31 for 40 and for 50.
python3 - <<'PY'
import sys
sys.path.insert(0, "tools")
from table2 import last_batch_size_epoch
got = {e: last_batch_size_epoch(e) for e in (1, 10, 11, 20, 25, 30, 35, 40, 50)}
assert got == {1: 1, 10: 1, 11: 11, 20: 11, 25: 21, 30: 21, 35: 31, 40: 31, 50: 31}, got
PY

# A benchmark run continues from its last epoch's checkpoint (what the runners rely on), and its
# checkpoint is refused where an EquiVAE model is expected.
bench=("$train_mnist" --benchmark --train-limit 500 --threads 1 --no-progress --seed 1 --out "$work/bench")
"${bench[@]}" --epochs 1 > /dev/null 2>&1
"${bench[@]}" --epochs 2 --resume auto > "$work/bench.txt" 2>&1
grep -q "continuing the benchmark classifier of $work/bench/checkpoint.safetensors" "$work/bench.txt"
python3 -c "import json, sys; r = json.load(open(sys.argv[1])); assert r['epochs'] == 2, r" "$work/bench/results.json"
if "$train_mnist" --evaluate "$work/bench/best.safetensors" --out "$work/bench-eval" 2> "$work/err.txt"; then
  echo "--evaluate accepted a benchmark classifier's checkpoint"; exit 1
fi
grep -q "a benchmark classifier's checkpoint" "$work/err.txt"

# Three fabricated seeds: distance 1.0 / 1.2 / 1.4 %, so mean 1.2, s.e.m. 0.2 / sqrt(3).
fake="$work/fake"
for s in 1 2 3; do
  mkdir -p "$fake/seed$s" "$fake/benchmark/seed$s"
  python3 - "$fake" "$s" <<'PY'
import json, sys
fake, s = sys.argv[1], int(sys.argv[2])
json.dump({"test_error_distance": (0.8 + 0.2 * s) / 100, "test_error_neural": 0.01, "best_epoch": 30 + s,
           "best_validation_error": 0.011, "parameters": 516353,
           "dead_units": {"h": {"fraction": 0.1}, "g": {"fraction": 0.2}}}, open(f"{fake}/seed{s}/results.json", "w"))
json.dump({"test_error": 0.009, "validation_error": 0.01, "best_epoch": 7}, open(f"{fake}/benchmark/seed{s}/results.json", "w"))
PY
done
python3 tools/table1.py --collect-only --seeds 3 --runs "$fake" --json "$fake/t.json" --md "$fake/r.md" > /dev/null
python3 - "$fake" <<'PY'
import json, math, sys
t = json.load(open(f"{sys.argv[1]}/t.json"))
assert t["distance"]["seeds"] == [1.0, 1.2, 1.4], t["distance"]
assert abs(t["distance"]["mean"] - 1.2) < 1e-9 and abs(t["distance"]["sem"] - 0.2 / math.sqrt(3)) < 1e-4, t["distance"]
assert t["benchmark"]["mean"] == 0.9 and t["benchmark"]["sem"] == 0.0, t["benchmark"]
assert [r["best_epoch"] for r in t["equivae_runs"]] == [31, 32, 33]
PY
echo '{"best_epoch": 3}' > "$fake/seed2/results.json"
if python3 tools/table1.py --collect-only --seeds 3 --runs "$fake" --json "$fake/t.json" --md "$fake/r.md" 2> "$work/err.txt"; then
  echo "a results.json without test_error_distance was accepted"; exit 1
fi
grep -q "$fake/seed2/results.json has no 'test_error_distance'" "$work/err.txt"
echo "table runners: ok"
