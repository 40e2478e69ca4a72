"""`python -m trickopt.report [STUDY.yaml] [options]`: how much each trick helps, with
confidence, on a finished study (see `trickopt.effects`).

Same store conventions as `python -m trickopt.study`: the study file, `--study-name`,
`--storage` and `--set` name the study; the report's trainings are jobs of the companion study
`<name>.report` in the same storage, so a rerun resumes (finished trainings are not repeated)
and `--join` on other machines (PostgreSQL storage) shares the work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import optuna

from trickopt.config import ConfigError
from trickopt.effects.jobs import FINISHED_ATTR, open_queue, work_until_finished
from trickopt.effects.output import publish
from trickopt.effects.report import Settings, run_report
from trickopt.study.config import load_study_config
from trickopt.study.storage import StorageError, describe_storage, journal_path, open_storage
from trickopt.study.tracking_checks import TrackingError, check_tracking_uri, tracking_uri
from trickopt.study.trials import end_tracking, print_ui_link, start_tracking
from trickopt.study.workers import report_workers
from trickopt.urls import mask_passwords_in_text, remember_secrets

MIN_SEEDS = 2
RETUNABLE = ("lr",)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trickopt.report",
        description="Re-run a finished study's top trials and its best configuration with each "
                    "trick switched off on paired seeds; report the effects with confidence "
                    "intervals, the early-stopping replay and where the good trials are.")
    parser.add_argument("study_file", nargs="?", metavar="STUDY.yaml",
                        help="the study file (default: the built-in default study)")
    parser.add_argument("--study-name", help="study.name")
    parser.add_argument("--storage", help="Optuna storage URL (default: ./trickopt.journal)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (tracking.uri)")
    parser.add_argument("--seeds", type=int, default=Settings.seeds,
                        help=f"paired seeds per arm to start with ({Settings.seeds})")
    parser.add_argument("--max-seeds", type=int, default=Settings.max_seeds,
                        help=f"racing: seeds an open arm may grow to ({Settings.max_seeds})")
    parser.add_argument("--no-racing", action="store_true",
                        help="every arm on --seeds seeds, however open its verdict")
    parser.add_argument("--top-k", type=int, default=Settings.top_k,
                        help=f"top trials re-run to choose the best by its mean "
                             f"({Settings.top_k})")
    parser.add_argument("--retune", choices=RETUNABLE, action="append", default=[],
                        help="each arm also tries lr x 1/2 and x 2 and keeps its best")
    parser.add_argument("--path", action="store_true",
                        help="also the ablation path from no tricks to the best")
    parser.add_argument("--workers", type=int, default=None,
                        help="training processes on this machine (default: one per core, or "
                             "one per GPU where there are GPUs)")
    parser.add_argument("--join", action="store_true",
                        help="only work: run the report's waiting trainings of a report "
                             "started elsewhere on the same storage, until it is written")
    parser.add_argument("--out", help="folder for report-<study>/ (default: next to the "
                                      "study file, or here)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a setting, as for trickopt.study")
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> Settings:
    for name, value, low in (("--seeds", args.seeds, MIN_SEEDS), ("--top-k", args.top_k, 1),
                             ("--workers", args.workers, 1)):
        if value is not None and value < low:
            why = " (a paired comparison needs at least two seeds)" if name == "--seeds" else ""
            raise ConfigError([f"{name}: must be >= {low}{why}; got {value}"])
    if args.max_seeds < args.seeds:
        raise ConfigError([f"--max-seeds: must be >= --seeds ({args.seeds}); got "
                           f"{args.max_seeds}"])
    return Settings(seeds=args.seeds, max_seeds=args.max_seeds, racing=not args.no_racing,
                    top_k=args.top_k, retune_lr="lr" in args.retune, path=args.path,
                    workers=args.workers or report_workers())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    remember_secrets(args.storage, args.tracking_uri)
    overrides = list(args.overrides)
    for flag, key in ((args.study_name, "study.name"), (args.storage, "study.storage"),
                      (args.tracking_uri, "tracking.uri")):
        if flag:
            overrides.append(f"{key}='{flag}'")
    try:
        settings = _settings(args)
        config = load_study_config(args.study_file, overrides)
        if config.tracking.enabled:
            check_tracking_uri(tracking_uri(config))
        study, storage = _load_finished_study(config)
    except (ConfigError, StorageError, TrackingError, LookupError) as exc:
        for line in getattr(exc, "errors", [str(exc).strip("'\"")]):
            print(f"error: {mask_passwords_in_text(line)}", file=sys.stderr)
        return 2
    if args.join:
        return _join(config, storage)
    tracker = start_tracking(config, storage, coordinator=True)
    queue = open_queue(config, storage, tracker)
    queue.study.set_user_attr(FINISHED_ATTR, False)
    status = "KILLED"  # the parent run's status, unless the report is written
    try:
        report = run_report(config, study, queue, settings, progress=not args.no_progress)
        folder = Path(args.out) if args.out else \
            (Path(args.study_file).parent if args.study_file else Path.cwd())
        publish(report, folder / f"report-{report.study}", tracker)
        queue.study.set_user_attr(FINISHED_ATTR, True)
        status = "FINISHED"
    except KeyboardInterrupt:
        print("\ninterrupted: the finished trainings are kept; the same command resumes",
              file=sys.stderr)
        return 130
    finally:
        closed = end_tracking(tracker, config, storage, status)
    print_ui_link(closed, config)
    return 0


def _join(config, storage) -> int:
    """Work on a report that another process coordinates, until it is written."""
    import torch

    from trickopt.study.workers import threads_per_worker

    if config.train.threads is None:
        torch.set_num_threads(threads_per_worker(1))
    tracker = start_tracking(config, storage, coordinator=False)
    try:
        ran = work_until_finished(open_queue(config, storage, tracker))
    except KeyboardInterrupt:
        return 130
    finally:
        if tracker is not None:
            tracker.close()
    print(f"joined the report of {config.study.name!r}: ran {ran} trainings")
    return 0


def _load_finished_study(config) -> tuple[optuna.Study, object]:
    """The study and its storage; a missing study or one without a complete trial is a
    LookupError naming it. Nothing is created (a journal that does not exist stays so)."""
    url, name = config.study.storage, config.study.name
    path = journal_path(url)
    if path is not None and not path.exists():
        raise LookupError(f"study.storage: {path} does not exist; run the study first "
                          f"(python -m trickopt.study ...)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise LookupError(f"study.name: no study {name!r} in {describe_storage(url)}") from None
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise LookupError(f"study.name: the study {name!r} has no complete trial yet; run more "
                          "trials first")
    return study, storage


if __name__ == "__main__":
    raise SystemExit(main())
