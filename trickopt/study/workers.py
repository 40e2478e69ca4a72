"""`--workers K`: K processes on one study, on this machine, sharing its cores and GPUs.

Processes, not Optuna's `n_jobs` threads: torch holds the GIL in Python-side code and the
Optuna docs themselves recommend process-based parallelism. Each worker opens the storage and
joins the study by name, exactly as a worker on another machine does; Optuna's storage hands
out the trials. The command's `n_trials` is split between its K workers (`split_trials`), so
it counts per command, whatever K is. The coordinating process has created the study and
claimed the MLflow parent run, so the workers only train.
"""

from __future__ import annotations

import multiprocessing
import os
import time

import optuna

from trickopt.study.signals import Terminated, handle_sigterm
from trickopt.study.trials import for_worker, open_study, optimize_here, start_tracking


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


def split_trials(n_trials: int, workers: int) -> list[int]:
    """n_trials spread over the workers so that together they run exactly n_trials."""
    return [n_trials // workers + (1 if i < n_trials % workers else 0) for i in range(workers)]


def gpu_for_worker(index: int) -> str | None:
    """With several GPUs, worker i gets GPU i mod n alone; with one or none, no pinning."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return str(index % count) if count > 1 else None


def run_workers(config, n_trials: int, *, on_tick=None) -> list[int]:
    """Start the workers, wait for them, return their exit codes. `on_tick()` runs each second
    while they work (the progress bar)."""
    shares = [n for n in split_trials(n_trials, config.study.workers) if n > 0]
    return run_processes(worker_main, [
        (for_worker(config, index), share, gpu_for_worker(index), threads_per_worker(len(shares)))
        for index, share in enumerate(shares)], on_tick=on_tick)


def run_processes(target, args_list: list[tuple], *, on_tick=None,
                  name: str = "trickopt-worker") -> list[int]:
    """Run `target(*args)` in one spawned process per entry of `args_list`, wait for them
    all, return their exit codes: the study's workers and the report's alike. `on_tick()`
    runs each second while they work. Ctrl-C reaches every process by itself; on SIGTERM
    (`Terminated`) each is terminated; either way each gets time to close its trial."""
    context = multiprocessing.get_context("spawn")  # fork + torch threads can deadlock
    processes = []
    for index, args in enumerate(args_list):
        process = context.Process(target=target, name=f"{name}-{index}", args=args)
        process.start()
        processes.append(process)
    try:
        while any(p.is_alive() for p in processes):
            time.sleep(1.0)
            if on_tick is not None:
                on_tick()
    except KeyboardInterrupt as interrupt:
        for process in processes:
            if isinstance(interrupt, Terminated):  # Ctrl-C reaches every worker; SIGTERM not
                process.terminate()
        for process in processes:  # give each worker time to close its trial and runs
            process.join(timeout=30)
        raise
    return [p.exitcode for p in processes]


def worker_main(config, n_trials: int, gpu: str | None, threads: int) -> None:
    """One worker process: join the study and run `n_trials` trials."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before CUDA is initialised in this process
    import torch

    if config.train.threads is None:
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    handle_sigterm()
    study, storage = open_study(config)
    # The coordinator created the parent run (or is creating it): this worker joins it.
    tracker = start_tracking(config, storage, coordinator=False)
    try:
        optimize_here(config, study, tracker, n_trials, progress=False)
    except KeyboardInterrupt:
        pass
    finally:
        if tracker is not None:
            tracker.close()
