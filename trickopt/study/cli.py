"""`python -m trickopt.study [STUDY.yaml] [options]`: run or resume a study."""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
from typing import NoReturn

from trickopt.config import ConfigError
from trickopt.data import DataError
from trickopt.factories import FactoryError
from trickopt.study import signals
from trickopt.study.config import load_study_config
from trickopt.study.report import format_summary
from trickopt.study.runner import StudyMismatchError, TrackingError, run_study
from trickopt.study.storage import StorageError
from trickopt.urls import mask_passwords_in_text, remember_secrets

EXAMPLES = """examples:
  python -m trickopt.study                          # the built-in default: MNIST-1D CNN, all tricks
  python -m trickopt.study --list                   # the knobs a study can search, the data sets
  python -m trickopt.study studies/quickstart.yaml  # the same, from its file
  python -m trickopt.study --n-trials 100 --set study.pruner=hyperband
  python -m trickopt.study studies/tabular.yaml --set search.norm=batch   # fix a trick
  python -m trickopt.study --storage postgresql://user:pw@db/optuna \\
      --tracking-uri http://mlflow:5000            # join a study shared by many workers

Running the same command again resumes the study and adds trials.
Then: mlflow ui   (in the same directory) shows the parent run and one child run per trial.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trickopt.study", epilog=EXAMPLES,
        description="Search over training tricks with Optuna; every trial is tracked in MLflow.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_file", nargs="?", metavar="STUDY.yaml",
                        help="a study file (default: the built-in default study)")
    parser.add_argument("--n-trials", type=int, help="trials to run now (study.n_trials)")
    parser.add_argument("--timeout", type=float, help="seconds to run now (study.timeout)")
    parser.add_argument("--study-name", help="study.name; also the MLflow experiment")
    parser.add_argument("--storage", help="Optuna storage URL (default: ./trickopt.journal)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: "
                        "$MLFLOW_TRACKING_URI if set, else ./mlflow.db)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--seed", type=int, help="sampler seed (study.seed)")
    parser.add_argument("--workers", type=int,
                        help="worker processes on this machine (study.workers)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--list", action="store_true",
                        help="list the searchable knobs and the data sets, then exit")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override any setting, e.g. train.max_epochs=20")
    return parser.parse_args(argv)


def _overrides(args: argparse.Namespace) -> list[str]:
    flags = {"study.n_trials": args.n_trials, "study.timeout": args.timeout,
             "study.name": args.study_name, "study.storage": args.storage,
             "tracking.uri": args.tracking_uri, "study.seed": args.seed,
             "study.workers": args.workers, "train.device": args.device}
    # A flag is passed as a YAML-quoted string where it is text, so `--study-name 123` stays
    # a name and a URL with ':' is not read as a mapping.
    text = {"study.name", "study.storage", "tracking.uri", "train.device"}
    return list(args.overrides) + [
        f"{key}={_quote(value) if key in text else value}"
        for key, value in flags.items() if value is not None]


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def list_knobs_and_data() -> str:
    """What `--list` prints: every searchable knob and every built-in data set."""
    from trickopt.data import DATASETS
    from trickopt.study.space import ALL_TRICKS, PARAMS

    lines = ["searchable knobs (search.NAME; a fixed value, {low, high, log, step} or "
             "{choices: [...]}):"]
    for name, param in PARAMS.items():
        default = ALL_TRICKS.get(name, "not searched by default")
        when = (f"  (only when {param.parent} is {' or '.join(map(str, param.parent_values))})"
                if param.parent else "")
        lines.append(f"  {name:<20} default: {default}{when}")
    lines.append("data sets (data.name): " + ", ".join(DATASETS))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from trickopt.study import phases

    try:
        return _main(argv)
    finally:
        phases.mark("main_end")
        phases.write()


def exit_now(code: int) -> NoReturn:
    """End a `python -m` command with `code` once its output is flushed, skipping the
    interpreter's teardown of torch, optuna and the rest (0.5 to 1 s of every command here).
    Safe because nothing is left open by then: the tracking process and the workers are
    joined, the journal is written record by record, an RDB storage commits each write (its
    idle connections are simply dropped), and temporary files are removed in `finally`.
    A worker still running (one that outlived its stop after Ctrl-C) is waited for by the
    interpreter's usual exit instead."""
    if multiprocessing.active_children():
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _report_step():
    """The `report:` step, imported only for a study that has one (it pulls scipy and
    matplotlib, seconds of every start)."""
    from trickopt.effects import study_step
    return study_step.run


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    remember_secrets(args.storage, args.tracking_uri)  # before any message can show them
    if args.list:
        print(list_knobs_and_data())
        return 0
    try:
        config = load_study_config(args.study_file, _overrides(args))
    except ConfigError as exc:
        for line in exc.errors:
            print(f"error: {mask_passwords_in_text(line)}", file=sys.stderr)
        return 2
    signals.handle_sigterm()
    try:
        result = run_study(config, progress=not args.no_progress,
                           report_step=_report_step() if config.report.enabled else None)
    except (DataError, FactoryError, TrackingError, StorageError, StudyMismatchError) as exc:
        print(f"error: {mask_passwords_in_text(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a fault, not a mistake: the disk filled up, a mount went away
        print(f"error: {mask_passwords_in_text(str(exc))}. Every finished trial is kept; "
              "fix that and run the same command again to go on", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a Ctrl-C after the trials (a Ctrl-C during them is handled)
        print("interrupted while the study was finishing (refit, report or MLflow writes); "
              "every finished trial is kept", file=sys.stderr)
        return signals.EXIT_CODE if signals.received() else 130
    print(format_summary(result, config))
    if result.interrupted:
        return signals.EXIT_CODE if signals.received() else 130
    return 1 if result.tracking_error else 0  # the trials are all in Optuna; MLflow lacks some


if __name__ == "__main__":
    raise SystemExit(main())
