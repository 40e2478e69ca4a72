"""Scale: trials per hour with K worker processes on one machine, on PostgreSQL.

Each side runs studies/digits.yaml for N trials, `python -m trickopt.study --workers K`,
Optuna on a fresh PostgreSQL database each run and MLflow on another (`--tracking pg`) or off.
The server is a throwaway one on loopback from Debian's binaries. K > 1 workers use other
sampler seeds (different trials), so epochs per hour is shown beside trials per hour, both
over the optimize phase; ratios are to the first K, per repetition.

Run:
    python benchmarks/scale.py --workers 1 2 1t2   # KtT: K workers, --set train.threads=T
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
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from common import (
    DIGITS_STUDY,
    interleave,
    machine_facts,
    print_table,
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
    parser.add_argument("--tracking", choices=("pg", "off"), default="pg",
                        help="MLflow on a fresh PostgreSQL database (pg) or off")
    parser.add_argument("--quick", action="store_true", help="2 trials of 1 epoch, R=1")
    args = parser.parse_args()
    if args.quick:  # tracking off: MLflow's migrations on PostgreSQL take seconds
        args.n_trials, args.repeats, args.tracking = 2, 1, "off"
    bad = [w for w in args.workers if not all(p.isdigit() and int(p) > 0
                                              for p in w.split("t", 1))]
    if bad or min(args.n_trials, args.repeats) < 1:
        parser.error(f"--workers must be K or KtT, --n-trials and --repeats >= 1; got "
                     f"{args.workers}, {args.n_trials}, {args.repeats}")
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


def main() -> None:
    args = parse_args()
    with postgres() as new_database:
        if new_database is None:
            print_table(["benchmark", "result"], [["scale", "skipped: no PostgreSQL server "
                                                   "binaries (apt-get install postgresql)"]])
            return

        def side(label: str) -> Callable[[], object]:
            k, _, threads = label.partition("t")
            extra = ["--set", f"train.threads={threads}"] if threads else []
            extra += ["--set", "train.max_epochs=1"] if args.quick else []
            return lambda: run_command(study_command(
                str(DIGITS_STUDY), "--storage", new_database(), "--workers", k,
                "--n-trials", str(args.n_trials),
                "--no-progress", *extra, *(["--tracking-uri", new_database()]
                                           if args.tracking == "pg" else
                                           ["--set", "tracking.enabled=false"])))

        machine_facts("Scale: trials per hour with K workers, PostgreSQL storage", [
            f"`python -m trickopt.study --storage postgresql://…/FRESH --workers K --n-trials "
            f"{args.n_trials} --no-progress`, MLflow "
            + ("on another fresh database" if args.tracking == "pg" else "off"),
            f"K in {' '.join(args.workers)}; {args.repeats} repetitions, interleaved"])
        runs = interleave({label: side(label) for label in args.workers}, args.repeats)
    throughput_table({f"K={label.partition('t')[0]} ({threads(label)} torch threads each)": v
                      for label, v in runs.items()}, args.n_trials, "workers")

if __name__ == "__main__":
    main()
