"""Resuming a study: its fixed settings bind later runs; what the CLI lists; sampler warnings."""

from __future__ import annotations

import optuna
import pytest
from cli_helpers import study_cli

from trickopt.study.storage import DEFAULT_JOURNAL, open_storage

TINY = ["--n-trials", "2", "--study-name", "tiny", "--no-progress",
        "--set", "data.name=digits",
        "--set", "model.arch=mlp", "--set", "model.width=16", "--set", "train.max_epochs=3",
        "--set", "tracking.enabled=false", "--set", "refit=none"]


def _cli(cwd, *args):
    # In this process (tests/cli_helpers.py), as a fresh `python -m trickopt.study` would run
    # it (its stderr shows warnings and Optuna's log), without the imports of a fresh one.
    return study_cli(cwd, *args, timeout=300)


def _n_trials(folder) -> int:
    storage = open_storage(str(folder / DEFAULT_JOURNAL))
    return len(optuna.load_study(study_name="tiny", storage=storage).trials)


@pytest.mark.parametrize("change, field", [
    (["--set", "train.max_epochs=4"], "train.max_epochs: 3 -> 4"),
    (["--set", "data.name=wine"], 'data.name: "digits" -> "wine"'),
    (["--set", "model.width=32"], "model.width: 16 -> 32"),
])
def test_a_resumed_study_with_other_fixed_settings_is_refused(tmp_path, change, field):
    first = _cli(tmp_path, *TINY)
    assert first.returncode == 0, first.stderr
    journal = (tmp_path / DEFAULT_JOURNAL).read_bytes()
    second = _cli(tmp_path, *TINY, *change)
    assert second.returncode == 2, second.stdout + second.stderr
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and field in errors[0] and "allow_changes" in errors[0], errors
    assert (tmp_path / DEFAULT_JOURNAL).read_bytes() == journal  # not a byte written
    # Asked for explicitly, the change is accepted and the trials are added.
    third = _cli(tmp_path, *TINY, *change, "--set", "study.allow_changes=true")
    assert third.returncode == 0, third.stderr
    assert _n_trials(tmp_path) == 4


def test_where_it_trains_may_change_between_runs(tmp_path):
    assert _cli(tmp_path, *TINY).returncode == 0
    done = _cli(tmp_path, *TINY, "--device", "cpu", "--set", "train.threads=1")
    assert done.returncode == 0, done.stderr
    assert _n_trials(tmp_path) == 4


def test_list_names_every_knob_and_data_set(tmp_path):
    from trickopt.data import DATASETS
    from trickopt.study.space import PARAMS

    done = _cli(tmp_path, "--list")
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")}
    assert listed == set(PARAMS)
    assert all(name in done.stdout for name in DATASETS)
    assert list(tmp_path.iterdir()) == []  # a question, not a study


@pytest.mark.parametrize("sampler", ["tpe", "gp", "qmc", "random"])
def test_no_sampler_warns_about_the_conditional_knobs(tmp_path, sampler):
    """TPE samples the conditional knobs jointly (group=True); GP and QMC model a fixed space
    and sample them at random, as the README says, without a warning on every trial."""
    done = _cli(tmp_path, *TINY, "--n-trials", "3", "--set", f"study.sampler={sampler}")
    assert done.returncode == 0, done.stderr
    assert "independent" not in done.stderr and "Warning" not in done.stderr, done.stderr
