"""Shared steps of the crash-recovery tests: start a study, stop it mid-trial, check.

Every wait is for a state read from the Optuna storage, never for a length of time; the
deadline only turns a hang into a failure that says what was awaited. A trial's MLflow run is
found by its tags (`trickopt.study`, `optuna.trial_number`), the link from Optuna to MLflow.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

MAX_EPOCHS = 25
# Trials slow enough (a few seconds each on 2 cores, ~0.2 s an epoch) to be caught in the
# middle, with at least 13 epochs (seconds) of margin once caught, and no longer than that:
# every test here waits for whole trials. None is pruned or stopped early, so the state of
# every trial is predictable.
SLOW = ["--no-progress", "--set", "model.arch=mlp", "--set", "model.width=256",
        "--set", "data.name=synthetic", "--set", "data.n_samples=3000",
        "--set", f"train.max_epochs={MAX_EPOCHS}", "--set", "study.pruner=none",
        "--set", "search.stopper=none", "--set", "search.batch_size=32",
        "--set", "refit=none"]
DEADLINE = 300  # seconds to reach an awaited state; a slow trial takes ~8 s on 2 busy cores
STUDY_TAG, TRIAL_TAG = "trickopt.study", "optuna.trial_number"  # on every trial's run


def start_study(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trickopt.study", *args, *SLOW], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for(what: str, poll: Callable[[], object], *, process: subprocess.Popen | None = None,
             timeout: float = DEADLINE, poll_seconds: float = 0.2):
    """Call `poll` every `poll_seconds` until it returns something truthy, and return that.
    Fails naming `what` at the deadline, or as soon as `process` (the study being watched)
    has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            out = process.stdout.read().decode() if process.stdout else ""
            raise AssertionError(f"the study ended (exit code {process.returncode}) while "
                                 f"waiting for {what}:\n{out}")
        found = poll()
        if found:
            return found
        time.sleep(poll_seconds)
    raise AssertionError(f"waited {timeout} s for {what}; it never happened")


def trial_in_its_first_half(load_study: Callable[[], optuna.Study], *,
                            where: Callable[[FrozenTrial], bool] | None = None
                            ) -> FrozenTrial | None:
    """A RUNNING trial (one for which `where(trial)` is true, where given) that has reported
    at least one epoch and has at least half of its epochs to go (seconds of margin: it
    cannot finish before a signal lands), once another trial is COMPLETE. None while the
    storage shows no such trial."""
    try:
        trials = load_study().get_trials(deepcopy=False)
    except (KeyError, ValueError):  # the study does not exist yet
        return None
    if not any(t.state == TrialState.COMPLETE for t in trials):
        return None
    running = [t for t in trials if t.state == TrialState.RUNNING
               and 1 <= len(t.intermediate_values) <= MAX_EPOCHS // 2
               and (where is None or where(t))]
    return running[0] if running else None


def wait_for_trial_mid_run(load_study, process: subprocess.Popen | None = None, *,
                           ready: Callable[[], bool] | None = None,
                           where: Callable[[FrozenTrial], bool] | None = None) -> FrozenTrial:
    """See `trial_in_its_first_half`; with `ready`, also once `ready()` is true."""
    what = (f"a complete trial and another running with 1 to {MAX_EPOCHS // 2} of "
            f"{MAX_EPOCHS} epochs reported" + (" (and the MLflow store set up)" if ready else "")
            + (" in the chosen process" if where else ""))
    return wait_for(what, lambda: (ready is None or ready()) and trial_in_its_first_half(
        load_study, where=where), process=process)


def sqlite_store_has_a_run(db: Path) -> bool:
    """Whether the MLflow store `db` (SQLite) holds a run: its tables are all made. Read-only,
    so that a store still being set up is never touched (an MlflowClient would migrate it).
    Until it has set the store up, the tracking process does not yet ignore SIGINT, and a
    kill -9 then leaves no store at all (it is made under another name): the tests that
    signal a whole study's process group, and expect runs to complete, wait for this first,
    as short trials could end before the store is made."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True,
                                                timeout=1.0)) as connection:
            return connection.execute("SELECT count(*) FROM runs").fetchone()[0] > 0
    except sqlite3.Error:  # no file yet, or no table yet
        return False


def assert_still_running(load_study, trial: FrozenTrial, signal_name: str) -> None:
    """The signal landed mid-trial: the trial it was aimed at had not finished."""
    now = load_study().trials[trial.number]
    assert now.state == TrialState.RUNNING, (
        f"trial {trial.number} was {now.state.name}, not RUNNING, right after {signal_name}; "
        f"it had reported {len(trial.intermediate_values)} of {MAX_EPOCHS} epochs")


def kill_mid_trial(process: subprocess.Popen, load_study, *,
                   ready: Callable[[], bool] | None = None) -> int:
    """Once one trial is complete and another is mid-run (and `ready()`, where given), kill -9
    the whole study (process group) and return the number of the trial it left RUNNING: the
    one seen mid-run, or a later one where the machine is slow enough that it finished before
    the kill landed (the study must have trials enough left for that)."""
    try:
        seen = wait_for_trial_mid_run(load_study, process, ready=ready)
    finally:
        end_group(process)
    running = [t.number for t in load_study().trials if t.state == TrialState.RUNNING]
    assert len(running) == 1 and running[0] >= seen.number, (
        f"kill -9 left trials {running} RUNNING; trial {seen.number} was seen mid-run")
    return running[0]


def tracking_process(study_pid: int) -> int | None:
    """The study's tracking process: its child started by multiprocessing's spawn (the
    resource tracker, the other child, runs `resource_tracker`)."""
    children = Path(f"/proc/{study_pid}/task/{study_pid}/children")
    for pid in children.read_text().split() if children.exists() else []:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "spawn_main" in command and "resource_tracker" not in command:
            return int(pid)
    return None


def end_group(process: subprocess.Popen) -> None:
    """kill -9 what is left of the process group that `process` leads (started with
    start_new_session): its workers and tracking processes outlive it if it was killed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)


def kill_tracking_process(study: subprocess.Popen) -> str:
    """kill -9 the study's tracking process alone; return the study's output once it has
    ended (it goes on without MLflow). The study is killed too if anything here fails."""
    try:
        tracker = wait_for("the tracking process", lambda: tracking_process(study.pid),
                           process=study)
        os.kill(tracker, signal.SIGKILL)
        return study.communicate(timeout=600)[0].decode()
    finally:
        if study.poll() is None:
            os.killpg(study.pid, signal.SIGKILL)


def trial_runs(client: MlflowClient, study_name: str) -> dict[int, list[Run]]:
    """{trial number: its MLflow runs} of a study (whose experiment has the study's name),
    linked by their tags alone. Refit runs name a trial too, and are left out."""
    experiment = client.get_experiment_by_name(study_name)
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`{STUDY_TAG}` = '{study_name}'",
                              max_results=1000)
    by_number: dict[int, list[Run]] = {}
    for run in runs:
        if TRIAL_TAG in run.data.tags and "trickopt.refit" not in run.data.tags:
            by_number.setdefault(int(run.data.tags[TRIAL_TAG]), []).append(run)
    return by_number


def complete_numbers(study: optuna.Study) -> list[int]:
    return [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]


def check_recovered(study: optuna.Study, killed: int, complete_before: list[int],
                    client: MlflowClient, study_name: str) -> None:
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert trials[killed].state == TrialState.FAIL
    # A live trial taken for dead (a heartbeat missed on a busy machine) fails without a
    # reason of its own, or as worker_died: only the killed trial may fail that way.
    taken_for_dead = [n for n, t in trials.items() if n != killed
                      and t.state == TrialState.FAIL
                      and t.user_attrs.get("stop_reason", "worker_died") == "worker_died"]
    assert not taken_for_dead, f"trials {taken_for_dead} were failed as dead; only {killed} was"
    # Our own check records why; Optuna's heartbeat fails the trial without a word, and a
    # finished trial can no longer be annotated (its MLflow run says why, below).
    assert trials[killed].user_attrs.get("stop_reason", "worker_died") == "worker_died"
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == trials[killed].params
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
    runs = trial_runs(client, study_name)
    # One run per trial, found by its tags: none missing, no duplicate from the retry.
    assert {n: len(r) for n, r in runs.items()} == dict.fromkeys(trials, 1), runs.keys()
    # Every trial complete before the kill is still there, with its run, finished.
    for number in complete_before:
        assert trials[number].state == TrialState.COMPLETE
        assert runs[number][0].info.status == "FINISHED"
    killed_run = runs[killed][0]
    assert killed_run.info.status == "FAILED"
    assert killed_run.data.tags["stop_reason"] == "worker_died"
    experiment = client.get_experiment_by_name(study_name).experiment_id
    still_running = [r.info.run_name for r in client.search_runs([experiment])
                     if r.info.status == "RUNNING"]
    assert not still_running, still_running
