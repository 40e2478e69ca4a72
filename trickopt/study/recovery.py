"""Crash recovery: no trial and no MLflow run is left RUNNING after a worker dies.

Two detectors of a dead worker, both ending in the same place (the trial becomes FAIL, a
WAITING copy with the same parameters is queued by Optuna's RetryHeartbeatStaleTrialCallback,
and the trial's MLflow run is closed as FAILED):

* On an RDB storage (PostgreSQL, SQLite), Optuna's own heartbeat: a trial whose heartbeat is
  older than the grace period is failed by `optuna.storages.fail_stale_trials`, which every
  worker runs before each trial. This covers workers on other machines.
* On any storage, the journal file included (it has no heartbeat in Optuna 5), each trial
  records which process runs it (host, pid and the process's start time, so a reused pid is
  not mistaken for the dead worker). A trial RUNNING on this host whose process is gone is
  dead for certain, with no grace period to wait out.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

WORKER_ATTR = "worker"
MAX_RETRY = 2  # a trial that kills its worker twice is probably what kills it: stop retrying


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), '' where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), counted after the name


def worker_identity() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def is_dead_here(identity: str) -> bool:
    """True only when `identity` names a process on this host that no longer runs."""
    host, _, rest = identity.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return bool(started) and _start_time(pid) not in ("", started)


def fail_dead_trials(study: optuna.Study, storage, *, max_retry: int = MAX_RETRY) -> list[int]:
    """Fail and re-queue RUNNING trials whose worker process on this host is gone.

    `storage` is the study's storage; trials are addressed by their storage id
    (`FrozenTrial._trial_id`, as Optuna's own fail_stale_trials does).
    """
    failed = []
    with warnings.catch_warnings():
        # Optuna marks the callback experimental; it is the documented way to retry a trial.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if _fail_if_dead(trial, storage, study, retry):
                failed.append(trial.number)
    return failed


def _fail_if_dead(trial, storage, study, retry) -> bool:
    identity = trial.user_attrs.get(WORKER_ATTR)
    if identity is None or not is_dead_here(identity):
        return False
    try:  # the reason first: a finished trial can no longer be changed
        storage.set_trial_user_attr(trial._trial_id, "stop_reason", "worker_died")
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
        return False  # another process finished or failed it a moment ago
    retry(study, storage.get_trial(trial._trial_id))
    return True
