"""`python -m trickopt.report` on tiny finished studies: the arms, the companion study's jobs
(dedup, resume after kill -9, MLflow child runs), racing, `report:` in a study file, and the
refusals."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from cli_helpers import run_main, study_cli
from recovery_helpers import end_group

from trickopt.config import RunConfig
from trickopt.data import load_data
from trickopt.effects import jobs as jobs_module
from trickopt.effects.jobs import Job, Outcome, open_queue, train_job, tricks_on
from trickopt.effects.report import BASELINE, BEST, NO_STOPPER, Settings, run_report
from trickopt.report import main as report_main
from trickopt.study.config import load_study_config
from trickopt.study.storage import open_storage

TINY_SETTINGS = ["--set", "data.name=digits", "--set", "model.arch=mlp", "--set",
                 "model.width=16", "--set", "train.max_epochs=5", "--set",
                 "tracking.enabled=false", "--set", "refit=none"]
TINY = ["--study-name", "tiny", *TINY_SETTINGS]
# The tricks the arms switch off, all on, and a stopper that fires within 5 epochs or not.
ALL_ON = ["--set", "search.dropout=0.1", "--set", "search.norm=batch", "--set",
          "search.regularizer=l2", "--set", "search.l2=1.0e-4", "--set", "search.schedule=cosine",
          "--set", "search.stopper=patience", "--set", "search.patience=2"]


def _tiny_study(tmp_path: Path, *extra: str, trials: int = 4):
    done = study_cli(tmp_path, *TINY, "--no-progress", "--n-trials", str(trials), *extra)
    assert done.returncode == 0, done.stderr


def _config(tmp_path: Path, *extra: str):
    overrides = [a for a in (*TINY_SETTINGS, *extra) if a != "--set"]
    overrides.append(f"study.storage='journal:{tmp_path / 'trickopt.journal'}'")
    overrides.append("study.name=tiny")
    return load_study_config(None, overrides)


def test_jobs_switch_off_the_named_tricks_and_nothing_else():
    config = RunConfig()
    params = {"dropout": 0.2, "norm": "batch", "l2": 1e-4, "regularizer": "l2",
              "schedule": "cosine", "stopper": "patience", "patience": 3, "lr": 0.01}
    job = Job("no norm", seed=7, params=params, base=0, off=("norm",), lr_factor=0.5)
    run = job.run_config(config)
    assert run.model.norm == "none" and run.model.dropout == 0.2 and run.train.l2 == 1e-4
    assert run.train.lr == pytest.approx(0.005)  # 0.01 x 0.5
    assert run.train.seed == run.data.split_seed == 7  # one seed: weights, batches, split
    full = Job("best", seed=7, params=params, base=0).run_config(config)
    assert tricks_on(full) == ["dropout", "norm", "regularizer", "schedule", "stopper"]
    none = Job("none", 7, params, 0, off=tuple(tricks_on(full))).run_config(config)
    assert tricks_on(none) == []
    assert (none.train.schedule, none.train.stopper) == ("constant", "none")


def test_one_seed_fixes_the_split_and_the_weights(tmp_path):
    config = _config(tmp_path)
    params = {"lr": 0.01}

    def score(seed):
        job = Job("a", seed, params, 0)
        data_config = job.run_config(config.run).data
        return train_job(config, job, load_data(data_config))

    a, b, c = score(3), score(3), score(4)
    assert (a.test_loss, a.test_score) == (b.test_loss, b.test_score)
    assert a.test_loss != c.test_loss


def test_a_curve_job_scores_what_its_own_stopper_would_have_delivered(tmp_path):
    """Trained to the full budget without a stopper, then its patience replayed: the same
    test score as a live run with that stopper (fit restores the best epoch either way)."""
    config = _config(tmp_path, "train.max_epochs=12")
    params = {"lr": 0.05, "stopper": "patience", "patience": 1}
    live = Job("live", 2, params, 0)
    curve = Job("curve", 2, params, 0, curve=True)
    data = load_data(live.run_config(config.run).data)
    a, b = train_job(config, live, data), train_job(config, curve, data)
    assert len(b.curve) == 12  # the full budget was trained
    assert (b.epochs, b.best_epoch) == (a.epochs, a.best_epoch)
    assert b.test_score == pytest.approx(a.test_score) and b.test_loss == pytest.approx(
        a.test_loss, rel=1e-5)


def test_a_job_is_queued_once_however_often_it_is_asked_for(tmp_path):
    _tiny_study(tmp_path, trials=1)
    config = _config(tmp_path)
    queue = open_queue(config, open_storage(config.study.storage))
    jobs = [Job("a", s, {"lr": 0.01}, 0) for s in (1, 2)]
    assert queue.enqueue(jobs) == 2
    assert queue.enqueue(jobs + [Job("b", 1, {"lr": 0.01}, 0)]) == 0  # "b" is the same run
    assert queue.work() == 2 and queue.work() == 0
    assert sorted(o.seed for o in queue.outcomes(jobs).values()) == [1, 2]


def test_report_end_to_end_untracked(tmp_path):
    _tiny_study(tmp_path, *ALL_ON, trials=3)
    done = run_main(report_main, tmp_path, [*TINY, *ALL_ON, "--seeds", "3", "--no-racing",
                                           "--top-k", "2", "--no-progress"])
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "trainings of up to 5 epochs" in out  # the cost, before it starts
    assert "B. seeded ablation" in out and "A. where the good trials are" in out
    assert "top trials re-run on the same seeds" in out
    assert "Early stopping replayed" in out
    folder = tmp_path / "report-tiny"
    data = json.loads((folder / "report.json").read_text())
    names = [a["arm"] for a in data["arms"]]
    assert names == [BEST, NO_STOPPER, "no dropout", "no norm", "no regularizer",
                     "no schedule", BASELINE]
    for arm in data["arms"]:
        assert arm["seeds"] == [1, 2, 3]
    for arm in data["arms"][1:]:
        assert arm["verdict"].split(",")[0] in ("helps", "hurts", "negligible", "inconclusive")
        assert arm["effect"]["low"] <= arm["effect"]["mean"] <= arm["effect"]["high"]
    assert len(data["top"]) == 2
    # top-2 x 3 seeds (curves) + 5 trained arms x 3 seeds; "no stopper" is replayed
    assert data["trainings"] == 2 * 3 + 5 * 3
    markdown = (folder / "report.md").read_text()
    assert markdown.startswith("# Trick effects: tiny")
    for png in ("forest.png", "paired.png", "replay.png"):
        assert (folder / png).stat().st_size > 1000 and f"]({png})" in markdown
    # A second run trains nothing: every job is a COMPLETE trial of the companion study.
    again = run_main(report_main, tmp_path, [*TINY, *ALL_ON, "--seeds", "3", "--no-racing",
                                            "--top-k", "2", "--no-progress"])
    assert again.returncode == 0, again.stderr
    assert json.loads((folder / "report.json").read_text())["arms"] == data["arms"]


def _fake_train(effects: dict[str, list[float]]):
    """A train_job that returns made-up test scores: per arm, the seed-th entry (cycled)."""

    def train(config, job, data, number=0, run=None):
        arm = "best" if job.arm.startswith("top-") else job.arm
        scores = effects[arm]
        score = scores[(job.seed - 1) % len(scores)]
        curve = [{"epoch": e, "train_loss": 1.0, "val_loss": 1.0 - score, "test_loss": 1 - score,
                  "test_score": score} for e in (1, 2)] if job.curve else None
        return Outcome(job.key, job.arm, job.seed, 1 - score, score, 1.0 - score, 2, 2, 0.1,
                       "classification", curve)
    return train


def test_racing_adds_seeds_only_to_open_arms(tmp_path, monkeypatch):
    _tiny_study(tmp_path, "--set", "search.dropout=0.1", "--set", "search.norm=batch",
                "--set", "search.stopper=none", "--set", "search.schedule=constant",
                "--set", "search.regularizer=none", trials=1)
    config = _config(tmp_path)
    # best: 0.90 +/- a little; "no norm" far below on every seed (clear: stops at 6 seeds);
    # "no dropout" straddles the best (open: raced up to the cap).
    best = [0.90, 0.91, 0.89, 0.90, 0.92, 0.88]
    monkeypatch.setattr(jobs_module, "train_job", _fake_train({
        "best": best, "no norm": [0.50, 0.52, 0.48, 0.51, 0.49, 0.50],
        "no dropout": [0.95, 0.85, 0.96, 0.84, 0.97, 0.83, 0.90],
        BASELINE: [0.40] * 6}))
    storage = open_storage(config.study.storage)
    study = optuna.load_study(study_name="tiny", storage=storage)
    report = run_report(config, study, open_queue(config, storage),
                        Settings(seeds=6, max_seeds=12, step=3, top_k=1), progress=False,
                        out=open(os.devnull, "w"))
    arms = {a.arm: a for a in report.arms}
    assert arms["no norm"].verdict == "helps" and len(arms["no norm"].seeds) == 6
    assert len(arms["no dropout"].seeds) == 12 and len(arms[BEST].seeds) == 12
    assert arms["no dropout"].verdict.startswith(("inconclusive", "negligible"))


def test_report_in_the_study_file_runs_after_the_search_and_the_refit_uses_its_choice(
        tmp_path):
    study_file = tmp_path / "study.yaml"
    study_file.write_text(
        "data: {name: digits}\nmodel: {arch: mlp, width: 16}\ntrain: {max_epochs: 4}\n"
        "search: {lr: {low: 0.01, high: 0.1, log: true}, dropout: 0.1, norm: none, "
        "regularizer: none, schedule: constant, stopper: none}\n"
        "study: {name: filed, n_trials: 3, seed: 0}\ntracking: {enabled: false}\n"
        "refit: train_val\nreport: {seeds: 2, top_k: 2, racing: false}\n")
    done = study_cli(tmp_path, str(study_file), "--no-progress")
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "report-filed" / "report.json").read_text())
    assert f"refit on train+val (trial {data['chosen_trial']}," in done.stdout
    assert f"trick-effect report: trial {data['chosen_trial']} is best" in done.stdout


@pytest.mark.parametrize("args, expected", [
    (["--seeds", "1"], "error: --seeds: must be >= 2 (a paired comparison needs at least two "
                       "seeds); got 1"),
    (["--seeds", "6", "--max-seeds", "4"], "error: --max-seeds: must be >= --seeds (6); got 4"),
    (["--study-name", "nothing"], "does not exist; run the study first"),
])
def test_report_refusals_are_one_line_exit_2_and_create_nothing(tmp_path, args, expected):
    done = run_main(report_main, tmp_path, args)
    assert done.returncode == 2
    assert expected in done.stderr.strip() and len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_report_on_a_missing_study_or_one_without_complete_trials(tmp_path):
    _tiny_study(tmp_path, "--set", "search.lr=1.0e+6", "--set", "search.optimizer=sgd",
                trials=1)
    before = sorted(p.name for p in tmp_path.iterdir())
    missing = run_main(report_main, tmp_path, ["--study-name", "other"])
    assert missing.returncode == 2
    assert "error: study.name: no study 'other' in journal file" in missing.stderr
    failed = run_main(report_main, tmp_path, ["--study-name", "tiny"])
    assert failed.returncode == 2
    assert failed.stderr.strip() == ("error: study.name: the study 'tiny' has no complete trial "
                                     "yet; run more trials first")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_report_killed_mid_way_resumes_without_retraining_what_was_done(tmp_path, request):
    """kill -9 mid-report, tracked: the rerun trains only what is missing, and no MLflow run
    is left RUNNING (the killed one's is closed as FAILED, its retry has its own)."""
    tracked = [a if a != "tracking.enabled=false" else "tracking.enabled=true" for a in TINY]
    done = study_cli(tmp_path, *tracked, *ALL_ON, "--no-progress", "--n-trials", "2")
    assert done.returncode == 0, done.stderr
    args = [*tracked, *ALL_ON, "--seeds", "3", "--no-racing", "--top-k", "1", "--no-progress"]
    process = subprocess.Popen([sys.executable, "-m", "trickopt.report", *args], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    # Whatever happens, nothing of it (a worker it left) goes on into the next tests.
    request.addfinalizer(lambda: end_group(process))
    config = _config(tmp_path, *[a for a in ALL_ON if a != "--set"])
    storage = open_storage(config.study.storage)
    deadline = time.monotonic() + 300  # a slow machine, not a hang; the state is awaited

    def trials(*states):
        try:
            study = optuna.load_study(study_name="tiny.report", storage=storage)
        except KeyError:
            return []
        return study.get_trials(states=states or None)

    complete = optuna.trial.TrialState.COMPLETE
    while len(trials(complete)) < 4 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, process.stderr.read()
    process.send_signal(signal.SIGKILL)  # the command alone, as kill -9 of its pid
    process.wait()
    first = {t.user_attrs["key"]: t.number for t in trials(complete)}
    assert len(first) >= 4
    done = run_main(report_main, tmp_path, args)
    assert done.returncode == 0, done.stderr
    after = trials(complete)
    keys = [t.user_attrs["key"] for t in after]
    assert len(keys) == len(set(keys))  # nothing trained twice
    assert all(first[t.user_attrs["key"]] == t.number for t in after
               if t.user_attrs["key"] in first)  # what was done stayed as it was
    assert len(after) == 3 + 5 * 3  # the best's 3 curves and 5 arms x 3 seeds
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], "tags.phase = 'report'")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert sorted(int(r.data.tags["trickopt.report_trial"]) for r in finished) == sorted(
        t.number for t in after)
    killed = [t.number for t in trials(optuna.trial.TrialState.FAIL)]
    assert all(r.data.tags.get("stop_reason") == "worker_died" for r in runs
               if int(r.data.tags["trickopt.report_trial"]) in killed)


def test_a_tracked_report_puts_each_training_and_the_report_in_mlflow(tmp_path):
    tracked = [a if a != "tracking.enabled=false" else "tracking.enabled=true" for a in TINY]
    done = study_cli(tmp_path, *tracked, *ALL_ON, "--no-progress", "--n-trials", "2")
    assert done.returncode == 0, done.stderr
    done = run_main(report_main, tmp_path, [*tracked, *ALL_ON, "--seeds", "2", "--no-racing",
                                           "--top-k", "1", "--no-progress"])
    assert done.returncode == 0, done.stderr
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    parent = client.search_runs([experiment.experiment_id],
                                "tags.`trickopt.parent` = 'true'")[0]
    children = client.search_runs([experiment.experiment_id], "tags.phase = 'report'")
    # the best's 2 curves and 5 arms x 2 seeds, each a child of the study's parent run
    assert len(children) == 2 + 5 * 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {(r.data.tags["arm"], r.data.tags["seed"]) for r in children} >= {
        ("top-1", "1"), ("top-1", "2"), ("no norm", "1"), ("no tricks", "2")}
    assert all(r.info.status == "FINISHED" for r in children)
    curve = next(r for r in children if r.data.tags["arm"] == "top-1")
    assert len(client.get_metric_history(curve.info.run_id, "test_loss")) >= 5  # per epoch
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.json", "report/forest.png"} <= names
    assert parent.info.status == "FINISHED"


def test_retune_and_path_train_what_they_say(tmp_path):
    few_on = ["--set", "search.dropout=0.1", "--set", "search.norm=batch", "--set",
              "search.stopper=none", "--set", "search.schedule=constant", "--set",
              "search.regularizer=none"]
    _tiny_study(tmp_path, *few_on, trials=1)
    done = run_main(report_main, tmp_path, [*TINY, *few_on, "--seeds", "2", "--no-racing",
                                           "--top-k", "1", "--retune", "lr", "--path",
                                           "--no-progress"])
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "report-tiny" / "report.json").read_text())
    # arms: best, no dropout, no norm, no tricks; each at lr x 1/2, 1, 2 on 2 seeds = 24;
    # the path from no tricks: step 1 tries +dropout and +norm, step 2 the one left (the
    # full configuration again: already trained) = 4 more trainings
    assert [a["arm"] for a in data["arms"]] == [BEST, "no dropout", "no norm", BASELINE]
    assert all(a["lr_factor"] in (0.5, 1.0, 2.0) for a in data["arms"])
    assert data["trainings"] == 4 * 3 * 2 + 2 * 2 + 2
    assert [step["switched_on"] for step in data["path"]] in (["dropout", "norm"],
                                                              ["norm", "dropout"])
    assert "lr retuned per arm" in done.stdout and "ablation path" in done.stdout


def test_report_workers_share_the_jobs(tmp_path):
    _tiny_study(tmp_path, *ALL_ON, trials=1)
    done = run_main(report_main, tmp_path, [*TINY, *ALL_ON, "--seeds", "2", "--no-racing",
                                           "--top-k", "1", "--workers", "2", "--no-progress"])
    assert done.returncode == 0, done.stderr
    config = _config(tmp_path)
    study = optuna.load_study(study_name="tiny.report",
                              storage=open_storage(config.study.storage))
    trials = study.get_trials()
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len(trials) == 2 + 5 * 2  # each job once
    # The coordinator trains too; its one spawned worker takes jobs once it has imported
    # torch (seconds): on jobs this short it may find none left. Either way it has exited.
    assert 1 <= len({t.user_attrs["worker"] for t in trials}) <= 2
    assert multiprocessing.active_children() == []
