"""Run `python -m trickopt.study ...` unchanged, and record when each phase of it starts and ends.

Used by the study-level benchmarks (idiomatic.py, tracking_overhead.py, scale.py) in place of
`python -m trickopt.study`, so that one run gives both the whole command's wall time (measured
outside, by the caller) and its phases. Nothing in trickopt is changed: the wrapper replaces a
few module attributes by timed pass-throughs before the CLI runs, then runs the CLI module as
`__main__`, exactly like `python -m`. The cost is a handful of `perf_counter` calls per run.

Phases written to the JSON file named by $TRICKOPT_PHASES (seconds since this process's
interpreter started, from /proc/self/stat, so that imports are counted):

* ``load_data``, ``open_study``, ``open_tracker``: set-up;
* ``optimize``: `optimize_here` (one worker, in this process) or `_optimize_in_workers` (K > 1
  spawned workers, their start-up included);
* ``importances``, ``refit`` (the best trial's replay on test + the train+val refit and its
  MLflow child run), ``parent_summary`` (parent metrics and study file, sent to the tracking
  process, which has been drawing the plots since before the refit), ``end_parent``;
* ``tracking_close``: waiting for the tracking process to write everything and exit;
* ``main_end``: when the CLI's `main` returned (interpreter shutdown follows).

Beside the phases, ``info`` records torch's intra-op thread count in this process when the
optimize phase started and when it ended (a one-worker study trains here, and `fit` applies
train.threads when set; K > 1 workers set their own).

Run:
    TRICKOPT_PHASES=phases.json python benchmarks/phase_clock.py [STUDY.yaml] [options]
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import json
import os
import runpy
import sys
import time


def _process_start_offset() -> float:
    """Seconds between this process's start (exec) and now, on the monotonic clock."""
    try:
        with open("/proc/self/stat") as handle:
            start_ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


_T0 = time.perf_counter() - _process_start_offset()
PHASES: dict[str, list[list[float]]] = {}
INFO: dict[str, object] = {}


def _now() -> float:
    return time.perf_counter() - _T0


def _timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if name == "optimize":
            import torch
            INFO.setdefault("torch_threads_at_optimize", torch.get_num_threads())
        started = _now()
        try:
            return fn(*args, **kwargs)
        finally:
            PHASES.setdefault(name, []).append([started, _now()])
            if name == "optimize":  # after train.threads, if set, took effect in fit
                import torch
                INFO["torch_threads_after_optimize"] = torch.get_num_threads()
    return wrapper


def _patch_runner(runner) -> None:
    for name, attr in (("load_data", "load_data"), ("open_study", "open_study"),
                       ("open_tracker", "open_tracker"), ("optimize", "optimize_here"),
                       ("optimize", "_optimize_in_workers"), ("importances", "_importances"),
                       ("refit", "_refit")):
        setattr(runner, attr, _timed(name, getattr(runner, attr)))
    PHASES["imports_done"] = [[0.0, _now()]]  # trickopt.study.runner (torch, optuna) imported


def _patch_report(report) -> None:
    report.log_parent_summary = _timed("parent_summary", report.log_parent_summary)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Patches a module right after the CLI imports it: importing trickopt.study.runner here
    first would import torch before the CLI starts its tracking process, and change the very
    timeline this wrapper measures."""

    PATCHES = {"trickopt.study.runner": _patch_runner, "trickopt.study.report": _patch_report}

    def find_spec(self, name, path, target=None):
        if name not in self.PATCHES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            self.PATCHES[name](module)

        spec.loader.exec_module = exec_module
        return spec


def _install() -> None:
    from trickopt.tracking import StudyTracker  # light: no torch, no mlflow

    StudyTracker.end_parent = _timed("end_parent", StudyTracker.end_parent)
    StudyTracker.close = _timed("tracking_close", StudyTracker.close)
    sys.meta_path.insert(0, _AfterImport())


def main() -> None:
    out = os.environ.get("TRICKOPT_PHASES")
    PHASES["imports_done"] = [[0.0, 0.0]]
    _install()
    sys.argv = ["python -m trickopt.study", *sys.argv[1:]]
    code = 0
    try:
        runpy.run_module("trickopt.study", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        PHASES["main_end"] = [[_now(), _now()]]
        if out:
            with open(out, "w") as handle:
                json.dump({"phases": PHASES, "info": INFO}, handle)
    sys.exit(code)


if __name__ == "__main__":
    main()
