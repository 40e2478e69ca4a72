"""The study end to end, in a temporary directory each: Optuna storage against MLflow runs."""

from __future__ import annotations

import math
import warnings
from collections import Counter

import optuna
import pytest
from mlflow.tracking import MlflowClient

from trickopt.study.cli import main
from trickopt.study.storage import DEFAULT_JOURNAL, open_storage
from trickopt.tracking import PARENT_TAG

N_TRIALS = 8
NAME = "tiny"
# Small but real: digits MLP, every trick searched, a pruner that starts early.
TINY = ["--n-trials", str(N_TRIALS), "--study-name", NAME, "--no-progress",
        "--set", "data.name=digits",
        "--set", "model.arch=mlp", "--set", "model.width=32", "--set", "train.max_epochs=8",
        "--set", "study.pruner_params={n_startup_trials: 2, n_warmup_steps: 1}"]


def _runs(uri: str, name: str = NAME):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(PARENT_TAG) == "true"]
    trials = [r for r in runs if "optuna.trial_number" in r.data.tags
              and "trickopt.refit" not in r.data.tags]
    refits = [r for r in runs if "trickopt.refit" in r.data.tags]
    return client, parents, trials, refits


@pytest.fixture
def study_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def _study(path):
    return optuna.load_study(study_name=NAME, storage=open_storage(str(path / DEFAULT_JOURNAL)))


def test_study_end_to_end_matches_mlflow(study_dir, capsys):
    assert main(TINY) == 0
    # SQLite's write-ahead log is folded back into mlflow.db when the tracking process ends
    # (until this test opens the store itself).
    assert not list(study_dir.glob("mlflow.db-*"))
    out = capsys.readouterr().out
    # The summary says how to open MLflow's UI on the study's runs, in the training view.
    assert "mlflow ui" in out
    assert "http://127.0.0.1:5000/#/experiments/" in out and "workflowType=machine_learning" in out
    study = _study(study_dir)
    assert len(study.trials) == N_TRIALS
    client, parents, trials, refits = _runs(f"sqlite:///{study_dir / 'mlflow.db'}")
    assert len(parents) == 1 and len(trials) == N_TRIALS
    assert {r.data.tags["mlflow.parentRunId"] for r in trials + refits} == {
        parents[0].info.run_id}
    # Run status follows the trial state, trial by trial and in total.
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in trials}
    for trial in study.trials:
        run = by_number[trial.number]
        assert run.info.status == status[trial.state.name]
        assert run.data.tags["trickopt.study"] == NAME  # the link from Optuna to MLflow
        assert run.data.tags["stop_reason"] == trial.user_attrs["stop_reason"]
    assert Counter(status[t.state.name] for t in study.trials) == Counter(
        r.info.status for r in trials)
    assert any(t.state.name == "PRUNED" for t in study.trials), "the pruner never pruned"
    assert any(t.state.name == "COMPLETE" for t in study.trials)
    for trial in study.trials:
        run = by_number[trial.number]
        epochs = trial.user_attrs["epochs_trained"]
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert sorted(m.step for m in history) == list(range(1, epochs + 1))
        if trial.state.name == "PRUNED":
            assert trial.user_attrs["stop_reason"] == "pruned"
            assert run.data.metrics["pruned_epoch"] == epochs
            assert run.data.tags["pruned_epoch"] == str(epochs)
        if trial.state.name == "COMPLETE":
            # The value is the best epoch's metric, read back from the logged curve.
            best = trial.user_attrs["best_epoch"]
            at_best = [m.value for m in history if m.step == best]
            assert trial.value == pytest.approx(at_best[0], rel=1e-12)
            assert trial.value == pytest.approx(min(m.value for m in history), rel=1e-12)
            assert trial.user_attrs["stop_reason"] in ("patience", "gl", "pq", "up",
                                                       "max_epochs")
    # The parent's summary and the refit's test score.
    parent = client.get_run(parents[0].info.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert parent.data.metrics["trials_complete"] == sum(
        t.state.name == "COMPLETE" for t in study.trials)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"study.yaml", "importances.json", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/param_importances.png"} <= plots
    assert len(refits) == 1
    refit = refits[0]
    assert 0.5 < refit.data.metrics["test_accuracy"] <= 1.0
    assert refit.data.params["refit.epochs"] == str(study.best_trial.user_attrs["best_epoch"])


def test_rerun_resumes_with_the_same_parent(study_dir):
    n = 3  # trials per run: resuming is the point here, not the pruner
    assert main(TINY + ["--n-trials", str(n)]) == 0
    _, parents_before, _, _ = _runs(f"sqlite:///{study_dir / 'mlflow.db'}")
    assert main(TINY + ["--n-trials", str(n)]) == 0
    study = _study(study_dir)
    assert len(study.trials) == 2 * n
    assert len({t.number for t in study.trials}) == 2 * n
    _, parents, trials, refits = _runs(f"sqlite:///{study_dir / 'mlflow.db'}")
    assert [p.info.run_id for p in parents] == [p.info.run_id for p in parents_before]
    assert len(trials) == 2 * n
    # The helper study that made the parent run's creation atomic is gone.
    assert [s.study_name for s in optuna.get_all_study_summaries(study._storage)] == [NAME]


def test_no_dynamic_search_space_warning(study_dir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(TINY + ["--set", "tracking.enabled=false", "--set", "refit=none"]) == 0
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "dynamic search space" in m], messages


def test_refit_train_val_test_has_no_test_score(study_dir, capsys):
    argv = TINY + ["--n-trials", "3", "--set", "refit=train_val_test"]
    assert main(argv) == 0
    assert "no test score" in capsys.readouterr().out
    _, _, _, refits = _runs(f"sqlite:///{study_dir / 'mlflow.db'}")
    assert "test_accuracy" not in refits[0].data.metrics
    assert "best_trial_test_accuracy" in refits[0].data.metrics


def test_fixed_parameters_are_applied_and_logged(study_dir):
    argv = TINY + ["--n-trials", "3", "--set", "search.norm=batch",
                   "--set", "search.schedule=step", "--set", "search.step_gamma=0.5",
                   "--set", "refit=none"]
    assert main(argv) == 0
    _, _, trials, _ = _runs(f"sqlite:///{study_dir / 'mlflow.db'}")
    for run in trials:
        assert run.data.params["model.norm"] == "batch"
        assert run.data.params["train.schedule"] == "step"
        assert run.data.params["train.schedule_params.gamma"] == "0.5"
    study = _study(study_dir)
    assert all("norm" not in t.params for t in study.trials)  # fixed, so never sampled


def test_diverging_lr_fails_the_trial_with_its_reason_and_the_study_goes_on(study_dir):
    from trickopt.tricks.early_stopping import StopReason

    # A learning rate of 1e6 with plain SGD: the loss is nan/inf within the first epoch, so no
    # epoch has a finite value and the trial must fail, saying why; the study still ends well.
    argv = TINY + ["--n-trials", "2", "--set", "search.lr=1.0e+6", "--set",
                   "search.optimizer=sgd", "--set", "search.norm=none", "--set", "refit=none"]
    assert main(argv) == 0
    study = _study(study_dir)
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed, [(t.number, t.state.name, t.value) for t in study.trials]
    assert [t.user_attrs.get("stop_reason") for t in failed] == [StopReason.NON_FINITE] * len(
        failed), [t.user_attrs for t in failed]
    assert all(math.isfinite(t.value) for t in study.trials if t.state.name == "COMPLETE")
    _, _, trials, _ = _runs(f"sqlite:///{study_dir / 'mlflow.db'}")
    failed_runs = [r for r in trials if r.info.status == "FAILED"]
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in failed_runs) == sorted(
        t.number for t in failed)
    assert {r.data.tags["stop_reason"] for r in failed_runs} == {StopReason.NON_FINITE.value}


def test_best_trial_model_is_kept_not_retrained_and_scores_as_its_replay(study_dir,
                                                                         monkeypatch):
    """The refit scores the best trial's own weights, kept in memory: no second training,
    and the same test score as replaying the trial from its seed (the reference)."""
    import torch

    from trickopt.data import load_data
    from trickopt.models import build_model
    from trickopt.study import refit, runner
    from trickopt.study.config import load_study_config
    from trickopt.study.objective import decided_params
    from trickopt.train import evaluate, fit

    config = load_study_config(None, ["study.n_trials=4", "study.name=kept", "data.name=digits",
                                      "model.arch=mlp", "model.width=32", "train.max_epochs=6",
                                      "study.pruner=none", "tracking.enabled=false",
                                      "refit=none"])
    fits = []
    monkeypatch.setattr(refit, "fit", lambda *a, **k: fits.append(1) or fit(*a, **k))
    result = runner.run_study(config, progress=False)
    assert fits == []  # the objective trains through its own import; the refit did not train
    best = result.study.best_trial
    _, run_config = decided_params(optuna.trial.FixedTrial(best.params), config)
    data = load_data(config.data)
    torch.manual_seed(run_config.train.seed)
    replayed = build_model(run_config.model, data.input_shape, data.n_classes)
    fit(replayed, data, run_config.train)
    loss, accuracy = evaluate(replayed, data.x_test, data.y_test)
    assert result.best_trial_test["test_accuracy"] == accuracy
    assert math.isclose(result.best_trial_test["test_loss"], loss, rel_tol=1e-6)


def test_run_study_asks_for_the_report_step_when_the_study_has_a_report(tmp_path, monkeypatch):
    """From Python, a `report:` section needs the step from the layer above (the study layer
    does not import trickopt.effects); refused before anything is created."""
    from trickopt.study import load_study_config, run_study

    monkeypatch.chdir(tmp_path)
    config = load_study_config(None, ["study.name=asks", "report={seeds: 2}"])
    with pytest.raises(ValueError, match=r"report_step=trickopt\.effects\.study_step\.run"):
        run_study(config, progress=False)
    assert list(tmp_path.iterdir()) == []
