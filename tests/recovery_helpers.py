"""Shared steps of the crash-recovery tests: start a study, kill -9 it mid-trial, check."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

# Trials slow enough (about a second each) to be caught in the middle, none pruned or stopped
# early, so the state of every trial is predictable.
SLOW = ["--no-progress", "--set", "model.arch=mlp", "--set", "model.width=256",
        "--set", "data.name=synthetic", "--set", "data.n_samples=6000",
        "--set", "train.max_epochs=25", "--set", "study.pruner=none",
        "--set", "search.stopper=none", "--set", "search.batch_size=32",
        "--set", "refit=none"]


def start_study(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trickopt.study", *args, *SLOW], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def kill_mid_trial(process: subprocess.Popen, load_study, timeout: float = 180) -> int:
    """Wait for one complete trial and another running for 2+ epochs, then kill -9 the
    worker. Returns the number of the trial that was running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the study ended early: {process.stdout.read().decode()}")
        try:
            study = load_study()
        except (KeyError, ValueError):  # not created yet
            time.sleep(0.2)
            continue
        trials = study.get_trials(deepcopy=False)
        running = [t for t in trials if t.state == TrialState.RUNNING
                   and len(t.intermediate_values) >= 2]
        if running and any(t.state == TrialState.COMPLETE for t in trials):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            return running[0].number
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError("no trial was caught running")


def snapshot_complete(study: optuna.Study) -> dict[int, str]:
    """{trial number: MLflow run id} of the complete trials."""
    return {t.number: t.user_attrs["mlflow_run_id"]
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}


def check_recovered(study: optuna.Study, killed: int, complete_before: dict[int, str],
                    client: MlflowClient, experiment: str) -> None:
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert trials[killed].state == TrialState.FAIL
    # Our own check records why; Optuna's heartbeat fails the trial without a word, and a
    # finished trial can no longer be annotated (its MLflow run says why, below).
    assert trials[killed].user_attrs.get("stop_reason", "worker_died") == "worker_died"
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == trials[killed].params
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
    # Every trial complete before the kill is still there, with its run, finished.
    for number, run_id in complete_before.items():
        assert trials[number].state == TrialState.COMPLETE
        assert client.get_run(run_id).info.status == "FINISHED"
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    # The killed trial learns its run id only when the trial ends (the tracking process
    # creates the run asynchronously), so its run is found by its trial-number tag.
    killed_runs = [r for r in runs if r.info.run_name == f"trial-{killed}"]
    assert len(killed_runs) == 1
    killed_run = killed_runs[0]
    assert killed_run.info.status == "FAILED"
    assert killed_run.data.tags["stop_reason"] == "worker_died"
    # One run per trial: no duplicates from the retry.
    numbers = [r.data.tags.get("optuna.trial_number") for r in runs
               if r.info.run_name.startswith("trial-")]
    assert sorted(numbers) == sorted(str(n) for n in trials)
