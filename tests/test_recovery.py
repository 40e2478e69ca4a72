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
