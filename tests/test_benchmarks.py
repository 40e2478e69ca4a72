"""Every benchmark runs once at a tiny size (--quick), so none of them rots, and prints the
table it promises: the expected columns and rows, and ratios that parse as finite positive
numbers. Figures come from full runs recorded in BENCHMARKS.md, never from a timed test: no
speed is asserted here."""

from __future__ import annotations

import glob
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MEDIAN_MIN_MAX = re.compile(r"(\d+\.\d+) \((\d+\.\d+)–(\d+\.\d+)\)")


def run_quick(tmp_path: Path, script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def table(stdout: str, *columns: str) -> dict[str, dict[str, str]]:
    """The first markdown table whose header holds `columns` and that has data rows, as
    {the row's first cell: {column: cell}}."""
    for block in re.findall(r"((?:^\|.*\|\n?)+)", stdout, re.M):
        lines = [[cell.strip() for cell in line.strip()[1:-1].split("|")]
                 for line in block.strip().splitlines()]
        header, rule, rows = lines[0], lines[1], lines[2:]
        if set(columns) <= set(header) and set(rule) <= {"---", "---:"} and rows:
            assert all(len(row) == len(header) for row in rows), block
            return {row[0]: dict(zip(header, row)) for row in rows}
    raise AssertionError(f"no table with columns {columns} in:\n{stdout[-3000:]}")


def ratio(cell: str) -> float:
    """The median of a 'median (min–max)' cell, checked finite, positive and within its range."""
    match = MEDIAN_MIN_MAX.fullmatch(cell)
    assert match, f"not 'median (min–max)': {cell!r}"
    median, low, high = map(float, match.groups())
    assert 0 < low <= median <= high and math.isfinite(high), cell
    return median


@pytest.mark.slow
def test_factory_overhead(tmp_path):
    column = "ratio to by hand: median (min–max)"
    rows = table(run_quick(tmp_path, "factory_overhead.py"), "model", "median ms/epoch", column)
    assert set(rows) == {"factory (cnn1d + Tricks)", "written by hand"}
    assert ratio(rows["written by hand"][column]) == 1.0  # the reference, against itself
    assert ratio(rows["factory (cnn1d + Tricks)"][column]) > 0


@pytest.mark.slow
def test_fit_overhead(tmp_path):
    column = "ratio to the hand loop: median (min–max)"
    rows = table(run_quick(tmp_path, "fit_overhead.py"), "variant", "median ms/epoch", column)
    assert set(rows) == {"fit", "hand loop (fit's Adam)", "hand loop (Adam defaults)",
                         "DataLoader loop"}
    ratios = {name: ratio(row[column]) for name, row in rows.items()}
    assert ratios["hand loop (fit's Adam)"] == 1.0  # the reference, against itself
    assert all(float(row["median ms/epoch"]) > 0 for row in rows.values())


@pytest.mark.slow
def test_budget(tmp_path):
    rows = table(run_quick(tmp_path, "budget.py"), "variant", "epochs", "epochs % full",
                 "best val acc", "refit test acc", "complete / pruned per study")
    assert set(rows) == {"full", "stopper only", "pruner only: median", "both: median"}
    for row in rows.values():  # --quick: 2 trials of at most 2 epochs
        assert 0 < float(row["epochs"]) <= 4 and float(row["epochs % full"]) > 0, row
        assert 0 < float(row["best val acc"]) <= 1 and 0 < float(row["refit test acc"]) <= 1
    assert rows["full"]["epochs % full"] == "100.0"


@pytest.mark.slow
def test_idiomatic(tmp_path):
    # --before: this very checkout, so the "before" side must train the same trials as (b).
    before = f"(b'') trickopt of {BENCHMARKS.parent}"
    stdout = run_quick(tmp_path, "idiomatic.py", "--before", str(BENCHMARKS.parent))
    rows = table(stdout, "side", "whole s", "whole / (a) idiomatic", "optimize / (a) idiomatic")
    assert set(rows) == {"(a) idiomatic", "(b) trickopt", before}
    assert ratio(rows["(a) idiomatic"]["whole / (a) idiomatic"]) == 1.0
    for side in ("(b) trickopt", before):
        ratio(rows[side]["whole / (a) idiomatic"])
        ratio(rows[side]["optimize / (a) idiomatic"])  # every side times its trials
    trained = table(stdout, "side", "trials", "epochs trained", "best value")
    for row in trained.values():
        assert 0 < int(row["epochs trained"]) <= 6, row  # 3 trials of at most 2 epochs
    assert trained[before] == {**trained["(b) trickopt"], "side": before}
    assert "whole command" in table(stdout, "phase, s", "(a) idiomatic", "(b) trickopt")


@pytest.mark.slow
def test_tracking_overhead(tmp_path):
    stdout = run_quick(tmp_path, "tracking_overhead.py")
    rows = table(stdout, "side", "whole / off", "optimize / off")
    assert set(rows) == {"off", "on"}
    ratio(rows["on"]["whole / off"])
    ratio(rows["on"]["optimize / off"])
    trained = table(stdout, "side", "trials", "epochs trained", "best value")
    # The ratio compares equal work only if MLflow on or off trains the very same trials.
    assert list(trained["on"].values())[1:] == list(trained["off"].values())[1:], trained


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(not glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                    reason="PostgreSQL is not installed here (apt-get install postgresql)")
def test_scale(tmp_path):
    stdout = run_quick(tmp_path, "scale.py")
    rows = table(stdout, "workers", "trials/hour (optimize)", "trials/hour vs row 1",
                 "epochs/hour vs row 1")
    assert [name.split()[0] for name in rows] == ["K=1", "K=2"], rows
    assert ratio(rows[next(iter(rows))]["trials/hour vs row 1"]) == 1.0
    for row in rows.values():
        ratio(row["epochs/hour vs row 1"])
        ratio(row["trials/hour vs row 1"])
    ceiling = table(stdout, "training processes", "s/epoch, each", "slowdown vs alone",
                    "trainings/hour vs 1 alone")
    assert list(ceiling) == ["1 alone", "2 at once"]
    assert ratio(ceiling["1 alone"]["trainings/hour vs 1 alone"]) == 1.0
    assert ratio(ceiling["2 at once"]["trainings/hour vs 1 alone"]) > 0


@pytest.mark.slow
def test_report_cost(tmp_path):
    rows = table(run_quick(tmp_path, "report_cost.py"), "sampler seed", "study s", "report s",
                 "report / study", "trainings")
    assert list(rows) == ["0"]
    row = rows["0"]
    assert float(row["report / study"]) > 0
    # --quick: the best's 2 curves, then 2 seeds of each arm of the best (at least no tricks)
    assert int(row["trainings"]) >= 2 + 2


def test_gpu_skips_without_cuda(tmp_path):
    stdout = run_quick(tmp_path, "gpu.py")
    if "no CUDA device: skipped" not in stdout:  # a GPU machine: the real tables
        check_gpu_tables(stdout)


@pytest.mark.slow
def test_gpu_script_runs_on_the_cpu(tmp_path):
    """gpu.py's own code, on the CPU: where there is no GPU, nothing else runs it."""
    check_gpu_tables(run_quick(tmp_path, "gpu.py", "--device", "cpu"))


def check_gpu_tables(stdout: str) -> None:
    epochs = table(stdout, "card", "problem", "variant", "ms/epoch", "vs fit fp32")
    assert len(epochs) == 1, "one card names every row"
    lines = [line for line in stdout.splitlines() if re.search(r"\| (fit|DataLoader) (fp32|"
                                                               r"bf16) \|", line)]
    assert len(lines) == 8, lines  # 4 variants x 2 problems
    for line in lines:
        for cell in [c.strip() for c in line.strip()[1:-1].split("|")][3:]:
            ratio(cell)
    trials = table(stdout, "card, K concurrent trials", "trials/hour vs row 1")
    assert [name.rsplit("K=", 1)[1] for name in trials] == ["1", "2"], trials
    for row in trials.values():
        ratio(row["trials/hour vs row 1"])
