"""What every benchmark shares: machine facts, sides timed interleaved, ratios, tables.

A benchmark measures and prints markdown tables; what they mean is written by hand in
BENCHMARKS.md. Ratios are per repetition (the sides of one repetition run back to back, so a
shared machine's slow drifts cancel) and shown as median (min–max).
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# The study the recorded budget, scale and tracking figures were measured on: the digits CNN,
# trickopt's default study until the default moved to MNIST-1D (2026-12-01).
DIGITS_STUDY = REPO / "studies" / "digits.yaml"


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    found = re.search(r"^model name\s*: (.*)$", cpuinfo.read_text() if cpuinfo.exists() else "",
                      re.M)
    return found[1] if found else platform.machine()


def load_average() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def _git(*args: str) -> str:
    """Read-only git (no optional locks: the index is not even refreshed); '' on failure."""
    try:
        return subprocess.run(["git", "--no-optional-locks", *args], cwd=REPO, text=True,
                              capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_facts(title: str, extra: Sequence[str] = ()) -> None:
    """Print the heading and the facts every recorded figure needs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    commit = _git("rev-parse", "--short", "HEAD") or "?"
    if _git("status", "--porcelain", "trickopt"):
        commit += " + uncommitted changes in trickopt/"
    packages = ", ".join(f"{p} {version(p)}" for p in ("torch", "optuna", "mlflow"))
    print(f"# {title}\n")
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}; trickopt at git {commit}")
    print(f"- CPU: {cpu_model()}, {cores} usable cores; Python {platform.python_version()}, "
          f"{packages}")
    print(f"- load average at start (1, 5, 15 min): {load_average()}")
    for line in extra:
        print(f"- {line}")
    print()


def interleave(sides: dict[str, Callable[[], object]], repeats: int) -> dict[str, list]:
    """Call every side once per repetition, rotating the order each repetition (two sides:
    a, b / b, a), so that a shared machine's drifts hit every side alike."""
    names, out = list(sides), {name: [] for name in sides}
    for rep in range(repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].append(sides[name]())
        print(f"(repetition {rep + 1} of {repeats} done; load {load_average()})",
              file=sys.stderr, flush=True)
    return out


@dataclass
class Run:
    """One whole command, timed from outside; `phases` is what $TRICKOPT_PHASES recorded."""

    wall: float  # seconds from start to exit, imports and interpreter shutdown included
    stdout: str
    phases: dict[str, list[list[float]]] = field(default_factory=dict)
    cpu: float = math.nan  # CPU seconds of the command and every process it waited for

    def phase(self, name: str) -> float:
        """Seconds spent in a phase; NaN where the command did not record it."""
        spans = self.phases.get(name)
        return sum(end - start for start, end in spans) if spans else math.nan

    @property
    def summary(self) -> dict:
        return parse_summary(self.stdout)


def run_command(argv: list[str]) -> Run:
    """Run `argv` in a fresh temporary folder (a study's journal and mlflow.db land there, as
    on a first run), with $TRICKOPT_PHASES pointing into it; exit on failure."""
    folder = Path(tempfile.mkdtemp(prefix="trickopt-bench-"))
    run_env = {**os.environ, "TRICKOPT_PHASES": str(folder / "phases.json")}
    run_env.pop("MLFLOW_TRACKING_URI", None)
    run_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO),
                                                          run_env.get("PYTHONPATH")]))
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=folder, env=run_env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime
    phases_file = folder / "phases.json"
    phases = json.loads(phases_file.read_text()) if phases_file.exists() else {}
    shutil.rmtree(folder, ignore_errors=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise SystemExit(f"{' '.join(argv)}: exit code {done.returncode}\n{tail}")
    return Run(wall, done.stdout, phases, cpu)


def study_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trickopt.study", *args]


def parse_summary(stdout: str) -> dict:
    """Trial states, best value and epochs from trickopt's closing summary."""
    out: dict = {}
    if match := re.search(r"^trials: (.*)$", stdout, re.M):
        out.update((state, int(n)) for n, state in re.findall(r"(\d+) (\w+)", match[1]))
    if match := re.search(r"^best \w+: (\S+) \(trial", stdout, re.M):
        out["best_value"] = float(match[1])
    if match := re.search(r"^epochs trained: (\d+)", stdout, re.M):
        out["epochs"] = int(match[1])
    return out


def ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return [x / y for x, y in zip(a, b)]


def med(values: Sequence[float], fmt: str = "{:.3f}") -> str:
    """'median (min–max)' of the finite values; 'n/a' where there are none."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "n/a"
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{fmt.format(mid)} ({fmt.format(low)}–{fmt.format(high)})"


def ms_per_epoch(variants: dict[str, Callable[[Any, int], object]], template: Any, *,
                 epochs: int, repeats: int) -> dict[str, list[float]]:
    """Each variant trains a fresh copy of `template` for `epochs` epochs, interleaved after a
    one-epoch warm-up call each; ms per epoch. A variant must end on a host sync."""
    def timed(name: str, n: int) -> Callable[[], float]:
        def call() -> float:
            model = copy.deepcopy(template)
            started = time.perf_counter()
            variants[name](model, n)
            return 1e3 * (time.perf_counter() - started) / n
        return call

    interleave({name: timed(name, 1) for name in variants}, 1)
    return interleave({name: timed(name, epochs) for name in variants}, repeats)


def without_tricks(train: Any, *, epochs: int, device: str, bf16: bool = False) -> Any:
    """A copy of a TrainConfig training with Adam (lr 1e-3), batch 128 and nothing else."""
    train = copy.deepcopy(train)
    train.max_epochs, train.batch_size, train.lr, train.optimizer = epochs, 128, 1e-3, "adam"
    train.stopper, train.stopper_params = "none", {}
    train.schedule, train.schedule_params = "constant", {}
    train.l1 = train.l2 = 0.0
    train.device, train.bf16 = device, bf16
    return train


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]], *, left: int = 1) -> None:
    """A markdown table: the first `left` columns left-aligned (labels), the rest right."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * left + "---:|" * (len(header) - left))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    print()


def states(summary: dict) -> str:
    return ", ".join(f"{summary[k]} {k}" for k in ("complete", "pruned", "fail") if k in summary)


def trials_table(runs: dict[str, list[Run]]) -> None:
    """What each side trained; values joined by / where the repetitions differ."""
    def cell(side: list[Run], get: Callable[[dict], object]) -> str:
        return " / ".join(sorted({str(get(r.summary)) for r in side}))

    print_table(["side", "trials", "epochs trained", "best value"],
                [[name, cell(side, states), cell(side, lambda s: s.get("epochs")),
                  cell(side, lambda s: s.get("best_value"))] for name, side in runs.items()],
                left=2)


STUDY_PHASES = ("load_data", "open_study", "optimize", "importances", "refit",
                "parent_summary", "tracking_close")


def phase_table(runs: dict[str, list[Run]]) -> None:
    """Seconds per phase for each side, median (min–max). Phases no run recorded are left
    out; start-up is until the first phase, shutdown after `main_end`."""
    names = [p for p in STUDY_PHASES if any(p in r.phases for v in runs.values() for r in v)]

    def start_up(r: Run) -> float:
        return min((spans[0][0] for spans in r.phases.values()), default=math.nan)

    def shutdown(r: Run) -> float:
        return r.wall - r.phases["main_end"][0][0] if "main_end" in r.phases else math.nan

    def rest(r: Run) -> float:
        parts = [start_up(r), shutdown(r), *(r.phase(n) for n in names)]
        return r.wall - sum(x for x in parts if math.isfinite(x))

    rows = {"start-up": start_up, **{n: (lambda r, n=n: r.phase(n)) for n in names},
            "shutdown": shutdown, "the rest": rest, "whole command": lambda r: r.wall}
    print_table(["phase, s", *runs], [[label, *(med([fn(r) for r in v], "{:.2f}")
                                                for v in runs.values())]
                                      for label, fn in rows.items()])


def compare_commands(sides: dict[str, list[str]], repeats: int) -> dict[str, list[Run]]:
    """Run whole commands interleaved; print each side's seconds and its ratios to the first
    side (whole command and optimize phase), then the phases and what each side trained."""
    runs = interleave({name: lambda argv=argv: run_command(argv)
                       for name, argv in sides.items()}, repeats)
    first, reference = next(iter(runs.items()))

    def cells(side: list[Run], get: Callable[[Run], float], fmt: str) -> list[str]:
        values = [get(r) for r in side]
        return [med(values, fmt), med(ratios(values, [get(r) for r in reference]))]

    print_table(["side", "whole s", f"whole / {first}", "optimize s", f"optimize / {first}"],
                [[name, *cells(side, lambda r: r.wall, "{:.1f}"),
                  *cells(side, lambda r: r.phase("optimize"), "{:.2f}")]
                 for name, side in runs.items()])
    phase_table(runs)
    trials_table(runs)
    return runs


def throughput_table(runs: dict[str, list[Run]], n_trials: int, label: str) -> None:
    """Trials and epochs per hour of each side's optimize phase (and trials per hour of the
    whole command), with ratios to the first side, per repetition; and the CPU seconds of
    each command, its spawned processes included."""
    def rates(side: list[Run]) -> tuple[list[float], ...]:
        return ([n_trials / r.phase("optimize") * 3600 for r in side],
                [r.summary.get("epochs", math.nan) / r.phase("optimize") * 3600 for r in side],
                [n_trials / r.wall * 3600 for r in side])

    base = rates(next(iter(runs.values())))
    rows = []
    for name, side in runs.items():
        trials, epochs, whole = rates(side)
        rows.append([name, med(trials, "{:.0f}"), med(ratios(trials, base[0]), "{:.2f}"),
                     med(ratios(epochs, base[1]), "{:.2f}"), med(ratios(whole, base[2]), "{:.2f}"),
                     med([r.cpu for r in side], "{:.1f}"), states(side[0].summary)])
    print_table([label, "trials/hour (optimize)", "trials/hour vs row 1", "epochs/hour vs row 1",
                 "trials/hour (whole) vs row 1", "CPU s, all processes",
                 "trials (first repetition)"], rows)
