"""`python -m trickopt.compare`: the `compare:` section's refusals, the choice of the reference
and the statistics on made-up outcomes, and tiny comparisons end to end (equal budgets, paired
re-runs, resume, MLflow)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import optuna
import pytest
from cli_helpers import run_main

from trickopt.compare import main as compare_main
from trickopt.effects.compare import (
    Tuning,
    ValueResult,
    claim_verdict,
    compare_values,
    label,
)
from trickopt.effects.jobs import JOB_ATTR, Job, Outcome
from trickopt.effects.stats import Effect
from trickopt.study.config import load_study_config, scientific_values
from trickopt.study.space import Choice, Range
from trickopt.study.storage import open_storage

TINY = """\
data: {name: digits}
model: {arch: mlp, width: 16, depth: 1}
train: {max_epochs: 3, stopper: none, stopper_params: {}}
search: {lr: {low: 1.0e-3, high: 1.0e-1, log: true}}
study: {name: tiny, seed: 0, pruner: none}
tracking: {enabled: false}
compare: {scientific: {norm: [batch, none]}, nuisance: [lr], trials: 2, seeds: 2}
"""


def _study_file(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


# -- the section -----------------------------------------------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("compare=null", "error: compare: "),  # no section: not a comparison study
    ("compare.scientific={nrm: [batch, layer]}", "error: compare.scientific.nrm: unknown knob"),
    ("compare.scientific={norm: [batch, instance]}",
     "error: compare.scientific.norm: must be one of"),
    ("compare.scientific={norm: [batch]}", "error: compare.scientific: must be at least two "
                                           "values to compare"),
    ("compare.seeds=1", "error: compare.seeds: must be an int >= 2; got 1"),
    ("compare.trials=0", "error: compare.trials: must be an int >= 1; got 0"),
    ("search.lr=0.01", "error: search.lr: must be searched"),
    ("search.dropout={low: 0.0, high: 0.5}",
     "error: search.dropout is searched but is neither scientific nor nuisance: fix it to one "
     "value or list it under compare.nuisance"),
    ("search.norm=batch", "error: search.norm: norm is compare.scientific's knob"),
    ("compare.scientific={momentum: [0.5, 0.9]}",  # adam by default: momentum never acts
     "error: compare.scientific.momentum: only acts where optimizer is one of sgd"),
    ("compare.baseline={norm: layer}", "error: compare.baseline: must be one of the scientific "
                                       "values with every scientific knob set, e.g. {norm: "
                                       "batch}; got {'norm': 'layer'}"),
    ("compare.baseline={dropout: 0.0}", "error: compare.baseline: must be one of the scientific"),
    ("compare.expect=maybe", "error: compare.expect: must be one of ('better', 'worse', "
                             "'same', 'different', 'not_worse'); got 'maybe'"),
    ("compare.claim=[a]", "error: compare.claim: must be a string; got ['a']"),
    ("compare.scientific={stopper: [none, gl]}",  # gl's threshold: set by nothing
     "error: compare.scientific: stopper=gl cannot train: train.stopper_params.alpha: "
     "required, a finite float > 0; set gl_alpha in search"),
])
def test_bad_compare_sections_are_one_line_exit_2_and_create_nothing(tmp_path, override,
                                                                     expected):
    path = _study_file(tmp_path)
    done = run_main(compare_main, tmp_path, [str(path), "--set", override, "--no-progress"])
    assert done.returncode == 2
    assert done.stderr.startswith(expected) and len(done.stderr.strip().splitlines()) == 1, \
        done.stderr
    assert list(tmp_path.iterdir()) == [path]


def test_a_comparison_file_searches_its_nuisance_knobs_and_fixes_the_rest(tmp_path):
    config = load_study_config(_study_file(tmp_path), ["compare.nuisance=[lr, optimizer]"])
    # lr from the file, optimizer from the all-tricks range; norm's values for a plain study
    assert config.search == {"lr": Range(1e-3, 1e-1, log=True),
                             "optimizer": Choice(("sgd", "adam", "adamw")),
                             "norm": Choice(("batch", "none"))}
    assert scientific_values({"norm": ["batch", "layer"], "batch_size": [8, 32]}) == [
        {"norm": "batch", "batch_size": 8}, {"norm": "batch", "batch_size": 32},
        {"norm": "layer", "batch_size": 8}, {"norm": "layer", "batch_size": 32}]
    assert label({"norm": "batch", "batch_size": 32}) == "norm=batch,batch_size=32"


def test_a_report_job_keeps_its_key():
    """The report's resume finds its finished jobs by key: a job without `source` keeps it."""
    assert Job("no norm", 2, {"lr": 0.1}, 3, ("norm",), 0.5).key == \
        "trial3|off=norm|lr*0.5|seed2|live"
    assert Job("a", 2, {}, 3, source="s.compare.norm=batch").key == \
        "s.compare.norm=batch|trial3|off=|lr*1|seed2|live"


# -- the statistics, on made-up outcomes -----------------------------------------------------
def _tuning(name: str, best: int | None = 0) -> Tuning:
    return Tuning(name, {"norm": name}, f"s.compare.{name}", 2, 2, 0, best, 0.5, {}, {})


def _outcomes(name: str, val: list[float], test: list[float]) -> dict[int, Outcome]:
    return {seed: Outcome(f"{name}{seed}", name, seed, 0.1, t, v, 3, 3, 0.1)
            for seed, (v, t) in enumerate(zip(val, test), start=1)}


def test_the_reference_is_chosen_on_validation_and_the_others_compared_on_test():
    # B has the best mean val_loss (0.20) though A scores higher on test: B is the reference.
    outcomes = {"A": _outcomes("A", [0.30] * 4, [0.99, 0.99, 0.99, 0.99]),
                "B": _outcomes("B", [0.19, 0.21, 0.20, 0.20], [0.90, 0.92, 0.94, 0.96]),
                "C": _outcomes("C", [0.25] * 4, [0.85, 0.86, 0.88, 0.89])}
    tunings = [_tuning("A"), _tuning("B"), _tuning("C"), _tuning("D", best=None)]
    values, reference, delta = compare_values(tunings, outcomes, maximize=False)
    assert reference == "B"
    assert delta == pytest.approx(0.5 * math.sqrt(0.002 / 3))  # half B's SD over seeds
    by = {v.label: v for v in values}
    assert by["B"].verdict == "reference" and by["B"].effect is None
    # B - A: -0.09, -0.07, -0.05, -0.03; A better on every seed: "hurts" (the value is better)
    a = by["A"].effect
    assert a.mean == pytest.approx(-0.06) and a.win_rate == 0.0 and a.high < 0
    assert by["A"].verdict == "hurts"
    # B - C: 0.05, 0.06, 0.06, 0.07: B better on every seed
    c = by["C"].effect
    assert c.mean == pytest.approx(0.06) and c.win_rate == 1.0 and c.low > 0
    assert by["C"].verdict == "helps"
    # 4 seeds all one way: Wilcoxon's exact two-sided p is 2 / 2^4; Holm doubles the smaller
    assert a.p_value == pytest.approx(0.125) and c.p_value == pytest.approx(0.125)
    assert by["A"].p_holm == pytest.approx(0.25) and by["C"].p_holm == pytest.approx(0.25)
    assert by["D"].verdict == "not compared: no tuning trial completed"
    assert by["D"].seeds == [] and by["D"].effect is None
    # A maximized metric picks the largest mean instead
    assert compare_values(tunings, outcomes, maximize=True)[1] == "A"


def test_a_baseline_is_the_reference_and_every_value_is_read_against_it():
    # The same outcomes, but the claim names C (the worst) as its baseline: C is the
    # reference whatever the validation says, and differences are value minus baseline.
    names = {n: label({"norm": n}) for n in "ABC"}
    outcomes = {names["A"]: _outcomes(names["A"], [0.30] * 4, [0.99, 0.99, 0.99, 0.99]),
                names["B"]: _outcomes(names["B"], [0.19, 0.21, 0.20, 0.20],
                                      [0.90, 0.92, 0.94, 0.96]),
                names["C"]: _outcomes(names["C"], [0.25] * 4, [0.85, 0.86, 0.88, 0.89])}
    tunings = [_tuning(names[n]) for n in "ABC"]
    values, reference, delta = compare_values(tunings, outcomes, maximize=False,
                                              baseline={"norm": "C"})
    assert reference == names["C"]
    c_tests = [0.85, 0.86, 0.88, 0.89]
    assert delta == pytest.approx(0.5 * statistics.stdev(c_tests))  # half the baseline's SD
    by = {v.label: v for v in values}
    assert by[names["C"]].verdict == "reference"
    # A - C: 0.14, 0.13, 0.11, 0.10; B - C: 0.05, 0.06, 0.06, 0.07: both beat the baseline
    assert by[names["A"]].effect.mean == pytest.approx(0.12)
    assert by[names["B"]].effect.mean == pytest.approx(0.06)
    assert by[names["A"]].verdict == by[names["B"]].verdict == "helps"
    assert claim_verdict(values, "better", delta).startswith("supported: norm=A, norm=B helps")
    assert claim_verdict(values, "worse", delta).startswith("contradicted: norm=A, norm=B helps")
    # A baseline without a finished re-run: nothing is compared
    values, reference, _ = compare_values(tunings, {k: v for k, v in outcomes.items()
                                                    if k != names["C"]},
                                          maximize=False, baseline={"norm": "C"})
    assert reference is None
    assert {v.verdict for v in values} == {"not compared: the baseline has no finished re-run"}


def test_a_comparison_can_compare_the_weights_sparsity_instead_of_the_test_score():
    # The test scores say nothing here (equal); the fraction of zero weights differs: L1
    # (0.30, 0.32, 0.31, 0.35) against none (0.0 on every seed): +0.32 on average.
    names = {n: label({"regularizer": n}) for n in ("none", "l1")}
    outcomes = {}
    for name, zeros in ((names["none"], [0.0] * 4), (names["l1"], [0.30, 0.32, 0.31, 0.35])):
        outcomes[name] = {seed: Outcome(f"{name}{seed}", name, seed, 0.1, 0.9, 0.2, 3, 3, 0.1,
                                        zeros=z, small_weights=z + 0.1)
                          for seed, z in enumerate(zeros, start=1)}
    tunings = [_tuning(names["none"]), _tuning(names["l1"])]
    values, _, delta = compare_values(tunings, outcomes, maximize=False,
                                      baseline={"regularizer": "none"}, measure="zeros")
    l1 = {v.label: v for v in values}[names["l1"]]
    assert l1.effect.mean == pytest.approx(0.32) and l1.effect.win_rate == 1.0
    assert delta == 0.0 and l1.verdict == "helps"  # sparser on every seed, CI above 0
    assert l1.zeros == [0.30, 0.32, 0.31, 0.35]
    assert claim_verdict(values, "better", delta).startswith("supported: regularizer=l1")
    # the same outcomes on the test score: no difference at all
    values, _, _ = compare_values(tunings, outcomes, maximize=False,
                                  baseline={"regularizer": "none"})
    assert {v.label: v for v in values}[names["l1"]].effect.mean == 0.0


def test_a_trained_job_records_the_sparsity_of_its_weights(tmp_path):
    """Proximal L1 (a soft threshold after each step) leaves exact zeros among the weights;
    no regularizer leaves none (a float weight of a trained model is never exactly 0)."""
    from trickopt.data import load_data
    from trickopt.effects.jobs import train_job

    config = load_study_config(_study_file(tmp_path), [
        "train.l1=0.01", "train.l1_mode=proximal", "train.max_epochs=4",
        "compare.scientific={regularizer: [none, l1]}"])
    data = load_data(config.data)
    got = {regularizer: train_job(config, Job(regularizer, 1, {"regularizer": regularizer,
                                                               "lr": 0.01}, 0), data)
           for regularizer in ("none", "l1")}
    assert got["none"].zeros == 0.0
    assert 0.0 < got["l1"].zeros <= got["l1"].small_weights <= 1.0


def _judged(*verdicts: str, sd: float = 0.02, mean: float = 0.01) -> list[ValueResult]:
    """Values whose comparison with the baseline gave `verdicts` (the rest made up)."""
    effect = Effect(6, mean, mean - 0.02, mean + 0.02, 0.5, 0.5, None, sd)
    return [ValueResult(f"v{i}", _tuning(f"v{i}"), [1, 2], [], [], effect=effect, verdict=v)
            for i, v in enumerate(verdicts)]


@pytest.mark.parametrize("verdicts, expect, expected", [
    (["helps", "negligible"], "better", "supported: v0 helps against the baseline"),
    (["helps", "inconclusive, about 9 seeds needed"], "better", "supported"),
    (["hurts", "negligible"], "better", "contradicted: v0 hurts"),
    (["helps", "hurts"], "better", "mixed: some values helps, some hurts"),
    (["hurts"], "worse", "supported: v0 hurts against the baseline"),
    (["negligible", "negligible"], "better", "no detectable effect at this scale"),
    (["negligible", "negligible"], "same", "supported: every value is within"),
    (["negligible", "hurts"], "same", "contradicted: v1 hurts"),
    (["negligible", "negligible"], "different", "contradicted: every value is within"),
    (["negligible", "helps"], "different", "supported: v1 helps"),
    (["negligible", "helps"], "not_worse", "supported: no value does worse than the baseline "
                                           "(v1 helps)"),
    (["negligible", "hurts"], "not_worse", "contradicted: v1 hurts"),
    (["negligible", "inconclusive, about 9 seeds needed"], "not_worse", "no detectable"),
])
def test_the_claim_verdict_rule_on_constructed_verdicts(verdicts, expect, expected):
    assert claim_verdict(_judged(*verdicts), expect, 0.005).startswith(expected)


def test_an_open_claim_says_how_many_seeds_would_settle_it():
    # Differences with SD 0.02 around a mean of 0.01: a 95% CI of half-width 0.01 takes
    # (1.96 * 0.02 / 0.01)^2 = 15.4, so 16 seeds (the verdict rule's own count).
    values = _judged("inconclusive, about 16 seeds needed")
    assert claim_verdict(values, "better", 0.005) == ("no detectable effect at this scale; "
                                                      "about 16 seeds would resolve it")
    assert claim_verdict([], "better", 0.005).startswith("not tested")
    # A clear interval whose seeds disagree: more seeds are not what it lacks
    split = _judged("inconclusive: CI above 0 but the value wins on 65% of seeds")
    assert claim_verdict(split, "worse", 0.005) == (
        "no detectable effect at this scale; v0: CI above 0 but the value wins on 65% of seeds")


# -- end to end ------------------------------------------------------------------------------
def _rule(effect: dict, delta: float) -> str:
    """The verdict rule as the README states it, written out again."""
    if effect["low"] > 0 and effect["win_rate"] >= 0.75:
        return "helps"
    if effect["high"] < 0 and effect["win_rate"] <= 0.25:
        return "hurts"
    if -delta <= effect["low"] and effect["high"] <= delta:
        return "negligible"
    return "inconclusive"


def _trials(tmp_path: Path, name: str, states=None) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(f"journal:{tmp_path / 'trickopt.journal'}")
    return optuna.load_study(study_name=name, storage=storage).get_trials(states=states)


def test_a_tiny_comparison_end_to_end_and_its_rerun_trains_nothing(tmp_path):
    path = _study_file(tmp_path)
    done = run_main(compare_main, tmp_path, [str(path), "--no-progress"])
    assert done.returncode == 0, done.stderr
    assert "4 tuning trials and 4 re-runs of up to 3 epochs" in done.stdout  # told first
    assert "this run: 4 tuning trials and 4 re-runs" in done.stdout
    folder = tmp_path / "compare-tiny"
    data = json.loads((folder / "report.json").read_text())
    finished = (optuna.trial.TrialState.COMPLETE,)
    for norm in ("batch", "none"):  # the same budget, the value fixed in every trial
        tuning = _trials(tmp_path, f"tiny.compare.norm={norm}")
        assert len(tuning) == 2 and all(t.state in finished for t in tuning)
        assert {t.user_attrs["params"]["norm"] for t in tuning} == {norm}
    reruns = _trials(tmp_path, "tiny.compare", finished)
    assert sorted((t.user_attrs["arm"], t.user_attrs["seed"]) for t in reruns) == [
        ("norm=batch", 1), ("norm=batch", 2), ("norm=none", 1), ("norm=none", 2)]
    values = {v["label"]: v for v in data["values"]}
    for name, v in values.items():  # each re-run is its value's best tuning trial
        best = min(_trials(tmp_path, f"tiny.compare.{name}"), key=lambda t: t.value)
        assert {t.user_attrs[JOB_ATTR]["base"] for t in reruns
                if t.user_attrs["arm"] == name} == {best.number}
        assert v["seeds"] == [1, 2] and len(v["test_scores"]) == 2
    assert data["reference"] == min(values, key=lambda n: statistics.mean(
        values[n]["val_metrics"]))  # val_loss: the lowest mean
    (other,) = [v for name, v in values.items() if name != data["reference"]]
    effect = other["effect"]
    ref = values[data["reference"]]["test_scores"]
    assert effect["mean"] == pytest.approx(statistics.mean(
        r - o for r, o in zip(ref, other["test_scores"])))
    assert effect["low"] <= effect["mean"] <= effect["high"]
    assert other["verdict"].split(",")[0] == _rule(effect, data["delta"])
    markdown = (folder / "report.md").read_text()
    assert "](isolation.png)" in markdown and (folder / "isolation.png").stat().st_size > 1000
    # The same command again trains nothing: every trial and re-run is found finished.
    again = run_main(compare_main, tmp_path, [str(path), "--no-progress"])
    assert again.returncode == 0, again.stderr
    assert "this run: 0 tuning trials and 0 re-runs" in again.stdout
    assert len(_trials(tmp_path, "tiny.compare")) == 4
    after = json.loads((folder / "report.json").read_text())["values"]
    assert [(v["test_scores"], v["effect"], v["verdict"]) for v in after] == [
        (v["test_scores"], v["effect"], v["verdict"]) for v in data["values"]]
    # A larger budget runs only the missing trials, the same number for every value.
    more = run_main(compare_main, tmp_path, [str(path), "--set", "compare.trials=3",
                                            "--no-progress"])
    assert more.returncode == 0, more.stderr
    assert "this run: 2 tuning trials" in more.stdout
    for norm in ("batch", "none"):
        assert len(_trials(tmp_path, f"tiny.compare.norm={norm}")) == 3


def test_a_tracked_comparison_puts_every_training_under_the_study_parent(tmp_path):
    path = _study_file(tmp_path, TINY.replace("tracking: {enabled: false}",
                                              "tracking: {enabled: true}"))
    done = run_main(compare_main, tmp_path, [str(path), "--set", "compare.trials=1",
                                            "--no-progress"])
    assert done.returncode == 0, done.stderr
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    # where to look, as a study's summary says it: the model-training view of its runs
    assert (f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs?"
            "workflowType=machine_learning") in done.stdout
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`trickopt.parent` = 'true'")
    children = [r for r in client.search_runs([experiment.experiment_id])
                if r.info.run_id != parent.info.run_id]
    assert len(children) == 2 * 1 + 2 * 2  # per value: 1 tuning trial and 2 re-runs
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    tags = sorted((r.data.tags["phase"], r.data.tags["scientific"], r.data.tags["seed"])
                  for r in children)
    assert tags == [("compare", "norm=batch", "1"), ("compare", "norm=batch", "2"),
                    ("compare", "norm=none", "1"), ("compare", "norm=none", "2"),
                    ("tune", "norm=batch", "0"), ("tune", "norm=none", "0")]
    assert all(r.info.status == "FINISHED" for r in children)
    assert all("optuna.trial_number" not in r.data.tags for r in children)  # not the study's
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "compare")}
    assert {"compare/report.md", "compare/report.json", "compare/isolation.png"} <= names
    assert parent.info.status == "FINISHED"


def test_a_comparison_and_a_study_of_one_file_keep_apart_in_mlflow(tmp_path):
    """The same file run as a study (`python -m trickopt.study`) and as a comparison: each
    has a parent run of its own, and a resumed comparison finds its own, rebuilding nothing
    (it took the study's parent and "rebuilt" its earlier runs there as dead workers')."""
    from trickopt.study.cli import main as study_main

    path = _study_file(tmp_path, TINY.replace("tracking: {enabled: false}",
                                              "tracking: {enabled: true}"))
    tiny = ["--set", "compare.trials=1", "--set", "train.max_epochs=1", "--no-progress"]
    for main, args in ((compare_main, tiny), (study_main, ["--n-trials", "1", *tiny]),
                       (compare_main, [*tiny, "--set", "compare.seeds=3"])):
        done = run_main(main, tmp_path, [str(path), *args])
        assert done.returncode == 0, done.stderr
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny").experiment_id
    parents = client.search_runs([experiment], "tags.`trickopt.parent` = 'true'")
    assert len(parents) == 2
    children = {p.info.run_id: client.search_runs(
        [experiment], f"tags.`mlflow.parentRunId` = '{p.info.run_id}'") for p in parents}
    phases = sorted(sorted({r.data.tags.get("phase", r.info.run_name.split("-")[0])
                            for r in runs}) for runs in children.values())
    assert phases == [["compare", "tune"], ["refit", "trial"]]
    comparison = next(runs for runs in children.values()
                      if any(r.data.tags.get("phase") == "compare" for r in runs))
    assert len(comparison) == 2 * 1 + 2 * 3  # per value: 1 tuning trial, 3 seeds' re-runs
    assert not any("trickopt.rebuilt" in r.data.tags for runs in children.values()
                   for r in runs)
