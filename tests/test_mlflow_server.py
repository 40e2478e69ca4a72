"""A real `mlflow server` on loopback, started and stopped here, receives a study's runs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from trickopt.study.cli import main
from trickopt.tracking import PARENT_TAG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    store = tmp_path / "server"
    store.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
         "--artifacts-destination", str(store / "artifacts"), "--workers", "1"],
        cwd=store, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)
    else:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("mlflow server did not answer /health within 90 s")
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def test_study_logs_to_a_tracking_server(mlflow_server, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    n_trials = 2
    assert main(["--n-trials", str(n_trials), "--study-name", "served", "--no-progress",
                 "--tracking-uri", mlflow_server, "--set", "data.name=digits",
                 "--set", "model.arch=mlp",
                 "--set", "train.max_epochs=3"]) == 0
    assert not (work / "mlflow.db").exists()  # everything went to the server
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("served")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get(PARENT_TAG) == "true"]
    trials = [r for r in runs if r.info.run_name.startswith("trial-")]
    assert len(parents) == 1 and len(trials) == n_trials
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in trials)
    assert all(r.info.status in ("FINISHED", "KILLED", "FAILED") for r in trials)
    assert any(r.info.run_name == "refit" and "test_accuracy" in r.data.metrics for r in runs)
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert "study.yaml" in artifacts
