"""`python -m trickopt.report` on a tiny finished study, and its refusals."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_main, study_cli

from trickopt.config import RunConfig
from trickopt.effects.ablation import BASELINE, BEST, arms, train_arm
from trickopt.report import main as report_main

TINY = ["--study-name", "tiny", "--no-progress", "--set", "data.name=digits",
        "--set", "model.arch=mlp", "--set", "model.width=16", "--set", "train.max_epochs=6",
        "--set", "tracking.enabled=false", "--set", "refit=none"]


def test_arms_switch_off_one_trick_each_and_all_of_them_in_the_baseline():
    best = RunConfig()
    best.model.dropout, best.model.norm = 0.2, "batch"
    best.train.l2, best.train.schedule = 1e-4, "cosine"
    best.train.stopper, best.train.stopper_params = "patience", {"patience": 3}
    result = arms(best)
    assert list(result) == [BEST, "no dropout", "no norm", "no regularizer", "no schedule",
                            "no stopper", BASELINE]
    assert result["no dropout"].model.dropout == 0 and result["no dropout"].model.norm == "batch"
    assert result["no norm"].model.norm == "none" and result["no norm"].model.dropout == 0.2
    assert result["no regularizer"].train.l2 == 0
    assert result["no schedule"].train.schedule == "constant"
    assert result["no stopper"].train.stopper == "none"
    base = result[BASELINE]
    assert (base.model.dropout, base.model.norm, base.train.l2, base.train.schedule,
            base.train.stopper) == (0, "none", 0, "constant", "none")
    assert best.model.dropout == 0.2  # the best itself is untouched


def test_a_best_with_no_trick_on_has_no_arm_to_compare():
    best = RunConfig()
    best.train.stopper, best.train.stopper_params = "none", {}
    assert list(arms(best)) == [BEST]


def test_one_seed_fixes_the_split_and_the_weights_in_every_arm():
    config = RunConfig()
    config.train.max_epochs = 2
    a = train_arm(config, "a", seed=3)
    b = train_arm(config, "b", seed=3)
    c = train_arm(config, "c", seed=4)
    assert (a.test_loss, a.test_score) == (b.test_loss, b.test_score)  # same seed, same run
    assert a.test_loss != c.test_loss


def test_report_end_to_end_on_a_tiny_study(tmp_path):
    done = study_cli(tmp_path, *TINY, "--n-trials", "6")
    assert done.returncode == 0, done.stderr
    report = run_main(report_main, tmp_path, [*TINY[:2], "--seeds", "3", "--set",
                                             "data.name=digits", "--set", "model.arch=mlp",
                                             "--set", "model.width=16",
                                             "--set", "train.max_epochs=6"])
    assert report.returncode == 0, report.stderr
    out = report.stdout
    assert "trainings, about" in out  # the cost, before it starts
    assert "B. seeded ablation" in out and "A. where the good trials are" in out
    data = json.loads((tmp_path / "report-tiny.json").read_text())
    assert data["seeds"] == [1, 2, 3]
    assert data["arms"][0]["arm"] == "best" and len(data["arms"][0]["scores"]) == 3
    for arm in data["arms"][1:]:
        assert arm["verdict"].split(",")[0] in ("helps", "hurts", "negligible", "inconclusive")
        effect = arm["effect"]
        assert effect["low"] <= effect["mean"] <= effect["high"]
    assert (tmp_path / "report-tiny.md").read_text().startswith("# Trick effects: tiny")


@pytest.mark.parametrize("args, expected", [
    (["--seeds", "1"], "error: --seeds: must be >= 2 (a paired comparison needs at least two "
                       "seeds); got 1"),
    (["--study-name", "nothing"], "does not exist; run the study first"),
])
def test_report_refusals_are_one_line_exit_2_and_create_nothing(tmp_path, args, expected):
    done = run_main(report_main, tmp_path, args)
    assert done.returncode == 2
    assert expected in done.stderr.strip() and len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_report_on_a_missing_study_or_one_without_complete_trials(tmp_path):
    done = study_cli(tmp_path, *TINY, "--n-trials", "1", "--set", "search.lr=1.0e+6",
                     "--set", "search.optimizer=sgd")
    assert done.returncode == 0, done.stderr
    before = sorted(p.name for p in tmp_path.iterdir())
    missing = run_main(report_main, tmp_path, ["--study-name", "other"])
    assert missing.returncode == 2
    assert "error: study.name: no study 'other' in journal file" in missing.stderr
    failed = run_main(report_main, tmp_path, ["--study-name", "tiny"])
    assert failed.returncode == 2
    assert failed.stderr.strip() == ("error: study.name: the study 'tiny' has no complete trial "
                                     "yet; run more trials first")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
