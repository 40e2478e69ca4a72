"""MLflow tracking of a study: one parent run per study, one nested child run per trial.

The only module that imports mlflow. Writes go through one background thread so that the
training loop never waits on the tracking store: measured here, a `log_metric` call per metric
per epoch on MLflow's SQLite store costs about 5 ms, as much as a whole digits epoch. A trial's
epochs are buffered and sent with `log_batch` at most every `FLUSH_SECONDS`, so a running
trial's curves still show in `mlflow ui` within seconds. (MLflow's own asynchronous logging
made every `end_run` wait about a second here, hence a queue of our own.)

Run status follows the trial: FINISHED (complete), KILLED (pruned), FAILED (failed or
interrupted), so the UI tells the three apart.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trickopt.urls import mask_password, with_installed_driver

log = logging.getLogger(__name__)

FLUSH_SECONDS = 2.0  # a running trial's curves reach the UI this often
PARENT_TAG = "trickopt.parent"
STUDY_TAG = "trickopt.study"
STATUS_OF_STATE = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else MLflow's own default store, `mlflow.db` in this directory,
    which is exactly what a plain `mlflow ui` started here reads."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


class _Writer:
    """One daemon thread running queued store writes in order. Errors are logged, not raised:
    a tracking hiccup must not kill a study that has been training for hours."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="trickopt-mlflow", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, *args: Any, **kwargs: Any) -> None:
        self._queue.put((fn, args, kwargs))

    def drain(self) -> None:
        self._queue.join()

    def _loop(self) -> None:
        while True:
            fn, args, kwargs = self._queue.get()
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - see the class docstring
                log.warning("MLflow write %s failed: %s", getattr(fn, "__name__", fn), exc)
            finally:
                self._queue.task_done()


class TrialRun:
    """The child run of one trial: params at the start, epochs buffered, status at the end."""

    def __init__(self, tracker: StudyTracker, run_id: str):
        self.tracker, self.run_id = tracker, run_id
        self._pending: list[Metric] = []
        self._last_flush = time.monotonic()

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, _param_text(v)) for k, v in params.items()]
        self.tracker.writer.submit(self.tracker.client.log_batch, self.run_id, params=items)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, epoch) for k, v in metrics.items()]
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self.tracker.writer.submit(self.tracker.client.log_batch, self.run_id,
                                       metrics=batch)
        self._last_flush = time.monotonic()

    def end(self, state: str, *, metrics: dict[str, float], tags: dict[str, Any]) -> None:
        """Close the run; `state` is the Optuna trial state name (COMPLETE, PRUNED, FAIL)."""
        self.flush()
        now = int(time.time() * 1000)
        client = self.tracker.client
        self.tracker.writer.submit(
            client.log_batch, self.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            tags=[RunTag(k, str(v)) for k, v in {"optuna.state": state, **tags}.items()])
        self.tracker.writer.submit(client.set_terminated, self.run_id,
                                   status=STATUS_OF_STATE.get(state, "FAILED"))


class StudyTracker:
    """Parent and child runs of one study in one MLflow experiment."""

    def __init__(self, uri: str, experiment: str):
        self.uri = uri
        self.client = _retry_schema_race(
            lambda: MlflowClient(tracking_uri=with_installed_driver(uri)))
        self.experiment_id = _retry_schema_race(lambda: self._experiment_id(experiment))
        self.writer = _Writer()
        self.parent_run_id: str | None = None

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another worker created it a moment ago
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def open_parent(self, study_name: str, known_run_id: str | None) -> str:
        """The study's parent run: the known one on resume, else found by tag, else new."""
        run_id = known_run_id if known_run_id and self._exists(known_run_id) else None
        if run_id is None:
            runs = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{PARENT_TAG}` = 'true' and tags.`{STUDY_TAG}` = "
                              f"'{study_name}'", order_by=["attributes.start_time ASC"],
                max_results=1)
            run_id = runs[0].info.run_id if runs else None
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=study_name,
                                         tags={PARENT_TAG: "true", STUDY_TAG: study_name})
            run_id = run.info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.parent_run_id = run_id
        return run_id

    def _exists(self, run_id: str) -> bool:
        try:
            return self.client.get_run(run_id).info.experiment_id == self.experiment_id
        except MlflowException:
            return False

    def start_trial(self, study_name: str, trial_number: int) -> TrialRun:
        """Create the child run now (synchronously: the trial records its run id)."""
        tags = {"mlflow.parentRunId": self.parent_run_id, STUDY_TAG: study_name,
                "optuna.trial_number": str(trial_number), "optuna.state": "RUNNING"}
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{trial_number}",
                                     tags=tags)
        return TrialRun(self, run.info.run_id)

    def start_child(self, name: str, tags: dict[str, str]) -> TrialRun:
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={"mlflow.parentRunId": self.parent_run_id, **tags})
        return TrialRun(self, run.info.run_id)

    def log_parent(self, *, metrics: dict[str, float], params: dict[str, Any] | None = None,
                   tags: dict[str, Any] | None = None) -> None:
        now = int(time.time() * 1000)
        self.writer.submit(
            self.client.log_batch, self.parent_run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, _param_text(v)) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])

    def log_parent_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.writer.submit(self.client.log_artifact, self.parent_run_id, str(path),
                           artifact_path)

    def end_parent(self, status: str = "FINISHED") -> None:
        self.writer.submit(self.client.set_terminated, self.parent_run_id, status=status)
        self.writer.drain()

    def runs_left_running(self, study_name: str) -> list:
        """The study's child runs still RUNNING (a worker died before it could close them)."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`{STUDY_TAG}` = "
                          f"'{study_name}'")
        return [r for r in runs if r.data.tags.get(PARENT_TAG) != "true"]

    def close_run(self, run_id: str, status: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)
        self.client.set_terminated(run_id, status=status)

    @property
    def display_uri(self) -> str:
        return mask_password(self.uri)


def _retry_schema_race(action: Callable[[], Any], attempts: int = 5) -> Any:
    """Run `action`, retrying while another worker is creating the same fresh database.

    Workers that start together on an empty database all try to create MLflow's tables; the
    losers fail on a duplicate key. A moment later the tables exist and the call succeeds.
    """
    for attempt in range(attempts):
        try:
            return action()
        except Exception:  # noqa: BLE001 - the driver's error types vary; retried, then raised
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random() * (attempt + 1))
    raise AssertionError("unreachable")


def _param_text(value: Any) -> str:
    # MLflow caps a param at 6000 characters; ours are short, but a user's data path may not be.
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


__all__ = ["StudyTracker", "TrialRun", "default_tracking_uri", "RunStatus"]
