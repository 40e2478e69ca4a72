"""kill -9 in the middle of a trial, with the embedded default store (a journal file)."""

from __future__ import annotations

import subprocess
import sys

import optuna
from mlflow.tracking import MlflowClient
from recovery_helpers import SLOW, check_recovered, kill_mid_trial, snapshot_complete, start_study

from trickopt.study.storage import DEFAULT_JOURNAL, open_storage


def test_killed_trial_is_failed_and_retried_on_the_next_run(tmp_path):
    name = "crash"

    def load():
        return optuna.load_study(study_name=name,
                                 storage=open_storage(str(tmp_path / DEFAULT_JOURNAL)))

    process = start_study(tmp_path, "--n-trials", "6", "--study-name", name)
    killed = kill_mid_trial(process, load)
    before = load()
    assert before.trials[killed].state.name == "RUNNING"  # a journal has no heartbeat
    complete_before = snapshot_complete(before)
    rerun = subprocess.run([sys.executable, "-m", "trickopt.study", "--n-trials", "1",
                            "--study-name", name, *SLOW], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"retrying trials [{killed}]" in rerun.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    check_recovered(load(), killed, complete_before, client, name)


def test_ctrl_c_fails_the_running_trial_and_prints_the_summary(tmp_path):
    import os
    import signal
    import time

    name = "interrupted"

    def load():
        return optuna.load_study(study_name=name,
                                 storage=open_storage(str(tmp_path / DEFAULT_JOURNAL)))

    process = start_study(tmp_path, "--n-trials", "6", "--study-name", name)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            trials = load().get_trials(deepcopy=False)
        except KeyError:
            trials = []
        if any(t.state.name == "COMPLETE" for t in trials) and any(
                t.state.name == "RUNNING" and len(t.intermediate_values) >= 2 for t in trials):
            break
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 130, out.decode()
    assert "(interrupted)" in out.decode()
    study = load()
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states and states.count("FAIL") == 1
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    assert failed.user_attrs["stop_reason"] == "interrupted"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    for trial in study.trials:
        if trial.state.name == "COMPLETE":
            assert client.get_run(trial.user_attrs["mlflow_run_id"]).info.status == "FINISHED"
