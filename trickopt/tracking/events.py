"""The events the training process sends to the tracking process, and the names both share.

A leaf module (no trickopt or mlflow imports): the training side builds these, the tracking
process (`trickopt.tracking.writer`) consumes them. A run is named by a `key` chosen by the
training side (`trial-7`, `refit`), so nothing has to come back before a run can be written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PARENT_TAG = "trickopt.parent"  # "true" on a study's parent run
STUDY_TAG = "trickopt.study"  # the study name, on the parent and on every child run
UID_TAG = "trickopt.study_uid"  # the Optuna study's uid attribute, beside STUDY_TAG
TRIAL_TAG = "optuna.trial_number"  # a child run's trial: the link from Optuna to MLflow
STATE_TAG = "optuna.state"
# MLflow 3 opens an experiment in its GenAI view unless it is tagged as model training.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
STATUS_OF_STATE = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED",
                   "RUNNING": "RUNNING"}

Metric = tuple[str, float, int, int]  # key, value, timestamp (ms), step (the epoch)


def study_tags(name: str, uid: str | None) -> dict[str, str]:
    """The tags every run of a study carries: its name, and its uid where it has one (a
    study made anew under an old name is another study)."""
    return {STUDY_TAG: name, **({UID_TAG: uid} if uid else {})}


@dataclass(frozen=True)
class Open:
    """Connect to the store, find or create the experiment and the study's parent run.
    `role`: "create" finds the parent run by its tags or creates it (the process that claimed
    it in the Optuna storage); "join" waits for another process to create it."""
    uri: str
    experiment: str
    study_name: str
    role: Literal["create", "join"]
    plots: bool  # this process will draw the study's plots (the coordinator's does)
    study_uid: str | None = None  # None: a study made before uids, found by its name alone


@dataclass(frozen=True)
class StartRun:
    key: str
    name: str
    tags: dict[str, str]
    params: dict[str, str]


@dataclass(frozen=True)
class LogMetrics:
    key: str
    metrics: list[Metric]


@dataclass(frozen=True)
class EndRun:
    key: str
    status: str  # an MLflow run status: FINISHED, KILLED, FAILED
    metrics: list[Metric]
    tags: dict[str, str]


@dataclass(frozen=True)
class LogParent:
    metrics: list[Metric] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    files: dict[str, str | bytes] = field(default_factory=dict)  # artifact path -> content


@dataclass(frozen=True)
class Plots:
    """Draw Optuna's plots of the study from `trials` (pickled FrozenTrials) on the parent."""
    trials: bytes
    direction: str
    importances: dict[str, float]


@dataclass(frozen=True)
class TrialRecord:
    """A trial as the Optuna storage has it: the source of truth that `Reconcile` restores."""
    number: int
    state: str  # the Optuna state name
    params: dict[str, str]
    tags: dict[str, str]  # stop_reason, best_epoch...
    metrics: dict[str, float]  # value, best_epoch, epochs_trained
    reported: dict[int, float]  # the metric reported per epoch (Optuna's intermediate values)
    worker_gone: bool  # its process is known to be dead: no one else will write its run


@dataclass(frozen=True)
class Reconcile:
    """Make MLflow agree with the Optuna storage after a process died mid-study: a finished
    trial whose run is still RUNNING is closed with its state; one whose run never reached
    the store (its events died with its process: `worker_gone`) gets a run rebuilt from its
    record. `trials`: every trial that is no longer running. `tag` names the trial number on
    a run, `name` the rebuilt run (`<name>-<number>`): the study's trials by default, or the
    jobs of a report (`trickopt.report_trial`, "report")."""
    trials: list[TrialRecord]
    tag: str = TRIAL_TAG
    name: str = "trial"


@dataclass(frozen=True)
class FailRuns:
    """Close as FAILED the child runs still RUNNING whose tag `tag` is one of `values`: the
    runs of report trainings whose process died (their companion trials were failed and
    re-queued; the retry gets a run of its own)."""
    tag: str
    values: list[str]


@dataclass(frozen=True)
class EndParent:
    status: str


@dataclass(frozen=True)
class Close:
    """The last event: write what is left, answer with a `Report`, exit."""


@dataclass(frozen=True)
class Report:
    """The one answer of the tracking process, sent when it closes."""
    experiment_id: str | None
    parent_run_id: str | None
    error: str | None


Event = (Open | StartRun | LogMetrics | EndRun | LogParent | Plots | Reconcile | FailRuns
         | EndParent | Close)
