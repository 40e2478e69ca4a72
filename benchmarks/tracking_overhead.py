"""What does MLflow tracking cost a study? One study, tracking on against tracking off.

Question: `python -m trickopt.study` tracks every trial in MLflow (a parent run, one child run
per trial with params and per-epoch curves, the refit's run, plots). Every MLflow call runs
in a separate tracking process (trickopt/tracking.py), which overlaps the store's set-up and
the plots with training; the training process only sends it messages. How much longer does
the whole command take with tracking on, and how much longer the optimize phase (the trials
themselves)? Goal: on / off <= 1.05.

Both sides run the built-in default study (digits CNN, all tricks, 30 epochs, TPE seed 0,
median pruner, refit train_val, journal storage), the same seed and settings, `--n-trials N
--no-progress`; the off side adds `--set tracking.enabled=false`. Trials are deterministic on
the CPU for a seed, so both sides train exactly the same trials (the table checks it). Each
run is a subprocess in a fresh temporary directory (so tracking on pays for creating
./mlflow.db, as a first run does), timed from outside; order alternates on, off / off, on.
benchmarks/phase_clock.py times the phases inside (optimize, refit, parent summary...).

`--profile` then runs the tracking-on study once more under py-spy (all threads; needs
`pip install py-spy`) and attributes the main thread's samples to phases (MLflow store set-up,
messages to the tracking process, parent summary, waiting for the tracking process at the
end, refit, training...). The tracking process itself is not sampled (it runs beside).

Run:
    python benchmarks/tracking_overhead.py                    # N=30, R=5
    python benchmarks/tracking_overhead.py --profile
    python benchmarks/tracking_overhead.py benchmarks/idiomatic_budget.yaml --n-trials 100
    python benchmarks/tracking_overhead.py --quick            # N=2, 3 epochs, R=1, for CI
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from study_runs import (
    load_average,
    machine_facts,
    med,
    median,
    parse_summary,
    run_command,
    study_command,
    wait_quiet,
)

GOAL = 1.05


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_file", nargs="?", metavar="STUDY.yaml",
                        help="a study file (default: the built-in default study)")
    parser.add_argument("--n-trials", type=int, default=30, help="trials per study (30)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions (5)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="passed to both sides, e.g. refit=none")
    parser.add_argument("--max-load", type=float, default=None,
                        help="before each run, wait (up to 10 min) for the 1-min load average "
                             "to fall below this")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one tracking-on run with py-spy (all threads)")
    parser.add_argument("--quick", action="store_true",
                        help="2 trials of 3 epochs, 1 repetition: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_trials, args.repeats = 2, 1
        args.overrides = ["train.max_epochs=3", *args.overrides]
    if min(args.n_trials, args.repeats) < 1:
        parser.error("--n-trials and --repeats must be >= 1")
    return args


def study_args(args: argparse.Namespace, tracking: bool) -> list[str]:
    sets = [x for o in args.overrides for x in ("--set", o)]
    off = [] if tracking else ["--set", "tracking.enabled=false"]
    study = [args.study_file] if args.study_file else []
    return [*study, "--n-trials", str(args.n_trials), "--no-progress", *sets, *off]


def one_run(args: argparse.Namespace, tracking: bool):
    run = run_command("on" if tracking else "off",
                      study_command(*study_args(args, tracking))).check()
    run.summary = parse_summary(run.stdout)
    return run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shown = " ".join(study_args(args, True))
    machine_facts("MLflow tracking on vs off: one study, whole command and optimize phase", [
        f"on: `python -m trickopt.study {shown}` (MLflow: sqlite ./mlflow.db, fresh)",
        "off: the same + `--set tracking.enabled=false`",
        (f"study file {args.study_file}" if args.study_file else
         "the built-in default study (digits CNN, all tricks, max 30 epochs, TPE seed 0, "
         "median pruner, refit train_val)") + ", through benchmarks/phase_clock.py",
        f"{args.repeats} repetitions, interleaved (on, off / off, on), each run in a fresh "
        "temp dir"])
    runs: dict[bool, list] = {True: [], False: []}
    loads = []
    for rep in range(args.repeats):
        for tracking in (True, False) if rep % 2 == 0 else (False, True):
            wait_quiet(args.max_load)
            runs[tracking].append(one_run(args, tracking))
            print(f"(rep {rep + 1} {'on' if tracking else 'off'}: "
                  f"{runs[tracking][-1].wall:.1f} s, load {runs[tracking][-1].load})",
                  file=sys.stderr, flush=True)
        loads.append(load_average())
    on, off = runs[True], runs[False]

    whole = [a.wall / b.wall for a, b in zip(on, off)]
    optimize = [a.phase("optimize") / b.phase("optimize") for a, b in zip(on, off)]
    print("| rep | on: whole s | off: whole s | on/off whole | on: optimize s | "
          "off: optimize s | on/off optimize | load average after |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for i, (a, b) in enumerate(zip(on, off)):
        print(f"| {i + 1} | {a.wall:.1f} | {b.wall:.1f} | {whole[i]:.3f} | "
              f"{a.phase('optimize'):.1f} | {b.phase('optimize'):.1f} | {optimize[i]:.3f} | "
              f"{loads[i]} |")
    print(f"| median (min–max) | {med([r.wall for r in on], '{:.1f}')} | "
          f"{med([r.wall for r in off], '{:.1f}')} | {med(whole, '{:.3f}')} | "
          f"{med([r.phase('optimize') for r in on], '{:.1f}')} | "
          f"{med([r.phase('optimize') for r in off], '{:.1f}')} | {med(optimize, '{:.3f}')} "
          "| |")

    print("\nPhases, seconds, median (min–max); the difference is what tracking adds:\n")
    print("| phase | tracking on | tracking off | on − off (median of paired differences) |")
    print("|---|---:|---:|---:|")
    phases = [("imports (trickopt.study.runner: torch, optuna, mlflow)", "imports_done"),
              ("load_data", "load_data"), ("open_study", "open_study"),
              ("open_tracker: parent-run claim (MLflow is opened in the tracking process)",
               "open_tracker"),
              ("optimize (all trials)", "optimize"), ("importances", "importances"),
              ("refit (best trial's kept model on test + train+val refit + its run)", "refit"),
              ("parent summary: metrics, study file, importances (sent)", "parent_summary"),
              ("end_parent (sent)", "end_parent"),
              ("waiting for the tracking process: last writes, plots, exit", "tracking_close")]
    for name, key in phases:
        va, vb = [r.phase(key) for r in on], [r.phase(key) for r in off]
        print(f"| {name} | {med(va)} | {med(vb)} | "
              f"{med([x - y for x, y in zip(va, vb)])} |")
    rest_a = [r.wall - sum(r.phase(k) for _, k in phases) for r in on]
    rest_b = [r.wall - sum(r.phase(k) for _, k in phases) for r in off]
    print(f"| the rest: CLI, gaps, summary print, interpreter shutdown | {med(rest_a)} | "
          f"{med(rest_b)} | {med([x - y for x, y in zip(rest_a, rest_b)])} |")
    print(f"| whole command | {med([r.wall for r in on])} | {med([r.wall for r in off])} | "
          f"{med([r.wall - s.wall for r, s in zip(on, off)])} |")

    print("\nSame trials on both sides (trickopt's summary):\n")
    print("| side | trials | epochs trained | best value |")
    print("|---|---|---:|---:|")
    for name, side in (("on", on), ("off", off)):
        s = side[0].summary
        same = all(r.summary == s for r in side)
        trials = ", ".join(f"{s[k]} {k}" for k in ("complete", "pruned", "fail") if k in s)
        print(f"| {name} | {trials} | {s.get('epochs')} | {s.get('best_value')} "
              f"{'' if same else '(differs across repetitions!)'} |")
    if on[0].summary.get("epochs") != off[0].summary.get("epochs"):
        print("\nWARNING: the two sides trained different epochs; the ratio compares "
              "different work.")

    value, value_opt = median(whole), median(optimize)
    verdict = "meets" if value <= GOAL else "misses"
    verdict_opt = "meets" if value_opt <= GOAL else "misses"
    if args.quick:
        verdict = verdict_opt = "--quick is too small for a verdict on"
    print(f"\nwhole command on/off = {value:.3f}: {verdict} the goal of <= {GOAL:.2f}.")
    print(f"optimize phase on/off = {value_opt:.3f}: {verdict_opt} the goal of <= {GOAL:.2f}.")
    print(f"Load average at end: {load_average()}")
    if args.profile:
        profile(args)
    return 0


# Where a main-thread sample goes: the first rule whose text appears in its stack (outermost
# trickopt phase first, so e.g. matplotlib imports inside the parent summary count there).
MAIN_RULES = [
    ("tracking: open_tracker (parent-run claim, messages)", "open_tracker ("),
    ("tracking: waiting for the tracking process at the end", "close (trickopt/tracking.py"),
    ("tracking: child run messages, per trial (StudyTracker.start_trial)", "start_trial ("),
    ("tracking: waiting for a trial's run id (_link_run)", "_link_run ("),
    ("tracking: buffering and sending writes (TrialRun.log_epoch / end)", "TrialRun."),
    ("tracking: recovery snapshot (close_orphan_runs)", "close_orphan_runs ("),
    ("tracking: refit's MLflow run (_log_refit)", "_log_refit ("),
    ("tracking: parent summary (metrics, artifacts, plots)", "log_parent_summary ("),
    ("tracking: end_parent (a message)", "end_parent ("),
    ("tracking: check_tracking_uri", "check_tracking_uri ("),
    ("refit: training (best trial's replay + train+val refit)", "_refit ("),
    ("optimize: training (fit)", "fit (trickopt/train.py"),
    ("optimize: Optuna sampler", "sample_"),
    ("optimize: Optuna other (storage, pruner, trial bookkeeping)", "_optimize_sequential ("),
    ("importances", "_importances ("),
    ("imports (module loading)", "_find_and_load"),
]


def profile(args: argparse.Namespace) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("\n--profile: py-spy not found (pip install py-spy); skipped.")
        return
    folder = Path(tempfile.mkdtemp(prefix="trickopt-spy-"))
    raw = folder / "spy.txt"
    command = [spy, "record", "--nonblocking", "--threads", "--format", "raw", "--rate", "200",
               "-o", str(raw),
               "--", sys.executable, "-m", "trickopt.study", *study_args(args, True)]
    proc = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    if proc.returncode != 0 or not raw.exists():
        print(f"\n--profile: py-spy failed ({proc.returncode}): {proc.stderr[-500:]}")
        return
    summarize_spy(raw, 200, f"`python -m trickopt.study {' '.join(study_args(args, True))}`")
    shutil.rmtree(folder, ignore_errors=True)


def summarize_spy(raw: Path, rate: int, what: str) -> None:
    """Markdown tables from a `py-spy record --threads --format raw` file."""
    threads: collections.Counter = collections.Counter()
    main: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n, frames = int(count), stack.split(";")
        name = frames[0].split(": ", 1)[-1] if ": " in frames[0] else frames[0]
        threads[name] += n
        if name == "MainThread":
            label = next((lbl for lbl, key in MAIN_RULES if any(key in f for f in frames)),
                         "other" if len(frames) > 1 else
                         "no Python frame (interpreter start-up / shutdown, native code)")
            main[label] += n
    total_main = sum(main.values()) or 1
    print(f"\n## Profile: py-spy (non-blocking), {rate} samples/s, all threads, tracking on, "
          f"{what}\n")
    print(f"Load average at profile end: {load_average()}\n")
    print("| thread | samples | seconds |")
    print("|---|---:|---:|")
    for name, n in threads.most_common():
        print(f"| {name} | {n} | {n / rate:.1f} |")
    print("\nMain thread, by phase (the first matching rule, outermost phase first):\n")
    print("| main thread: where | samples | seconds | share |")
    print("|---|---:|---:|---:|")
    for label, n in main.most_common():
        print(f"| {label} | {n} | {n / rate:.2f} | {100 * n / total_main:.1f}% |")
    print("\nThe tracking process is not sampled; for its time per message type run the "
          "study with TRICKOPT_TRACKING_TIMINGS=timings.json.")


if __name__ == "__main__":
    sys.exit(main())
