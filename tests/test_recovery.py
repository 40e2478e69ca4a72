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
    end_group,
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
    # More trials than it can finish before the kill, however slow the machine.
    process = start_study(tmp_path, "--n-trials", "50", "--study-name", name)
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
    # More trials than it can finish before the signal lands, however slow the machine: the
    # trial seen mid-run may be over by then, but another is running.
    process = start_study(tmp_path, "--n-trials", "50", "--study-name", name)
    try:
        # Once the tracking process is set up: it ignores SIGINT from then on, as the study
        # process is the one to close its runs.
        seen = wait_for_trial_mid_run(
            load, process, ready=lambda: sqlite_store_has_a_run(tmp_path / "mlflow.db"))
        os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole group
        out, _ = process.communicate(timeout=120)
    finally:
        end_group(process)  # whatever failed: nothing left running into the next tests
    assert process.returncode == 130, out.decode()
    assert "(interrupted)" in out.decode()
    study = load()
    states = [t.state.name for t in study.trials]
    # The running trial failed, it was the last, and every trial before it is complete.
    assert states[:-1] == ["COMPLETE"] * (len(states) - 1) and states[-1] == "FAIL", states
    failed = study.trials[-1]
    assert failed.number >= seen.number and len(states) < 50, (failed.number, seen.number)
    assert failed.user_attrs["stop_reason"] == "interrupted"
    runs = trial_runs(MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"), name)
    assert runs[failed.number][0].info.status == "FAILED"
    for trial in study.trials:
        if trial.state.name == "COMPLETE":
            assert [r.info.status for r in runs[trial.number]] == ["FINISHED"]


def test_ctrl_c_after_the_trials_is_one_line_and_exit_130(tmp_path, monkeypatch):
    """Ctrl-C while the study finishes (its refit, report, or the wait for MLflow's last
    writes) ends it as one during the trials does: a line, not a traceback; exit 130."""
    from trickopt.study import cli

    def finishing(*args, **kwargs):
        raise KeyboardInterrupt  # where run_study was when Ctrl-C landed

    monkeypatch.setattr(cli, "run_study", finishing)
    done = study_cli(tmp_path, "--n-trials", "1", *SLOW)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().startswith("interrupted while the study was finishing")
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
