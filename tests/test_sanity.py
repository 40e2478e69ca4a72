"""`--sanity`: the seed's dropout debugging tip, on a config that trains and one that cannot."""

from __future__ import annotations

import pytest
from cli_helpers import train_cli

from trickopt.config import RunConfig
from trickopt.data import load_data
from trickopt.sanity import check_loss_falls, check_overfits_small_batch, quiet_config
from trickopt.train_cli import main


@pytest.fixture(scope="module")
def digits():
    return load_data(RunConfig().data)


def run_config(**train) -> RunConfig:
    config = RunConfig()
    config.train.threads = 1
    for key, value in train.items():
        setattr(config.train, key, value)
    return config


def test_sanity_command_passes_on_the_default_config(tmp_path):
    out = train_cli(tmp_path, "--sanity", "--set", "train.threads=1", timeout=120)  # in-process
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("[ok] ") for line in lines), out.stdout
    assert "training loss falls" in lines[0] and "overfits a small batch" in lines[1]
    assert list(tmp_path.iterdir()) == []


def test_sanity_command_fails_and_names_the_check_when_the_loss_explodes(capsys):
    code = main(["--sanity", "--set", "train.lr=50", "--set", "train.optimizer=sgd",
                 "--set", "train.threads=1"])
    assert code == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("[FAILED] training loss falls: ") for line in lines), lines
    assert "did not fall at epoch(s) [2" in "\n".join(lines)


def test_loss_falls_check_watches_the_training_loss(digits):
    assert check_loss_falls(run_config(), digits).passed
    broken = check_loss_falls(run_config(lr=50.0, optimizer="sgd"), digits)
    assert not broken.passed and broken.name == "training loss falls"


def test_overfit_check_fails_when_the_model_cannot_learn(digits):
    check = check_overfits_small_batch(run_config(lr=1e-7), digits)
    assert not check.passed and check.name == "overfits a small batch"
    assert "32 samples" in check.detail


def test_quiet_config_switches_every_noise_off_and_leaves_the_original_alone():
    config = run_config(l1=1e-3, l2=1e-3, schedule="step", schedule_params={"step_size": 2},
                        stopper="gl", stopper_params={"alpha": 2.0})
    config.model.dropout = 0.5
    quiet = quiet_config(config)
    assert quiet.model.dropout == 0.0
    assert (quiet.train.l1, quiet.train.l2) == (0.0, 0.0)
    assert (quiet.train.schedule, quiet.train.schedule_params) == ("constant", {})
    assert (quiet.train.stopper, quiet.train.stopper_params) == ("none", {})
    assert config.model.dropout == 0.5 and config.train.schedule_params == {"step_size": 2}
