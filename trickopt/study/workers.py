"""`--workers K`: K processes on one study, on this machine, sharing its cores and GPUs.

Processes, not Optuna's `n_jobs` threads: torch holds the GIL in Python-side code and the
Optuna docs themselves recommend process-based parallelism. Each worker opens the storage and
joins the study by name, exactly as a worker on another machine does; Optuna's storage hands
out the trials.

The command's own process, the coordinator, is worker 0. It has created the study, claimed
the MLflow parent run, imported torch and loaded the data, so it trains from the start, while
the K-1 workers it spawns start up: each is a fresh interpreter that imports torch and Optuna,
then torch's compiler at its first optimizer (about 5 s of CPU on the 2-core machine of
BENCHMARKS.md). Each is handed the coordinator's data splits, so it neither loads them again
nor imports scikit-learn (2 s more), and hands back the weights of its best trial, so that the
refit scores that model instead of training it again. The command's `n_trials` are
`TrialSlots`, one taken before each trial by whichever process is free: together the K run
exactly n_trials, and none idles while another finishes a fixed share it started late.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Iterator
from multiprocessing.connection import wait as wait_for_any
from pathlib import Path

import optuna
import torch

from trickopt.data import Splits
from trickopt.study.signals import Terminated, handle_sigterm
from trickopt.study.trials import for_worker, open_study, optimize_here, start_tracking

JOIN_SECONDS = 30  # what a stopped worker gets to close its trial and runs


def cores_available() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Torch threads per worker: the cores but one, split evenly. The core left over serves
    the MLflow tracking process, the storage and the OS: torch's threads spin while they wait,
    so oversubscribing the cores is ruinous. Measured on 2 cores: two training processes with
    2 threads each ran 2.2x slower per epoch than with 1 thread each, and 10 trials of the
    default study took 91 s with 2 threads against 19 s with 1 while another process ran."""
    return max(1, (cores_available() - 1) // workers)


def report_workers() -> int:
    """Training processes for a report or a comparison's re-runs when none is asked for: one
    per GPU where there are GPUs, else one per core. Their trainings are independent (no
    sampler waits on a result), so they fill the machine: on 2 cores, 2 processes took the
    default study's report from 3.2x to 1.8x the study's own wall time (BENCHMARKS.md)."""
    if torch.cuda.is_available():
        return max(1, torch.cuda.device_count())
    return cores_available()


def gpu_for_worker(index: int) -> str | None:
    """With several GPUs, worker i gets GPU i mod n alone; with one or none, no pinning."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return str(index % count) if count > 1 else None


class TrialSlots:
    """The trials of a command that are left once each of its processes has one of its own:
    `take()` claims one before a trial, and is False once all are claimed. A semaphore, so
    spawned processes share it."""

    def __init__(self, n_trials: int):
        self._free = multiprocessing.get_context("spawn").Semaphore(n_trials)

    def take(self) -> bool:
        return self._free.acquire(block=False)


def optimize_share(config, study: optuna.Study, tracker, slots: TrialSlots, *, data,
                   on_trial=None) -> dict[int, dict]:
    """One process's share of a command's trials: one of its own (each process trains, and
    together they run exactly n_trials), then as many as it can take from `slots`."""
    return optimize_here(config, study, tracker, 1, progress=False, data=data,
                         more=slots.take, on_trial=on_trial)


def run_workers(config, n_trials: int, *, on_tick=None,
                here: Callable[[TrialSlots], dict[int, dict]] | None = None,
                data=None) -> dict[int, dict]:
    """Run `n_trials` trials of the study in `config.study.workers` processes (no more than
    n_trials) and return the weights of the best trial each trained, {number: state_dict},
    for the refit.

    `here(slots)` is this process's share, run while the spawned workers work
    (`optimize_share`), returning its best weights; without it this process only waits and
    spawns all K. `data`: the splits, handed to every spawned worker (without them each
    loads its own). `on_tick()` runs each second while the spawned workers work.
    """
    workers = min(config.study.workers, n_trials)
    first = 0 if here is None else 1
    slots = TrialSlots(n_trials - workers)
    with tempfile.TemporaryDirectory(prefix="trickopt-workers-",
                                     ignore_cleanup_errors=True) as folder:
        # Files, not the spawn pipe: the parent's write to it would wait while the child
        # imports torch before reading on.
        data_file = None if data is None else str(Path(folder, "data.pt"))
        if data_file is not None:  # plain tensors and numbers: read back with weights_only
            torch.save({f.name: getattr(data, f.name) for f in dataclasses.fields(data)},
                       data_file)
        files = [str(Path(folder, f"worker-{index}.pt")) for index in range(first, workers)]
        args = [(for_worker(config, index), slots, data_file, gpu_for_worker(index),
                 threads_per_worker(workers), path)
                for index, path in zip(range(first, workers), files)]
        with spawned(worker_main, args) as processes:
            kept = here(slots) if here is not None else {}
            codes = wait(processes, on_tick=on_tick)
        for path, code in zip(files, codes):
            if code == 0 and os.path.exists(path):  # a worker that kept no trial saves none
                kept.update(torch.load(path, weights_only=True))
    return kept


def run_processes(target, args_list: list[tuple], *, on_tick=None,
                  name: str = "trickopt-worker") -> list[int]:
    """Run `target(*args)` in one spawned process per entry of `args_list`, wait for them
    all, return their exit codes: the study's workers and the report's alike. `on_tick()`
    runs each second while they work. Ctrl-C reaches every process by itself; on SIGTERM
    (`Terminated`) each is terminated; either way each gets time to close its trial."""
    with spawned(target, args_list, name=name) as processes:
        return wait(processes, on_tick=on_tick)


@contextlib.contextmanager
def spawned(target, args_list: list[tuple], *,
            name: str = "trickopt-worker") -> Iterator[list[multiprocessing.Process]]:
    """`target(*args)` in one spawned process per entry of `args_list`, for a `with` block
    that ends by waiting for them (`wait`). Should it end by an exception instead, each
    process gets time to close its trial before the exception goes on: Ctrl-C reaches every
    process by itself; on SIGTERM (`Terminated`) or an error each is terminated, which it
    handles as SIGTERM."""
    context = multiprocessing.get_context("spawn")  # fork + torch threads can deadlock
    processes = []
    try:
        for index, args in enumerate(args_list):
            process = context.Process(target=target, name=f"{name}-{index}", args=args)
            process.start()
            processes.append(process)
        yield processes
    except BaseException as exc:
        if not isinstance(exc, KeyboardInterrupt) or isinstance(exc, Terminated):
            for process in processes:
                process.terminate()
        for process in processes:
            process.join(timeout=JOIN_SECONDS)
        raise


def wait(processes: list[multiprocessing.Process], *, on_tick=None) -> list[int]:
    """Wait for every process to end, calling `on_tick()` each second and as each ends;
    return their exit codes."""
    while running := [p.sentinel for p in processes if p.is_alive()]:
        wait_for_any(running, timeout=1.0)
        if on_tick is not None:
            on_tick()
    return [p.exitcode for p in processes]


def worker_main(config, slots: TrialSlots, data_file: str | None, gpu: str | None,
                threads: int, weights_file: str) -> None:
    """One spawned worker: join the study, run its share of the trials on the splits saved
    in `data_file` (or on its own, where None), and save the weights of its best trial to
    `weights_file`."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before CUDA is initialised in this process
    if config.train.threads is None:
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    handle_sigterm()
    study, storage = open_study(config)
    # The coordinator created the parent run (or is creating it): this worker joins it.
    tracker = start_tracking(config, storage, coordinator=False)
    try:
        data = None if data_file is None else Splits(**torch.load(data_file, weights_only=True))
        kept = optimize_share(config, study, tracker, slots, data=data)
        if kept:
            torch.save(kept, weights_file)
    except KeyboardInterrupt:
        pass
    finally:
        if tracker is not None:
            tracker.close()
