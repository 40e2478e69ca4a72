"""`python -m trickopt.report [STUDY.yaml] [options]`: how much each trick helps, with
confidence, on a finished study (see `trickopt.effects`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import optuna

from trickopt.config import ConfigError
from trickopt.effects.report import as_json, as_markdown, format_table, run_report
from trickopt.study.config import load_study_config
from trickopt.study.storage import StorageError, describe_storage, journal_path, open_storage
from trickopt.urls import mask_passwords_in_text, remember_secrets

MIN_SEEDS = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trickopt.report",
        description="Retrain a finished study's best configuration and each trick switched "
                    "off on paired seeds; report the effects with confidence intervals.")
    parser.add_argument("study_file", nargs="?", metavar="STUDY.yaml",
                        help="the study file (default: the built-in default study)")
    parser.add_argument("--study-name", help="study.name")
    parser.add_argument("--storage", help="Optuna storage URL (default: ./trickopt.journal)")
    parser.add_argument("--seeds", type=int, default=6, help="paired seeds per arm (6)")
    parser.add_argument("--out", help="folder for report.md and report.json (default: next to "
                                      "the study file, or here)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a setting, as for trickopt.study")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    remember_secrets(args.storage)
    if args.seeds < MIN_SEEDS:
        print(f"error: --seeds: must be >= {MIN_SEEDS} (a paired comparison needs at least "
              f"two seeds); got {args.seeds}", file=sys.stderr)
        return 2
    overrides = list(args.overrides)
    if args.study_name:
        overrides.append(f"study.name='{args.study_name}'")
    if args.storage:
        overrides.append(f"study.storage='{args.storage}'")
    try:
        config = load_study_config(args.study_file, overrides)
        study = _load_finished_study(config)
    except (ConfigError, StorageError, LookupError) as exc:
        for line in getattr(exc, "errors", [str(exc).strip("'\"")]):
            print(f"error: {mask_passwords_in_text(line)}", file=sys.stderr)
        return 2
    report = run_report(config, study, args.seeds)
    text = format_table(report)
    print("\n" + text)
    folder = Path(args.out) if args.out else \
        (Path(args.study_file).parent if args.study_file else Path.cwd())
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"report-{report.study}"
    (folder / f"{stem}.md").write_text(as_markdown(report))
    (folder / f"{stem}.json").write_text(as_json(report))
    print(f"\nwritten: {folder / (stem + '.md')}, {folder / (stem + '.json')}")
    return 0


def _load_finished_study(config) -> optuna.Study:
    """The study, read from its storage; a missing study or one without a complete trial is
    a LookupError naming it. Nothing is created (a journal that does not exist stays so)."""
    url, name = config.study.storage, config.study.name
    path = journal_path(url)
    if path is not None and not path.exists():
        raise LookupError(f"study.storage: {path} does not exist; run the study first "
                          f"(python -m trickopt.study ...)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise LookupError(f"study.name: no study {name!r} in {describe_storage(url)}") from None
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise LookupError(f"study.name: the study {name!r} has no complete trial yet; run more "
                          "trials first")
    return study


if __name__ == "__main__":
    raise SystemExit(main())
