"""Bad input the CLI can only find by looking (files, servers, flags): one line, exit 2,
nothing created. The config-file cases are in test_study_config.py, PostgreSQL's in
test_postgres.py."""

from __future__ import annotations

import pytest
from cli_helpers import study_cli


def _cli(cwd, *args):
    # In this process (tests/cli_helpers.py): a refusal needs no fresh interpreter.
    return study_cli(cwd, "--no-progress", *args, timeout=120)


def _refused(result, field: str, cwd, keep=()):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 1 and all(line.startswith("error: ") for line in lines), lines
    assert any(field in line for line in lines), lines
    assert sorted(p.name for p in cwd.iterdir()) == sorted(keep)  # nothing created


def test_missing_data_file(tmp_path):
    result = _cli(tmp_path, "--set", "data.name=file", "--set", "data.path=nowhere.csv")
    _refused(result, "data.path", tmp_path)


def test_data_file_without_its_target_column(tmp_path):
    (tmp_path / "rows.csv").write_text("a,b,label\n" + "".join(
        f"{i},{i % 3},{i % 2}\n" for i in range(40)))
    result = _cli(tmp_path, "--set", "data.name=file", "--set", "data.path=rows.csv",
                  "--set", "data.target=class")
    _refused(result, "no column named 'class'", tmp_path, keep=["rows.csv"])


def test_unreachable_tracking_server(tmp_path):
    result = _cli(tmp_path, "--tracking-uri", "http://user:hunter2@127.0.0.1:1")
    _refused(result, "tracking.uri: cannot reach the MLflow server", tmp_path)
    assert "hunter2" not in result.stderr and "user:***@" in result.stderr


def test_a_study_file_that_is_not_utf8(tmp_path):
    (tmp_path / "garbage.yaml").write_bytes(bytes(range(256)) * 4)  # 0x80 is no UTF-8 start
    result = _cli(tmp_path, "garbage.yaml")
    _refused(result, "garbage.yaml: is not UTF-8 text (byte 128", tmp_path, keep=["garbage.yaml"])
    assert len(result.stderr.strip().splitlines()) == 1


def test_workers_below_one(tmp_path):
    _refused(_cli(tmp_path, "--workers", "0"), "study.workers", tmp_path)


def test_several_workers_on_sqlite_are_refused(tmp_path):
    result = _cli(tmp_path, "--workers", "2", "--storage", f"sqlite:///{tmp_path}/o.db")
    _refused(result, "journal file", tmp_path)


def test_journal_in_a_missing_folder(tmp_path):
    result = _cli(tmp_path, "--storage", "journal:missing/folder/study.journal")
    _refused(result, "study.storage", tmp_path)


@pytest.mark.parametrize("flag,value", [("--n-trials", "-3"), ("--timeout", "0")])
def test_bad_budget_flags(tmp_path, flag, value):
    field = "study.n_trials" if flag == "--n-trials" else "study.timeout"
    _refused(_cli(tmp_path, flag, value), field, tmp_path)


def test_resuming_with_another_metric_is_refused(tmp_path):
    first = _cli(tmp_path, "--n-trials", "1", "--set", "data.name=digits",
                 "--set", "model.arch=mlp",
                 "--set", "train.max_epochs=2", "--set", "refit=none",
                 "--set", "tracking.enabled=false")
    assert first.returncode == 0, first.stderr
    before = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    result = _cli(tmp_path, "--n-trials", "1", "--set", "study.metric=val_accuracy",
                  "--set", "tracking.enabled=false")
    assert result.returncode == 2 and "already optimizes val_loss" in result.stderr
    assert {p.name: p.stat().st_size for p in tmp_path.iterdir()} == before
