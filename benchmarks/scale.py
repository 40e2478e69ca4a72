"""Trials per hour with 1 and 2 worker processes on PostgreSQL, on this machine.

Question: `python -m trickopt.study --workers K` runs K processes on one study. On a small
CPU machine (2 cores here), does K=2 finish more trials per hour than K=1? trickopt gives each
of K > 1 workers cores // K torch threads (trickopt/study/workers.py: threads_per_worker); with
K=1 the trials run in the calling process with torch's default thread count (one per core).

Both sides run the built-in default study (digits CNN, all tricks, max 30 epochs, TPE,
median pruner, refit train_val) for the same N trials, Optuna storage on a fresh PostgreSQL
database each run (a throwaway server from tests/postgres_server.py, on this machine), MLflow
tracking to a second fresh PostgreSQL database (`--tracking pg`, the default) or off
(`--tracking off`). Order alternates K=1, K=2 / K=2, K=1. Whole commands are timed from
outside; benchmarks/phase_clock.py times the optimize phase inside (for K=2: spawning the
workers, their imports and set-up, and all their trials). trials/hour = N / seconds * 3600.
K=2's workers use other sampler seeds (seed + 1000 * (i + 1), see workers._for_worker), so the
two sides train different trials: epochs trained per hour is reported beside trials per hour.

Run:
    python benchmarks/scale.py                       # N=24, R=2, tracking to PostgreSQL
    python benchmarks/scale.py --tracking off
    python benchmarks/scale.py --workers 1 2 1t2     # + one worker with 2 torch threads
    python benchmarks/scale.py --quick               # N=2, 3 epochs, R=1, tracking off, CI
Needs PostgreSQL's server binaries (apt-get install postgresql) and psycopg; run as root or
as a user that may start postgres (see tests/postgres_server.py).
"""

from __future__ import annotations

import argparse
import sys

from study_runs import (
    REPO,
    load_average,
    machine_facts,
    med,
    median,
    parse_summary,
    run_command,
    study_command,
    wait_quiet,
)

sys.path.insert(0, str(REPO / "tests"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-trials", type=int, default=24, help="trials per study (24)")
    parser.add_argument("--workers", nargs="+", default=["1", "2"],
                        help="worker counts to compare (1 2); KtT runs K workers with "
                             "--set train.threads=T, e.g. 1t2 (one worker, 2 torch threads)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repetitions (2)")
    parser.add_argument("--tracking", choices=("pg", "off"), default="pg",
                        help="MLflow tracking to a fresh PostgreSQL database (pg) or off")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="passed to every run")
    parser.add_argument("--max-load", type=float, default=None,
                        help="before each run, wait (up to 10 min) for the 1-min load average "
                             "to fall below this")
    parser.add_argument("--quick", action="store_true",
                        help="2 trials of 3 epochs, 1 repetition: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:  # tracking off: MLflow's schema migrations on PostgreSQL take seconds
        args.n_trials, args.repeats, args.tracking = 2, 1, "off"
        args.overrides = ["train.max_epochs=3", *args.overrides]
    try:
        parsed = [_variant(v) for v in args.workers]
    except ValueError:
        parser.error(f"--workers: K or KtT with integers, e.g. 1 2 1t2; got {args.workers}")
    if min(args.n_trials, args.repeats, *(x for kt in parsed for x in kt if x is not None)) < 1:
        parser.error("--n-trials, --repeats and --workers must be >= 1")
    return args


def _variant(label: str) -> tuple[int, int | None]:
    """'2' -> (2, None): trickopt's own thread choice; '1t2' -> (1, 2): train.threads=2."""
    k, _, t = label.partition("t")
    return int(k), (int(t) if t else None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from postgres_server import PostgresServer, binaries

    from trickopt.study.workers import cores_available, threads_per_worker

    bindir = binaries()
    if bindir is None:
        print("| benchmark | result |\n|---|---|\n| scale | skipped: PostgreSQL server "
              "binaries not found (apt-get install postgresql) |")
        return 0
    server = PostgresServer(bindir)
    server.start()
    try:
        return measure(args, server, cores_available(), threads_per_worker)
    finally:
        server.stop()


def measure(args, server, cores: int, threads_per_worker) -> int:
    sets = [x for o in args.overrides for x in ("--set", o)]

    def command(label: str) -> tuple[list[str], str]:
        k, threads = _variant(label)
        storage = server.new_database()
        tracking = (["--tracking-uri", server.new_database()] if args.tracking == "pg"
                    else ["--set", "tracking.enabled=false"])
        fixed = [] if threads is None else ["--set", f"train.threads={threads}"]
        argv = ["--storage", storage, "--workers", str(k), "--n-trials", str(args.n_trials),
                "--no-progress", *tracking, *sets, *fixed]
        shown = " ".join(a if "postgresql://" not in a else "postgresql://…/FRESH_DB"
                         for a in argv)
        return study_command(*argv), shown

    machine_facts("Trials per hour, 1 vs 2 worker processes, PostgreSQL storage", [
        f"`python -m trickopt.study --storage postgresql://…/FRESH_DB --workers K --n-trials "
        f"{args.n_trials} --no-progress "
        + ("--tracking-uri postgresql://…/FRESH_DB2" if args.tracking == "pg"
           else "--set tracking.enabled=false")
        + (" " + " ".join(sets) if sets else "") + "` through benchmarks/phase_clock.py",
        f"PostgreSQL {server.bindir.parent.name} on 127.0.0.1 (tests/postgres_server.py: "
        "fsync off), same machine; a fresh database per run for Optuna"
        + (" and another for MLflow" if args.tracking == "pg" else "; MLflow tracking off"),
        "the built-in default study (digits CNN, all tricks, max 30 epochs, TPE seed 0, "
        "median pruner, refit train_val)",
        f"{args.repeats} repetitions, interleaved, K in {args.workers} (KtT: K workers with "
        "--set train.threads=T)"])
    runs: dict[str, list] = {k: [] for k in args.workers}
    loads = []
    for rep in range(args.repeats):
        order = args.workers if rep % 2 == 0 else list(reversed(args.workers))
        for k in order:
            wait_quiet(args.max_load)
            argv, shown = command(k)
            run = run_command(f"K={k}", argv).check()
            run.summary = parse_summary(run.stdout)
            runs[k].append(run)
            print(f"(rep {rep + 1} K={k}: {run.wall:.1f} s, load {run.load}; {shown})",
                  file=sys.stderr, flush=True)
        loads.append(load_average())

    n = args.n_trials
    print("| K | torch threads per worker | rep | whole s | optimize s | trials/hour "
          "(optimize) | trials/hour (whole) | epochs trained | epochs/hour (optimize) | "
          "trials complete/pruned/failed | load average after rep |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for k in args.workers:
        workers, fixed = _variant(k)
        threads = (fixed if fixed is not None else
                   runs[k][0].info.get("torch_threads_after_optimize") if workers == 1
                   else threads_per_worker(workers))
        for i, r in enumerate(runs[k]):
            s = r.summary
            print(f"| {k} | {threads} | {i + 1} | {r.wall:.1f} | {r.phase('optimize'):.1f} | "
                  f"{n / r.phase('optimize') * 3600:.0f} | {n / r.wall * 3600:.0f} | "
                  f"{s.get('epochs')} | {s.get('epochs', 0) / r.phase('optimize') * 3600:.0f} "
                  f"| {s.get('complete', 0)}/{s.get('pruned', 0)}/{s.get('fail', 0)} | "
                  f"{loads[i]} |")
    base = args.workers[0]
    print(f"\nRatios to K={base}, per repetition (runs of one repetition are adjacent), "
          "median (min–max):\n")
    print(f"| K | trials/hour (optimize) vs K={base} | trials/hour (whole) vs K={base} | "
          f"epochs/hour (optimize) vs K={base} |")
    print("|---:|---:|---:|---:|")
    for k in args.workers:
        opt = [b.phase("optimize") / r.phase("optimize") for r, b in zip(runs[k], runs[base])]
        whole = [b.wall / r.wall for r, b in zip(runs[k], runs[base])]
        epochs = [(r.summary.get("epochs", 0) / r.phase("optimize"))
                  / (b.summary.get("epochs", 0) / b.phase("optimize"))
                  for r, b in zip(runs[k], runs[base])]
        print(f"| {k} | {med(opt, '{:.2f}')} | {med(whole, '{:.2f}')} | "
              f"{med(epochs, '{:.2f}')} |")
    best = {k: median([n / r.phase("optimize") * 3600 for r in runs[k]]) for k in runs}
    print("\nmedian trials/hour (optimize phase): "
          + ", ".join(f"K={k}: {v:.0f}" for k, v in best.items())
          + f"; {cores} usable cores.")
    print(f"Load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
