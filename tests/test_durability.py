"""A journal whose last write was cut short (a full disk, a crash mid-write) is repaired on
open: the torn bytes are kept aside, and no finished trial is lost."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import optuna
import pytest
from cli_helpers import Done, study_cli

from trickopt.study.storage import open_storage

TINY = ["--study-name", "tiny", "--no-progress", "--set", "data.name=digits",
        "--set", "model.arch=mlp",
        "--set", "model.width=16", "--set", "train.max_epochs=3",
        "--set", "tracking.enabled=false", "--set", "refit=none"]


def _cli(cwd: Path, *args: str) -> Done:
    # In this process (tests/cli_helpers.py), without a fresh interpreter's imports.
    return study_cli(cwd, *TINY, *args, timeout=300)


def _values(journal: Path) -> dict[int, tuple[str, float | None]]:
    study = optuna.load_study(study_name="tiny", storage=open_storage(f"journal:{journal}"))
    return {t.number: (t.state.name, t.value) for t in study.trials}


def test_a_journal_cut_mid_line_is_repaired_and_keeps_every_finished_trial(tmp_path):
    journal = tmp_path / "x.journal"
    assert _cli(tmp_path, "--storage", f"journal:{journal}", "--n-trials", "3").returncode == 0
    before = _values(journal)
    torn = b'{"op_code": 6, "worker_id": "w", "trial_id": 3, "sta'  # half a record
    with open(journal, "ab") as handle:
        handle.write(torn)
    done = _cli(tmp_path, "--storage", f"journal:{journal}", "--n-trials", "2")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "cut short" in line]
    assert len(warnings) == 1, done.stderr
    backups = list(tmp_path.glob("x.journal.torn-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == torn
    after = _values(journal)
    assert {n: after[n] for n in before} == before and len(after) == 5


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_then_more_space_loses_nothing(tmp_path):
    mount = tmp_path / "f"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("this machine does not let us mount a tmpfs")
    try:
        journal = mount / "x.journal"
        full = _cli(tmp_path, "--storage", f"journal:{journal}", "--n-trials", "8")
        assert full.returncode == 1, full.stderr
        errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "No space left" in errors[0], full.stderr
        assert "Traceback" not in full.stderr
        subprocess.run(["mount", "-o", "remount,size=2m", str(mount)], check=True)
        finished = {n: v for n, v in _values_unrepaired(journal).items()}
        done = _cli(tmp_path, "--storage", f"journal:{journal}", "--n-trials", "2")
        assert done.returncode == 0, done.stderr
        after = _values(journal)
        assert all(after[n] == v for n, v in finished.items() if v[0] != "RUNNING")
        assert len(after) == len(finished) + 2
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def _values_unrepaired(journal: Path) -> dict[int, tuple[str, float | None]]:
    """The trials in a journal whose tail may be torn, read from its whole lines only (the
    reference: what a correct repair must keep), without changing the file."""
    copy = journal.with_name("copy.journal")
    data = journal.read_bytes()
    copy.write_bytes(data[:data.rfind(b"\n") + 1])
    try:
        return _values(copy)
    finally:
        copy.unlink()
