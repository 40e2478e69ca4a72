"""SIGTERM (a scheduler, `docker stop`, systemd) is handled as Ctrl-C is: the running trial
ends as FAIL with its runs closed, the summary is printed, exit code 143, and with workers
the coordinator stops them: nothing is left RUNNING and no process outlives the study."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from recovery_helpers import start_study, wait_for, wait_for_trial_mid_run

from trickopt.study.storage import DEFAULT_JOURNAL, open_storage


def _group_members(group: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[2]) == group and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_mid_trial_closes_everything_and_exits_143(tmp_path, workers):
    name = f"term{workers}"

    def load() -> optuna.Study:
        return optuna.load_study(study_name=name,
                                 storage=open_storage(str(tmp_path / DEFAULT_JOURNAL)))

    # More trials than it can finish before the signal lands, however slow the machine.
    process = start_study(tmp_path, "--n-trials", "50", "--study-name", name,
                          "--workers", workers)
    try:
        wait_for_trial_mid_run(load, process)
        process.send_signal(signal.SIGTERM)  # the study process alone, as docker stop does
        out = process.communicate(timeout=120)[0].decode()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 143, out
    assert "(interrupted)" in out  # the summary was printed
    # Gone, not going: a process that has closed its end of the output pipe may still be in
    # /proc for a moment (multiprocessing's resource tracker, which ends as the study ends).
    wait_for("every worker and tracking process to end with the study",
             lambda: _group_members(process.pid) == [], timeout=10)
    trials = load().get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in trials if t.user_attrs.get("stop_reason") == "interrupted"]
    assert interrupted and all(t.state == TrialState.FAIL for t in interrupted)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name).experiment_id
    runs = client.search_runs([experiment])
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    parent = [r for r in runs if r.data.tags.get("trickopt.parent") == "true"]
    assert [r.info.status for r in parent] == ["KILLED"]
