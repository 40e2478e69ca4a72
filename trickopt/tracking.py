"""MLflow tracking of a study: one parent run per study, one nested child run per trial.

Every MLflow call runs in a separate process, the tracking process, and this module's main-side
classes only send it messages over a pipe. A thread was not enough: MLflow's client is mostly
SQLAlchemy and Python code that holds the GIL, so a "background" writer thread still ran in
series with training (measured: 100 short trials took 9.6 s with the thread against 6.0 s
untracked). The process also overlaps the fixed costs with training: importing mlflow
(about 1 s), creating a fresh store's tables (about 1.7 s) and drawing the study's plots.

A trial's epochs are buffered and sent at most every `FLUSH_SECONDS`, so a running trial's
curves still reach `mlflow ui` within seconds, and the tracking process writes each batch with
one `log_batch` (one `log_metric` per metric per epoch cost about 5 ms here, as much as a
digits epoch).

Run status follows the trial: FINISHED (complete), KILLED (pruned), FAILED (failed or
interrupted), so the UI tells the three apart. A tracking hiccup (one write failing) is logged
and the study goes on; a store that cannot be opened at all stops the tracking, and
`StudyTracker.error` says why.

This module imports mlflow only in the tracking process: the training process never pays for it.
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

from trickopt.urls import mask_password

FLUSH_SECONDS = 2.0  # a running trial's curves reach the UI this often
PARENT_TAG = "trickopt.parent"
STUDY_TAG = "trickopt.study"
STATUS_OF_STATE = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
REPLY_WAIT_SECONDS = 600  # longest wait for an answer (a remote server's store migrations)


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else MLflow's own default store, `mlflow.db` in this directory,
    which is exactly what a plain `mlflow ui` started here reads."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


class TrackingFailed(RuntimeError):
    """The tracking process could not do what was asked; tracking is off from then on."""


class StudyTracker:
    """The training process's side of the tracking process.

    `StudyTracker()` starts the process at once, so that it imports mlflow while this process
    does its own set-up; nothing is created in the store until `open` is called. Every call
    returns at once except the few that need an answer (`parent_run_id`, `TrialRun.run_id`,
    `drain`, `close`).
    """

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")  # fork + torch threads can deadlock
        self._conn, child_end = context.Pipe()
        self._process = context.Process(target=_serve, args=(child_end,),
                                        name="trickopt-mlflow", daemon=True)
        self._process.start()
        child_end.close()
        self._tokens = itertools.count(1)
        self._replies: dict[int, tuple[Any, str | None]] = {}
        self._parent_token: int | None = None
        self._parent_run_id: str | None = None
        self.uri: str | None = None
        self.error: str | None = None
        self._closed = False
        self._prepared: list[str] = []

    # -- plumbing ---------------------------------------------------------------------------
    def _send(self, op: str, *args: Any) -> int:
        token = next(self._tokens)
        if self.error is None and not self._closed:
            try:
                self._conn.send((token, op, args))
            except (OSError, ValueError) as exc:  # the process is gone
                self._fail(f"the tracking process stopped ({exc})")
        return token

    def _reply(self, token: int) -> Any:
        """The answer to message `token`; raises TrackingFailed when there will be none."""
        deadline = time.monotonic() + REPLY_WAIT_SECONDS
        while token not in self._replies:
            if self.error is not None:
                raise TrackingFailed(self.error)
            try:
                if self._conn.poll(0.5):
                    answered, value, error = self._conn.recv()
                    self._replies[answered] = (value, error)
                elif not self._process.is_alive():
                    self._fail(f"the tracking process died (exit code {self._process.exitcode})")
                elif time.monotonic() > deadline:
                    self._fail(f"no answer from the tracking store in {REPLY_WAIT_SECONDS} s")
            except (EOFError, OSError):
                self._process.join(timeout=5)
                self._fail(f"the tracking process ended (exit code {self._process.exitcode}; "
                           "its error, if any, is printed above. A script that calls "
                           "run_study needs an `if __name__ == \"__main__\":` guard)")
        value, error = self._replies.pop(token)
        if error is not None:
            self._fail(error)
            raise TrackingFailed(error)
        return value

    def _fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
            print(f"warning: MLflow tracking stopped: {message}. The study goes on; its trials "
                  "are all in the Optuna storage.", file=sys.stderr, flush=True)

    # -- the study's runs -------------------------------------------------------------------
    def prepare(self, uri: str) -> None:
        """Say which store `open` will open, before the study's checks have passed. Where it
        is a SQLite file that does not exist yet, the tracking process creates MLflow's
        tables (about 1.7 s of migrations) in a hidden file beside it, moved into place by
        `open`; `abandon` deletes it, so a study that fails its checks leaves nothing."""
        self._prepared.append(uri)
        self._send("prepare", uri)

    def open(self, uri: str, experiment: str, *, plots: bool = True) -> None:
        """Connect to the store (creating its tables and the experiment where needed).
        `plots`: this tracker will draw the study's plots (imports the plotting code ahead)."""
        self.uri = uri
        self._send("open", uri, experiment, plots)

    def open_parent(self, study_name: str, known_run_id: str | None) -> None:
        """Find or create the study's parent run: the known one on resume, else the run
        tagged as the study's parent, else a new one. Its id: `parent_run_id`."""
        self._parent_token = self._send("open_parent", study_name, known_run_id)
        self._parent_run_id = None

    def parent_run_id_if_known(self) -> str | None:
        """The parent run's id if its answer has arrived; never waits."""
        if self._parent_run_id is None and self._parent_token is not None \
                and self.error is None:
            try:
                while self._conn.poll(0):
                    answered, value, error = self._conn.recv()
                    self._replies[answered] = (value, error)
            except (EOFError, OSError):
                return None  # the next call that waits says what happened
            if self._parent_token in self._replies:
                return self.parent_run_id
        return self._parent_run_id

    @property
    def parent_run_id(self) -> str | None:
        if self._parent_run_id is None and self._parent_token is not None:
            try:
                self._parent_run_id = self._reply(self._parent_token)
            except TrackingFailed:
                self._parent_token = None
        return self._parent_run_id

    def start_trial(self, study_name: str, trial_number: int,
                    params: dict[str, Any]) -> TrialRun:
        tags = {STUDY_TAG: study_name, "optuna.trial_number": str(trial_number),
                "optuna.state": "RUNNING"}
        return TrialRun(self, f"trial-{trial_number}", tags, params)

    def start_child(self, name: str, tags: dict[str, str],
                    params: dict[str, Any]) -> TrialRun:
        return TrialRun(self, name, tags, params)

    def log_parent(self, *, metrics: dict[str, float], params: dict[str, Any] | None = None,
                   tags: dict[str, Any] | None = None) -> None:
        self._send("log_parent", _metrics(metrics, step=0), _texts(params or {}),
                   _texts(tags or {}))

    def log_parent_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._send("parent_artifact", str(path), artifact_path)

    def log_parent_plots(self, trials: list, direction: str, importances: dict[str, float],
                         folder: str | Path) -> None:
        """Draw the study's plots from `trials` (FrozenTrials) in the tracking process and log
        them to the parent run under plots/."""
        # Pickled here and unpickled by the handler: unpickling them on receipt would import
        # optuna on the receiving thread while the warm-up thread may be importing it too.
        self._send("parent_plots", pickle.dumps(trials), direction, importances, str(folder))

    def close_orphan_runs(self, study_name: str, trials: dict[int, tuple[str, str | None]],
                          taken_ms: int) -> None:
        """Close as FAILED each of the study's child runs left RUNNING whose trial, in
        `trials` ({number: (state name, stop_reason)}, a snapshot taken at `taken_ms`), is no
        longer running. A recent run of a trial the snapshot lacks is a live worker's."""
        self._send("close_orphans", study_name, trials, taken_ms)

    def remove_folder(self, folder: str | Path) -> None:
        """Delete `folder` once the artifacts sent before this call are logged."""
        if self.error is not None:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)  # nothing will read it
        self._send("remove_folder", str(folder))

    def end_parent(self, status: str = "FINISHED") -> None:
        self._send("end_parent", status)

    def drain(self) -> None:
        """Wait until every message sent so far has been written."""
        try:
            self._reply(self._send("sync"))
        except TrackingFailed:
            pass

    def close(self) -> None:
        """Write everything sent so far, then stop the tracking process."""
        if self._closed:
            return
        self.drain()
        self._closed = True
        try:
            self._conn.send((0, "close", ()))
        except (OSError, ValueError):
            pass
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.terminate()
        self._conn.close()

    def abandon(self) -> None:
        """Stop the tracking process without writing anything (set-up failed first); it
        deletes a store it was preparing before it exits."""
        self._closed = True
        self._conn.close()
        self._process.terminate()  # SIGTERM: handled, it unwinds and cleans up
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=10)
        for uri in self._prepared:  # in case a signal came between two of its steps
            hidden = prepared_file(uri, self._process.pid)
            if hidden is not None:
                remove_sqlite_file(hidden)

    @property
    def display_uri(self) -> str:
        return mask_password(self.uri or "")


class TrialRun:
    """One child run: created in the tracking process at once, epochs buffered here."""

    def __init__(self, tracker: StudyTracker, name: str, tags: dict[str, str],
                 params: dict[str, Any]):
        self.tracker = tracker
        self._token = tracker._send("start_run", name, _texts(tags), _texts(params))
        self._run_id: str | None = None
        self._answered = False
        self._pending: list[tuple] = []
        self._last_flush = time.monotonic()

    @property
    def run_id(self) -> str | None:
        """The MLflow run id (waits for the tracking process); None where tracking failed."""
        if not self._answered:
            self._answered = True  # one answer per message: never wait for it twice
            try:
                self._run_id = self.tracker._reply(self._token)
            except TrackingFailed:
                self._run_id = None
        return self._run_id

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._pending += _metrics(metrics, step=epoch)
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self.tracker._send("log_run", self._token, batch, {})
        self._last_flush = time.monotonic()

    def end(self, state: str, *, metrics: dict[str, float], tags: dict[str, Any]) -> None:
        """Close the run; `state` is the Optuna trial state name (COMPLETE, PRUNED, FAIL)."""
        batch, self._pending = self._pending + _metrics(metrics, step=0), []
        self.tracker._send("end_run", self._token, batch,
                           _texts({"optuna.state": state, **tags}),
                           STATUS_OF_STATE.get(state, "FAILED"))


def _metrics(values: dict[str, float], step: int) -> list[tuple[str, float, int, int]]:
    now = int(time.time() * 1000)
    return [(key, float(value), now, step) for key, value in values.items()]


def _texts(values: dict[str, Any]) -> dict[str, str]:
    # MLflow caps a param at 6000 characters; ours are short, but a user's data path may not be.
    texts = {}
    for key, value in values.items():
        text = str(value)
        texts[key] = text if len(text) <= 6000 else text[:5997] + "..."
    return texts


# -- the tracking process ------------------------------------------------------------------
def _serve(conn) -> None:
    """The tracking process: run each message's MLflow calls, in order, until told to close
    or until the training process is gone (its pipe reads end-of-file; every message it sent
    before dying is still written)."""
    import logging
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the training process's to handle
    signal.signal(signal.SIGTERM, _exit_cleanly)  # multiprocessing's exit: clean up first
    from trickopt._mlflow_writer import Writer  # imports mlflow: the slow part, done at once

    logging.basicConfig(format="warning: %(message)s")
    for noisy in ("mlflow", "alembic"):  # "creating tables..." would break a one-line error
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("matplotlib").setLevel(logging.ERROR)  # "building the font cache"
    writer = Writer()
    # Where this process's time goes, for benchmarks/tracking_overhead.py: seconds per message
    # type, and seconds spent waiting for messages, written as JSON when it closes.
    timings_path = os.environ.get("TRICKOPT_TRACKING_TIMINGS")
    timings: dict[str, float] = {"started": _process_age()}
    # A trial waits for its run id when it ends, so a new run is created ahead of the
    # metrics and statuses of earlier trials, which wait in `backlog` (written in order, when
    # no message is waiting). Every other message keeps its place after all that came before.
    backlog: collections.deque = collections.deque()

    replying = [True]  # False once the training process is gone: keep writing, stop answering

    def run(token: int, op: str, args: tuple) -> None:
        began = time.perf_counter()
        value, error = writer.handle(token, op, args)
        timings[op] = timings.get(op, 0.0) + time.perf_counter() - began
        if token and op in Writer.ANSWERED and replying[0]:
            try:
                conn.send((token, value, error))
            except (OSError, ValueError):
                replying[0] = False

    try:
        while True:
            waited = time.perf_counter()
            if backlog and not conn.poll(0):
                run(*backlog.popleft())
                continue
            try:
                token, op, args = conn.recv()
            except (EOFError, OSError):
                break
            timings["idle"] = timings.get("idle", 0.0) + time.perf_counter() - waited
            if op in Writer.DEFERRABLE:
                backlog.append((token, op, args))
                continue
            if op != "start_run":
                while backlog:
                    run(*backlog.popleft())
            if op == "close":
                break
            run(token, op, args)
            if op == "prepare" or (op == "open" and args[2]):
                # Only the study's coordinator prepares a store or draws plots; workers don't.
                writer.start_warm_up()
        while backlog:  # the training process is gone; what it sent is still written
            run(*backlog.popleft())
    finally:
        writer.discard_prepared()  # never opened: the study failed its checks, or was killed
    if timings_path:
        import json

        timings["ended"] = _process_age()
        if writer.warm_up_seconds is not None:
            timings["warm_up_plots (thread)"] = writer.warm_up_seconds
        Path(timings_path).write_text(json.dumps(timings))
    sys.stdout.flush()
    sys.stderr.flush()
    # Every write is committed; skip the interpreter's slow shutdown of mlflow's modules.
    os._exit(0)


def prepared_file(uri: str | None, pid: int) -> Path | None:
    """Where process `pid` prepares the tables of a new SQLite store `uri` (see `prepare`),
    or None when `uri` is not a SQLite file."""
    if not uri or not uri.startswith("sqlite:///") or "?" in uri:
        return None
    target = Path(uri[len("sqlite:///"):])
    return target.with_name(f".{target.name}.preparing-{pid}")


def remove_sqlite_file(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + "-journal")):  # stopped mid-write
        leftover.unlink(missing_ok=True)


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)  # unwinds through `finally`, which deletes a half-prepared store


def _process_age() -> float:
    """Seconds since this process started (Linux; 0 elsewhere)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


__all__ = ["StudyTracker", "TrialRun", "TrackingFailed", "default_tracking_uri"]
