"""The MLflow calls of the tracking process (see `trickopt.tracking`); imported only there.

Each message from the training process is one `handle(op, args)` call. Runs are named by the
token of the message that started them, so the training process never waits for a run id.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trickopt.tracking import (
    PARENT_TAG,
    STATUS_OF_STATE,
    STUDY_TAG,
    prepared_file,
    remove_sqlite_file,
)
from trickopt.urls import with_installed_driver

log = logging.getLogger("trickopt.tracking")

PLOTS = ("plot_optimization_history", "plot_intermediate_values", "plot_param_importances",
         "plot_slice")
SLICE_PARAMS = 6
RECENT_MS = 60_000  # runs this recent, of trials the snapshot lacks, are a live worker's
LEGEND_TRIALS = 10  # the learning-curve plot names each trial in its legend up to this many


class Writer:
    ANSWERED = frozenset({"open_parent", "start_run", "sync"})
    DEFERRABLE = frozenset({"log_run", "end_run"})  # may wait behind a later start_run
    FATAL = frozenset({"open", "open_parent"})  # without these, nothing else can be written

    def __init__(self) -> None:
        self.prepared: tuple[str, Path, Path] | None = None  # (uri, store file, hidden copy)
        self.client: MlflowClient | None = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.error: str | None = None
        self.runs: dict[int, str] = {}  # message token -> run id
        self._warm_up: threading.Thread | None = None
        self.warm_up_seconds: float | None = None
        self.pending_params: dict[int, dict[str, str]] = {}

    def handle(self, token: int, op: str, args: tuple) -> tuple[Any, str | None]:
        """Run one message; returns (answer, fatal error or None)."""
        if self.error is not None:
            return None, self.error
        try:
            return getattr(self, f"_{op}")(token, *args), None
        except Exception as exc:  # noqa: BLE001 - a write failing must not stop the study
            if op in self.FATAL:
                self.error = f"{type(exc).__name__}: {exc}"
                return None, self.error
            log.warning("MLflow %s failed: %s", op, exc)
            return None, None

    # -- messages ---------------------------------------------------------------------------
    def _prepare(self, _token: int, uri: str) -> None:
        """Create a new SQLite store's tables in a hidden file beside it (see `_open`)."""
        if self.prepared is not None:
            if self.prepared[0] == uri:
                return  # prepared already, from the CLI's early hint
            self.discard_prepared()  # the hint was wrong
        target = _new_sqlite_file(uri)
        if target is None:
            return
        hidden = prepared_file(uri, os.getpid())
        try:
            MlflowClient(f"sqlite:///{hidden}").search_experiments(max_results=1)
        except BaseException as exc:  # `open` will create the store itself
            remove_sqlite_file(hidden)
            if not isinstance(exc, Exception):
                raise  # SystemExit: this process is being stopped
            log.debug("could not prepare %s: %s", target, exc)
            return
        self.prepared = (uri, target, hidden)

    def discard_prepared(self) -> None:
        if self.prepared is not None:
            remove_sqlite_file(self.prepared[2])
            self.prepared = None

    def _open(self, _token: int, uri: str, experiment: str, _plots: bool) -> None:
        if self.prepared is not None and self.prepared[0] == uri:
            _, target, hidden = self.prepared
            try:  # a hard link never replaces a file: a store created meanwhile is kept
                os.link(hidden, target)
            except FileExistsError:
                pass
            except OSError as exc:  # no hard links here (some network or FAT file systems)
                log.debug("could not move the prepared store into place: %s", exc)
            finally:
                self.discard_prepared()
        self.client = _retry_schema_race(lambda: MlflowClient(with_installed_driver(uri)))
        self.experiment_id = _retry_schema_race(lambda: self._experiment_id(experiment))

    def _open_parent(self, _token: int, study_name: str, known: str | None) -> str:
        client = self.client
        run_id = known if known and self._exists(known) else None
        if run_id is None:
            runs = client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{PARENT_TAG}` = 'true' and tags.`{STUDY_TAG}` = "
                              f"'{study_name}'", order_by=["attributes.start_time ASC"],
                max_results=1)
            run_id = runs[0].info.run_id if runs else None
        if run_id is None:
            run_id = client.create_run(self.experiment_id, run_name=study_name,
                                       tags={PARENT_TAG: "true",
                                             STUDY_TAG: study_name}).info.run_id
        else:
            client.update_run(run_id, status="RUNNING")
        self.parent_run_id = run_id
        return run_id

    def _start_run(self, token: int, name: str, tags: dict[str, str],
                   params: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={"mlflow.parentRunId": self.parent_run_id, **tags})
        self.runs[token] = run.info.run_id
        self.pending_params[token] = params  # written with the run's first batch of metrics
        return run.info.run_id

    def _log_run(self, _token: int, run_token: int, metrics: list, tags: dict[str, str]) -> None:
        run_id = self.runs.get(run_token)
        if run_id is None:
            return  # its creation failed (logged then)
        params = self.pending_params.pop(run_token, {})
        self.client.log_batch(run_id, metrics=[Metric(*m) for m in metrics],
                              params=[Param(k, v) for k, v in params.items()],
                              tags=[RunTag(k, v) for k, v in tags.items()])

    def _end_run(self, token: int, run_token: int, metrics: list, tags: dict[str, str],
                 status: str) -> None:
        try:
            self._log_run(token, run_token, metrics, tags)
        finally:
            run_id = self.runs.pop(run_token, None)
            if run_id is not None:
                self.client.set_terminated(run_id, status=status)

    def _log_parent(self, _token: int, metrics: list, params: dict[str, str],
                    tags: dict[str, str]) -> None:
        self.client.log_batch(self.parent_run_id, metrics=[Metric(*m) for m in metrics],
                              params=[Param(k, v) for k, v in params.items()],
                              tags=[RunTag(k, v) for k, v in tags.items()])

    def _parent_artifact(self, _token: int, path: str, artifact_path: str | None) -> None:
        self.client.log_artifact(self.parent_run_id, path, artifact_path)

    def _parent_plots(self, _token: int, trials: bytes, direction: str,
                      importances: dict[str, float], folder: str) -> None:
        if self._warm_up is not None:
            self._warm_up.join()  # two threads importing optuna at once can break its imports
        trials = pickle.loads(trials)
        for path in draw_plots(trials, direction, importances, Path(folder)):
            self.client.log_artifact(self.parent_run_id, str(path), "plots")

    def _close_orphans(self, _token: int, study_name: str,
                       trials: dict[int, tuple[str, str | None]], taken_ms: int) -> None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`{STUDY_TAG}` = "
                          f"'{study_name}'")
        mine = set(self.runs.values())
        for run in runs:
            if run.data.tags.get(PARENT_TAG) == "true" or run.info.run_id in mine:
                continue
            number = run.data.tags.get("optuna.trial_number", "")
            if number.isdigit() and int(number) not in trials \
                    and run.info.start_time >= taken_ms - RECENT_MS:
                continue  # a trial newer than the snapshot: a live worker's
            state, reason = trials.get(int(number) if number.isdigit() else -1, ("FAIL", None))
            if state == "RUNNING":
                continue  # a live worker owns it
            if "trickopt.refit" in run.data.tags:  # the refit's process died, not the trial
                state, reason = "FAIL", None
            # Optuna's heartbeat fails a trial without a reason; its worker died all the same.
            for key, value in {"optuna.state": state,
                               "stop_reason": reason or "worker_died"}.items():
                self.client.set_tag(run.info.run_id, key, value)
            self.client.set_terminated(run.info.run_id,
                                       status=STATUS_OF_STATE.get(state, "FAILED"))

    def _remove_folder(self, _token: int, folder: str) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def _end_parent(self, _token: int, status: str) -> None:
        self.client.set_terminated(self.parent_run_id, status=status)

    def _sync(self, _token: int) -> bool:
        return True

    # -- helpers ----------------------------------------------------------------------------
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

    def _exists(self, run_id: str) -> bool:
        try:
            return self.client.get_run(run_id).info.experiment_id == self.experiment_id
        except MlflowException:
            return False

    def start_warm_up(self) -> None:
        """Import the plotting code on a thread: 1.2 s here, needed only at the end."""
        if self._warm_up is None:
            self._warm_up = threading.Thread(target=self._timed_warm_up, name="warm-up",
                                             daemon=True)
            self._warm_up.start()

    def _timed_warm_up(self) -> None:
        began = time.perf_counter()
        self.warm_up_plots()
        self.warm_up_seconds = time.perf_counter() - began

    @staticmethod
    def warm_up_plots() -> None:
        """Import the plotting code ahead of the end of the study."""
        import matplotlib

        matplotlib.use("Agg")  # no display on a training server
        import matplotlib.pyplot  # noqa: F401
        import optuna.importance  # noqa: F401 - for the importance plot: 0.8 s here
        import optuna.visualization.matplotlib  # noqa: F401


def draw_plots(trials: list, direction: str, importances: dict[str, float],
               folder: Path) -> list[Path]:
    """Optuna's plots of a study made of `trials`, as PNG files in `folder`."""
    import optuna

    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
        return []
    Writer.warm_up_plots()
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction)  # in memory, for the plotting functions
    study.add_trials(trials)
    # A slice plot of every knob is a grid of ~20 panels that takes seconds to draw and no
    # one reads: show the most important ones.
    top = sorted(importances, key=importances.get, reverse=True)[:SLICE_PARAMS] or None
    # The importance plot shows the importances the study reported, not a second estimate.
    kwargs = {"plot_slice": {"params": top},
              "plot_param_importances": {"evaluator": _reported(importances)}}
    paths = []
    for name in PLOTS:
        if name == "plot_param_importances" and not importances:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                axes = getattr(optuna_plots, name)(study, **kwargs.get(name, {}))
            except Exception as exc:  # noqa: BLE001 - one plot failing must not cost the others
                log.warning("could not draw %s: %s", name, exc)
                continue
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        if name == "plot_intermediate_values" and first.get_legend() is not None \
                and len(trials) > LEGEND_TRIALS:
            first.get_legend().remove()  # one entry per trial: unreadable, and slow to draw
        figure = first.get_figure()
        figure.set_size_inches(10, 6)
        path = folder / f"{name.removeprefix('plot_')}.png"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "tight layout not applied" on crowded plots
            figure.savefig(path, dpi=72)
        plt.close("all")
        paths.append(path)
    return paths


def _reported(importances: dict[str, float]):
    """An Optuna importance evaluator that returns the importances computed already."""
    from optuna.importance import BaseImportanceEvaluator

    class Reported(BaseImportanceEvaluator):
        def evaluate(self, study, params=None, *, target=None) -> dict[str, float]:
            return dict(importances)

    return Reported()


def _new_sqlite_file(uri: str | None) -> Path | None:
    """The file of a `sqlite:///` URI when it does not exist yet (its folder does), else None."""
    hidden = prepared_file(uri, 0)
    if hidden is None:
        return None
    target = Path(uri[len("sqlite:///"):])
    if target.exists() or not target.parent.is_dir():
        return None
    return target


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
