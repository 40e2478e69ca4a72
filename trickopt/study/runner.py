"""Run a study end to end: storage, MLflow parent run, trials, refit, summary.

Linear on purpose (setup, run, clean up), like torchtune's recipes. Everything the user can get
wrong was validated before this module is reached.
"""

from __future__ import annotations

import math
import sys
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
from trickopt.study.storage import describe_storage, open_storage
from trickopt.train import evaluate, fit, refit

PARENT_ATTR = "mlflow_parent_run_id"


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


def run_study(config: StudyConfig, *, device: str | None = None, progress: bool = True,
              out: TextIO = sys.stdout) -> StudyResult:
    """Run (or resume) the study `config` describes and return what happened."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = config.study
    study = optuna.create_study(
        storage=open_storage(s.storage), study_name=s.name, direction=s.resolved_direction,
        sampler=create_sampler(s.sampler, s.sampler_params, s.seed),
        pruner=create_pruner(s.pruner, s.pruner_params, config.train.max_epochs),
        load_if_exists=True)
    tracker = _open_tracker(config, study)
    result = StudyResult(study, describe_storage(s.storage),
                         tracker.display_uri if tracker else None,
                         tracker.parent_run_id if tracker else None)
    print(f"study {s.name!r}: {len(study.trials)} trials so far in {result.storage}", file=out)
    data = load_data(config.data)
    objective = Objective(config, data, tracker, device=device)
    bar = Progress(s.n_trials, study, enabled=progress)
    try:
        study.optimize(objective, n_trials=s.n_trials, timeout=s.timeout, catch=(Exception,),
                       callbacks=[bar])
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        bar.close()
    _count(study, config, result)
    result.importances = _importances(study)
    if not result.interrupted and result.states.get("COMPLETE"):
        _refit(config, study, data, tracker, result, device)
    if tracker is not None:
        from trickopt.study.report import log_parent_summary

        log_parent_summary(tracker, study, config, result)
        tracker.end_parent("KILLED" if result.interrupted else "FINISHED")
    return result


def _open_tracker(config: StudyConfig, study: optuna.Study):
    if not config.tracking.enabled:
        return None
    from trickopt.tracking import StudyTracker, default_tracking_uri

    tracker = StudyTracker(config.tracking.uri or default_tracking_uri(),
                           config.tracking.experiment or config.study.name)
    parent = tracker.open_parent(config.study.name, study.user_attrs.get(PARENT_ATTR))
    if study.user_attrs.get(PARENT_ATTR) != parent:
        study.set_user_attr(PARENT_ATTR, parent)
    return tracker


def _count(study: optuna.Study, config: StudyConfig, result: StudyResult) -> None:
    trials = study.get_trials(deepcopy=False)
    max_epochs = config.train.max_epochs
    for trial in trials:
        result.states[trial.state.name] = result.states.get(trial.state.name, 0) + 1
        trained = trial.user_attrs.get("epochs_trained")
        if trained is None or trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        result.epochs_trained += trained
        result.epochs_budget += max_epochs
        if trial.state == TrialState.PRUNED:
            result.epochs_saved_by_pruning += max_epochs - trained
        else:
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
           device: str | None) -> None:
    """Score the best trial's model on test, then the seed's merge-the-splits refit."""
    best = study.best_trial
    params, run_config = decided_params(optuna.trial.FixedTrial(best.params), config)
    if device is not None:
        run_config.train.device = device
    # Trials are deterministic for a seed on the CPU, so replaying the best trial rebuilds
    # its model exactly (the trial itself kept no weights: thousands of trials, no disk).
    torch.manual_seed(run_config.train.seed)
    model = build_model(run_config.model, data.input_shape, data.n_classes)
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
    if tracker is None:
        return
    run = tracker.start_child("refit", {"trickopt.refit": config.refit,
                                        "optuna.trial_number": str(best.number)})
    run.log_params({**params, **flatten_config(run_config), "refit.epochs": epochs,
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


def finite_or_none(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None
