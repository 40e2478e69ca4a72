"""A real `mlflow server` on loopback (the `mlflow_server` fixture, conftest.py) receives a
study's runs."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from trickopt.study.cli import main
from trickopt.tracking import PARENT_TAG


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
