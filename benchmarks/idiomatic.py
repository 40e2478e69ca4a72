"""Against the idiomatic objective: is `python -m trickopt.study` at least as fast as the
Optuna objective users write today, for the same study budget?

Question: a user who would otherwise copy Optuna's official `pytorch_simple.py` example runs
`python -m trickopt.study` instead, with tracking and the refit on. Does the whole command take
longer? Goal: wall(b) / wall(a) <= 1.00 (median of interleaved repetitions).

Same budget on both sides: digits (sklearn, split 60/20/20 stratified, seed 0, z-scored on
train), 100 trials of at most 10 epochs, batch 128, TPE with seed 0, MedianPruner with Optuna's
defaults (5 start-up trials, no warm-up), an MLP of 1-3 hidden layers of 4-128 units with
dropout 0.2-0.5, lr 1e-5-1e-1 log-uniform, torch's default thread count.

* (a) `python benchmarks/idiomatic_objective.py`: the example, line for line, ported to
  digits: DataLoader over a TensorDataset (shuffle), per-batch `.sum().item()` in validation,
  `trial.report(accuracy, epoch)` + `should_prune()`, in-memory storage, no tracking;
  optimizer Adam / RMSprop / SGD; a width and a dropout per layer.
* (b) `python -m trickopt.study benchmarks/idiomatic_budget.yaml`: trickopt's defaults for
  everything the file does not fix: MLflow tracking ON (./mlflow.db), journal storage
  (./trickopt.journal), progress bar on stderr, refit train_val (the best trial is replayed and
  scored on test, then refit on train+val). Optimizer sgd / adam / adamw (trickopt has no
  RMSprop), one width and one dropout for all layers, metric val_accuracy; every other trick
  fixed off (no norm, no L1/L2, constant lr, stopper none, SGD momentum 0 as torch's default).

Each command runs as a subprocess in a fresh temporary directory, timed from outside (imports,
MLflow's database creation and interpreter shutdown included); the order alternates a, b, a,
b, ... (b, a, ... on odd repetitions). (b) runs through benchmarks/phase_clock.py, which times
its phases (set-up, optimize, refit, parent summary) without changing what it does; (a)
reports the time of its own `study.optimize` call.

Run:
    python benchmarks/idiomatic.py                 # 100 trials, R=3 (about 5 minutes here)
    python benchmarks/idiomatic.py --repeats 5
    python benchmarks/idiomatic.py --also tracking.enabled=false   # + (b') without MLflow
    python benchmarks/idiomatic.py --quick         # 3 trials of 2 epochs, R=1, for CI
"""

from __future__ import annotations

import argparse
import json
import sys

from study_runs import (
    HERE,
    load_average,
    machine_facts,
    med,
    median,
    parse_summary,
    run_command,
    study_command,
    wait_quiet,
)

GOAL = 1.00
OBJECTIVE = HERE / "idiomatic_objective.py"
BUDGET = HERE / "idiomatic_budget.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-trials", type=int, default=100, help="trials per study (100)")
    parser.add_argument("--epochs", type=int, default=10, help="max epochs per trial (10)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions (3)")
    parser.add_argument("--also", action="append", default=[], metavar="KEY=VALUE",
                        help="also run (b') = (b) + --set KEY=VALUE (repeatable), interleaved, "
                             "e.g. tracking.enabled=false or train.threads=1")
    parser.add_argument("--max-load", type=float, default=None,
                        help="before each run, wait (up to 10 min) for the 1-min load average "
                             "to fall below this")
    parser.add_argument("--quick", action="store_true",
                        help="3 trials of 2 epochs, 1 repetition: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_trials, args.epochs, args.repeats = 3, 2, 1
    if min(args.n_trials, args.epochs, args.repeats) < 1:
        parser.error("--n-trials, --epochs and --repeats must be >= 1")
    return args


def run_a(args: argparse.Namespace):
    run = run_command("a", [sys.executable, str(OBJECTIVE), "--n-trials", str(args.n_trials),
                            "--epochs", str(args.epochs)]).check()
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    run.facts = {"COMPLETE": facts["complete"], "PRUNED": facts["pruned"],
                 "best_value": facts["best_value"], "epochs": facts["epochs"],
                 "optimize": facts["optimize_seconds"], "threads": facts["torch_threads"]}
    return run


def run_b(args: argparse.Namespace, also: list[str] = ()):
    extra = [] if args.epochs == 10 else ["--set", f"train.max_epochs={args.epochs}"]
    extra += [x for kv in also for x in ("--set", kv)]
    run = run_command("b", study_command(str(BUDGET), "--n-trials", str(args.n_trials),
                                         *extra)).check()
    summary = parse_summary(run.stdout)
    run.facts = {"COMPLETE": summary.get("complete", 0), "PRUNED": summary.get("pruned", 0),
                 "best_value": summary.get("best_value", float("nan")),
                 "epochs": summary.get("epochs", 0), "optimize": run.phase("optimize"),
                 "threads": run.info.get("torch_threads_after_optimize"),
                 "refit_epochs": summary.get("refit_epochs")}
    return run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sides = ["a", "b"] + (["b'"] if args.also else [])
    machine_facts("trickopt vs the idiomatic Optuna objective: one study, whole command", [
        f"budget: digits, {args.n_trials} trials x <= {args.epochs} epochs, batch 128, TPE "
        "seed 0, MedianPruner(n_startup_trials=5, n_warmup_steps=0)",
        f"(a) `python benchmarks/idiomatic_objective.py --n-trials {args.n_trials}` "
        "(Optuna's pytorch_simple.py on digits; in-memory, no tracking)",
        f"(b) `python -m trickopt.study benchmarks/idiomatic_budget.yaml --n-trials "
        f"{args.n_trials}` (MLflow tracking on, ./mlflow.db; journal storage; refit "
        "train_val; progress bar on), through benchmarks/phase_clock.py",
        f"{args.repeats} repetitions, interleaved ({', '.join(sides)}; the order reversed "
        "every other repetition), each run in a fresh temp dir"])
    runs: dict[str, list] = {side: [] for side in sides}
    loads = []
    for rep in range(args.repeats):
        for side in sides if rep % 2 == 0 else list(reversed(sides)):
            wait_quiet(args.max_load)
            runs[side].append(run_a(args) if side == "a" else
                              run_b(args, args.also if side == "b'" else ()))
            print(f"(rep {rep + 1} {side}: {runs[side][-1].wall:.1f} s, load "
                  f"{runs[side][-1].load})", file=sys.stderr, flush=True)
        loads.append(load_average())

    a, b = runs["a"], runs["b"]
    print("| rep | (a) idiomatic, s | (b) trickopt, s | (b)/(a) | (b) minus its refit / (a) "
          "| (b) optimize / (a) optimize | load average after |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    ratio, ratio_norefit, ratio_opt = [], [], []
    for i, (ra, rb) in enumerate(zip(a, b)):
        ratio.append(rb.wall / ra.wall)
        ratio_norefit.append((rb.wall - rb.phase("refit")) / ra.wall)
        ratio_opt.append(rb.facts["optimize"] / ra.facts["optimize"])
        print(f"| {i + 1} | {ra.wall:.1f} | {rb.wall:.1f} | {ratio[-1]:.3f} | "
              f"{ratio_norefit[-1]:.3f} | {ratio_opt[-1]:.3f} | {loads[i]} |")
    print(f"| median (min–max) | {med([r.wall for r in a], '{:.1f}')} | "
          f"{med([r.wall for r in b], '{:.1f}')} | {med(ratio, '{:.3f}')} | "
          f"{med(ratio_norefit, '{:.3f}')} | {med(ratio_opt, '{:.3f}')} | |")

    print("\nWhere the time goes, seconds, median (min–max) over the repetitions "
          "(phases of (b) from phase_clock.py; (a) times its own study.optimize):\n")
    print("| phase | (a) idiomatic | (b) trickopt |")
    print("|---|---:|---:|")
    rows = [
        ("start-up: interpreter, imports, data, study, MLflow store and parent run",
         [r.wall - r.facts["optimize"] for r in a],  # (a): everything but optimize
         [r.phase("imports_done") + r.phase("load_data") + r.phase("open_study")
          + r.phase("open_tracker") for r in b]),
        ("  of which open_tracker (the parent-run claim; MLflow is opened by the tracking "
         "process, in parallel)", [],
         [r.phase("open_tracker") for r in b]),
        ("optimize (all trials)", [r.facts["optimize"] for r in a],
         [r.phase("optimize") for r in b]),
        ("importances", [], [r.phase("importances") for r in b]),
        ("refit (the best trial's kept model scored on test + train+val refit + its run)", [],
         [r.phase("refit") for r in b]),
        ("parent run summary (metrics, study file) + end_parent, sent", [],
         [r.phase("parent_summary") + r.phase("end_parent") for r in b]),
        ("waiting for the tracking process (its last writes, the plots, its exit)", [],
         [r.phase("tracking_close") for r in b]),
        ("CLI before run_study's set-up (config, lazy imports)", [],
         [r.phases["load_data"][0][0] - r.phase("imports_done") for r in b]),
        ("after main() returned (interpreter shutdown)", [], [r.after("main_end") for r in b]),
        ("the rest (gaps between phases, summary print)", [],
         [r.wall - r.phase("imports_done") - r.phase("load_data") - r.phase("open_study")
          - r.phase("open_tracker") - r.phase("optimize") - r.phase("importances")
          - r.phase("refit") - r.phase("parent_summary") - r.phase("end_parent")
          - r.phase("tracking_close")
          - (r.phases["load_data"][0][0] - r.phase("imports_done")) - r.after("main_end")
          for r in b]),
        ("whole command", [r.wall for r in a], [r.wall for r in b]),
    ]
    for name, va, vb in rows:
        print(f"| {name} | {med(va) if va else '—'} | {med(vb) if vb else '—'} |")

    print("\nFor context (median over repetitions; identical across repetitions when the "
          "runs are deterministic):\n")
    print("| side | trials complete | trials pruned | epochs trained | best val accuracy | "
          "optimize s per trained epoch | torch threads |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, side in (("(a) idiomatic", a), ("(b) trickopt", b)):
        f = [r.facts for r in side]
        per_epoch = [x["optimize"] / x["epochs"] if x["epochs"] else float("nan") for x in f]
        complete = sorted({x["COMPLETE"] for x in f})
        pruned = sorted({x["PRUNED"] for x in f})
        epochs = sorted({x["epochs"] for x in f})
        best = sorted({round(x["best_value"], 4) for x in f})
        print(f"| {name} | {'/'.join(map(str, complete))} | {'/'.join(map(str, pruned))} | "
              f"{'/'.join(map(str, epochs))} | {'/'.join(f'{v:.4f}' for v in best)} | "
              f"{med(per_epoch, '{:.4f}')} | {f[0]['threads']} |")

    if args.also:
        b1 = runs["b'"]
        shown = " ".join(f"--set {kv}" for kv in args.also)
        print(f"\nWhat we tried: (b') = (b) + `{shown}`, interleaved with (a) and (b):\n")
        print("| rep | (b') s | (b')/(a) | (b')/(b) | (b') optimize / (a) optimize | "
              "(b') optimize s per trained epoch |")
        print("|---:|---:|---:|---:|---:|---:|")
        r1 = [x.wall / y.wall for x, y in zip(b1, a)]
        r2 = [x.wall / y.wall for x, y in zip(b1, b)]
        r3 = [x.facts["optimize"] / y.facts["optimize"] for x, y in zip(b1, a)]
        pe = [x.facts["optimize"] / x.facts["epochs"] for x in b1]
        for i, x in enumerate(b1):
            print(f"| {i + 1} | {x.wall:.1f} | {r1[i]:.3f} | {r2[i]:.3f} | {r3[i]:.3f} | "
                  f"{pe[i]:.4f} |")
        print(f"| median (min–max) | {med([x.wall for x in b1], '{:.1f}')} | "
              f"{med(r1, '{:.3f}')} | {med(r2, '{:.3f}')} | {med(r3, '{:.3f}')} | "
              f"{med(pe, '{:.4f}')} |")
        print(f"\n(b') trials: {b1[0].facts['COMPLETE']} complete, {b1[0].facts['PRUNED']} "
              f"pruned, {b1[0].facts['epochs']} epochs, best {b1[0].facts['best_value']:.4f}; "
              f"threads {b1[0].facts['threads']}.")

    value = median(ratio)
    verdict = "meets" if value <= GOAL else "misses"
    if args.quick:
        verdict = "--quick is too small for a verdict on"
    print(f"\n(b)/(a) = {value:.3f}: {verdict} the goal of <= {GOAL:.2f}.")
    print(f"Load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
