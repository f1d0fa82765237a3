#!/usr/bin/env python3
"""Per epoch of a semi-supervised run: q(y|x)'s validation error and the share of the validation
images it predicts for each class, from the confusion matrices in RUN/metrics.jsonl. A class that
q(y|x) has given up shows as a share near 0 (a balanced class has 1/K); `dropped` counts the
classes predicted for fewer than --floor of the images.

  python3 tools/class_marginal.py runs/table2/100/seed5/equivae [more run folders]
"""
import argparse
import json
import os
import sys


def epochs(folder):
    path = os.path.join(folder, "metrics.jsonl")
    try:
        lines = open(path).read().splitlines()
    except OSError as e:
        sys.exit(f"class_marginal: {path}: {e.strerror}")
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            sys.exit(f"class_marginal: {path} line {number}: {e}")
        confusion = record.get("validation", {}).get("classifier_confusion")
        if confusion is not None:
            yield record["epoch"], record["validation"]["classifier_error"], confusion


def shares(confusion):
    k = int(round(len(confusion) ** 0.5))
    if k * k != len(confusion) or k == 0:
        raise ValueError(f"{len(confusion)} counts is no square matrix")
    total = sum(confusion)
    return [sum(confusion[t * k + p] for t in range(k)) / total for p in range(k)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders with a metrics.jsonl")
    ap.add_argument("--floor", type=float, default=0.02, help="a class predicted for fewer than this share is dropped")
    a = ap.parse_args()
    for folder in a.runs:
        print(folder)
        found = False
        for epoch, error, confusion in epochs(folder):
            found = True
            try:
                s = shares(confusion)
            except ValueError as e:
                sys.exit(f"class_marginal: {folder} epoch {epoch}: {e}")
            dropped = sum(share < a.floor for share in s)
            print(f"  epoch {epoch:3d}: error {100 * error:6.2f} %, dropped {dropped}, predicted % "
                  + " ".join(f"{100 * share:4.1f}" for share in s))
        if not found:
            print("  no epoch with a q(y|x) confusion (a supervised run, or one older than the field)")


if __name__ == "__main__":
    main()
