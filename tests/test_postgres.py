"""Many workers on PostgreSQL (Optuna's RDB storage), and a worker killed mid-trial.

MLflow tracking goes to a second PostgreSQL database here, as it would behind a tracking
server shared by several machines; and, in the last test, to a real `mlflow server`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import optuna
import pytest
from cli_helpers import study_cli
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from recovery_helpers import (
    SLOW,
    assert_still_running,
    check_recovered,
    complete_numbers,
    kill_mid_trial,
    kill_tracking_process,
    start_study,
    trial_runs,
    wait_for_trial_mid_run,
)

from trickopt.study.storage import open_storage
from trickopt.tracking import PARENT_TAG
from trickopt.urls import with_installed_driver

pytestmark = pytest.mark.postgres

FAST = ["--no-progress", "--set", "data.name=digits",
        "--set", "model.arch=mlp", "--set", "model.width=32",
        "--set", "train.max_epochs=6"]


def _study(cmd_args, cwd, **kwargs):
    return subprocess.run([sys.executable, "-m", "trickopt.study", *cmd_args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, **kwargs)


def test_two_workers_share_one_study(postgres, tmp_path):
    storage, tracking = postgres.new_database(), postgres.new_database()
    n_trials = 6  # 3 per worker, drawn from the one study at once
    result = _study(["--workers", "2", "--n-trials", str(n_trials), "--study-name", "shared",
                     "--storage", storage, "--tracking-uri", tracking, *FAST], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr  # the password is masked
    study = optuna.load_study(study_name="shared", storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == n_trials and len({t.number for t in trials}) == n_trials
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    workers = {t.user_attrs["worker"].split(":")[1] for t in trials}
    assert len(workers) == 2  # two processes really shared the work
    client = MlflowClient(with_installed_driver(tracking))
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id])
    parents = [r for r in runs if r.data.tags.get(PARENT_TAG) == "true"]
    children = [r for r in runs if r.info.run_name.startswith("trial-")]
    assert len(parents) == 1 and len(children) == n_trials
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert "s3cret-pw" not in str(parents[0].data.tags) + str(parents[0].data.params)


def test_parent_run_is_created_once_when_workers_start_together(postgres, tmp_path):
    storage, tracking = postgres.new_database(), postgres.new_database()
    args = ["--n-trials", "1", "--study-name", "race", "--storage", storage,
            "--tracking-uri", tracking, "--set", "refit=none", *FAST]
    processes = [subprocess.Popen([sys.executable, "-m", "trickopt.study", *args], cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for _ in range(3)]
    for process in processes:
        assert process.wait(timeout=600) == 0, process.stdout.read().decode()
    client = MlflowClient(with_installed_driver(tracking))
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    parents = [r for r in runs if r.data.tags.get(PARENT_TAG) == "true"]
    assert len(parents) == 1
    assert sum(r.info.run_name.startswith("trial-") for r in runs) == 3  # one per command


def test_killed_worker_trial_is_failed_and_retried(postgres, tmp_path):
    storage, tracking = postgres.new_database(), postgres.new_database()
    # The killed trial is failed for certain by the check for dead processes on this host,
    # at the end of this run or the start of the next; Optuna's heartbeat may fail it earlier
    # (the checks accept both). Nothing waits on the grace period: it only has to be long
    # enough that a live worker on a busy machine is never taken for dead.
    args = ["--study-name", "crash", "--storage", storage, "--tracking-uri", tracking,
            "--set", "study.heartbeat_interval=1", "--set", "study.grace_period=30", *SLOW]
    # 4 trials between 2 workers: one complete, then a trial of the spawned worker caught
    # mid-run and the worker killed; the command's own process runs the trials left.
    process = subprocess.Popen([sys.executable, "-m", "trickopt.study", "--workers", "2",
                                "--n-trials", "4", *args], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)

    def load():
        return optuna.load_study(study_name="crash", storage=open_storage(storage))

    try:
        killed = _kill_one_worker_mid_trial(process, load)
    except AssertionError:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert process.wait(timeout=600) == 0, process.stdout.read().decode()
    complete_before = complete_numbers(load())
    rerun = study_cli(tmp_path, "--n-trials", "1", *args, timeout=600)  # the next run, in-process
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    client = MlflowClient(with_installed_driver(tracking))
    check_recovered(load(), killed, complete_before, client, "crash")


def _kill_one_worker_mid_trial(process: subprocess.Popen, load) -> int:
    """kill -9 the spawned worker of a trial caught mid-run; the command's own process, which
    is worker 0, goes on."""
    def pid(trial) -> int:
        return int(trial.user_attrs["worker"].split(":")[1])  # host:pid:start time

    trial = wait_for_trial_mid_run(load, process, where=lambda t: pid(t) != process.pid)
    os.kill(pid(trial), signal.SIGKILL)
    assert_still_running(load, trial, "kill -9")
    return trial.number


BAD_STORAGE = {
    "unreachable": "postgresql://trickopt:s3cret-pw@127.0.0.1:1/optuna",
    "wrong password": None,  # filled in from the live server below
}


@pytest.mark.parametrize("case", sorted(BAD_STORAGE))
def test_bad_storage_is_refused_before_anything_is_created(postgres, tmp_path, case):
    url = BAD_STORAGE[case] or postgres.new_database().replace("s3cret-pw", "wrong-pw")
    result = study_cli(tmp_path, "--storage", url, *FAST, timeout=600)  # a refusal: in-process
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: study.storage: cannot open")
    assert "pw@" not in result.stderr and "***" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_report_is_shared_by_a_joining_worker(postgres, tmp_path):
    """`python -m trickopt.report` on one machine and `--join` on another (two processes
    here) share the report's trainings through the companion study in PostgreSQL."""
    storage = postgres.new_database()
    common = ["--study-name", "joined", "--storage", storage, "--set", "tracking.enabled=false",
              "--set", "refit=none", *FAST[1:], "--set", "train.max_epochs=20",
              "--set", "search.stopper=none", "--set", "search.norm=batch",
              "--set", "search.dropout=0.1", "--set", "search.regularizer=none",
              "--set", "search.schedule=constant"]
    result = _study([*common, "--n-trials", "2", "--no-progress"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report_args = [*common, "--seeds", "3", "--no-racing", "--top-k", "1", "--workers", "1",
                   "--no-progress"]
    coordinator = subprocess.Popen([sys.executable, "-m", "trickopt.report", *report_args],
                                   cwd=tmp_path, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
    joiner = subprocess.Popen([sys.executable, "-m", "trickopt.report", *common, "--join"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    out, _ = coordinator.communicate(timeout=600)
    assert coordinator.returncode == 0, out
    joined, _ = joiner.communicate(timeout=60)  # it stops once the report is finished
    assert joiner.returncode == 0, joined
    assert "s3cret-pw" not in out + joined
    study = optuna.load_study(study_name="joined.report", storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    assert all(t.state == TrialState.COMPLETE for t in trials)
    keys = [t.user_attrs["key"] for t in trials]
    # the best's curves; the arms no dropout, no norm and no tricks
    assert len(keys) == len(set(keys)) == 3 + 3 * 3
    workers = {t.user_attrs["worker"].split(":")[1] for t in trials}
    assert workers == {str(coordinator.pid), str(joiner.pid)}


def test_kill_9_of_the_study_and_of_its_tracking_process_on_postgresql_and_a_server(
        postgres, mlflow_server, tmp_path):
    """The scaled-out set-up (Optuna on PostgreSQL, MLflow behind a tracking server): kill -9
    of the whole study mid-trial, then of a second run's tracking process mid-study, then a
    rerun. Nothing is left RUNNING in Optuna or MLflow, and no finished trial is lost."""
    storage, name = postgres.new_database(), "pg-killed"
    args = ["--study-name", name, "--storage", storage, "--tracking-uri", mlflow_server,
            "--set", "study.heartbeat_interval=1", "--set", "study.grace_period=30"]
    client = MlflowClient(mlflow_server)

    def load():
        return optuna.load_study(study_name=name, storage=open_storage(storage))

    def server_has_a_trial_run() -> bool:
        experiment = client.get_experiment_by_name(name)
        return experiment is not None and bool(trial_runs(client, name))

    # 1. The whole study, kill -9, while a trial runs and the server has runs.
    first = start_study(tmp_path, "--n-trials", "50", *args)  # more than it can finish first
    killed = kill_mid_trial(first, load, ready=server_has_a_trial_run)
    complete_before = complete_numbers(load())

    # 2. A second run; its tracking process alone is killed while a trial of its own runs.
    second = start_study(tmp_path, "--n-trials", "3", *args)
    try:
        wait_for_trial_mid_run(load, second, where=lambda t: t.number > killed)
    except AssertionError:
        os.killpg(second.pid, signal.SIGKILL)
        raise
    out = kill_tracking_process(second)
    assert second.returncode == 1, out  # the trials are all in Optuna; MLflow lacks some
    assert "tracking process was killed" in out and "Traceback" not in out, out

    # 3. The rerun completes MLflow from the Optuna storage.
    rerun = study_cli(tmp_path, "--n-trials", "1", *args, *SLOW, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    study = load()
    check_recovered(study, killed, complete_before, client, name)
    runs = trial_runs(client, name)
    for trial in study.get_trials(deepcopy=False):
        assert runs[trial.number][0].info.status == {
            "COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED"}[trial.state.name]
