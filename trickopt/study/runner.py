"""Run a study end to end: checks, storage, MLflow parent run, trials, refit, summary.

Linear on purpose (setup, run, clean up), like torchtune's recipes. Everything a user can get
wrong in a file was validated before this module is reached; what can only be checked by
trying (the data file, the storage, the tracking server) is checked here before anything is
created.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, TextIO

import optuna
import torch
from optuna.trial import TrialState

from trickopt.data import load_data
from trickopt.models import build_model
from trickopt.study.config import StudyConfig, create_pruner, create_sampler
from trickopt.study.objective import Objective, decided_params, flatten_config
from trickopt.study.progress import Progress
from trickopt.study.recovery import close_orphan_runs, fail_dead_trials
from trickopt.study.storage import describe_storage, open_storage
from trickopt.study.tracking_start import start_tracker, tracking_uri
from trickopt.tracking import STUDY_TAG
from trickopt.train import evaluate, fit, refit, resolve_device

PARENT_ATTR = "mlflow_parent_run_id"
METRIC_ATTR = "metric"
PARENT_WAIT_SECONDS = 60  # how long a worker waits for another to create the parent run


class StudyMismatchError(RuntimeError):
    """The named study exists with another metric; the message says which."""


class TrackingError(RuntimeError):
    """The MLflow tracking URI cannot be used; the message names it and says why."""


@dataclass
class StudyResult:
    study: optuna.Study
    storage: str  # a readable, password-free description
    tracking_uri: str | None
    parent_run_id: str | None
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


def run_study(config: StudyConfig, *, progress: bool = True, out: TextIO | None = None,
              tracker=None) -> StudyResult:
    """Run (or resume) the study `config` describes and return what happened.

    `tracker`: a `start_tracker(config)` started earlier (the CLI starts it before importing
    torch, so that its process's start-up overlaps this one's); run_study closes it.
    Raises (before anything is created): DataError, TrackingError, StorageError.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = out if out is not None else sys.stdout  # looked up now: it may have been replaced
    if tracker is None:
        tracker = start_tracker(config)
    elif not config.tracking.enabled:
        tracker.abandon()
        tracker = None
    try:
        data = load_data(config.data)
        if tracker is not None:
            check_tracking_uri(tracking_uri(config))
        study, storage = open_study(config)
    except BaseException:
        if tracker is not None:
            tracker.abandon()  # nothing was created in the tracking store
        raise
    try:
        result = _run(config, study, storage, data, tracker, progress, out)
    finally:
        if tracker is not None:
            tracker.close()  # waits for the tracking process to write everything
    if tracker is not None:
        result.tracking_error = tracker.error
    return result


def _run(config: StudyConfig, study: optuna.Study, storage, data, tracker, progress: bool,
         out: TextIO) -> StudyResult:
    parent = open_tracker(config, study, storage, tracker) if tracker is not None else None
    result = StudyResult(study, describe_storage(config.study.storage),
                         tracker.display_uri if tracker else None, None)
    result.recovered_trials = _recover(study, storage, tracker)
    print(f"study {config.study.name!r}: {len(study.trials)} trials so far in "
          f"{result.storage}" + (f"; retrying trials {result.recovered_trials} of a dead worker"
                                 if result.recovered_trials else ""), file=out, flush=True)
    kept: dict[int, dict] = {}  # the best trial's weights, where this process trained it
    try:
        if config.study.workers == 1:
            if config.train.threads is None:
                from trickopt.study.workers import threads_per_worker

                torch.set_num_threads(threads_per_worker(1))
            optimize_here(config, study, tracker, config.study.n_trials, progress=progress,
                          data=data, parent=parent, kept=kept)
        else:
            if parent is not None:
                parent.publish()  # the workers read the parent run's id from the study
            if tracker is not None and tracker.error is not None:
                config = dataclasses.replace(  # tracking failed here: it would there too
                    config, tracking=dataclasses.replace(config.tracking, enabled=False))
            _optimize_in_workers(config, study, progress)
    except KeyboardInterrupt:
        result.interrupted = True
    result.recovered_trials += _recover(study, storage, tracker)
    _count(study, config, result)
    result.importances = _importances(study)
    folder = None
    if tracker is not None:
        from trickopt.study.report import send_parent_plots

        folder = send_parent_plots(tracker, study, result.importances)  # drawn during the refit
    if not result.interrupted and result.states.get("COMPLETE"):
        _refit(config, study, data, tracker, result, kept)
    if tracker is not None:
        from trickopt.study.report import log_parent_summary

        parent.publish()
        log_parent_summary(tracker, study, config, result, folder)
        tracker.end_parent("KILLED" if result.interrupted else "FINISHED")
        result.parent_run_id = tracker.parent_run_id
    return result


def open_study(config: StudyConfig):
    s = config.study
    storage = open_storage(s.storage, heartbeat_interval=s.heartbeat_interval,
                           grace_period=s.grace_period)
    sampler = create_sampler(s.sampler, s.sampler_params, s.seed)
    pruner = create_pruner(s.pruner, s.pruner_params, config.train.max_epochs)
    try:
        storage.get_study_id_from_name(s.name)
        exists = True
    except KeyError:
        exists = False
    if exists:  # looked up first: a journal logs even a create that finds the study there
        study = optuna.load_study(study_name=s.name, storage=storage, sampler=sampler,
                                  pruner=pruner)
    else:
        study = optuna.create_study(storage=storage, study_name=s.name,
                                    direction=s.resolved_direction, sampler=sampler,
                                    pruner=pruner, load_if_exists=True)
    # Optuna loads an existing study whatever direction was asked for: mixing val_loss and
    # val_accuracy values in one study would corrupt it, so a resumed study must agree.
    metric = study.user_attrs.get(METRIC_ATTR)
    if metric is None:
        study.set_user_attr(METRIC_ATTR, s.metric)
    elif metric != s.metric:
        raise StudyMismatchError(
            f"study.metric: the study {s.name!r} in {describe_storage(s.storage)} already "
            f"optimizes {metric}; got {s.metric!r} (use that metric, or another --study-name)")
    return study, storage


def optimize_here(config: StudyConfig, study: optuna.Study, tracker, n_trials: int, *,
                  progress: bool, data=None, parent: ParentLink | None = None,
                  kept: dict | None = None) -> None:
    """Run `n_trials` trials in this process (one worker). `kept`, where given, receives the
    best trial's weights ({number: state_dict}) for the refit."""
    data = data if data is not None else load_data(config.data)
    bar = Progress(n_trials, study, enabled=progress)
    callbacks = [bar] + ([parent.after_trial] if parent is not None else [])
    objective = Objective(config, data, tracker,
                          on_epoch=parent.publish_if_known if parent is not None else None)
    try:
        study.optimize(objective, n_trials=n_trials, timeout=config.study.timeout,
                       catch=(Exception,), callbacks=callbacks)
    finally:
        bar.close()
        if kept is not None:
            kept.update(objective.best_weights)


def _optimize_in_workers(config: StudyConfig, study: optuna.Study, progress: bool) -> None:
    from trickopt.study.workers import run_workers

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    start = len(study.get_trials(deepcopy=False, states=done))
    bar = Progress(config.study.n_trials, study, enabled=progress)

    def tick() -> None:
        finished = len(study.get_trials(deepcopy=False, states=done)) - start
        if finished > bar.bar.n:
            bar.bar.update(finished - bar.bar.n)

    try:
        run_workers(config, config.study.n_trials, on_tick=tick)
    finally:
        tick()
        bar.close()




def check_tracking_uri(uri: str) -> None:
    """Fail fast, before anything is created, on a tracking server that does not answer."""
    from pathlib import Path
    from urllib.error import URLError
    from urllib.request import urlopen

    from trickopt.urls import mask_password

    if uri.startswith(("http://", "https://")):
        try:
            with urlopen(f"{uri.rstrip('/')}/health", timeout=10) as response:
                if response.status == 200:
                    return
                reason = f"HTTP {response.status}"
        except (URLError, OSError, ValueError) as exc:
            reason = str(getattr(exc, "reason", exc))
        raise TrackingError(f"tracking.uri: cannot reach the MLflow server at "
                            f"{mask_password(uri)} ({reason})")
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise TrackingError(f"tracking.uri: the folder {folder} of {uri} does not exist")


@dataclass
class ParentLink:
    """Publishes the parent run's id in the study once the tracking process has it: workers
    that join the study later, and a resumed run, find the parent run there."""

    study: optuna.Study
    tracker: Any
    attr: str
    known: str | None
    done: bool = False

    def publish(self) -> None:
        if self.done:
            return
        self.done = True
        parent = self.tracker.parent_run_id  # waits for the tracking process
        if parent is None:
            return  # tracking failed; the tracker said why
        if parent != self.known:
            self.study.set_user_attr(self.attr, parent)
        self.study.set_user_attr(PARENT_ATTR, parent)

    def publish_if_known(self) -> None:
        """Publish without waiting, once the answer is in (called after every epoch, so that
        workers on other machines find the parent run within an epoch of its creation)."""
        if not self.done and self.tracker.parent_run_id_if_known() is not None:
            self.publish()

    def after_trial(self, study: optuna.Study, trial) -> None:
        # After a trial's end its run id has come back, and with it (the tracking process
        # answers in order) the parent's: publishing now does not wait.
        self.publish()


def open_tracker(config: StudyConfig, study: optuna.Study, storage, tracker, *,
                 plots: bool = True) -> ParentLink:
    """Connect `tracker` to the store and open the study's parent run, created exactly once.

    Workers may start at the same moment, on several machines. The one that creates a marker
    study in the Optuna storage (an atomic insert: the name is unique) creates the parent run
    and publishes its id as a study attribute; the others wait for it.
    """
    uri = tracking_uri(config)
    experiment = config.tracking.experiment or config.study.name
    tracker.open(uri, experiment, plots=plots)
    key = hashlib.sha1(f"{uri}|{experiment}".encode()).hexdigest()[:12]
    attr = f"{PARENT_ATTR}:{key}"
    known = study.user_attrs.get(attr)
    if known is None and not _claim(storage, f"{config.study.name}.mlflow-parent.{key}"):
        deadline = time.monotonic() + PARENT_WAIT_SECONDS
        while known is None and time.monotonic() < deadline:
            time.sleep(0.5)
            known = study.user_attrs.get(attr)
    # `known` is None for the claimer, and where the claimer died before publishing: the
    # tracking process then looks for the run by its tag before creating one.
    tracker.open_parent(config.study.name, known)
    return ParentLink(study, tracker, attr, known)


def _claim(storage, marker: str) -> bool:
    try:
        optuna.create_study(storage=storage, study_name=marker)
    except optuna.exceptions.DuplicatedStudyError:
        return False
    return True


def _recover(study: optuna.Study, storage, tracker) -> list[int]:
    failed = fail_dead_trials(study, storage)
    if tracker is not None:
        close_orphan_runs(study, tracker)
    return failed


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


def _refit(config: StudyConfig, study: optuna.Study, data, tracker, result: StudyResult,
           kept: dict[int, dict]) -> None:
    """Score the best trial's model on test, then the seed's merge-the-splits refit."""
    best = study.best_trial
    params, run_config = decided_params(optuna.trial.FixedTrial(best.params), config)
    torch.manual_seed(run_config.train.seed)
    model = build_model(run_config.model, data.input_shape, data.n_classes)
    if best.number in kept:  # trained here: its weights were kept
        model.load_state_dict(kept[best.number])
        model.to(resolve_device(run_config.train.device))
    else:
        # Trained by another worker, or by an earlier run of a resumed study. Trials are
        # deterministic for a seed on the CPU, so replaying it rebuilds its model exactly.
        fit(model, data, run_config.train)
    test_loss, test_accuracy = evaluate(model, data.x_test, data.y_test)
    result.best_trial_test = {"test_loss": test_loss, "test_accuracy": test_accuracy}
    if config.refit == "none":
        return
    epochs = max(1, int(best.user_attrs.get("best_epoch") or run_config.train.max_epochs))
    torch.manual_seed(run_config.train.seed)
    model = build_model(run_config.model, data.input_shape, data.n_classes)
    outcome = refit(model, data, run_config.train, epochs=epochs,
                    include_test=config.refit == "train_val_test")
    result.refit = {"mode": config.refit, "epochs": epochs, "trial": best.number,
                    "test_loss": outcome.test_loss, "test_accuracy": outcome.test_accuracy}
    if tracker is not None:
        _log_refit(tracker, config, best.number, params, run_config, outcome, result)


def _log_refit(tracker, config, trial_number, params, run_config, outcome, result) -> None:
    epochs = result.refit["epochs"]
    run = tracker.start_child("refit", {"trickopt.refit": config.refit,
                                        STUDY_TAG: config.study.name,
                                        "optuna.trial_number": str(trial_number)},
                              {**params, **flatten_config(run_config), "refit.epochs": epochs,
                               "refit.mode": config.refit})
    for row in outcome.history.epochs:
        run.log_epoch(row["epoch"], {k: v for k, v in row.items() if k != "epoch"})
    final = {"refit_epochs": epochs, **{f"best_trial_{k}": v
                                        for k, v in result.best_trial_test.items()}}
    if outcome.test_loss is not None:
        final.update(test_loss=outcome.test_loss, test_accuracy=outcome.test_accuracy)
    note = ("trained on train+val+test: a production model with no held-out score"
            if config.refit == "train_val_test" else "trained on train+val, scored on test")
    run.end("COMPLETE", metrics=final, tags={"trickopt.note": note})
