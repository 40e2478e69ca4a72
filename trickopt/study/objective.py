"""One Optuna trial: sample the tricks, train with both levels of early stopping, record all.

Level 1 is the trial's own stopper inside `fit` (patience or a Prechelt criterion); level 2 is
the Optuna pruner, asked after every epoch. What each epoch reports to Optuna is the monitored
metric *at the best epoch so far* (the epoch whose weights `fit` would restore): the pruner thus
compares trials by what they would deliver if stopped now, and a pruned trial's value, which
Optuna takes from its last report, is its best, not its last, epoch's.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import optuna
import torch

from trickopt.models import seeded_model
from trickopt.study import space
from trickopt.study.recovery import WORKER_ATTR, worker_identity
from trickopt.tracking.events import TRIAL_TAG
from trickopt.train import epoch_metrics, fit
from trickopt.tricks.early_stopping import StopReason

PARAMS_ATTR = "params"  # every knob as the trial ran it, searched and fixed: the refit's source


def flatten_config(run_config) -> dict[str, Any]:
    """Every setting in effect, as `section.key` (dicts as `section.key.sub`): MLflow params."""
    flat = {}
    for section in ("data", "model", "train"):
        for key, value in dataclasses.asdict(getattr(run_config, section)).items():
            if callable(value):  # a factory given from Python as a function
                flat[f"{section}.{key}"] = f"{value.__module__}:{value.__qualname__}"
            elif isinstance(value, dict):
                flat.update({f"{section}.{key}.{k}": v for k, v in value.items()})
            else:
                flat[f"{section}.{key}"] = value
    return flat


def decided_params(trial, config) -> tuple[dict[str, Any], Any]:
    """The trial's active parameters (searched and fixed) and the run config they give."""
    params = space.suggest(trial, config.search, config.run)
    return params, space.apply(config.run, params)


def study_run(number: int) -> tuple[str, dict[str, Any]]:
    """A study trial's child run: its key (unique in the process) and its tags."""
    return f"trial-{number}", {TRIAL_TAG: number}


class Objective:
    """The callable Optuna optimizes; one instance serves every trial of a worker.

    `child_run(number)` gives the key and tags of a trial's MLflow child run: `study_run`
    for the study's own trials; the trials of another Optuna study tracked under the same
    parent (a comparison's tuning studies) must not carry the study's trial tag."""

    def __init__(self, config, data, tracker, *,
                 child_run: Callable[[int], tuple[str, dict[str, Any]]] = study_run):
        self.config, self.data, self.tracker = config, data, tracker
        self.child_run = child_run
        self.metric = config.study.metric
        self.worker = worker_identity()
        # The weights of the best trial this process completed, {number: state_dict} on the
        # CPU, so that the refit scores that model instead of training it again.
        self.best_weights: dict[int, dict] = {}
        self._best_value: float | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        # First of all, who runs this trial: if this process dies, the next run can tell.
        trial.set_user_attr(WORKER_ATTR, self.worker)
        params, run_config = decided_params(trial, self.config)
        trial.set_user_attr(PARAMS_ATTR, params)
        run = None
        if self.tracker is not None:  # written by the tracking process while this one trains
            key, tags = self.child_run(trial.number)
            run = self.tracker.start_run(key, key, {**tags, "optuna.state": "RUNNING"},
                                         {**params, **flatten_config(run_config)})
        try:
            history = self._train(trial, run_config, run)
        except BaseException as exc:
            reason = StopReason.INTERRUPTED if isinstance(exc, KeyboardInterrupt) \
                else StopReason.ERROR
            error = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("stop_reason", reason)
            trial.set_user_attr("error", error[:1000])
            if run is not None:
                run.end("FAIL", metrics={}, tags={"stop_reason": reason, "error": error[:5000]})
            raise
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # one trial's OOM must not poison the next
        return self._finish(trial, history, run)

    def _train(self, trial: optuna.Trial, run_config, run):
        rows: list[dict] = []
        metric = self.metric
        logged = epoch_metrics(self.data.task)

        def on_epoch_end(epoch: int, metrics: dict) -> bool:
            rows.append(metrics)
            if run is not None:
                run.log_epoch(epoch, {k: metrics[k] for k in logged})
            best_epoch = metrics["best_epoch"]
            value = rows[best_epoch - 1][metric] if best_epoch else math.nan
            if not math.isfinite(value):
                return False
            trial.report(value, epoch)
            return trial.should_prune()

        model = seeded_model(run_config.model, self.data.input_shape, self.data.n_classes,
                             seed=run_config.train.seed)
        history = fit(model, self.data, run_config.train, on_epoch_end=on_epoch_end)
        self._keep_if_best(trial.number, model, history)
        return history

    def _keep_if_best(self, number: int, model, history) -> None:
        value = history.best.get(self.metric, math.nan)
        if history.stop_reason == StopReason.PRUNED or not math.isfinite(value):
            return  # pruned or failed: never the study's best trial
        maximize = self.config.study.resolved_direction == "maximize"
        if self._best_value is not None and (value <= self._best_value if maximize
                                             else value >= self._best_value):
            return  # ties keep the earlier trial, as Optuna's best_trial does
        self._best_value = value
        self.best_weights = {number: {k: v.detach().to("cpu", copy=True)
                                      for k, v in model.state_dict().items()}}

    def _finish(self, trial: optuna.Trial, history, run) -> float:
        pruned = history.stop_reason == StopReason.PRUNED
        value = history.best.get(self.metric, math.nan)
        for key, attr in (("stop_reason", history.stop_reason),
                          ("best_epoch", history.best_epoch),
                          ("epochs_trained", history.epochs_trained)):
            trial.set_user_attr(key, attr)
        state = "PRUNED" if pruned else ("COMPLETE" if math.isfinite(value) else "FAIL")
        if run is not None:
            final = {"best_epoch": history.best_epoch, "epochs_trained": history.epochs_trained}
            if math.isfinite(value):
                final["value"] = value
            tags = {"stop_reason": history.stop_reason, "best_epoch": history.best_epoch}
            if pruned:
                final["pruned_epoch"] = tags["pruned_epoch"] = history.epochs_trained
            run.end(state, metrics=final, tags=tags)
        if pruned:
            raise optuna.TrialPruned(f"pruned at epoch {history.epochs_trained}")
        return value  # non-finite: Optuna records the trial as FAIL
