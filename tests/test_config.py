"""Run configs: defaults, every error reported at once, YAML files, --set and the CLI's exit."""

from __future__ import annotations

import textwrap

import cli_helpers
import pytest

from trickopt import train_cli
from trickopt.config import (
    ConfigError,
    DataConfig,
    RunConfig,
    TrainConfig,
    load_run_config,
    parse_run_config,
)


def write(tmp_path, text: str, name: str = "run.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_validate():
    assert load_run_config() == RunConfig()
    assert parse_run_config({"data": None, "model": {}, "train": {}}) == RunConfig()
    assert RunConfig().data == DataConfig() and RunConfig().train == TrainConfig()


# One file, many problems: each (field, fragment of the bad value) must get its own line.
MANY_PROBLEMS = """\
    optimiser: {lr: 0.1}
    data:
      name: imagenet
      colour: blue
    model:
      width: wide
      dropout: 1.0
      norm: spectral
    train:
      lr: -0.5
      bf16: 1
      schedule: sawtooth
      stopper_params: {patience: 3, wait: 2}
    """
MANY_EXPECTED = [
    ("optimiser", "unknown section"),
    ("data.name", "'imagenet'"),
    ("data.colour", "unknown key"),
    ("model.width", "'wide'"),
    ("model.dropout", "1.0"),
    ("model.norm", "'spectral'"),
    ("train.lr", "-0.5"),
    ("train.bf16", "got 1"),
    ("train.schedule", "'sawtooth'"),
    ("train.stopper_params.wait", "unknown parameter; allowed: patience, min_delta, mode"),
]

MORE_PROBLEMS = """\
    data:
      name: file
    train:
      schedule: step
      schedule_params: {step_size: 0}
      stopper: patience
      stopper_params: {patience: 0}
    """
MORE_EXPECTED = [
    ("data.path", "required"),
    ("train.schedule_params.step_size", "must be an int >= 1 (epochs); got 0"),
    ("train.stopper_params.patience", "must be an int >= 1; got 0"),
]
# The sub-parameters are checked against the tricks' declared constraints, not by building a
# scheduler or a stopper: a missing one, and one that only max_epochs makes wrong, are named.
CROSS_PROBLEMS = """\
    train:
      max_epochs: 5
      schedule: warmup_cosine
      schedule_params: {warmup_epochs: 5.0, eta_min: -1}
      stopper: gl
      stopper_params: {}
    """
CROSS_EXPECTED = [
    ("train.schedule_params.warmup_epochs", "must be < max_epochs (5); got 5.0"),
    ("train.schedule_params.eta_min", "must be a finite float >= 0 (an absolute lr); got -1"),
    ("train.stopper_params.alpha", "required, a finite float > 0"),
]


def assert_one_line_each(errors: list[str], expected: list[tuple[str, str]]) -> None:
    assert len(errors) == len(expected), errors
    for field, fragment in expected:
        lines = [e for e in errors if e.startswith(f"{field}:")]
        assert len(lines) == 1, (field, errors)
        assert fragment in lines[0], (field, lines[0])


@pytest.mark.parametrize("text, expected", [(MANY_PROBLEMS, MANY_EXPECTED),
                                            (MORE_PROBLEMS, MORE_EXPECTED),
                                            (CROSS_PROBLEMS, CROSS_EXPECTED)])
def test_every_problem_is_reported_in_one_config_error(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_run_config(write(tmp_path, text))
    assert_one_line_each(info.value.errors, expected)
    assert str(info.value).splitlines() == info.value.errors


def test_a_wrong_type_is_not_coerced():
    with pytest.raises(ConfigError) as info:
        parse_run_config({"train": {"max_epochs": 10.5, "batch_size": True, "l2_mode": 3},
                          "model": {"channels": [8, "x"]}})
    assert_one_line_each(info.value.errors, [
        ("train.max_epochs", "must be an int; got 10.5"),
        ("train.batch_size", "must be an int; got True"),
        ("train.l2_mode", "got 3"),
        ("model.channels", "[8, 'x']"),
    ])


def test_a_huge_value_is_cut_in_its_message():
    with pytest.raises(ConfigError) as info:
        parse_run_config({"train": {"device": "x" * 10_000}, "model": {"x" * 10_000: 1}})
    device, key = sorted(info.value.errors, key=lambda line: not line.startswith("train"))
    assert device == ("train.device: must be auto, cpu, cuda, cuda:N or mps; got '"
                      + "x" * 76 + "...")
    assert key.startswith("model." + "x" * 77 + "...: unknown key; allowed: arch, depth")


def test_a_file_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"train:\n  lr: 0.1\n  \xff\xfe\x00\x80garbage\n")
    with pytest.raises(ConfigError) as info:
        load_run_config(path)
    # 0xff is byte 7 + 10 + 2 = 19: after "train:\n", "  lr: 0.1\n" and two spaces.
    assert info.value.errors == [f"{path}: is not UTF-8 text (byte 19: invalid start byte); "
                                 "a config file is YAML text"]


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "train:\n  lr: 0.1\n  schedule: [cosine\n")
    with pytest.raises(ConfigError) as info:
        load_run_config(path)
    assert len(info.value.errors) == 1
    assert str(path) in info.value.errors[0] and "malformed YAML" in info.value.errors[0]


@pytest.mark.parametrize("make", [lambda tmp: tmp / "missing.yaml", lambda tmp: tmp])
def test_an_unreadable_file_names_the_file(tmp_path, make):
    path = make(tmp_path)  # a missing file, then a directory
    with pytest.raises(ConfigError) as info:
        load_run_config(path)
    assert str(path) in str(info.value)
    assert "cannot read" in str(info.value) or "not a regular file" in str(info.value)


def test_a_file_that_is_not_a_mapping_names_the_file(tmp_path):
    path = write(tmp_path, "- data\n- train\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_run_config(path)


def test_set_overrides_are_parsed_as_yaml_and_win_over_the_file(tmp_path):
    path = write(tmp_path, """\
        model: {width: 64, depth: 3}
        train: {lr: 0.5, optimizer: sgd}
        """)
    config = load_run_config(path, [
        "train.lr=1e-3",  # YAML 1.1 would read a string; everyone means 0.001
        "train.l2=2.5E-4",
        "train.bf16=false",
        "train.l2_mode=null",
        "model.width=32",
        "model.channels=[8, 16]",
        "train.stopper_params={patience: 3, min_delta: 0.01}",
        "data.name=wine",
    ])
    assert config.train.lr == 0.001 and isinstance(config.train.lr, float)
    assert config.train.l2 == 0.00025
    assert config.train.bf16 is False and config.train.l2_mode is None
    assert config.model.width == 32 and config.model.depth == 3
    assert config.model.channels == [8, 16]
    assert config.train.stopper_params == {"patience": 3, "min_delta": 0.01}
    assert config.train.optimizer == "sgd" and config.data.name == "wine"


def test_a_yaml_file_reads_1e_minus_3_as_a_float(tmp_path):
    config = load_run_config(write(tmp_path, "train: {lr: 1e-3, l1: 5e-6}\n"))
    assert (config.train.lr, config.train.l1) == (0.001, 5e-6)


def test_a_malformed_set_is_a_config_error():
    with pytest.raises(ConfigError, match="train.lr"):
        load_run_config(None, ["train.lr"])


def test_bad_values_through_set_are_reported_like_file_values():
    with pytest.raises(ConfigError) as info:
        load_run_config(None, ["model.norm=spectral", "train.patience=3"])
    assert_one_line_each(info.value.errors, [("model.norm", "'spectral'"),
                                             ("train.patience", "unknown key")])


def test_the_cli_exits_2_with_one_error_line_per_problem_and_writes_nothing(tmp_path):
    path = write(tmp_path, MANY_PROBLEMS, name="bad.yaml")
    out = cli_helpers.train_cli(tmp_path, str(path), timeout=120)  # in this process
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert all(line.startswith("error: ") for line in lines), out.stderr
    assert_one_line_each([line.removeprefix("error: ") for line in lines], MANY_EXPECTED)
    assert out.stdout == ""
    assert [p.name for p in tmp_path.iterdir()] == ["bad.yaml"]



def test_the_cli_exits_2_on_a_model_that_does_not_fit_the_data(capsys):
    code = train_cli.main(["--set", "data.name=wine", "--set", "model.arch=cnn"])
    assert code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: model.arch: cnn needs image-shaped")


def test_the_cli_exits_2_on_a_bad_data_file(tmp_path, capsys):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n")
    code = train_cli.main(["--set", "data.name=file", "--set", f"data.path={path}",
                           "--set", "data.target=label"])
    assert code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: no column named 'label'")
