"""The training process's side of tracking: sends events, never waits, never imports mlflow."""

from __future__ import annotations

import enum
import gc
import multiprocessing
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

from trickopt.tracking import events as ev
from trickopt.urls import mask_password

FLUSH_SECONDS = 2.0  # a running trial's curves reach the UI this often
CLOSE_WAIT_SECONDS = 600  # longest wait for the tracking process to write what is left


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else MLflow's own default store, `mlflow.db` in this directory,
    which is exactly what a plain `mlflow ui` started here reads."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _serve(events, reports) -> None:
    # The process's entry point, here so that starting it imports nothing heavy in this process.
    # No garbage collection until the store is open (`serve` turns it on): the collector would
    # walk the objects of mlflow, SQLAlchemy and matplotlib, made once and kept, again and
    # again while they are imported.
    gc.disable()
    from trickopt.tracking.writer import serve

    serve(events, reports)


class StudyTracker:
    """Starts the tracking process and streams events to it.

    Every call returns at once: events go through an unbounded queue, so a slow or broken
    tracking store never holds training up. Only `close` waits, for the one `Report`.
    """

    def __init__(self, uri: str, experiment: str, study_name: str, *,
                 role: str = "create", plots: bool = True, study_uid: str | None = None) -> None:
        context = multiprocessing.get_context("spawn")  # fork + torch threads can deadlock
        self.uri, self.study_name = uri, study_name
        self._study_tags = ev.study_tags(study_name, study_uid)
        self._events = context.Queue()
        self._reports, report_end = context.Pipe(duplex=False)
        self._process = context.Process(target=_serve, args=(self._events, report_end),
                                        name="trickopt-mlflow", daemon=True)
        self._process.start()
        report_end.close()
        self.report = ev.Report(None, None, None)
        self._closed = False
        self.send(ev.Open(uri, experiment, study_name, role, plots, study_uid))

    def send(self, event: ev.Event) -> None:
        if not self._closed:
            self._events.put(event)

    def start_run(self, key: str, name: str, tags: dict[str, Any],
                  params: dict[str, Any]) -> TrialRun:
        tags = {**self._study_tags, **tags}
        self.send(ev.StartRun(key, name, _texts(tags), _texts(params)))
        return TrialRun(self, key)

    def log_parent(self, *, metrics: dict[str, float] | None = None,
                   params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None,
                   files: dict[str, str | bytes] | None = None) -> None:
        self.send(ev.LogParent(_metrics(metrics or {}, step=0), _texts(params or {}),
                               _texts(tags or {}), dict(files or {})))

    def log_plots(self, trials: list, direction: str, importances: dict[str, float]) -> None:
        # Pickled here: the tracking process unpickles (and so imports optuna) only when it
        # draws, never while it has other events to write.
        self.send(ev.Plots(pickle.dumps(trials), direction, dict(importances)))

    def close(self) -> ev.Report:
        """Send `Close`, wait until everything sent is written, return the process's Report."""
        if self._closed:
            return self.report
        self.send(ev.Close())
        self._closed = True
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        try:
            while not self._reports.poll(0.2):
                if not self._process.is_alive() or time.monotonic() > deadline:
                    raise EOFError
            self.report = self._reports.recv()
        except (EOFError, OSError):
            self._process.join(timeout=5)
            code = self._process.exitcode
            why = (f"was killed (signal {-code}); a rerun of the same command completes the "
                   "study's MLflow runs from the Optuna storage" if code is not None and code < 0
                   else f"ended early (exit code {code}); a script that calls run_study needs "
                   "an `if __name__ == \"__main__\":` guard")
            self.report = ev.Report(None, None, f"the tracking process {why}")
            print(f"warning: MLflow tracking stopped: {self.report.error}", file=sys.stderr)
            self._events.cancel_join_thread()  # no reader left: never wait to flush the queue
        self._events.close()
        self._events.join_thread()
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
        return self.report

    @property
    def error(self) -> str | None:
        return self.report.error

    @property
    def display_uri(self) -> str:
        return mask_password(self.uri)


class TrialRun:
    """One child run: epochs buffered here and sent at most every FLUSH_SECONDS."""

    def __init__(self, tracker: StudyTracker, key: str):
        self.tracker, self.key = tracker, key
        self._pending: list[ev.Metric] = []
        self._last_flush = time.monotonic()

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._pending += _metrics(metrics, step=epoch)
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.tracker.send(ev.LogMetrics(self.key, self._pending))
            self._pending, self._last_flush = [], time.monotonic()

    def end(self, state: str, *, metrics: dict[str, float], tags: dict[str, Any]) -> None:
        """Close the run; `state` is the Optuna trial state name (COMPLETE, PRUNED, FAIL)."""
        batch, self._pending = self._pending + _metrics(metrics, step=0), []
        self.tracker.send(ev.EndRun(self.key, ev.STATUS_OF_STATE.get(state, "FAILED"), batch,
                                    _texts({ev.STATE_TAG: state, **tags})))


def _metrics(values: dict[str, float], step: int) -> list[ev.Metric]:
    now = int(time.time() * 1000)
    return [(key, float(value), now, step) for key, value in values.items()]


def _texts(values: dict[str, Any]) -> dict[str, str]:
    # MLflow caps a param at 6000 characters; ours are short, but a user's data path may not be.
    texts = {}
    for key, value in values.items():
        text = str(value.value if isinstance(value, enum.Enum) else value)
        texts[key] = text if len(text) <= 6000 else text[:5997] + "..."
    return texts
