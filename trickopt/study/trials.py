"""Join a study and run trials: what every worker does, the coordinator included.

A worker opens the study by name (created if new), starts its tracking process, and runs
trials; Optuna's storage hands them out. Nothing here knows about other workers: that is the
coordinator's (`trickopt.study.runner`) and `trickopt.study.workers`' business.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import uuid
from collections.abc import Callable

import optuna

from trickopt.data import load_data
from trickopt.study.config import StudyConfig, create_pruner, create_sampler
from trickopt.study.objective import Objective, flatten_config
from trickopt.study.progress import Progress
from trickopt.study.report import mlflow_ui_lines
from trickopt.study.storage import describe_storage, open_storage
from trickopt.study.tracking_checks import tracking_uri
from trickopt.tracking import StudyTracker
from trickopt.tracking.events import UID_TAG, EndParent

SETTINGS_ATTR = "settings"  # the fixed settings a study was created with
SETTINGS_WAIT_SECONDS = 10  # how long to wait for the creator of a new study to write them
METRIC_ATTR = "metric"
# This Optuna study's own name among the studies ever run under its name: one deleted (its
# journal removed) and made anew is another study, with another parent run in MLflow. The
# same name as the tag that carries it to every MLflow run.
UID_ATTR = UID_TAG
# Settings that may differ between the runs of one study: where and how fast it trains, not
# what it trains.
MAY_DIFFER = ("train.device", "train.threads", "data.root")


class StudyMismatchError(RuntimeError):
    """The named study exists with other fixed settings; the message lists them."""


def open_study(config: StudyConfig):
    """The study `config` names, created if new, and its storage. A resumed study must keep
    its metric and, unless `study.allow_changes`, its fixed settings."""
    s = config.study
    storage = open_storage(s.storage, heartbeat_interval=s.heartbeat_interval,
                           grace_period=s.grace_period)
    sampler = create_sampler(s.sampler, s.sampler_params, s.seed)
    pruner = create_pruner(s.pruner, s.pruner_params, config.train.max_epochs)
    try:
        storage.get_study_id_from_name(s.name)
        created = False
    except KeyError:
        created = True
    if created:  # looked up first: a journal logs even a create that finds the study there
        try:
            study = optuna.create_study(storage=storage, study_name=s.name,
                                        direction=s.resolved_direction, sampler=sampler,
                                        pruner=pruner)
        except optuna.exceptions.DuplicatedStudyError:
            created = False  # another run created it a moment ago: its settings bind us
    if created:
        # The creation is the atomic claim: whoever created the study writes its settings,
        # and every later run, started a millisecond or a month after, must agree with them.
        study.set_user_attr(UID_ATTR, uuid.uuid4().hex)  # before the settings others wait for
        study.set_user_attr(METRIC_ATTR, s.metric)
        study.set_user_attr(SETTINGS_ATTR, fixed_settings(config))
    else:
        study = optuna.load_study(study_name=s.name, storage=storage, sampler=sampler,
                                  pruner=pruner)
        _wait_for_settings(study)
    _check_resumed(study, config)
    return study, storage


def _wait_for_settings(study: optuna.Study) -> None:
    """A study created a moment ago by another run may not hold its settings yet: they follow
    its creation within milliseconds. A study with trials and no settings predates them."""
    deadline = time.monotonic() + SETTINGS_WAIT_SECONDS
    while SETTINGS_ATTR not in study.user_attrs and not study.trials \
            and time.monotonic() < deadline:
        time.sleep(0.1)


def fixed_settings(config: StudyConfig) -> dict[str, str]:
    """What the study's trials share: the metric and every setting the search leaves fixed."""
    searched = set(config.search)
    flat = {key: json.dumps(value, default=str) for key, value in
            flatten_config(config.run).items()
            if key not in MAY_DIFFER and key.rsplit(".", 1)[-1] not in searched}
    return {"study.metric": config.study.metric, **flat}


def _check_resumed(study: optuna.Study, config: StudyConfig) -> None:
    s = config.study
    # Optuna loads an existing study whatever direction was asked for: mixing val_loss and
    # val_accuracy values in one study would corrupt it, whatever allow_changes says.
    metric = study.user_attrs.get(METRIC_ATTR)
    if metric is None:
        study.set_user_attr(METRIC_ATTR, s.metric)
    elif metric != s.metric:
        raise StudyMismatchError(
            f"study.metric: the study {s.name!r} in {describe_storage(s.storage)} already "
            f"optimizes {metric}; got {s.metric!r} (use that metric, or another --study-name)")
    settings = fixed_settings(config)
    recorded = study.user_attrs.get(SETTINGS_ATTR)
    if recorded is None or s.allow_changes:
        study.set_user_attr(SETTINGS_ATTR, settings)
        return
    changed = [f"{key}: {recorded.get(key, 'unset')} -> {settings.get(key, 'unset')}"
               for key in sorted(set(recorded) | set(settings))
               if recorded.get(key) != settings.get(key)]
    if changed:
        raise StudyMismatchError(
            f"study.name: the study {s.name!r} in {describe_storage(s.storage)} was run with "
            f"other fixed settings ({'; '.join(changed)}): its trials would not be comparable. "
            "Use another --study-name, or --set study.allow_changes=true to mix them")


def start_tracking(config: StudyConfig, storage, *, coordinator: bool,
                   own_study: bool = True) -> StudyTracker | None:
    """Start this worker's tracking process (None where tracking is off).

    `own_study`: the command runs (or reports on) the Optuna study `config.study.name`, whose
    uid then tags its runs. A comparison does not (its studies are its tuning studies): its
    runs are found by the name alone, under a parent run of its own.

    The study's parent run must be created exactly once, though workers on many machines may
    start together. The coordinator that creates a marker study in the Optuna storage (an
    atomic insert: names are unique) creates the parent run; every other process waits for
    it to appear. `release_parent_claim` removes the marker when the coordinator is done.
    """
    if not config.tracking.enabled:
        return None
    uri = tracking_uri(config)
    experiment = config.tracking.experiment or config.study.name
    role = "join"
    if coordinator and _claim(storage, _marker(config, uri, experiment)):
        role = "create"
    return StudyTracker(uri, experiment, config.study.name, role=role, plots=coordinator,
                        study_uid=_study_uid(storage, config.study.name) if own_study else None)


def _study_uid(storage, name: str) -> str | None:
    """The study's UID_ATTR; None for a study made before it existed (its parent run is then
    found by the study's name alone), or where no study has that name (a comparison's)."""
    try:
        return storage.get_study_user_attrs(storage.get_study_id_from_name(name)).get(UID_ATTR)
    except KeyError:
        return None


def release_parent_claim(config: StudyConfig, storage) -> None:
    """Delete the marker study of `start_tracking`: the parent run exists by now, and a later
    claimer finds it by its tags. Deleted by whichever coordinator finishes, so that none is
    left in the storage (optuna-dashboard would list it as an empty study)."""
    if not config.tracking.enabled:
        return
    uri = tracking_uri(config)
    marker = _marker(config, uri, config.tracking.experiment or config.study.name)
    try:
        optuna.delete_study(study_name=marker, storage=storage)
    except KeyError:
        pass  # another coordinator deleted it


def end_tracking(tracker, config: StudyConfig, storage, status: str):
    """Close the parent run of a command that is not a study (a report, a comparison) with
    `status` (FINISHED, or KILLED where it did not finish), wait for the tracking process, and
    release the parent-run claim. Returns the tracking process's Report (None: no tracking)."""
    if tracker is None:
        return None
    tracker.send(EndParent(status))
    report = tracker.close()
    release_parent_claim(config, storage)
    return report


def print_ui_link(closed, config: StudyConfig) -> None:
    """Where to see the runs in MLflow's UI, as a study's summary says it."""
    if closed is not None and closed.experiment_id is not None:
        print("\n".join(mlflow_ui_lines(tracking_uri(config), closed.experiment_id)))


def _marker(config: StudyConfig, uri: str, experiment: str) -> str:
    key = hashlib.sha1(f"{uri}|{experiment}".encode()).hexdigest()[:12]
    return f"{config.study.name}.mlflow-parent.{key}"


def _claim(storage, marker: str) -> bool:
    try:
        optuna.create_study(storage=storage, study_name=marker)
    except optuna.exceptions.DuplicatedStudyError:
        return False
    return True


def optimize_here(config: StudyConfig, study: optuna.Study, tracker, n_trials: int, *,
                  progress: bool, data=None, more: Callable[[], bool] | None = None,
                  on_trial: Callable[[], None] | None = None) -> dict[int, dict]:
    """Run `n_trials` trials in this process; with `more`, then one more each time `more()`
    grants one, until it refuses (the processes of one command sharing its trials).
    `on_trial()` runs after each trial. Returns the weights of the best trial it completed,
    {number: state_dict}, for the refit."""
    data = data if data is not None else load_data(config.data)
    bar = Progress(n_trials, study, enabled=progress)
    objective = Objective(config, data, tracker)
    callbacks: list[Callable] = [bar]
    if on_trial is not None:
        callbacks.append(lambda study, trial: on_trial())
    if more is not None:
        callbacks.append(_stop_after(n_trials, more))
    try:
        study.optimize(objective, n_trials=n_trials if more is None else None,
                       timeout=config.study.timeout, catch=(Exception,), callbacks=callbacks)
    except Exception as exc:
        # Optuna reports a storage write that failed (a full disk) as an AssertionError of
        # its own, the OSError only in its context: the OSError is what the user must see.
        cause = _os_error_within(exc)
        if cause is None:
            raise
        raise cause from None
    finally:
        bar.close()
    return objective.best_weights


def _stop_after(n_trials: int, more: Callable[[], bool]) -> Callable:
    """An Optuna callback that stops the study's loop after n_trials trials, and after each
    later one, unless `more()` grants another."""
    left = n_trials

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal left
        left -= 1
        if left <= 0 and not more():
            study.stop()
    return after_trial


def _os_error_within(exc: BaseException | None) -> OSError | None:
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__cause__ or exc.__context__
    return exc


def for_worker(config: StudyConfig, index: int) -> StudyConfig:
    """Worker `index`'s config: its sampler gets its own seed (with one seed, K workers would
    propose the same K parameter sets during the sampler's random start-up)."""
    if config.study.seed is None:
        return config
    study = dataclasses.replace(config.study, seed=config.study.seed + 1000 * (index + 1))
    return dataclasses.replace(config, study=study)
