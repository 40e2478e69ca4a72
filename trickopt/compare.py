"""`python -m trickopt.compare STUDY.yaml [options]`: a comparison study (the file's `compare:`
section; see `trickopt.effects.compare`).

Same store conventions as `python -m trickopt.study`: the study file, `--study-name`,
`--storage` and `--set` name the study. Each scientific value's tuning is the Optuna study
`<name>.compare.<value>` and the re-runs are jobs of `<name>.compare`, all in the study's
storage, so a rerun of the same command resumes: finished trials and re-runs are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trickopt.config import ConfigError
from trickopt.data import DataError, load_data
from trickopt.effects.compare import open_tuning_studies, run_comparison
from trickopt.effects.compare_output import publish
from trickopt.effects.jobs import open_queue
from trickopt.factories import FactoryError
from trickopt.study import signals
from trickopt.study.config import load_study_config
from trickopt.study.storage import StorageError
from trickopt.study.tracking_checks import TrackingError, check_tracking_uri, tracking_uri
from trickopt.study.trials import StudyMismatchError, end_tracking, print_ui_link, start_tracking
from trickopt.study.workers import report_workers
from trickopt.urls import mask_passwords_in_text, remember_secrets


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trickopt.compare",
        description="Compare the values of a scientific knob (the study file's compare: "
                    "section): tune the nuisance knobs for each value with the same budget, "
                    "re-run each value's best on paired seeds, and report the differences "
                    "with confidence intervals and verdicts.")
    parser.add_argument("study_file", metavar="STUDY.yaml",
                        help="a study file with a compare: section")
    parser.add_argument("--study-name", help="study.name")
    parser.add_argument("--storage", help="Optuna storage URL (default: ./trickopt.journal)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (tracking.uri)")
    parser.add_argument("--out", help="folder for compare-<study>/ (default: next to the "
                                      "study file)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes for the re-runs on this machine (default: one per "
                             "core, or per GPU where there are GPUs); the tuning is "
                             "sequential, as a study's trials are")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a setting, as for trickopt.study")
    return parser.parse_args(argv)


def _overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.overrides)
    for flag, key in ((args.study_name, "study.name"), (args.storage, "study.storage"),
                      (args.tracking_uri, "tracking.uri")):
        if flag:
            overrides.append(f"{key}='{flag}'")
    return overrides


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    remember_secrets(args.storage, args.tracking_uri)  # before any message can show them
    try:
        if args.workers is not None and args.workers < 1:
            raise ConfigError([f"--workers: must be >= 1; got {args.workers}"])
        config = load_study_config(args.study_file, _overrides(args))
        if not config.compare.enabled:
            raise ConfigError([f"compare: {args.study_file} has no compare: section (e.g. "
                               "compare: {scientific: {norm: [batch, layer]}}; see "
                               "studies/compare_norms.yaml)"])
        data = load_data(config.data)  # a data set that cannot load: refused, nothing made
        if config.tracking.enabled:
            check_tracking_uri(tracking_uri(config))
        studies = open_tuning_studies(config)
    except (ConfigError, DataError, FactoryError, StorageError, TrackingError,
            StudyMismatchError) as exc:
        for line in getattr(exc, "errors", [str(exc)]):
            print(f"error: {mask_passwords_in_text(line)}", file=sys.stderr)
        return 2
    signals.handle_sigterm()  # SIGTERM as Ctrl-C: the running trial ends, the rest is kept
    storage = studies[0][2]
    tracker = start_tracking(config, storage, coordinator=True, own_study=False)
    queue = open_queue(config, storage, tracker, kind="compare")
    status = "KILLED"  # the parent run's status, unless the comparison is written
    try:
        comparison = run_comparison(config, studies, queue, data=data, tracker=tracker,
                                    progress=not args.no_progress,
                                    workers=args.workers or report_workers())
        folder = Path(args.out) if args.out else Path(args.study_file).parent
        publish(comparison, folder / f"compare-{config.study.name}", tracker)
        status = "FINISHED"
    except KeyboardInterrupt:
        print("\ninterrupted: the finished trials and re-runs are kept; the same command "
              "resumes", file=sys.stderr)
        return signals.EXIT_CODE if signals.received() else 130
    finally:
        closed = end_tracking(tracker, config, storage, status)
    print_ui_link(closed, config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
