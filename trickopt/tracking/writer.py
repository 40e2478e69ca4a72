"""The tracking process: every MLflow call of a study, made from the events it receives.

Imported only in that process (it imports mlflow). Events are written in the order they were
sent; a failing write is reported in one line and the rest go on; a store that cannot be
opened stops tracking (one line, and the `Report` says why).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import pickle
import queue
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trickopt.tracking import events as ev
from trickopt.tracking.plots import draw_plots, import_plotting
from trickopt.urls import mask_passwords_in_text, remember_secrets, with_installed_driver

PARENT_WAIT_SECONDS = 60  # how long a joining worker waits for the parent run to appear


def serve(events, reports) -> None:
    """Write each event until `Close`, or until the study process is gone (then what it sent
    is still written); answer `Close` with a Report; exit."""
    # Ctrl-C and SIGTERM (systemd signals every process of the unit) are the study process's
    # to handle: it then sends Close. If it dies instead, this process notices and exits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(format="warning: %(message)s")
    for noisy in ("mlflow", "alembic"):  # "creating tables..." would break a one-line error
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("matplotlib").setLevel(logging.ERROR)  # "building the font cache"
    writer = Writer()
    study_process = multiprocessing.parent_process()
    while True:
        event = None
        try:
            event = events.get(timeout=1.0)
        except queue.Empty:
            pass
        except (EOFError, OSError):
            break  # the study process is gone, and its end of the queue with it
        except Exception as exc:  # noqa: BLE001 - one event that cannot be read is skipped
            print(f"warning: MLflow tracking skipped an event it could not read: {exc}",
                  file=sys.stderr, flush=True)
        if event is None:  # nothing (readable) came: is anyone still sending?
            if study_process is not None and not study_process.is_alive():
                break
            continue
        if isinstance(event, ev.Close):
            break
        writer.handle(event)
        if not gc.isenabled():  # the store is open, and what it imported is here to stay:
            gc.freeze()  # set aside (with a few MB of a new store's migration garbage, once),
            gc.enable()  # no full collection walks it (one took 0.2 s after the plots)
    while True:  # the study process died: write whatever it sent before
        try:
            writer.handle(events.get_nowait())
        except (queue.Empty, OSError, EOFError):
            break
    _close_sqlite()  # before the Report: the study's command ends with its folder tidy
    try:
        reports.send(ev.Report(writer.experiment_id, writer.parent_run_id, writer.error))
    except (OSError, ValueError):
        pass  # nobody is listening any more
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # every write is committed; skip the interpreter's slow shutdown of mlflow


class Writer:
    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.study_tags: dict[str, str] = {}  # the study's name and uid, on every run
        self.draws_plots = False
        self.error: str | None = None
        self.runs: dict[str, str] = {}  # the training side's run key -> MLflow run id
        self.params: dict[str, list[Param]] = {}  # written with a run's first batch
        self.tags: dict[str, dict[str, str]] = {}  # an open run's tags, by its key
        # (tag, value) pairs of the runs this process closed: `Reconcile` skips their trials
        # (each written in full here), and so skips its search of every run when all are.
        self.closed: set[tuple[str, str]] = set()
        self._handlers: dict[type, Callable[[Any], None]] = {
            ev.Open: self._open, ev.StartRun: self._start_run, ev.LogMetrics: self._log_metrics,
            ev.EndRun: self._end_run, ev.LogParent: self._log_parent, ev.Plots: self._plots,
            ev.Reconcile: self._reconcile, ev.FailRuns: self._fail_runs,
            ev.EndParent: self._end_parent}

    def handle(self, event: ev.Event) -> None:
        if self.error is not None:
            return  # tracking stopped; the Report says why
        try:
            self._handlers[type(event)](event)
        except Exception as exc:  # noqa: BLE001 - a write failing must not stop the study
            message = mask_passwords_in_text(f"{type(exc).__name__}: {exc}".splitlines()[0])
            if isinstance(event, ev.Open):
                self.error = message
                print(f"warning: MLflow tracking stopped: {message}. The study goes on; its "
                      "trials are all in the Optuna storage.", file=sys.stderr, flush=True)
            else:
                print(f"warning: MLflow {type(event).__name__} failed: {message}",
                      file=sys.stderr, flush=True)

    # -- events -----------------------------------------------------------------------------
    def _open(self, event: ev.Open) -> None:
        remember_secrets(event.uri)  # masked in every warning this process prints
        with _creating_alone(event.uri):
            _create_sqlite_whole(event.uri)
            if event.uri.startswith("sqlite:"):
                _write_ahead_log()
            _probe_database(event.uri)
            self.client = _retry_schema_race(
                lambda: MlflowClient(with_installed_driver(event.uri)))
            self.experiment_id = _retry_schema_race(
                lambda: self._experiment_id(event.experiment))
        self.client.set_experiment_tag(self.experiment_id, *ev.EXPERIMENT_KIND)
        self.draws_plots = event.plots
        self.study_tags = ev.study_tags(event.study_name, event.study_uid)
        if self.draws_plots:  # now, while the study starts: its end then waits less
            import_plotting()
        run_id = self._find_parent()
        deadline = time.monotonic() + (PARENT_WAIT_SECONDS if event.role == "join" else 0)
        while run_id is None and time.monotonic() < deadline:  # the claimer is creating it
            time.sleep(0.5)
            run_id = self._find_parent()
        if run_id is None:  # ours to create (or the claimer died before it could)
            run_id = self.client.create_run(
                self.experiment_id, run_name=event.study_name,
                tags={ev.PARENT_TAG: "true", **self.study_tags}).info.run_id
        elif event.role == "create":
            self.client.update_run(run_id, status="RUNNING")  # a resumed study
        self.parent_run_id = run_id

    def _find_parent(self) -> str | None:
        study = " and ".join(f"tags.`{k}` = '{v}'" for k, v in self.study_tags.items())
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{ev.PARENT_TAG}` = 'true' and {study}",
            order_by=["attributes.start_time ASC"], max_results=1000)
        # Without a uid (a study an earlier trickopt made, a comparison), a parent with one is
        # another study's: MLflow's filter cannot ask for a missing tag.
        mine = [r for r in runs if ev.UID_TAG in self.study_tags or ev.UID_TAG not in r.data.tags]
        return mine[0].info.run_id if mine else None

    def _start_run(self, event: ev.StartRun) -> None:
        # No search for an existing run first (a query per trial, the tracking process's
        # bottleneck on short trials): `Reconcile` rebuilds only the runs of trials whose
        # process is dead, whose tracking process has written what it got within seconds.
        run_id = self.client.create_run(self.experiment_id, run_name=event.name,
                                        tags={"mlflow.parentRunId": self.parent_run_id,
                                              **event.tags}).info.run_id
        self.runs[event.key] = run_id
        self.tags[event.key] = event.tags
        self.params[event.key] = [Param(k, v) for k, v in event.params.items()]

    def _log_metrics(self, event: ev.LogMetrics, tags: dict[str, str] | None = None) -> None:
        run_id = self.runs.get(event.key)
        if run_id is not None:  # else its creation failed, and said so
            self.client.log_batch(run_id, metrics=[Metric(*m) for m in event.metrics],
                                  params=self.params.pop(event.key, []),
                                  tags=[RunTag(k, v) for k, v in (tags or {}).items()])

    def _end_run(self, event: ev.EndRun) -> None:
        try:
            self._log_metrics(ev.LogMetrics(event.key, event.metrics), event.tags)
        finally:
            run_id, tags = self.runs.pop(event.key, None), self.tags.pop(event.key, {})
            if run_id is not None:
                self.client.set_terminated(run_id, status=event.status)
                if "trickopt.refit" not in tags:  # the refit's trial tag names its source
                    self.closed.update(tags.items())

    def _log_parent(self, event: ev.LogParent) -> None:
        self.client.log_batch(self.parent_run_id, metrics=[Metric(*m) for m in event.metrics],
                              params=[Param(k, v) for k, v in event.params.items()],
                              tags=[RunTag(k, v) for k, v in event.tags.items()])
        with tempfile.TemporaryDirectory(prefix="trickopt-") as folder:
            for name, text in event.files.items():
                path = Path(folder, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(text, bytes):  # a plot
                    path.write_bytes(text)
                else:
                    path.write_text(text)
                self.client.log_artifact(self.parent_run_id, str(path),
                                         str(Path(name).parent) if "/" in name else None)

    def _plots(self, event: ev.Plots) -> None:
        with tempfile.TemporaryDirectory(prefix="trickopt-plots-") as folder:
            trials = pickle.loads(event.trials)
            for path in draw_plots(trials, event.direction, event.importances, Path(folder)):
                self.client.log_artifact(self.parent_run_id, str(path), "plots")

    def _reconcile(self, event: ev.Reconcile) -> None:
        records = [r for r in event.trials if (event.tag, str(r.number)) not in self.closed]
        if not records:
            return
        runs = self._trial_runs(event.tag)
        mine = set(self.runs.values())
        for record in records:
            run = runs.get(record.number)
            if run is not None and (run.info.status != "RUNNING" or run.info.run_id in mine):
                continue  # as it should be, or still being written by this process
            if run is None and not record.worker_gone:
                continue  # a live worker's tracking process may not have written it yet
            status = ev.STATUS_OF_STATE.get(record.state, "FAILED")
            # Optuna's heartbeat fails a trial without a reason; its worker died all the same.
            tags = {"stop_reason": "worker_died", **record.tags, ev.STATE_TAG: record.state}
            now = int(time.time() * 1000)
            metrics = [Metric(k, v, now, 0) for k, v in record.metrics.items()]
            if run is None:  # its events died with its process: rebuilt from the storage
                run_id = self._create_trial_run(record.number, {}, event.tag, event.name)
                tags["trickopt.rebuilt"] = ("from the Optuna storage; per-epoch curves other "
                                            "than the reported metric were lost")
                metrics += [Metric("reported_value", v, now, step)
                            for step, v in record.reported.items()]
                params = [Param(k, v) for k, v in record.params.items()]
            else:
                run_id, params = run.info.run_id, []
            self.client.log_batch(run_id, metrics=metrics, params=params,
                                  tags=[RunTag(k, v) for k, v in tags.items()])
            self.client.set_terminated(run_id, status=status)

    def _fail_runs(self, event: ev.FailRuns) -> None:
        values, mine = set(event.values), set(self.runs.values())
        for run in self.client.search_runs(  # MLflow's filter has no IN for tags
                [self.experiment_id], filter_string=f"{self._children()} and "
                                                    "attributes.status = 'RUNNING'",
                max_results=50_000):
            if run.data.tags.get(event.tag) in values and run.info.run_id not in mine:
                self.client.set_tag(run.info.run_id, "stop_reason", "worker_died")
                self.client.set_terminated(run.info.run_id, status="FAILED")

    def _trial_runs(self, tag: str = ev.TRIAL_TAG) -> dict:
        """{trial number (its tag `tag`): its run} among the study's child runs in the store."""
        runs = {}
        for run in self.client.search_runs([self.experiment_id], self._children(),
                                           max_results=50_000):
            number = run.data.tags.get(tag, "")
            if number.isdigit() and "trickopt.refit" not in run.data.tags:
                runs[int(number)] = run
        return runs

    def _create_trial_run(self, number: int, tags: dict[str, str], tag: str = ev.TRIAL_TAG,
                          name: str = "trial") -> str:
        return self.client.create_run(
            self.experiment_id, run_name=f"{name}-{number}",
            tags={"mlflow.parentRunId": self.parent_run_id, **self.study_tags,
                  tag: str(number), **tags}).info.run_id

    def _end_parent(self, event: ev.EndParent) -> None:
        self.client.set_terminated(self.parent_run_id, status=event.status)

    # -- helpers ----------------------------------------------------------------------------
    def _children(self) -> str:
        """The filter of the parent run's child runs: this study's, not an earlier study's of
        the same name (its journal deleted, the study made anew: another parent run)."""
        return f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'"

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, tags=dict([ev.EXPERIMENT_KIND]))
        except MlflowException:  # another worker created it a moment ago
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id


@contextlib.contextmanager
def _creating_alone(uri: str):
    """For a SQLite store, hold an exclusive lock on its folder while the store is opened:
    two processes creating one new mlflow.db at once (two studies, or workers, started
    together) break its migrations for good ("_alembic_tmp_experiments already exists"). A
    database server copes (the losers of its race are retried); a SQLite file does not."""
    path = _sqlite_file(uri)
    if path is None or fcntl is None:
        yield
        return
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)  # a lock on the folder: no file left behind
        yield
    finally:
        os.close(folder)  # releases the lock


def _sqlite_file(uri: str) -> Path | None:
    """The file a sqlite:/// URI names, read the way SQLAlchemy reads it (percent-escapes
    undone, the query left out); None for an in-memory store or SQLite's own `file:` URIs."""
    if not uri.startswith("sqlite:///"):
        return None
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    if not url.database or url.database == ":memory:" or url.database.startswith("file:") \
            or url.query.get("uri"):
        return None
    return Path(url.database)


def _create_sqlite_whole(uri: str) -> None:
    """Make a new SQLite store under another name, then link it into place: MLflow's
    migrations of a new mlflow.db take a second or two, and a process killed in the middle
    (kill -9, a power cut) would leave a store that no later run can open. A name that
    exists is a store someone made: left alone. Called under `_creating_alone`'s lock."""
    path = _sqlite_file(uri)
    if path is None or path.exists() or not path.parent.is_dir():
        return  # not ours to make, a store already, or what the probe reports in one line
    if fcntl is not None:  # under the lock no other creator is at work: theirs are stale
        for stale in path.parent.glob(f".{path.name}.creating-*"):
            stale.unlink(missing_ok=True)
    making = path.with_name(f".{path.name}.creating-{os.getpid()}")
    making_uri = f"sqlite:///{quote(str(making))}"
    try:
        # A folder that cannot be written to fails here at once; MLflow itself would
        # retry for a minute and a half, printing each retry.
        _probe_database(making_uri)
        _migrate_alone(making)
        try:
            os.link(making, path)  # never replaces a store made meanwhile (rename would)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links (some network and FUSE ones)
            if not path.exists():
                os.rename(making, path)
    finally:
        making.unlink(missing_ok=True)
        Path(f"{making}-journal").unlink(missing_ok=True)


def _migrate_alone(path: Path) -> None:
    """MLflow's migrations of a new store in the file `path`, not yet in place, its
    connections closed afterwards (that store object is never used again). No fsync per
    migration (dozens of them: 1.7 s against 1.3 s here, and disk flushes that slow the
    training on the other core): a file cut short by a crash is never put in place, and one
    fsync at the end puts it on disk before it is. Before WAL mode is switched on: the
    rollback journal (here in memory) leaves every migration in the file itself."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    opened: list = []

    def keep(connection, _record) -> None:
        opened.append(connection)
        if isinstance(connection, sqlite3.Connection):
            connection.execute("PRAGMA synchronous=OFF")
            connection.execute("PRAGMA journal_mode=MEMORY")

    event.listen(Engine, "connect", keep)
    try:
        MlflowClient(f"sqlite:///{quote(str(path))}").search_experiments(max_results=1)
    finally:
        event.remove(Engine, "connect", keep)
        for connection in opened:
            with contextlib.suppress(Exception):
                connection.close()
    file = os.open(path, os.O_RDWR)  # Windows flushes only a file opened for writing
    try:
        os.fsync(file)
    finally:
        os.close(file)


_SQLITE_CONNECTIONS: list = []  # closed before this process exits: see `_close_sqlite`


def _close_sqlite() -> None:
    """Close this process's SQLite connections, the last one after switching the database
    back to SQLite's default journal: that folds the write-ahead log into mlflow.db, removes
    mlflow.db-wal and -shm, and leaves a file that opens anywhere, a read-only copy included
    (a WAL database does not). Where another process still has it open (a worker, `mlflow
    ui`), the switch is refused and that process's close does it. os._exit would skip this."""
    *others, last = _SQLITE_CONNECTIONS or [None]
    for connection in others:
        with contextlib.suppress(Exception):
            connection.close()
    if last is not None:
        with contextlib.suppress(Exception):
            last.execute("PRAGMA journal_mode=DELETE")
        with contextlib.suppress(Exception):
            last.close()


def _write_ahead_log() -> None:
    """Open every SQLite connection of this process in WAL mode with synchronous=NORMAL:
    MLflow's writes of a trial (create_run, log_batch, set_terminated) take 0.65x the time of
    SQLite's default rollback journal (measured here), and on short trials this process is
    the bottleneck. A crash of any process loses nothing; a power cut can lose the last few
    writes, never the file (SQLite's WAL guarantees). `mlflow ui` reads it as before, and
    `_close_sqlite` switches the file back to the default journal at the end."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(connection, _record) -> None:
        if isinstance(connection, sqlite3.Connection):
            _SQLITE_CONNECTIONS.append(connection)
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # stored in the file: once is enough
            cursor.execute("PRAGMA synchronous=NORMAL")  # per connection
            cursor.close()


def _probe_database(uri: str) -> None:
    """Connect once, with a short timeout, before MLflow does: MLflow retries a store it
    cannot open for about ten minutes, printing each retry (a directory named mlflow.db, an
    unreachable PostgreSQL). One failed connection here stops tracking in seconds instead."""
    if "://" not in uri or uri.startswith(("http://", "https://", "databricks")):
        return  # a server: checked by the study process before it started this one
    import sqlalchemy

    url = with_installed_driver(uri)
    connect_args = {"connect_timeout": 5} if url.startswith("postgres") else {}
    engine = sqlalchemy.create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            if url.startswith("sqlite"):  # a read-only file opens; writing to it does not
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                connection.exec_driver_sql("ROLLBACK")
    finally:
        engine.dispose()


def _retry_schema_race(action: Callable[[], Any], attempts: int = 5) -> Any:
    """Run `action`, retrying while another worker is creating the same fresh database:
    the losers of that race fail on a duplicate key, and a moment later the tables exist."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception:  # noqa: BLE001 - the driver's error types vary; retried, then raised
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random() * (attempt + 1))
    raise AssertionError("unreachable")
