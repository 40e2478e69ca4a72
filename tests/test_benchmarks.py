"""Every benchmark runs once at a tiny size (--quick), so none of them rots. Their figures
come from full runs recorded in BENCHMARKS.md, never from a timed test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = ["fit_overhead.py", "budget.py", "idiomatic.py", "tracking_overhead.py", "scale.py",
           "gpu.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_quick(script, tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "|" in result.stdout or "no CUDA device" in result.stdout  # a table, or GPU skip
