#!/usr/bin/env python3
"""The paper's Table 1 on MNIST (supervised): for each seed, one EquiVAE run of train_mnist's
recipe (its defaults: test error of the distance classifier on r and of the dense classifier on
frozen r, at the epoch chosen on validation) and one benchmark classifier run on the same schedule
(its epoch chosen on validation), then mean +/- s.e.m. into a JSON file and a table in a Markdown
file.

  python3 tools/table1.py                               # 5 seeds, one run after another
  nohup nice -n 19 python3 tools/table1.py --jobs 2 --threads 1 > runs/table1.log 2>&1 &
  python3 tools/table1.py --quick                       # 1 epoch of 2,000 images, 2 seeds, scratch outputs
  python3 tools/table1.py --collect-only                # just rebuild the JSON and the table

Resumable: RUNS/seed<k> holds seed k's EquiVAE run, RUNS/benchmark/seed<k> its benchmark run; a
finished run (its results.json) is skipped, an interrupted one continues from its last epoch's
checkpoint (train_mnist --resume auto). A run that JSON already records for the same recipe is
kept and not run again even where its folder is gone (a table built over several machines).
The benchmark classifier reads none of EquiVAE's own options (m_max, set sampling): its command
leaves them out, so a recipe that changes only those keeps the benchmark runs JSON records (copy
the earlier table's JSON to the new --json); weight averaging (--average-from) it does read. Seed
by seed, EquiVAE then benchmark, so an interrupted table has whole seeds; --only runs one kind.
--jobs 2 --threads 1 runs two at a time with one thread each, the best use of 2 cores. Every choice (the epoch of each
model) is made on validation by train_mnist; the test errors read here are those of the chosen
epochs. Standard library only (Debian's python3).
"""
import argparse
import json
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_table import add_run_options, cell, duration, finished_results, ledger_seconds, load_json, median_images_per_s, run_all, \
    splice_markdown, start, train_seconds, what_it_computes, without_option, write_json  # noqa: E402
from seeds import mean_sem  # noqa: E402

WHO = "table1"
# SPEC.md section 5: test error %, mean +/- s.e.m. over 5 runs.
PAPER = {"distance": (0.82, 0.05), "benchmark": (0.84, 0.03)}
# train_mnist options that only an EquiVAE run reads (the benchmark classifier trains without
# complementary sets).
EQUIVAE_ONLY = ("--m-max", "--set-sampling")
MD_BEGIN, MD_END = "<!-- table1: begin (tools/table1.py writes this part) -->", "<!-- table1: end -->"


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=40, help="epochs of every run (the paper's 40)")
    ap.add_argument("--only", choices=("equivae", "benchmark"), help="run only this kind of run (the table "
                    "still collects both)")
    add_run_options(ap, "table1", "runs/t1")
    ap.add_argument("--quick", action="store_true", help="a smoke test: 1 epoch of 2,000 images, 2 seeds, "
                    "scratch outputs")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="-- further train_mnist options for every run")
    a = ap.parse_args()
    a.extra = a.extra[1:] if a.extra[:1] == ["--"] else a.extra
    if a.quick:  # unless given
        a.epochs = 1 if a.epochs == ap.get_default("epochs") else a.epochs
        a.seeds = 2 if a.seeds == ap.get_default("seeds") else a.seeds
        a.train_limit = a.train_limit or 2000
    for name in ("seeds", "epochs", "jobs"):
        if getattr(a, name) < 1:
            sys.exit(f"{WHO}: --{name} must be at least 1, not {getattr(a, name)}")
    a.runs = a.runs or ("runs/table1-quick" if a.quick else "runs/t1")
    a.json = a.json or (os.path.join(a.runs, "table1.json") if a.quick else "docs/results/table1.json")
    a.md = a.md or (os.path.join(a.runs, "results.md") if a.quick else "docs/results.md")
    return a


def commands(a, seed):
    """The EquiVAE and benchmark train_mnist command lines of one seed, and their run folders."""
    common = ["--epochs", str(a.epochs), "--seed", str(seed), "--no-progress"]
    if a.train_limit:
        common += ["--train-limit", str(a.train_limit)]
    if a.threads:
        common += ["--threads", str(a.threads)]
    eq_dir, bench_dir = os.path.join(a.runs, f"seed{seed}"), os.path.join(a.runs, "benchmark", f"seed{seed}")
    equivae = [a.binary] + common + ["--out", eq_dir, "--resume", "auto"] + a.extra
    benchmark = [a.binary, "--benchmark"] + common + ["--out", bench_dir, "--resume", "auto"] + benchmark_options(a.extra)
    return [("equivae", equivae, eq_dir), ("benchmark", benchmark, bench_dir)]


def benchmark_options(options):
    """train_mnist options without those only EquiVAE reads."""
    for option in EQUIVAE_ONLY:
        options = without_option(options, option)
    return options


def percent(x):
    return round(100 * x, 4)


def equivae_record(command, folder, seed):
    r = finished_results(folder, command, WHO)
    if r is None:
        return None
    for key in ("test_error_distance", "best_epoch", "best_validation_error"):
        if key not in r:
            sys.exit(f"{WHO}: {folder}/results.json has no '{key}'")
    dead = r.get("dead_units", {})
    return {"seed": seed, "distance": percent(r["test_error_distance"]),
            "dense": percent(r["test_error_neural"]) if "test_error_neural" in r else None,
            "best_epoch": r["best_epoch"], "validation_distance_error": percent(r["best_validation_error"]),
            "dense_best_epoch": r.get("neural_best_epoch"),
            "never_active_units": {part: round(dead[part]["fraction"], 4) for part in ("h", "g") if part in dead},
            "parameters": r.get("parameters"), "wall_seconds": ledger_seconds(folder, WHO),
            "train_seconds": train_seconds(folder), "images_per_s": median_images_per_s(folder)}


def benchmark_record(command, folder, seed):
    r = finished_results(folder, command, WHO)
    if r is None:
        return None
    if "test_error" not in r:
        sys.exit(f"{WHO}: {folder}/results.json has no 'test_error'")
    return {"seed": seed, "benchmark": percent(r["test_error"]), "best_epoch": r.get("best_epoch"),
            "validation_error": percent(r["validation_error"]), "wall_seconds": ledger_seconds(folder, WHO)}


def summary(records, key):
    values = [rec[key] for rec in records if rec.get(key) is not None]
    if not values:
        return {"mean": None, "sem": None, "seeds": []}
    mean, sem = mean_sem(values)
    # "seeds": each seed's test error in %, in the order of the seeds (the runs' records name them)
    return {"mean": round(mean, 4), "sem": round(sem, 4) if sem is not None else None, "seeds": values}


def earlier_records(a):
    """The finished runs JSON already records, of each kind whose command it records is this
    recipe's (the same but for the binary, --threads and the run folder; for the benchmark, also
    EquiVAE's own options, which older tables passed it): {kind: {seed: record}}."""
    old = load_json(a.json, WHO) or {}
    recipe = old.get("recipe", {})
    now = commands(a, "{seed}")

    def computes(command, kind):
        command = without_option(command, "--out")
        return what_it_computes(benchmark_options(command) if kind == "benchmark" else command)

    records = {}
    for (kind, command, _), key, runs in zip(now, ("train_mnist", "benchmark"), ("equivae_runs", "benchmark_runs")):
        same = recipe.get("epochs") == a.epochs and key in recipe and \
            computes(shlex.split(recipe[key]), kind) == computes(command, kind)
        records[kind] = {r["seed"]: r for r in old.get(runs, [])} if same else {}
    return records


def collect(a, argv):
    seeds = range(a.first_seed, a.first_seed + a.seeds)
    earlier = earlier_records(a)
    eq, bench, pending = [], [], []
    for seed in seeds:
        (_, eq_command, eq_dir), (_, bench_command, bench_dir) = commands(a, seed)
        e = equivae_record(eq_command, eq_dir, seed) or earlier["equivae"].get(seed)
        b = benchmark_record(bench_command, bench_dir, seed) or earlier["benchmark"].get(seed)
        eq += [e] if e else []
        bench += [b] if b else []
        if not e or not b:
            pending.append(seed)
    table = {"distance": summary(eq, "distance"), "dense": summary(eq, "dense"),
             "benchmark": summary(bench, "benchmark"),
             "recipe": {"epochs": a.epochs, "train_limit": a.train_limit or None,
                        "train_mnist": shlex.join(commands(a, "{seed}")[0][1]),
                        "benchmark": shlex.join(commands(a, "{seed}")[1][1])},
             "command": shlex.join(["python3", "tools/table1.py"] + argv),
             "paper": {k: list(v) for k, v in PAPER.items()},
             "equivae_runs": eq, "benchmark_runs": bench, "pending_seeds": pending}
    write_json(a.json, table)
    write_markdown(a.md, table, a.json)
    return table


def write_markdown(path, table, json_path):
    p = table["paper"]
    limit = f", the first {table['recipe']['train_limit']} training images" if table["recipe"]["train_limit"] else ""
    epochs = table["recipe"]["epochs"]
    parameters = sorted({e["parameters"] for e in table["equivae_runs"] if e.get("parameters")})
    model = f"; the EquiVAE model has {', '.join(f'{n:,}' for n in parameters)} parameters" if parameters else ""
    lines = [f"Test error % on MNIST ({epochs} epoch{'s' if epochs > 1 else ''}{limit}), each model at its epoch "
             f"chosen on validation; mean +/- s.e.m. over the seeds (`{json_path}` has every seed and the commands)"
             f"{model}.", "",
             "| classifier | EquiVAE recipe | paper |", "| --- | --- | --- |",
             f"| distance on r (0 parameters) | {cell(table['distance'])} | {p['distance'][0]:.2f} +/- {p['distance'][1]:.2f} |",
             f"| dense on frozen r | {cell(table['dense'])} | - |",
             f"| benchmark classifier | {cell(table['benchmark'])} | {p['benchmark'][0]:.2f} +/- {p['benchmark'][1]:.2f} |",
             "", "| seed | EquiVAE best epoch | validation distance | distance | dense | never-active h / g | "
             "wall (train) | benchmark best epoch | benchmark | benchmark wall |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    bench = {b["seed"]: b for b in table["benchmark_runs"]}
    for e in table["equivae_runs"]:
        b = bench.get(e["seed"])
        dead = e["never_active_units"]
        dense = f"{e['dense']:.2f}" if e["dense"] is not None else "-"
        never = " / ".join(f"{100 * dead[part]:.1f}" if part in dead else "-" for part in ("h", "g"))
        benchmark = f"{b['best_epoch']} | {b['benchmark']:.2f} | {duration(b['wall_seconds'])}" if b else "- | pending | -"
        lines.append(f"| {e['seed']} | {e['best_epoch']} | {e['validation_distance_error']:.2f} | {e['distance']:.2f} | "
                     f"{dense} | {never} % | {duration(e['wall_seconds'])} ({duration(e['train_seconds'])}) | {benchmark} |")
    if table["pending_seeds"]:
        lines += ["", f"Pending seeds: {', '.join(map(str, table['pending_seeds']))}."]
    splice_markdown(path, MD_BEGIN, MD_END, "## Table 1: supervised MNIST (tools/table1.py)", lines)


def main():
    argv = sys.argv[1:]
    a = parse()
    start(WHO, a.binary, a.collect_only)
    if not a.collect_only:
        seeds = range(a.first_seed, a.first_seed + a.seeds)
        earlier = earlier_records(a)
        tasks = [task for seed in seeds for task in commands(a, seed)
                 if seed not in earlier[task[0]] and a.only in (None, task[0])]
        run_all(WHO, tasks, a.jobs, a.resume, lambda: collect(a, argv))  # the table grows run by run
    table = collect(a, argv)
    for key in ("distance", "dense", "benchmark"):
        print(f"{key}: {cell(table[key])}")


if __name__ == "__main__":
    main()
