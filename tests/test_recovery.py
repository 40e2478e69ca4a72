"""kill -9 and Ctrl-C in the middle of a trial, with the embedded default store (a journal
file). Each signal is sent once the storage shows a trial mid-run, never after a delay."""

from __future__ import annotations

import os
import signal

import optuna
from cli_helpers import study_cli
from mlflow.tracking import MlflowClient
from recovery_helpers import (
    SLOW,
    check_recovered,
    complete_numbers,
    kill_mid_trial,
    sqlite_store_has_a_run,
    start_study,
    trial_runs,
    wait_for_trial_mid_run,
)

from trickopt.study.storage import DEFAULT_JOURNAL, open_storage


def _loader(tmp_path, name: str):
    def load() -> optuna.Study:
        return optuna.load_study(study_name=name,
                                 storage=open_storage(str(tmp_path / DEFAULT_JOURNAL)))
    return load


def test_killed_trial_is_failed_and_retried_on_the_next_run(tmp_path):
    name = "crash"
    load = _loader(tmp_path, name)
    process = start_study(tmp_path, "--n-trials", "6", "--study-name", name)
    # It stays RUNNING: a journal has no heartbeat.
    killed = kill_mid_trial(process, load,
                            ready=lambda: sqlite_store_has_a_run(tmp_path / "mlflow.db"))
    complete_before = complete_numbers(load())
    # The next run, in this process (tests/cli_helpers.py): what it does is the point, not
    # how a fresh interpreter starts.
    rerun = study_cli(tmp_path, "--n-trials", "1", "--study-name", name, *SLOW, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"retrying trials [{killed}]" in rerun.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    check_recovered(load(), killed, complete_before, client, name)


def test_ctrl_c_fails_the_running_trial_and_prints_the_summary(tmp_path):
    name = "interrupted"
    load = _loader(tmp_path, name)
    process = start_study(tmp_path, "--n-trials", "6", "--study-name", name)
    try:
        # Once the tracking process is set up: it ignores SIGINT from then on, as the study
        # process is the one to close its runs.
        running = wait_for_trial_mid_run(
            load, process, ready=lambda: sqlite_store_has_a_run(tmp_path / "mlflow.db"))
    except AssertionError:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole group
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 130, out.decode()
    assert "(interrupted)" in out.decode()
    study = load()
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states and states.count("FAIL") == 1, states
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    assert failed.number == running.number, (failed.number, running.number)
    assert failed.user_attrs["stop_reason"] == "interrupted"
    runs = trial_runs(MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"), name)
    assert runs[failed.number][0].info.status == "FAILED"
    for trial in study.trials:
        if trial.state.name == "COMPLETE":
            assert [r.info.status for r in runs[trial.number]] == ["FINISHED"]
