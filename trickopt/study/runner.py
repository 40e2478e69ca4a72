"""Run a study end to end: checks, storage, tracking, trials, refit, summary.

Linear on purpose (set up, run, clean up), like torchtune's recipes. Everything a user can get
wrong in a file was validated before this module is reached; what can only be checked by
trying (the data, the storage, the tracking server) is checked here, before anything is
created. Only then does the tracking process start.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import optuna
import torch
from optuna.trial import TrialState

from trickopt.data import load_data
from trickopt.study.config import StudyConfig, parse_study_config
from trickopt.study.model_check import check_model
from trickopt.study.objective import PARAMS_ATTR
from trickopt.study.phases import phase
from trickopt.study.progress import Progress
from trickopt.study.recovery import WORKER_ATTR, fail_dead_trials, is_dead_here
from trickopt.study.refit import score_best_and_refit
from trickopt.study.report import log_parent_summary
from trickopt.study.storage import describe_storage
from trickopt.study.tracking_checks import TrackingError, check_tracking_uri, tracking_uri
from trickopt.study.trials import (
    StudyMismatchError,
    open_study,
    optimize_here,
    release_parent_claim,
    start_tracking,
)
from trickopt.study.workers import (
    optimize_share,
    run_workers,
    threads_per_worker,
)
from trickopt.tracking import events as ev
from trickopt.urls import remember_secrets

__all__ = ["StudyResult", "StudyMismatchError", "TrackingError", "run_study"]


@dataclass
class StudyResult:
    study: optuna.Study
    storage: str  # a readable, password-free description
    tracking_uri: str | None
    parent_run_id: str | None = None
    experiment_id: str | None = None
    interrupted: bool = False
    states: dict[str, int] = field(default_factory=dict)
    epochs_trained: int = 0
    epochs_budget: int = 0
    epochs_saved_by_stopping: int = 0
    epochs_saved_by_pruning: int = 0
    importances: dict[str, float] = field(default_factory=dict)
    best_trial_test: dict[str, float] | None = None
    refit: dict[str, Any] | None = None
    recovered_trials: list[int] = field(default_factory=list)
    tracking_error: str | None = None  # why MLflow tracking stopped, where it did
    ignored_tricks: list[str] = field(default_factory=list)  # searched, never placed
    report: Any = None  # the trick-effect report (`report:` in the study file)
    report_folder: str | None = None


# The study's `report:` step: (config, study, storage, tracker, progress, out, result) -> the
# trial it chose for the refit. It lives in trickopt.effects, the layer built on this one, so
# the caller hands it in: `python -m trickopt.study` passes trickopt.effects.study_step.run.
ReportStep = Callable[..., "int | None"]


def run_study(config: StudyConfig, *, model=None, data=None, progress: bool = True,
              out: TextIO | None = None, report_step: ReportStep | None = None) -> StudyResult:
    """Run (or resume) the study `config` describes and return what happened.

    `model` and `data` are factories of your own (`build(tricks, input_shape, n_classes,
    **params)`, `load(data_section)`): the study file's settings (`config.raw`, read from
    `config.source`) are validated again with them. To combine them with changes made to
    `config` in Python, pass them to `load_study_config` instead.

    Raises (before anything is created): ConfigError, DataError, FactoryError, TrackingError,
    StorageError, StudyMismatchError.

    A study file with a `report:` section needs `report_step=trickopt.effects.study_step.run`
    (the trick-effect report between the search and the refit).
    """
    if config.report.enabled and report_step is None:
        raise ValueError("config.report is set: pass report_step=trickopt.effects.study_step.run "
                         "to run_study (or set report.enabled: false to skip the report)")
    if model is not None or data is not None:
        config = parse_study_config(config.raw, source=config.source, model=model, data=data)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    remember_secrets(config.study.storage, config.tracking.uri)  # masked in all we print
    out = out if out is not None else sys.stdout  # looked up now: it may have been replaced
    with phase("load_data"):
        data = load_data(config.data)
    ignored = check_model(config, data)
    for name in ignored:
        print(f"warning: search.{name} is searched, but the model never asks `tricks` for it: "
              f"every value of {name} trains the same model (fix it in the study file, or "
              "place tricks.norm/dropout/... in the model)", file=sys.stderr, flush=True)
    if config.tracking.enabled:
        check_tracking_uri(tracking_uri(config))
    with phase("open_study"):
        study, storage = open_study(config)
    tracker = start_tracking(config, storage, coordinator=True)
    result = StudyResult(study, describe_storage(config.study.storage),
                         tracker.display_uri if tracker else None, ignored_tricks=ignored)
    try:
        _run(config, study, storage, data, tracker, progress, out, result, report_step)
    finally:
        if tracker is not None:
            with phase("tracking_close"):
                report = tracker.close()  # waits for the tracking process to write everything
            result.parent_run_id, result.experiment_id = report.parent_run_id, \
                report.experiment_id
            result.tracking_error = report.error
        try:
            release_parent_claim(config, storage)
        except Exception:  # noqa: BLE001 - a marker left behind costs nothing; the error that
            pass  # brought us here (a full disk, say) is the one to report
    return result


def _run(config: StudyConfig, study: optuna.Study, storage, data, tracker, progress: bool,
         out: TextIO, result: StudyResult, report_step: ReportStep | None) -> None:
    result.recovered_trials = _recover(study, storage, tracker)
    print(f"study {config.study.name!r}: {len(study.trials)} trials so far in "
          f"{result.storage}" + (f"; retrying trials {result.recovered_trials} of a dead worker"
                                 if result.recovered_trials else ""), file=out, flush=True)
    kept: dict[int, dict] = {}  # the best trial's weights, where this command trained it
    try:
        with phase("optimize"):
            workers = min(config.study.workers, config.study.n_trials)  # each has a trial
            _set_threads(config, workers)
            if workers == 1:
                kept = optimize_here(config, study, tracker, config.study.n_trials,
                                     progress=progress, data=data)
            else:
                kept = _optimize_in_workers(config, study, tracker, data, progress)
    except KeyboardInterrupt:
        result.interrupted = True
    _set_threads(config, 1)  # what follows trains alone
    result.recovered_trials += _recover(study, storage, tracker)
    _count(study, config, result)
    with phase("importances"):
        result.importances = _importances(study)
    if tracker is not None:  # drawn by the tracking process while this one refits
        tracker.log_plots(study.get_trials(deepcopy=False), study.direction.name.lower(),
                          result.importances)
    chosen = None
    if config.report.enabled and not result.interrupted and result.states.get("COMPLETE"):
        with phase("report"):
            chosen = report_step(config, study, storage, tracker, progress, out, result)
    if not result.interrupted and result.states.get("COMPLETE"):
        with phase("refit"):
            result.best_trial_test, result.refit = score_best_and_refit(
                config, study, data, tracker, kept, chosen)
    if tracker is not None:
        with phase("parent_summary"):
            log_parent_summary(tracker, study, config, result)
            tracker.send(ev.EndParent("KILLED" if result.interrupted else "FINISHED"))


def _set_threads(config: StudyConfig, workers: int) -> None:
    """This process's torch threads while `workers` processes train (train.threads rules)."""
    if config.train.threads is None:
        torch.set_num_threads(threads_per_worker(workers))


def _optimize_in_workers(config: StudyConfig, study: optuna.Study, tracker, data,
                         progress: bool) -> dict[int, dict]:
    """This process is worker 0 and trains alongside the spawned ones; one bar counts the
    trials of all."""
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    start = len(study.get_trials(deepcopy=False, states=done))
    bar = Progress(config.study.n_trials, study, enabled=progress)

    def tick() -> None:
        finished = len(study.get_trials(deepcopy=False, states=done)) - start
        if finished > bar.bar.n:
            bar.bar.update(finished - bar.bar.n)

    def here(slots) -> dict[int, dict]:
        return optimize_share(config, study, tracker, slots, data=data, on_trial=tick)

    try:
        return run_workers(config, config.study.n_trials, on_tick=tick, here=here, data=data)
    finally:
        tick()
        bar.close()


def _recover(study: optuna.Study, storage, tracker) -> list[int]:
    """Fail (and re-queue) the trials of dead workers; close their MLflow runs."""
    failed = fail_dead_trials(study, storage)
    if tracker is not None:
        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        tracker.send(ev.Reconcile([trial_record(t) for t in
                                   study.get_trials(deepcopy=False, states=finished)]))
    return failed


def trial_record(trial: optuna.trial.FrozenTrial) -> ev.TrialRecord:
    """What MLflow should show of a finished trial, read from the Optuna storage."""
    attrs = trial.user_attrs
    tags = {k: str(attrs[k]) for k in ("stop_reason", "best_epoch", "error") if k in attrs}
    metrics = {k: float(attrs[k]) for k in ("best_epoch", "epochs_trained") if k in attrs}
    if trial.value is not None:
        metrics["value"] = trial.value
    params = attrs.get(PARAMS_ATTR) or trial.params
    gone = attrs.get("stop_reason") == "worker_died" or is_dead_here(attrs.get(WORKER_ATTR, ""))
    return ev.TrialRecord(trial.number, trial.state.name, {k: str(v) for k, v in params.items()},
                          tags, metrics, dict(trial.intermediate_values), gone)


def _count(study: optuna.Study, config: StudyConfig, result: StudyResult) -> None:
    max_epochs = config.train.max_epochs
    for trial in study.get_trials(deepcopy=False):
        result.states[trial.state.name] = result.states.get(trial.state.name, 0) + 1
        trained = trial.user_attrs.get("epochs_trained")
        if trained is None or trial.state == TrialState.RUNNING:
            continue  # a trial that died before it could count its epochs, or a live one
        result.epochs_trained += trained
        result.epochs_budget += max_epochs
        if trial.state == TrialState.PRUNED:
            result.epochs_saved_by_pruning += max_epochs - trained
        elif trial.state == TrialState.COMPLETE:
            result.epochs_saved_by_stopping += max_epochs - trained


def _importances(study: optuna.Study) -> dict[str, float]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):  # e.g. every trial shares the same parameters
        return {}
