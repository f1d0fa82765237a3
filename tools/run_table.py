"""What the table runners (tools/table1.py, tools/table2.py) share: resumable runs of train_mnist
with a ledger of each invocation's command and wall time, JSON written whole, and the part of a
Markdown file that a runner owns. Standard library only (Debian's python3).
"""
import concurrent.futures
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time


def load_json(path, who):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        sys.exit(f"{who}: {path} is not valid JSON ({e}); remove it to redo that run")


def write_json(path, value):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)  # a reader never sees half a file


def what_it_computes(command):
    """A command without the binary's path, --threads and --out: what may change between resumed
    parts, or between a run and its record in a table built under another --runs folder."""
    out, args = [], command[1:]
    for i, arg in enumerate(args):
        if arg not in ("--threads", "--out") and (i == 0 or args[i - 1] not in ("--threads", "--out")):
            out.append(arg)
    return out


def finished_results(folder, command, who):
    """A finished run's results.json, or None. A folder whose ledger says it was run with another
    recipe is refused, as run_one refuses to continue it: its figures are not this command's."""
    ledger = load_json(os.path.join(folder, "runner.json"), who)
    if ledger and what_it_computes(ledger["command"]) != what_it_computes(command):
        sys.exit(f"{who}: {folder} was run as\n  {shlex.join(ledger['command'])}\nnot as\n  {shlex.join(command)}\n"
                 "move the folder aside or give --runs another folder")
    return load_json(os.path.join(folder, "results.json"), who)


def without_option(command, option):
    """The command without `option` and its value."""
    return [arg for i, arg in enumerate(command) if arg != option and (i == 0 or command[i - 1] != option)]


LEDGER_EVERY_S = 60  # how often a running invocation's seconds are written to its ledger


def run_one(who, kind, command, folder, skip_finished, fresh):
    """Runs (or continues, with the command's --resume auto) one train_mnist run. skip_finished:
    not when its results.json says it finished. fresh: start afresh (the command without --resume,
    with --force so that train_mnist clears the earlier attempt's files), for runs without
    checkpoints or when asked. Its output goes to
    FOLDER/log.txt; FOLDER/runner.json records the command and the wall time of every invocation,
    an interrupted one's included (written every LEDGER_EVERY_S as it runs). Exits naming the log on failure."""
    ledger_path = os.path.join(folder, "runner.json")
    finished = finished_results(folder, command, who)  # refuses a folder run with another recipe
    if skip_finished and finished is not None:
        return
    ledger = load_json(ledger_path, who)
    invoked = command
    if fresh:
        ledger = None
        invoked = without_option(command, "--resume") + ["--force"]
    ledger = ledger or {"command": command, "invocations": []}
    ledger["command"] = command
    os.makedirs(folder, exist_ok=True)
    print(f"{who}: {shlex.join(invoked)}", flush=True)
    start = time.time()
    invocation = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)), "seconds": 0.0}
    ledger["invocations"].append(invocation)

    def record():
        invocation["seconds"] = round(time.time() - start, 1)
        write_json(ledger_path, ledger)

    record()
    try:
        with open(os.path.join(folder, "log.txt"), "a") as log:
            process = subprocess.Popen(invoked, stdout=log, stderr=subprocess.STDOUT)
            try:
                while True:
                    try:
                        code = process.wait(timeout=LEDGER_EVERY_S)
                        break
                    except subprocess.TimeoutExpired:
                        # written as the run goes: a runner killed outright (a machine's session
                        # ending) loses at most this much of the run's time
                        record()
            except BaseException:
                process.kill()
                process.wait()
                raise
    finally:  # an interrupted invocation's time counts too
        record()
    if code != 0:
        sys.exit(f"{who}: {kind} run failed (exit {code}); its output is in {os.path.join(folder, 'log.txt')}")


def run_all(who, tasks, jobs, resume, after_each):
    """Runs `tasks` ((kind, command, folder), in this order) through run_one, `jobs` at a time, and
    after_each() after every run that finished, one at a time (it rewrites the table). Runs never
    share a folder, so they need no other coordination. Exits with every failed run's message.
    One at a time they run in this thread, which a signal reaches: a runner stopped by SIGTERM or
    Ctrl-C to itself alone then stops its run too (with more, stop the process group)."""
    if jobs == 1:
        for kind, command, folder in tasks:
            run_one(who, kind, command, folder, skip_finished=resume == "auto", fresh=resume == "never")
            after_each()
        return
    lock = threading.Lock()

    def work(task):
        kind, command, folder = task
        try:
            run_one(who, kind, command, folder, skip_finished=resume == "auto", fresh=resume == "never")
        except SystemExit as e:  # run_one's message, to the main thread
            return str(e.code)
        with lock:
            after_each()
        return None

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        failures = [f for f in pool.map(work, tasks) if f]
    if failures:
        sys.exit("\n".join(failures))


def ledger_seconds(folder, who):
    """The wall seconds of every invocation the ledger of a run folder records, or None."""
    ledger = load_json(os.path.join(folder, "runner.json"), who)
    return round(sum(i["seconds"] for i in ledger["invocations"]), 1) if ledger else None


def train_seconds(folder):
    """The training seconds of a run's epochs (metrics.jsonl): every epoch's, where the ledger misses
    the invocations that were killed before it recorded them."""
    try:
        with open(os.path.join(folder, "metrics.jsonl")) as f:
            seconds = [s for s in (json.loads(line).get("train_seconds") for line in f if line.strip()) if s is not None]
    except FileNotFoundError:
        return None
    return round(sum(seconds), 1) if seconds else None


def median_images_per_s(folder):
    """The median epoch's training images/s in a run's metrics.jsonl, or None."""
    try:
        with open(os.path.join(folder, "metrics.jsonl")) as f:
            speeds = sorted(json.loads(line)["images_per_s"] for line in f if line.strip())
    except FileNotFoundError:
        return None
    return round(speeds[len(speeds) // 2], 1) if speeds else None


def splice_markdown(path, begin, end, heading, lines):
    """Replaces the part of the Markdown file between the markers `begin` and `end` with `lines`
    (markers included), or appends it under `heading` when the file has none."""
    block = "\n".join([begin, ""] + lines + ["", end])
    text = open(path).read() if os.path.exists(path) else ""
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text += ("\n" if text else "") + heading + "\n\n" + block + "\n"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def start(who, binary, collect_only):
    """A runner's start: SIGTERM (a background run is stopped by one to its process group) exits
    through the runs' `finally`, which records their time; the binary must exist unless nothing runs."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not collect_only and not os.access(binary, os.X_OK):
        sys.exit(f"{who}: --binary {binary} is not an executable (build it first: README)")


def cell(part):
    """A table cell: mean +/- s.e.m. (seed count) of a {"mean", "sem", "seeds"} summary, or "pending"."""
    if part["mean"] is None:
        return "pending"
    n = len(part["seeds"])
    sem = f" +/- {part['sem']:.2f}" if part["sem"] is not None else ""
    return f"{part['mean']:.2f}{sem} ({n} seed{'s' if n > 1 else ''})"


def duration(seconds):
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def add_run_options(ap, who, runs):
    """The options every table runner has; `runs` is its default run folder."""
    ap.add_argument("--train-limit", type=int, default=0, help="train on the first N images (0: all 55,000)")
    ap.add_argument("--threads", type=int, default=0, help="train_mnist --threads (0: its default, all cores)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (--jobs 2 --threads 1: the best use of 2 cores)")
    ap.add_argument("--binary", default="build/train/train_mnist")
    ap.add_argument("--runs", default="", help=f"run folders (default {runs}, --quick: runs/{who}-quick)")
    ap.add_argument("--json", default="", help=f"default docs/results/{who}.json (--quick: RUNS/{who}.json)")
    ap.add_argument("--md", default="", help=f"Markdown file whose {who} part is rewritten "
                    "(default docs/results.md; --quick: RUNS/results.md)")
    ap.add_argument("--resume", default="auto", choices=["auto", "never"],
                    help="auto: skip finished runs, continue interrupted ones; never: start every run afresh")
    ap.add_argument("--collect-only", action="store_true", help="run nothing; rebuild the JSON and the table")
