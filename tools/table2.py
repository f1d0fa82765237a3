#!/usr/bin/env python3
"""The paper's Table 2 (semi-supervised MNIST): for every row (100 / 600 / 1000 / 3000 labels) and
seed, one semi-supervised EquiVAE run (test error of q(y|x)) and one benchmark classifier run on the
same labelled subset, then mean +/- s.e.m. per row into a JSON file and a table in a Markdown file.

  python3 tools/table2.py                       # the table: 3 seeds for 100 labels, 1 for the others
  nohup nice -n 19 python3 tools/table2.py --jobs 2 --threads 1 --seeds 5 > runs/table2.log 2>&1 &
  python3 tools/table2.py --quick               # 1 short epoch per row into runs/table2-quick/
  python3 tools/table2.py --collect-only        # just rebuild the JSON and the table

Resumable: each run lives in RUNS/<labels>/seed<k>/{equivae,benchmark}; a finished one (its
results.json) is skipped, an interrupted EquiVAE run continues from its last epoch's checkpoint
(train_mnist --resume auto), a benchmark run too; a run that JSON already records for the same
command (but for the binary and --threads) is kept and not run again even where its folder is
gone (a table built over several machines). Seeds go in the outer loop,
so an interrupted table has every row's first seed before any row's second; --jobs 2 --threads 1
runs two at a time with one thread each, the best use of 2 cores. Every choice (the
epoch of each model) is made on validation by train_mnist; the test errors read here are those of
the chosen epochs. Standard library only (Debian's python3).
"""
import argparse
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_table import add_run_options, cell, duration, finished_results, ledger_seconds, load_json as load_json_of, \
    median_images_per_s, run_all, splice_markdown, start, train_seconds, what_it_computes, write_json  # noqa: E402
from seeds import mean_sem  # noqa: E402

ROWS = [100, 600, 1000, 3000]
EPOCHS = {100: 20, 600: 25, 1000: 30, 3000: 35}  # the paper's, per row
# m_max for the semi-supervised runs was lost from the paper's text. 100 labels: 7 (its supervised
# MNIST value) had the lowest validation q(y|x) error of 3 / 7 / 9 in a short screen (a class of 10
# labels allows up to 9). 600 labels and up: 60, whose lowest validation error was 2.62 and 2.06 % on
# two seeds against 7's 5.18 % (docs/results.md, screen 14 and its second seed).
M_MAX = {100: 7, 600: 60, 1000: 60, 3000: 60}
# train_mnist --teacher-warmup, in epochs (0: off). 100 labels: 2, chosen on validation over five
# seeds (docs/results.md, screen 17): without it, three of five draws locked q(y|x) into a wrong
# class assignment in the first epoch. Not screened on the other rows, none of whose runs locked.
TEACHER_WARMUP = {100: 2, 600: 0, 1000: 0, 3000: 0}
PAPER = {100: ((8.90, 0.70), (21.91, 0.66)), 600: ((3.99, 0.17), (6.64, 0.35)),
         1000: ((3.34, 0.17), (5.43, 0.31)), 3000: ((2.23, 0.14), (2.96, 0.11))}
MD_BEGIN, MD_END = "<!-- table2: begin (tools/table2.py writes this part) -->", "<!-- table2: end -->"


def per_row(text, what, default):
    """'5' (every row) or '100=3,600=1' (the rows named; the others keep the default)."""
    out = dict(default)
    try:
        if "=" not in text:
            return {row: int(text) for row in out}
        for part in text.split(","):
            row, value = part.split("=")
            if int(row) not in out:
                sys.exit(f"table2: {what} names row {row}; the rows are {', '.join(map(str, ROWS))}")
            out[int(row)] = int(value)
    except ValueError:
        sys.exit(f"table2: {what} '{text}' is not N or ROW=N,ROW=N")
    return out


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(map(str, ROWS)), help="label counts to run, e.g. 100,600")
    ap.add_argument("--seeds", default="100=3", help="seeds per row: N, or ROW=N,... (others: 1)")
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--epochs", default="", help="override the paper's epochs: N or ROW=N,...")
    ap.add_argument("--m-max", default="", help="override m_max: N or ROW=N,...")
    ap.add_argument("--unlabelled-sets", choices=("random", "all"), default="random",
                    help="an unlabelled pair's r_y from m ~ U{1..m_max} random labels of its class (random) or all of "
                         "them (all): train_mnist --unlabelled-sets, for every row run")
    ap.add_argument("--teacher-warmup", default="",
                    help="train_mnist --teacher-warmup for the EquiVAE runs: N or ROW=N,... epochs over which the "
                         "unlabelled term's gradient into q(y|x) grows from 0 to its full weight; 0: off (default: 2 for "
                         "100 labels, off for the others)")
    ap.add_argument("--average-from", default="last-batch",
                    help="weight averaging of both models from epoch N (train_mnist --average-from): N, ROW=N,..., "
                         "or 'last-batch' (the default, chosen on validation: docs/results.md, screen 12), the first "
                         "epoch of the batch schedule's last size in each row; 0: off. A run folder made with another "
                         "value is refused (its runner.json has the command)")
    add_run_options(ap, "table2", "runs/table2")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke test: 1 epoch, 2,000 unlabelled images per row, 1 seed, scratch outputs")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="-- further train_mnist options for every run")
    a = ap.parse_args()
    a.extra = a.extra[1:] if a.extra[:1] == ["--"] else a.extra
    try:
        a.rows = [int(r) for r in a.rows.split(",")]
    except ValueError:
        sys.exit(f"table2: --rows '{a.rows}' is not a comma-separated list of label counts")
    for r in a.rows:
        if r not in ROWS:
            sys.exit(f"table2: --rows names {r}; the paper's rows are {', '.join(map(str, ROWS))}")
    if a.quick:  # unless given: 1 epoch, 1 seed per row
        a.epochs = a.epochs or "1"
        a.seeds = "1" if a.seeds == ap.get_default("seeds") else a.seeds
    if a.jobs < 1:
        sys.exit(f"table2: --jobs must be at least 1, not {a.jobs}")
    a.seed_counts = per_row(a.seeds, "--seeds", {r: 1 for r in ROWS})
    a.epoch_counts = per_row(a.epochs, "--epochs", EPOCHS) if a.epochs else dict(EPOCHS)
    a.m_max = per_row(a.m_max, "--m-max", M_MAX) if a.m_max else dict(M_MAX)
    a.teacher_warmup = (per_row(a.teacher_warmup, "--teacher-warmup", TEACHER_WARMUP) if a.teacher_warmup
                        else dict(TEACHER_WARMUP))
    a.average_from = ({r: last_batch_size_epoch(e) for r, e in a.epoch_counts.items()} if a.average_from == "last-batch"
                      else per_row(a.average_from, "--average-from", {r: 0 for r in ROWS}))
    a.runs = a.runs or ("runs/table2-quick" if a.quick else "runs/table2")
    a.json = a.json or (os.path.join(a.runs, "table2.json") if a.quick else "docs/results/table2.json")
    a.md = a.md or (os.path.join(a.runs, "results.md") if a.quick else "docs/results.md")
    return a


def last_batch_size_epoch(epochs, double_every=10, doublings=3):
    """The first epoch that runs at the batch schedule's last size (train_mnist's default schedule
    doubles the batch every `double_every` epochs, `doublings` times: 32 to 256): the epochs from
    there on have the same step noise, so their parameters wander around one basin and their mean
    is a fair average (Table 1 averages 31-40)."""
    return min((epochs - 1) // double_every, doublings) * double_every + 1


def train_limit(a, labels):
    # --quick: 2,000 unlabelled images beside the labelled ones (the first images of the training
    # set hold enough of every class for 3,000 labels in 5,000 images).
    return labels + 2000 if a.quick and not a.train_limit else a.train_limit


def commands(a, labels, seed):
    """The two train_mnist command lines of one (row, seed), and their run folders."""
    # Weight averaging (train_mnist's default from epoch 31) is --average-from here, for both models.
    common = ["--labels", str(labels), "--latent", "8", "--epochs", str(a.epoch_counts[labels]), "--seed", str(seed),
              "--average-from", str(a.average_from[labels]), "--no-progress"]
    if train_limit(a, labels):
        common += ["--train-limit", str(train_limit(a, labels))]
    if a.threads:
        common += ["--threads", str(a.threads)]
    folder = os.path.join(a.runs, str(labels), f"seed{seed}")
    eq_dir, bench_dir = os.path.join(folder, "equivae"), os.path.join(folder, "benchmark")
    # train_mnist's default (random) is left unsaid, so that runs recorded before the option match.
    sets = ["--unlabelled-sets", a.unlabelled_sets] if a.unlabelled_sets != "random" else []
    if a.teacher_warmup[labels]:  # likewise unsaid when off
        sets += ["--teacher-warmup", str(a.teacher_warmup[labels])]
    equivae = [a.binary] + common + ["--m-max", str(a.m_max[labels])] + sets + ["--classifier-epochs", "0",
                                     "--out", eq_dir, "--resume", "auto"] + a.extra
    benchmark = [a.binary, "--benchmark"] + common + ["--out", bench_dir, "--resume", "auto"] + a.extra
    return [("equivae", equivae, eq_dir), ("benchmark", benchmark, bench_dir)]


def load_json(path):
    return load_json_of(path, "table2")


def seed_record(kind, command, folder, seed):
    """A finished run's figures, or None."""
    r = finished_results(folder, command, "table2")
    if r is None:
        return None
    key = "test_error_classifier" if kind == "equivae" else "test_error"
    if key not in r:
        sys.exit(f"table2: {folder}/results.json has no '{key}'")
    out = {"seed": seed, "test_error": round(100 * r[key], 4), "best_epoch": r.get("best_epoch"),
           "validation_error": round(100 * r[("best_validation_error" if kind == "equivae" else "validation_error")], 4),
           "wall_seconds": ledger_seconds(folder, "table2"), "train_seconds": train_seconds(folder)}
    if kind == "equivae":
        # the median epoch's images/s of the semi-supervised step (one labelled and one
        # unlabelled image per step row)
        out["images_per_s"] = median_images_per_s(folder)
    return out


def earlier_record(a, labels, kind, seed):
    """Seed `seed`'s record of `kind` in JSON from an earlier invocation of the same command, or None."""
    old = ((load_json(a.json) or {}).get(str(labels)) or {}).get(kind) or {}
    now = commands(a, labels, "{seed}")[0 if kind == "equivae" else 1][1]
    if "command" not in old or what_it_computes(shlex.split(old["command"])) != what_it_computes(now):
        return None
    return next((r for r in old.get("seeds", []) if r.get("seed") == seed), None)


def collect(a, argv):
    table = load_json(a.json) or {}
    for labels in a.rows:
        seeds = range(a.first_seed, a.first_seed + a.seed_counts[labels])
        row = {"epochs": a.epoch_counts[labels], "m_max": a.m_max[labels], "unlabelled_sets": a.unlabelled_sets,
               "teacher_warmup": a.teacher_warmup[labels],
               "latent": 8,
               "train_limit": train_limit(a, labels) or None,
               "command": shlex.join(["python3", "tools/table2.py"] + argv),
               "paper": {"equivae": list(PAPER[labels][0]), "benchmark": list(PAPER[labels][1])}}
        for kind in ("equivae", "benchmark"):
            records, pending = [], []
            for seed in seeds:
                run = [c for c in commands(a, labels, seed) if c[0] == kind][0]
                rec = seed_record(kind, run[1], run[2], seed) or earlier_record(a, labels, kind, seed)
                (records.append(rec) if rec else pending.append(seed))
            mean, sem = mean_sem([r["test_error"] for r in records]) if records else (None, None)
            row[kind] = {"mean": round(mean, 4) if records else None, "sem": round(sem, 4) if sem is not None else None, "seeds": records, "pending_seeds": pending,
                         "command": shlex.join(commands(a, labels, "{seed}")[0 if kind == "equivae" else 1][1])}
        table[str(labels)] = row
    write_json(a.json, dict(sorted(table.items(), key=lambda kv: int(kv[0]))))
    write_markdown(a.md, table, a.json)
    return table


def write_markdown(path, table, json_path):
    lines = [f"Test error % of q(y|x) (EquiVAE) and of the benchmark classifier, each at its epoch chosen on "
             f"validation; mean +/- s.e.m. over the seeds (`{json_path}` has every seed, its wall time and the "
             "commands). Time per run: the runner's wall time, then in brackets the sum of the epochs' training "
             "seconds (the wall time misses invocations killed before their ledger entry, and both grow when "
             "runs share the cores).", "",
             "| labels | epochs | m_max | EquiVAE | benchmark | paper EquiVAE | paper benchmark | time per run, EquiVAE / benchmark: wall (train) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, row in sorted(table.items(), key=lambda kv: int(kv[0])):
        def mean_seconds(kind, field):
            w = [s[field] for s in row[kind]["seeds"] if s.get(field) is not None]
            return sum(w) / len(w) if w else None

        def wall(kind):
            train = mean_seconds(kind, "train_seconds")
            return duration(mean_seconds(kind, "wall_seconds")) + (f" ({duration(train)})" if train is not None else "")
        limit = f" (first {row['train_limit']} images)" if row.get("train_limit") else ""
        p = row["paper"]
        sets = "" if row.get("unlabelled_sets", "random") == "random" else " (unlabelled r_y: all labels)"
        if row.get("teacher_warmup"):
            sets += f" (teacher warm-up: {row['teacher_warmup']} epochs)"
        lines.append(f"| {key}{limit} | {row['epochs']} | {row['m_max']}{sets} | {cell(row['equivae'])} | "
                     f"{cell(row['benchmark'])} | {p['equivae'][0]:.2f} +/- {p['equivae'][1]:.2f} | "
                     f"{p['benchmark'][0]:.2f} +/- {p['benchmark'][1]:.2f} | {wall('equivae')} / {wall('benchmark')} |")
    splice_markdown(path, MD_BEGIN, MD_END, "## Table 2: semi-supervised MNIST (tools/table2.py)", lines)


def main():
    argv = sys.argv[1:]
    a = parse()
    start("table2", a.binary, a.collect_only)
    if not a.collect_only:
        tasks = [(kind, command, folder)
                 for seed in range(a.first_seed, a.first_seed + max(a.seed_counts[r] for r in a.rows))
                 for labels in a.rows if seed < a.first_seed + a.seed_counts[labels]
                 for kind, command, folder in commands(a, labels, seed) if not earlier_record(a, labels, kind, seed)]
        run_all("table2", tasks, a.jobs, a.resume, lambda: collect(a, argv))  # the table grows run by run
    table = collect(a, argv)
    for labels in a.rows:
        row = table[str(labels)]
        print(f"{labels} labels: EquiVAE {cell(row['equivae'])}, benchmark {cell(row['benchmark'])}")


if __name__ == "__main__":
    main()
