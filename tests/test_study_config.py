"""Study files: presets, the default study, and every invalid case refused before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cli_helpers import study_cli

from trickopt.config import ConfigError
from trickopt.study.config import (
    PRUNER_PARAMS,
    SAMPLER_PARAMS,
    StudyConfig,
    create_pruner,
    create_sampler,
    load_study_config,
    parse_study_config,
)
from trickopt.study.space import ALL_TRICKS, Choice, Range

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_file_is_the_default_study():
    from_file = load_study_config(ROOT / "studies" / "quickstart.yaml")
    default = StudyConfig()
    for section in ("data", "model", "train", "search", "study", "tracking", "refit"):
        assert getattr(from_file, section) == getattr(default, section), section


def test_all_tricks_preset_is_the_default_search_space():
    preset = yaml.safe_load((ROOT / "configs" / "search" / "all_tricks.yaml").read_text())
    assert preset["search"] == ALL_TRICKS


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_study_file_validates_and_names_its_command(path):
    load_study_config(path)
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# ") and "python -m trickopt.study" in path.read_text()


def test_default_space_is_parsed_into_distributions():
    space = StudyConfig().search
    assert space["dropout"] == Range(0.0, 0.5)
    assert space["lr"] == Range(1e-4, 0.3, log=True)
    assert space["norm"] == Choice(("none", "batch", "layer", "weight", "batch_renorm"))
    assert space["patience"] == Range(2, 20)


def test_fixed_value_and_extends_merge(tmp_path):
    (tmp_path / "base.yaml").write_text("search:\n  dropout: {low: 0.0, high: 0.3}\n"
                                        "  norm: {choices: [none, batch]}\n"
                                        "train: {max_epochs: 5}\n")
    (tmp_path / "study.yaml").write_text("extends: [base.yaml]\nsearch:\n  norm: layer\n")
    config = load_study_config(tmp_path / "study.yaml")
    assert config.search["norm"] == "layer"
    assert config.search["dropout"] == Range(0.0, 0.3)
    assert config.train.max_epochs == 5


BAD = {
    "unknown key": ({"study": {"n_trails": 5}}, "study.n_trails"),
    "unknown section": ({"sutdy": {}}, "sutdy"),
    "wrong type": ({"train": {"max_epochs": "ten"}}, "train.max_epochs"),
    "low >= high": ({"search": {"lr": {"low": 0.1, "high": 0.01}}}, "search.lr"),
    "log with low <= 0": ({"search": {"l2": {"low": 0.0, "high": 0.1, "log": True}}},
                          "search.l2"),
    "dropout outside [0, 1)": ({"search": {"dropout": {"low": 0.0, "high": 1.0}}},
                               "search.dropout.high"),
    "fixed dropout 1": ({"model": {"dropout": 1.0}}, "model.dropout"),
    "patience < 1": ({"search": {"patience": {"low": 0, "high": 5}}}, "search.patience.low"),
    "empty choices": ({"search": {"norm": {"choices": []}}}, "search.norm.choices"),
    "unknown norm": ({"search": {"norm": {"choices": ["batch", "instance"]}}},
                     "search.norm.choices"),
    "unknown schedule": ({"search": {"schedule": "triangular"}}, "search.schedule"),
    "unknown sampler": ({"study": {"sampler": "annealing"}}, "study.sampler"),
    "unknown pruner": ({"study": {"pruner": "asha"}}, "study.pruner"),
    "bad pruner argument": ({"study": {"pruner": "percentile",
                                       "pruner_params": {"percentile": 150}}},
                            "study.pruner_params.percentile: must be a float in [0, 100]; got 150"),
    "unknown sampler argument": ({"study": {"sampler_params": {"n_startup": 5}}},
                                 "study.sampler_params.n_startup: unknown parameter; allowed: "
                                 "n_startup_trials, n_ei_candidates, constant_liar"),
    "sampler argument of another sampler": ({"study": {"sampler": "random",
                                                       "sampler_params": {"seed": 1}}},
                                            "study.sampler_params.seed: unknown parameter; "
                                            "none is allowed"),
    "allow_changes not a bool": ({"study": {"allow_changes": "yes"}},
                                 "study.allow_changes: must be true or false; got 'yes'"),
    "unknown data set": ({"data": {"name": "imagenet"}}, "data.name"),
    "unknown search parameter": ({"search": {"learning_rate": 0.1}}, "search.learning_rate"),
    "n_trials <= 0": ({"study": {"n_trials": 0}}, "study.n_trials"),
    "metric and direction disagree": ({"study": {"metric": "val_accuracy",
                                                 "direction": "minimize"}}, "study.direction"),
    "unknown refit": ({"refit": "all"}, "refit"),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=str)
def test_invalid_config_names_the_field(case):
    raw, field = BAD[case]
    with pytest.raises(ConfigError) as caught:
        parse_study_config(raw)
    assert any(line.startswith(field) for line in caught.value.errors), caught.value.errors


def test_allow_changes_defaults_to_false():
    assert StudyConfig().study.allow_changes is False
    assert parse_study_config({"study": {"allow_changes": True}}).study.allow_changes is True


# Every sampler and pruner argument we declare, at the edge of what we allow: Optuna must
# build it (a misspelt name would be a TypeError, a range wider than Optuna's a ValueError).
OPTUNA_EDGES = {
    "sampler": {
        "tpe": {"n_startup_trials": 0, "n_ei_candidates": 1, "constant_liar": False},
        "random": {},
        "qmc": {"qmc_type": "halton", "scramble": True},
        "gp": {"n_startup_trials": 0, "deterministic_objective": True},
    },
    "pruner": {
        "median": {"n_startup_trials": 0, "n_warmup_steps": 0, "interval_steps": 1,
                   "n_min_trials": 1},
        "percentile": {"percentile": 100.0, "n_startup_trials": 0, "n_warmup_steps": 0,
                       "interval_steps": 1, "n_min_trials": 1},
        "successive_halving": {"min_resource": 1, "reduction_factor": 2,
                               "min_early_stopping_rate": 0},
        "hyperband": {"min_resource": 1, "max_resource": 1, "reduction_factor": 2},
        "wilcoxon": {"p_threshold": 1.0, "n_startup_steps": 0},
        "none": {},
    },
}
# Values just past those edges that Optuna's own constructors refuse: so must we.
OPTUNA_REFUSES = [
    ("sampler", "qmc", "qmc_type", "lhs"),
    ("pruner", "percentile", "percentile", 100.5),
    ("pruner", "median", "n_warmup_steps", -1),
    ("pruner", "median", "interval_steps", 0),
    ("pruner", "median", "n_min_trials", 0),
    ("pruner", "successive_halving", "min_resource", 0),
    ("pruner", "successive_halving", "reduction_factor", 1),
    ("pruner", "successive_halving", "min_early_stopping_rate", -1),
    ("pruner", "wilcoxon", "p_threshold", 1.5),
    ("pruner", "wilcoxon", "n_startup_steps", -1),
]


def _build(kind: str, name: str, params: dict):
    if kind == "sampler":
        return create_sampler(name, params, 0)
    return create_pruner(name, params, 10)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_declared_optuna_arguments_are_optunas():
    declared = {"sampler": SAMPLER_PARAMS, "pruner": PRUNER_PARAMS}
    for kind, edges in OPTUNA_EDGES.items():
        assert {n: set(p) for n, p in edges.items()} == \
            {n: set(p) for n, p in declared[kind].items()}, kind
        for name, params in edges.items():
            parse_study_config({"study": {kind: name, f"{kind}_params": params}})
            _build(kind, name, params)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("kind, name, param, value", OPTUNA_REFUSES, ids=str)
def test_what_optuna_refuses_is_refused_before_building(kind, name, param, value):
    with pytest.raises(ValueError):
        _build(kind, name, {param: value})
    with pytest.raises(ConfigError) as caught:
        parse_study_config({"study": {kind: name, f"{kind}_params": {param: value}}})
    (line,) = caught.value.errors
    assert line.startswith(f"study.{kind}_params.{param}: must be ") and line.endswith(repr(value))


def test_all_errors_are_reported_together():
    raw = {key: value for case in ("unknown key", "wrong type", "unknown data set", "unknown norm",
                                            "unknown refit")
           for key, value in BAD[case][0].items()}
    with pytest.raises(ConfigError) as caught:
        parse_study_config(raw)
    assert len(caught.value.errors) == 5


def _cli(tmp_path, *args):
    # In this process (tests/cli_helpers.py): a refusal needs no fresh interpreter.
    return study_cli(tmp_path, *args, "--no-progress", timeout=120)


@pytest.mark.parametrize("case", ["wrong type", "empty choices", "unknown pruner",
                                  "dropout outside [0, 1)"], ids=str)
def test_cli_exits_2_and_creates_nothing(tmp_path, case):
    raw, field = BAD[case]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    before = set(tmp_path.iterdir())
    result = _cli(tmp_path, "bad.yaml")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines)
    assert any(field in line for line in lines)
    assert set(tmp_path.iterdir()) == before  # no journal, no mlflow.db, no mlruns


def test_cli_malformed_yaml_and_missing_file(tmp_path):
    (tmp_path / "broken.yaml").write_text("study: {name: [unclosed\n")
    result = _cli(tmp_path, "broken.yaml")
    assert result.returncode == 2 and "broken.yaml: malformed YAML" in result.stderr
    result = _cli(tmp_path, "missing.yaml")
    assert result.returncode == 2 and "missing.yaml: cannot read" in result.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"broken.yaml"}


def test_cli_flags_are_validated(tmp_path):
    result = _cli(tmp_path, "--n-trials", "0")
    assert result.returncode == 2 and "study.n_trials" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("preset", sorted((ROOT / "configs").glob("*/*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_preset_extends_a_valid_study(tmp_path, preset):
    (tmp_path / "study.yaml").write_text(f"extends: [{preset}]\n")
    load_study_config(tmp_path / "study.yaml")


def test_run_config_example_is_valid():
    from trickopt.config import load_run_config

    config = load_run_config(ROOT / "configs" / "run.yaml")
    assert config.train.stopper == "gl" and config.model.norm == "batch"


def test_overriding_one_knob_keeps_the_rest_of_the_default_space():
    config = load_study_config(None, ["search.norm=batch", "search.stopper=none"])
    assert config.search["norm"] == "batch" and config.search["stopper"] == "none"
    assert set(config.search) == set(ALL_TRICKS)
    assert config.search["dropout"] == Range(0.0, 0.5)


def test_no_file_gives_the_default_study():
    parsed = parse_study_config({})
    default = StudyConfig()
    for section in ("data", "model", "train", "search", "study", "tracking", "refit"):
        assert getattr(parsed, section) == getattr(default, section), section
    assert parsed.data.name == "mnist1d" and parsed.model.arch == "cnn1d"
    assert parsed.train.max_epochs == 20 and parsed.search["batch_size"] == 128
