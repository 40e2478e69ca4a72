"""Scale: trials per hour with K worker processes on one machine, and the machine's ceiling.

Each side runs a study for N trials, `python -m trickopt.study --workers K`, in a fresh folder:
Optuna on a fresh PostgreSQL database (`--storage pg`: a throwaway server on loopback from
Debian's binaries) or on the default journal file in that folder (`--storage journal`), MLflow
on another fresh database (`--tracking pg`) or off. The study is studies/digits.yaml (the
recorded figures) or the built-in default (`--study default`: the 1-D CNN on MNIST-1D).
`--plain` trains every trial to max_epochs (no stopper, no pruner); `--vary-seed` gives every
side of repetition r the sampler seed r (with one seed for all, whichever side drew the
cheaper tricks would win every repetition). K > 1 workers use other sampler seeds (other
trials), so epochs per hour is shown beside trials per hour, both over the optimize phase;
ratios are to the first K, per repetition. The phase table shows where each side's time went.

The ceiling (`--ceiling`): seconds per epoch of one plain training process (the default
study's CNN on MNIST-1D, batch norm, Adam, batch 128, one torch thread) alone, and of two
identical ones at the same time. 2 x alone / together is the most that two processes can train
per hour against one on this machine, whatever the study around them does.

Run:
    python benchmarks/scale.py --workers 1 2 1t2   # KtT: K workers, --set train.threads=T
    python benchmarks/scale.py --study default --storage journal --tracking off --plain \\
        --n-trials 24 --max-epochs 12 --vary-seed --repeats 5 --ceiling
    python benchmarks/scale.py --quick             # 2 trials of 1 epoch, tracking off
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from common import (
    DIGITS_STUDY,
    interleave,
    machine_facts,
    med,
    phase_table,
    print_table,
    ratios,
    run_command,
    study_command,
    throughput_table,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-trials", type=int, default=24, help="trials per study (24)")
    parser.add_argument("--workers", nargs="+", default=["1", "2"],
                        help="K or KtT (K workers with train.threads=T); default 1 2")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repetitions (2)")
    parser.add_argument("--study", choices=("digits", "default"), default="digits",
                        help="studies/digits.yaml (digits) or the built-in default study")
    parser.add_argument("--storage", choices=("pg", "journal"), default="pg",
                        help="Optuna on a fresh PostgreSQL database (pg) or a journal file")
    parser.add_argument("--tracking", choices=("pg", "off"), default="pg",
                        help="MLflow on a fresh PostgreSQL database (pg) or off")
    parser.add_argument("--max-epochs", type=int, help="train.max_epochs (the study's)")
    parser.add_argument("--plain", action="store_true",
                        help="no stopper, no pruner: every trial trains max_epochs")
    parser.add_argument("--vary-seed", action="store_true",
                        help="sampler seed r in repetition r, on every side")
    parser.add_argument("--ceiling", action="store_true",
                        help="also time one training process alone and two at once")
    parser.add_argument("--ceiling-epochs", type=int, default=8,
                        help="epochs per training process of the ceiling (8)")
    parser.add_argument("--one-training", type=int, metavar="EPOCHS", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true",
                        help="2 trials of 1 epoch, R=1, tracking off; a 1-epoch ceiling")
    args = parser.parse_args()
    if args.quick:  # tracking off: MLflow's migrations on PostgreSQL take seconds
        args.n_trials, args.repeats, args.tracking, args.max_epochs = 2, 1, "off", 1
        args.ceiling, args.ceiling_epochs = True, 1
    bad = [w for w in args.workers if not all(p.isdigit() and int(p) > 0
                                              for p in w.split("t", 1))]
    if bad or min(args.n_trials, args.repeats, args.ceiling_epochs, args.max_epochs or 1) < 1:
        parser.error(f"--workers must be K or KtT, --n-trials, --repeats, --max-epochs and "
                     f"--ceiling-epochs >= 1; got {args.workers}, {args.n_trials}, "
                     f"{args.repeats}, {args.max_epochs}, {args.ceiling_epochs}")
    return args


@contextlib.contextmanager
def postgres() -> Iterator[Callable[[], str] | None]:
    """A throwaway server on loopback (trust auth, fsync off); yields a function that creates
    a fresh database and returns its URL, or None where the binaries are missing."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        yield None
        return
    bindir, root = Path(found[-1]).parent, Path(tempfile.mkdtemp(prefix="trickopt-pg-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:  # initdb refuses to run as root
        shutil.chown(root, "postgres", "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    names = itertools.count()

    def run(tool: str, *args: str) -> None:
        subprocess.run([*as_postgres, str(bindir / tool), *args], check=True,
                       capture_output=True, timeout=120)

    def new_database() -> str:
        name = f"bench_{next(names)}"
        run("createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{port}/{name}"

    run("initdb", "-D", f"{root}/data", "-U", "postgres", "-A", "trust", "--no-sync")
    run("pg_ctl", "-D", f"{root}/data", "-l", f"{root}/log", "-w", "start", "-o",
        f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off -c max_connections=200")
    try:
        yield new_database
    finally:
        run("pg_ctl", "-D", f"{root}/data", "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def threads(label: str) -> str:
    """KtT: T; K: what trickopt gives each of K workers when train.threads is unset."""
    from trickopt.study.workers import threads_per_worker

    k, _, t = label.partition("t")
    return t or str(threads_per_worker(int(k)))


def one_training(epochs: int) -> None:
    """The ceiling's training process: print its seconds per epoch over `epochs` epochs,
    after a warm-up epoch that pays torch's one-time set-up. (Imported here: the process
    that times the commands never trains.)"""
    import dataclasses

    import torch
    from common import without_tricks

    from trickopt.config import RunConfig
    from trickopt.data import load_data
    from trickopt.models import cnn1d
    from trickopt.train import fit
    from trickopt.tricks import Tricks

    torch.set_num_threads(1)
    config = RunConfig()
    config.data.name = "mnist1d"
    splits = load_data(config.data)
    train = without_tricks(config.train, epochs=epochs, device="cpu")
    torch.manual_seed(0)
    model = cnn1d(Tricks(norm="batch", dropout=0.1), splits.input_shape, splits.n_classes,
                  channels=[32, 32, 32], kernel_size=5)
    fit(model, splits, dataclasses.replace(train, max_epochs=1))
    started = time.perf_counter()
    fit(model, splits, train)
    print(f"{(time.perf_counter() - started) / epochs:.6f}")


def trainings_at_once(count: int, epochs: int) -> float:
    """Seconds per epoch, averaged over `count` training processes started together."""
    processes = [subprocess.Popen([sys.executable, __file__, "--one-training", str(epochs)],
                                  stdout=subprocess.PIPE, text=True) for _ in range(count)]
    seconds = [float(p.communicate()[0]) for p in processes]
    if any(p.returncode for p in processes):
        raise SystemExit("a ceiling training process failed")
    return sum(seconds) / count


def ceiling(epochs: int, repeats: int) -> None:
    runs = interleave({"1 alone": lambda: trainings_at_once(1, epochs),
                       "2 at once": lambda: trainings_at_once(2, epochs)}, repeats)
    alone, together = runs["1 alone"], runs["2 at once"]
    print_table(["training processes", "s/epoch, each", "slowdown vs alone",
                 "trainings/hour vs 1 alone"],
                [["1 alone", med(alone), med(ratios(alone, alone)), med(ratios(alone, alone))],
                 ["2 at once", med(together), med(ratios(together, alone)),
                  med([2 * a / t for a, t in zip(alone, together)])]])


def main() -> None:
    args = parse_args()
    if args.one_training:
        one_training(args.one_training)
        return
    with postgres() if args.storage == "pg" or args.tracking == "pg" \
            else contextlib.nullcontext(lambda: "") as new_database:
        if new_database is None:
            print_table(["benchmark", "result"], [["scale", "skipped: no PostgreSQL server "
                                                   "binaries (apt-get install postgresql)"]])
            return
        seeds = {label: itertools.count() for label in args.workers}

        def side(label: str) -> Callable[[], object]:
            k, _, threads = label.partition("t")
            extra = ["--set", f"train.threads={threads}"] if threads else []
            extra += ["--set", f"train.max_epochs={args.max_epochs}"] if args.max_epochs else []
            extra += ["--set", "study.pruner=none", "--set", "search.stopper=none"] \
                if args.plain else []
            study = [str(DIGITS_STUDY)] if args.study == "digits" else []
            return lambda: run_command(study_command(
                *study, "--workers", k, "--n-trials", str(args.n_trials), "--no-progress",
                *extra, *(["--seed", str(next(seeds[label]))] if args.vary_seed else []),
                *(["--storage", new_database()] if args.storage == "pg" else []),
                *(["--tracking-uri", new_database()] if args.tracking == "pg" else
                  ["--set", "tracking.enabled=false"])))

        machine_facts("Scale: trials per hour with K workers", [
            f"`python -m trickopt.study {'studies/digits.yaml ' if args.study == 'digits' else ''}"
            f"--workers K --n-trials {args.n_trials} --no-progress`"
            + (f", train.max_epochs={args.max_epochs}" if args.max_epochs else "")
            + (", no stopper, no pruner" if args.plain else "")
            + (", sampler seed r in repetition r" if args.vary_seed else ""),
            "Optuna on " + ("a fresh PostgreSQL database" if args.storage == "pg" else
                            "a journal file in a fresh folder") + "; MLflow "
            + ("on another fresh database" if args.tracking == "pg" else "off"),
            f"K in {' '.join(args.workers)}; {args.repeats} repetitions, interleaved"])
        runs = interleave({label: side(label) for label in args.workers}, args.repeats)
    throughput_table({f"K={label.partition('t')[0]} ({threads(label)} torch threads each)": v
                      for label, v in runs.items()}, args.n_trials, "workers")
    phase_table({f"K={label}": v for label, v in runs.items()})
    if args.ceiling:
        ceiling(args.ceiling_epochs, args.repeats)


if __name__ == "__main__":
    main()
