"""Shared helpers of the study-level benchmarks (idiomatic, tracking_overhead, scale, gpu).

Not a benchmark itself: machine facts, one whole command timed as a subprocess in a fresh
temporary directory (with benchmarks/phase_clock.py's phases where the command is a study),
the study summary parsed from its output, and median (min-max) formatting.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PHASE_CLOCK = HERE / "phase_clock.py"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    if hasattr(os, "getloadavg"):
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return "n/a"


def memory_gib() -> str:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal"):
                    return f"{int(line.split()[1]) / 2 ** 20:.0f} GiB"
    except OSError:
        pass
    return "n/a"


def machine_facts(title: str, extra: list[str] = ()) -> None:
    """Print the markdown heading and the machine facts every result needs."""
    import optuna
    import torch

    try:
        import mlflow
        mlflow_version = mlflow.__version__
    except ImportError:
        mlflow_version = "not installed"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    print(f"# {title}\n")
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"- CPU: {cpu_model()}, {cores} usable cores (os.cpu_count {os.cpu_count()}), "
          f"memory {memory_gib()}")
    print(f"- Python {platform.python_version()}, torch {torch.__version__} (default intra-op "
          f"threads {torch.get_num_threads()}), optuna {optuna.__version__}, "
          f"mlflow {mlflow_version}")
    print(f"- load average at start (1, 5, 15 min): {load_average()}")
    for line in extra:
        print(f"- {line}")
    print()


@dataclass
class Run:
    """One whole command, timed from outside."""

    label: str
    wall: float  # seconds, subprocess start to exit (imports and shutdown included)
    returncode: int
    stdout: str
    stderr: str
    phases: dict = field(default_factory=dict)  # phase -> [[start, end], ...] (phase_clock)
    info: dict = field(default_factory=dict)  # phase_clock's extra facts (torch threads)
    load: str = ""  # load average when the run ended

    def phase(self, name: str) -> float:
        """Total seconds spent in a phase (0 when it did not happen)."""
        return sum(end - start for start, end in self.phases.get(name, []))

    def after(self, name: str) -> float:
        """Seconds from the end of phase `name` to the end of the process."""
        spans = self.phases.get(name)
        return self.wall - spans[-1][1] if spans else float("nan")

    def check(self) -> Run:
        if self.returncode != 0:
            tail = "\n".join((self.stdout + self.stderr).splitlines()[-30:])
            raise SystemExit(f"{self.label}: exit code {self.returncode}\n{tail}")
        return self


def run_command(label: str, argv: list[str], *, env: dict | None = None,
                keep: Path | None = None, timeout: float | None = None) -> Run:
    """Run `argv` in a fresh temporary directory (the study's journal and mlflow.db land
    there), with $TRICKOPT_PHASES pointing at a file in it; time the whole process."""
    folder = Path(tempfile.mkdtemp(prefix="trickopt-bench-"))
    phases_file = folder / "phases.json"
    run_env = dict(os.environ)
    run_env.pop("MLFLOW_TRACKING_URI", None)  # the default: ./mlflow.db in `folder`
    run_env.update(env or {})
    run_env["TRICKOPT_PHASES"] = str(phases_file)
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=folder, env=run_env, capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - started
    clock = json.loads(phases_file.read_text()) if phases_file.exists() else {}
    run = Run(label, wall, proc.returncode, proc.stdout, proc.stderr, clock.get("phases", {}),
              clock.get("info", {}), load_average())
    if keep is not None:
        shutil.copytree(folder, keep, dirs_exist_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    return run


def study_command(*args: str) -> list[str]:
    """`python -m trickopt.study ARGS`, through phase_clock.py (same command, timed phases)."""
    return [sys.executable, str(PHASE_CLOCK), *args]


def parse_summary(stdout: str) -> dict:
    """The numbers of trickopt's closing summary: trials per state, best value, epochs."""
    out: dict = {}
    match = re.search(r"^trials: (.*)$", stdout, re.M)
    if match:
        for count, state in re.findall(r"(\d+) (\w+)", match.group(1)):
            out[state] = int(count)
    match = re.search(r"^best (\w+): ([-\d.eE+naif]+) \(trial (\d+)", stdout, re.M)
    if match:
        out["metric"], out["best_value"], out["best_trial"] = (match.group(1),
                                                               float(match.group(2)),
                                                               int(match.group(3)))
    match = re.search(r"^epochs trained: (\d+) of a budget of (\d+)", stdout, re.M)
    if match:
        out["epochs"], out["budget"] = int(match.group(1)), int(match.group(2))
    match = re.search(r"refit on train\+val for (\d+) epochs: ([\d.]+)", stdout)
    if match:
        out["refit_epochs"], out["refit_test_accuracy"] = int(match.group(1)), \
            float(match.group(2))
    return out


def med(values: list[float], fmt: str = "{:.2f}") -> str:
    """'median (min–max)'."""
    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    return (f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–"
            f"{fmt.format(max(values))})")


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def wait_quiet(max_load: float | None, seconds: float = 600, poll: float = 10) -> None:
    """Wait (up to `seconds`) until the 1-minute load average is below `max_load`."""
    if not max_load or not hasattr(os, "getloadavg"):
        return
    deadline = time.monotonic() + seconds
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        print(f"(waiting: load average {load_average()} > {max_load})", file=sys.stderr,
              flush=True)
        time.sleep(poll)
