#!/usr/bin/env python3
"""Runs a training binary over N seeds and prints each test error as mean +/- s.e.m.
(standard error of the mean = sample std / sqrt(N), as SPEC.md section 4 reports them).

  python3 tools/seeds.py --seeds 5 --out runs/mnist-5seeds -- build/train/train_mnist --epochs 40
  python3 tools/seeds.py --seeds 3 --out runs/x --collect-only   # just aggregate finished runs
"""
import argparse
import json
import math
import os
import subprocess
import sys


def mean_sem(xs):
    """Mean and standard error of the mean (sample std / sqrt(n)); the s.e.m. is None for n < 2."""
    mean = sum(xs) / len(xs)
    sem = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1) / len(xs)) if len(xs) > 1 else None
    return mean, sem


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--out", required=True, help="each seed runs in OUT/seed<k>")
    ap.add_argument("--collect-only", action="store_true")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- binary and its arguments")
    a = ap.parse_args()
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    results = []
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        run = os.path.join(a.out, f"seed{seed}")
        if not a.collect_only:
            if not command:
                sys.exit("seeds: give the training command after --")
            subprocess.run(command + ["--seed", str(seed), "--out", run, "--resume", "auto"], check=True)
        with open(os.path.join(run, "results.json")) as f:
            results.append(json.load(f))
    keys = sorted({k for r in results for k in r if k.startswith("test_error")})
    summary = {"seeds": len(results)}
    for k in keys:
        xs = [100 * r[k] for r in results if k in r]
        mean, sem = mean_sem(xs)
        sem = float("nan") if sem is None else sem
        summary[k] = {"mean_percent": mean, "sem_percent": sem, "values_percent": xs}
        print(f"{k}: {mean:.2f} +/- {sem:.2f} % over {len(xs)} seeds ({', '.join(f'{x:.2f}' for x in xs)})")
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
