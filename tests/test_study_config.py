"""Study files: presets, the default study, and every invalid case refused before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trickopt.config import ConfigError
from trickopt.study.config import StudyConfig, load_study_config, parse_study_config
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
                            "study.pruner_params"),
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


def test_all_errors_are_reported_together():
    raw = {key: value for case in ("unknown key", "wrong type", "unknown data set", "unknown norm",
                                            "unknown refit")
           for key, value in BAD[case][0].items()}
    with pytest.raises(ConfigError) as caught:
        parse_study_config(raw)
    assert len(caught.value.errors) == 5


def _cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "trickopt.study", *args, "--no-progress"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


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
    assert parsed.model.arch == "cnn" and parsed.train.max_epochs == 30
