"""Tracking overhead: the same study with MLflow tracking on and off.

Both sides run `python -m trickopt.study [STUDY.yaml] --n-trials N --no-progress` (default:
studies/digits.yaml, TPE seed 0, where the recorded figures were taken); off adds `--set
tracking.enabled=false`. Trials are deterministic on the CPU for a seed, so both sides train
the same trials (the last table shows it). Each run starts in a fresh temporary folder, so
tracking on creates ./mlflow.db as a first run does.

Run:
    python benchmarks/tracking_overhead.py --n-trials 20 --repeats 5
    python benchmarks/tracking_overhead.py benchmarks/idiomatic_budget.yaml --n-trials 100
    python benchmarks/tracking_overhead.py --quick      # 2 trials of 1 epoch, 1 repetition
"""

from __future__ import annotations

import argparse

from common import DIGITS_STUDY, compare_commands, machine_facts, study_command


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study_file", nargs="?", metavar="STUDY.yaml",
                        help="a study file (default: studies/digits.yaml)")
    parser.add_argument("--n-trials", type=int, default=30, help="trials per study (30)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions (5)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="passed to both sides")
    parser.add_argument("--quick", action="store_true", help="2 trials of 1 epoch, R=1")
    args = parser.parse_args()
    if args.quick:
        args.n_trials, args.repeats = 2, 1
        args.overrides = ["train.max_epochs=1", *args.overrides]
    if min(args.n_trials, args.repeats) < 1:
        parser.error(f"--n-trials and --repeats must be >= 1; got {vars(args)}")
    return args


def main() -> None:
    args = parse_args()
    argv = [args.study_file or str(DIGITS_STUDY), "--n-trials", str(args.n_trials),
            "--no-progress", *[x for kv in args.overrides for x in ("--set", kv)]]
    machine_facts("MLflow tracking on against off: one study", [
        f"on: `python -m trickopt.study {' '.join(argv)}` (MLflow: ./mlflow.db, fresh)",
        "off: the same + `--set tracking.enabled=false`",
        f"repetitions: {args.repeats}, interleaved, each run in a fresh temporary folder"])
    compare_commands({"off": study_command(*argv, "--set", "tracking.enabled=false"),
                      "on": study_command(*argv)}, args.repeats)


if __name__ == "__main__":
    main()
