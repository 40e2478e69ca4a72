"""Where a study's wall time goes: an explicit phase-timing hook for the benchmarks.

Set `$TRICKOPT_PHASES` to a file path and `python -m trickopt.study` writes, when it ends, a
JSON object `{phase: [[start, end], ...]}` in seconds since the process started (read from
/proc, so that interpreter start-up and imports are counted). Phases: `load_data`,
`open_study`, `optimize`, `importances`, `refit`, `parent_summary`, `tracking_close`, and
`main_end` (a point: when `main` returned; interpreter shutdown follows). Without the variable
every call is a no-op costing one dict lookup.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

ENV = "TRICKOPT_PHASES"


def _process_age() -> float:
    """Seconds since this process started (Linux); 0 elsewhere."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


_ORIGIN = time.perf_counter() - _process_age()
_phases: dict[str, list[list[float]]] = {}


def _now() -> float:
    return round(time.perf_counter() - _ORIGIN, 4)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Record the time spent in the `with` block under `name` (where $TRICKOPT_PHASES is set)."""
    if ENV not in os.environ:
        yield
        return
    began = _now()
    try:
        yield
    finally:
        _phases.setdefault(name, []).append([began, _now()])


def mark(name: str) -> None:
    """Record a point in time (a phase of zero length)."""
    if ENV in os.environ:
        now = _now()
        _phases.setdefault(name, []).append([now, now])


def write() -> None:
    """Write the phases recorded so far to $TRICKOPT_PHASES (nothing where it is unset)."""
    path = os.environ.get(ENV)
    if path:
        Path(path).write_text(json.dumps(_phases, indent=1))
