"""Where a study lives: Optuna's own storages, chosen by URL.

Default: a journal file, `trickopt.journal` in the working directory. Measured here with 20
reported epochs per trial, Optuna's SQLite storage cost about 75 ms per trial and a journal
file about 9 ms, against roughly 0.4 s of training for a whole digits trial: SQLite alone would
be a fifth of a small CPU study. The journal file is also safe for several processes on one
machine (it locks). For many machines, give a PostgreSQL URL: Optuna's RDBStorage, with its
heartbeat so that a dead worker's trial is failed and retried.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import warnings
from pathlib import Path

from trickopt.urls import mask_password, mask_passwords_in_text, with_installed_driver

DEFAULT_JOURNAL = "trickopt.journal"
JOURNAL_PREFIX = "journal:"
SCHEMA_ATTEMPTS = 5
TAIL_BYTES = 1 << 20  # a journal record is a few KB; its last line is found within this


class StorageError(RuntimeError):
    """The storage cannot be opened; the message names it (password masked) and says why."""


def journal_path(url: str | None) -> Path | None:
    """The journal file a storage URL names, or None for an RDB URL."""
    if url is None:
        return Path.cwd() / DEFAULT_JOURNAL
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX):]).expanduser()
    if "://" not in url and url.endswith((".journal", ".log")):
        return Path(url).expanduser()
    return None


def is_sqlite(url: str | None) -> bool:
    return url is not None and url.startswith("sqlite")


def describe_storage(url: str | None) -> str:
    path = journal_path(url)
    if path is not None:
        return f"journal file {path.resolve()}"
    return mask_password(url)


def open_storage(url: str | None, *, heartbeat_interval: int | None = None,
                 grace_period: int | None = None):
    """An Optuna storage for `url`: None (the default journal file), `journal:PATH` or a
    `*.journal` path, or any RDB URL (sqlite:///..., postgresql://...). RDB storages get
    Optuna's heartbeat when `heartbeat_interval` is given.

    Raises:
        StorageError: the database cannot be reached, refuses the credentials, or the journal's
            folder does not exist or cannot be written to.
    """
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = journal_path(url)
    if path is not None:
        if not path.parent.is_dir():
            raise StorageError(f"study.storage: the folder of {path} does not exist")
        if path.is_dir():
            raise StorageError(f"study.storage: {path} is a folder, not a journal file")
        # The journal's lock is a file beside it, so even an existing journal needs its folder
        # writable. (os.access answers for root too on a read-only file system.)
        for needed in (path.parent, path) if path.exists() else (path.parent,):
            if not os.access(needed, os.W_OK):
                raise StorageError(
                    f"study.storage: cannot write to {needed} (a read-only file system, or no "
                    "permission); run from a folder you can write to, or pass --storage "
                    "journal:PATH")
        _check_is_journal(path)
        repair_torn_tail(path)
        return JournalStorage(JournalFileBackend(str(path)))
    _check_parses(url)
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            return _rdb_storage(url, heartbeat_interval, grace_period)
        except Exception as exc:  # noqa: BLE001 - any driver error means "cannot use this URL"
            if _is_schema_race(exc) and attempt < SCHEMA_ATTEMPTS - 1:
                time.sleep(0.5 + random.random() * (attempt + 1))
                continue
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise StorageError(f"study.storage: cannot open {mask_password(url)}: "
                               f"{mask_passwords_in_text(reason)}") from None
    raise AssertionError("unreachable")


def _check_is_journal(path: Path) -> None:
    """Refuse a file whose first record is not an Optuna journal record (Optuna would take
    it for a write in progress, then fail mid-study), before anything is written to it."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb") as journal:
        first = journal.readline(TAIL_BYTES)
    if not first.endswith(b"\n"):
        return  # a first record cut short: repair_torn_tail's business
    try:
        record = json.loads(first)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        raise StorageError(f"study.storage: {path} is not an Optuna journal file (its first "
                           "line is no journal record); name a new file, or a study's journal")


def repair_torn_tail(path: Path) -> Path | None:
    """Repair a journal whose last write was cut short; return where the torn bytes were
    kept, or None when the journal was whole.

    Optuna appends each record as one JSON line. A full disk (or a crash mid-write) can leave
    half a line at the end; the next run would append after it, and from then on every read
    of the journal fails (a JSONDecodeError), taking every finished trial with it. Under the
    journal's own lock (no writer is mid-line then), the torn tail is copied to a backup file
    beside the journal and cut off; every complete record stays as it was.
    """
    from optuna.storages.journal import JournalFileSymlinkLock

    if not path.is_file() or path.stat().st_size == 0:
        return None
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        with open(path, "rb") as journal:
            journal.seek(max(0, path.stat().st_size - TAIL_BYTES))
            tail = journal.read()
        if tail.endswith(b"\n"):
            return None
        start = tail.rfind(b"\n") + 1
        if start == 0 and path.stat().st_size > len(tail):
            raise StorageError(f"study.storage: {path} ends in a line over {TAIL_BYTES} "
                               "bytes long: not an Optuna journal")
        torn = tail[start:]
        backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
        backup.write_bytes(torn)
        os.truncate(path, path.stat().st_size - len(torn))
    finally:
        lock.release()
    print(f"warning: {path}: its last record was cut short (a full disk, or a crash "
          f"mid-write); {len(torn)} bytes kept in {backup.name}, the journal repaired: every "
          "finished trial is intact", file=sys.stderr, flush=True)
    return backup


def _check_parses(url: str) -> None:
    """Refuse a URL that SQLAlchemy cannot parse, without showing it: whatever it holds, we
    cannot tell where its password is."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url).port  # noqa: B018 - a port that is not a number fails here
    except (ArgumentError, ValueError, TypeError):
        raise StorageError(
            "study.storage: not a database URL SQLAlchemy can parse (not shown: it may hold "
            "a password); expected dialect[+driver]://user:password@host:port/database, "
            "journal:PATH or a *.journal file") from None


def _rdb_storage(url: str, heartbeat_interval: int | None, grace_period: int | None):
    import optuna

    from trickopt.study.recovery import MAX_RETRY

    heartbeat = {}
    # Heartbeat and the retry callback are marked experimental; they are Optuna's documented
    # way to recover a dead worker's trial, chosen knowingly, so their warnings are noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if heartbeat_interval:
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
            heartbeat = dict(heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                             heartbeat_stale_trial_callback=retry)
        return optuna.storages.RDBStorage(with_installed_driver(url),
                                          engine_kwargs=_engine_kwargs(url), **heartbeat)


def _is_schema_race(exc: Exception) -> bool:
    """Workers starting together on an empty database race to create Optuna's tables; the
    losers see a duplicate key, and a moment later the tables exist."""
    text = str(exc).lower()
    return "already exists" in text or "duplicate key" in text or "unique constraint" in text


def _engine_kwargs(url: str) -> dict:
    if url.startswith("postgresql"):
        # Fail fast on an unreachable host instead of waiting out the OS's TCP timeout.
        return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    return {}
