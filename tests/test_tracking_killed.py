"""kill -9 of the tracking process mid-study, then a rerun: MLflow catches up with Optuna.

The study goes on without MLflow (every trial is in the Optuna storage), says in one line
that its tracking process was killed and exits with 1; the rerun closes what was left
RUNNING and rebuilds the runs of the trials that finished while nobody wrote MLflow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from recovery_helpers import (
    kill_tracking_process,
    sqlite_store_has_a_run,
    tracking_process,
    trial_runs,
    wait_for,
)

from trickopt.study.storage import DEFAULT_JOURNAL, open_storage

NAME = "tracker-killed"
ARGS = ["--study-name", NAME, "--no-progress", "--set", "model.arch=mlp",
        "--set", "model.width=128", "--set", "data.name=synthetic",
        "--set", "data.n_samples=3000", "--set", "train.max_epochs=12",
        "--set", "study.pruner=none", "--set", "search.stopper=none",
        "--set", "search.batch_size=32", "--set", "refit=none"]


def test_tracking_process_killed_mid_study_then_a_rerun_leaves_nothing_running(tmp_path):
    def load():
        return optuna.load_study(study_name=NAME,
                                 storage=open_storage(str(tmp_path / DEFAULT_JOURNAL)))

    def one_complete():
        try:
            return any(t.state == TrialState.COMPLETE for t in load().get_trials(deepcopy=False))
        except (KeyError, ValueError):
            return False

    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    study = subprocess.Popen([sys.executable, "-m", "trickopt.study", "--n-trials", "3",
                              *ARGS], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=environment, start_new_session=True)
    try:
        wait_for("a complete trial", one_complete, process=study)
        # A trial can finish before the tracking process has made the fresh store; killed
        # while it makes it, it leaves none (the next test). This one is about a store that
        # has runs to complete.
        wait_for("the MLflow store set up", lambda: sqlite_store_has_a_run(
            tmp_path / "mlflow.db"), process=study)
    except AssertionError:
        os.killpg(study.pid, signal.SIGKILL)
        raise
    out = kill_tracking_process(study)
    assert study.returncode == 1, out  # the trials are all in Optuna; MLflow lacks some
    killed_lines = [line for line in out.splitlines() if "tracking process was killed" in line]
    assert len(killed_lines) >= 1, out
    assert "Traceback" not in out, out
    assert len(load().trials) == 3

    rerun = subprocess.run([sys.executable, "-m", "trickopt.study", "--n-trials", "1", *ARGS],
                           cwd=tmp_path, capture_output=True, text=True, env=environment,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    trials = {t.number: t for t in load().get_trials(deepcopy=False)}
    assert len(trials) == 4
    assert not [n for n, t in trials.items() if t.state == TrialState.RUNNING]
    assert all(t.state == TrialState.COMPLETE for t in trials.values())
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = trial_runs(client, NAME)
    # One finished run per trial, none lost, none doubled, the ones nobody wrote rebuilt.
    assert {n: len(r) for n, r in runs.items()} == dict.fromkeys(trials, 1)
    assert {r[0].info.status for r in runs.values()} == {"FINISHED"}
    experiment = client.get_experiment_by_name(NAME).experiment_id
    assert not [r.info.run_name for r in client.search_runs([experiment])
                if r.info.status == "RUNNING"]


def test_tracking_process_killed_while_creating_the_store_leaves_no_broken_store(tmp_path):
    """A new mlflow.db is made under another name and linked into place when whole: a
    tracking process killed during MLflow's migrations (a second or two) leaves no store
    that every later run fails to open; the next run makes it and tracks."""
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    tiny = ["--study-name", "fresh", "--no-progress", "--set", "data.name=digits",
            "--set", "model.arch=mlp", "--set", "model.width=8", "--set", "refit=none",
            "--set", "train.max_epochs=2"]
    study = subprocess.Popen([sys.executable, "-m", "trickopt.study", "--n-trials", "2",
                              *tiny], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=environment, start_new_session=True)
    try:
        tracker = wait_for("the tracking process", lambda: tracking_process(study.pid),
                           process=study, poll_seconds=0.01)
        wait_for("the store being made", lambda: list(tmp_path.glob(".mlflow.db.creating-*")),
                 process=study, poll_seconds=0.01)
        os.kill(tracker, signal.SIGKILL)
        out = study.communicate(timeout=300)[0].decode()
    finally:
        if study.poll() is None:
            os.killpg(study.pid, signal.SIGKILL)
    assert study.returncode == 1, out  # the trials are in Optuna; MLflow has none of them
    assert not (tmp_path / "mlflow.db").exists()  # no half-made store under the real name

    rerun = subprocess.run([sys.executable, "-m", "trickopt.study", "--n-trials", "1", *tiny],
                           cwd=tmp_path, capture_output=True, text=True, env=environment,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert not list(tmp_path.glob(".mlflow.db.creating-*"))  # the killed one's, removed
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = trial_runs(client, "fresh")
    assert sorted(runs) == [0, 1, 2]  # the first run's two trials rebuilt from Optuna
    assert {r[0].info.status for r in runs.values()} == {"FINISHED"}
