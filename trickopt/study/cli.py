"""`python -m trickopt.study [STUDY.yaml] [options]`: run or resume a study."""

from __future__ import annotations

import argparse
import sys

from trickopt.config import ConfigError

EXAMPLES = """examples:
  python -m trickopt.study                          # the built-in default: digits CNN, all tricks
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
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: ./mlflow.db)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--seed", type=int, help="sampler seed (study.seed)")
    parser.add_argument("--workers", type=int,
                        help="worker processes on this machine (study.workers)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
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


def _tracking_uri_hint(args: argparse.Namespace) -> str | None:
    """The tracking URI the study will most likely use, read from the study file before it is
    validated (validating imports torch: seconds). Only a hint for preparing the store: the
    validated config decides, and a wrong hint costs nothing but the preparation."""
    from trickopt.study.config import read_study_file
    from trickopt.tracking import default_tracking_uri

    try:
        tracking = read_study_file(args.study_file, _overrides(args)).get("tracking") or {}
        if tracking.get("enabled") is False:
            return None
        uri = tracking.get("uri")
        return uri if isinstance(uri, str) else default_tracking_uri()
    except Exception:  # noqa: BLE001 - the validation reports it properly
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from trickopt.study.config import load_study_config
    from trickopt.tracking import StudyTracker

    # Started before anything else, torch included (the config's validation imports it): the
    # tracking process imports mlflow and prepares a new store meanwhile. It writes nothing
    # before run_study opens it; run_study owns it from there.
    hint = _tracking_uri_hint(args)
    early = None
    if hint is not None:  # None: tracking off, or a file the validation will refuse
        early = StudyTracker()
        early.prepare(hint)
    try:
        config = load_study_config(args.study_file, _overrides(args))
    except ConfigError as exc:
        if early is not None:
            early.abandon()
        for line in exc.errors:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except BaseException:
        if early is not None:
            early.abandon()
        raise
    from trickopt.study.tracking_start import start_tracker

    tracker = start_tracker(config, early)
    try:
        from trickopt.data import DataError
        from trickopt.study.report import format_summary
        from trickopt.study.runner import StudyMismatchError, TrackingError, run_study
        from trickopt.study.storage import StorageError
    except BaseException:
        if tracker is not None:
            tracker.abandon()
        raise
    try:
        result = run_study(config, progress=not args.no_progress, tracker=tracker)
    except (DataError, TrackingError, StorageError, StudyMismatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(result, config))
    if result.interrupted:
        return 130
    return 1 if result.tracking_error else 0  # the trials are all in Optuna; MLflow lacks some


if __name__ == "__main__":
    raise SystemExit(main())
