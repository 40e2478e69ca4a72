"""Report cost: the trick-effect report's wall time against the study's own.

Each repetition runs, in one fresh folder, the built-in default study (the 1-D CNN on
MNIST-1D), `python -m trickopt.study --seed r`, then its report, `python -m trickopt.report
--seeds S` (racing on unless `--no-racing`), both timed from outside as whole commands, and
reads what the report did from its report.json: trainings, epochs and the arms' seeds. The
ratio report / study is per repetition. Tracking off on both sides (the tracking overhead is
benchmarks/tracking_overhead.py's question).

Run:
    python benchmarks/report_cost.py --repeats 2        # the recorded figure: 6 seeds, racing
    python benchmarks/report_cost.py --report-workers 2 # the report's trainings in 2 processes
    python benchmarks/report_cost.py --quick            # 2 trials of 2 epochs, 2 seeds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, machine_facts, med, print_table


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="study + report pairs (1)")
    parser.add_argument("--seeds", type=int, default=6, help="the report's --seeds (6)")
    parser.add_argument("--no-racing", action="store_true", help="the report's --no-racing")
    parser.add_argument("--report-workers", type=int, default=1,
                        help="the report's --workers (1)")
    parser.add_argument("--quick", action="store_true",
                        help="2 trials of 2 epochs, 2 seeds, no racing: the script's own test")
    args = parser.parse_args()
    if min(args.repeats, args.report_workers) < 1 or args.seeds < 2:
        parser.error(f"--repeats and --report-workers must be >= 1, --seeds >= 2; got "
                     f"{args.repeats}, {args.report_workers}, {args.seeds}")
    return args


def timed(argv: list[str], folder: Path) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise SystemExit(f"{' '.join(argv)}: exit code {done.returncode}\n{tail}")
    return seconds, done.stdout


def one_pair(args: argparse.Namespace, seed: int) -> dict:
    """The study, then its report, in a fresh folder; what each cost."""
    common = ["--set", "tracking.enabled=false", "--no-progress"]
    if args.quick:
        common += ["--set", "train.max_epochs=2"]
    folder = Path(tempfile.mkdtemp(prefix="trickopt-report-cost-"))
    try:
        study_s, _ = timed([sys.executable, "-m", "trickopt.study", "--seed", str(seed),
                            *(["--n-trials", "2"] if args.quick else []), *common], folder)
        report_s, _ = timed([sys.executable, "-m", "trickopt.report", "--seeds",
                             str(args.seeds), "--workers", str(args.report_workers),
                             "--out", str(folder),
                             *(["--no-racing", "--top-k", "1"] if args.quick else []),
                             *(["--no-racing"] if args.no_racing and not args.quick else []),
                             *common], folder)
        found = list(folder.glob("report-*/report.json"))
        if not found:
            raise SystemExit(f"no report.json under {folder}")
        report = json.loads(found[0].read_text())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    arms = report["arms"]
    epochs = sum(a["epochs"] * len(a["seeds"]) for a in arms)  # "epochs": the arm's mean
    return {"study": study_s, "report": report_s, "trainings": report["trainings"],
            "arms": len(arms), "seeds": "/".join(str(len(a["seeds"])) for a in arms),
            "epochs": epochs}


def main() -> None:
    args = parse_args()
    if args.quick:
        args.repeats, args.seeds = 1, 2
    machine_facts("Report cost: the trick-effect report against the study's own wall time", [
        "`python -m trickopt.study --seed r` (the default study"
        + (", 2 trials of 2 epochs" if args.quick else "") + "), then `python -m "
        f"trickopt.report --seeds {args.seeds} --workers {args.report_workers}"
        + (" --no-racing" if args.no_racing or args.quick else "") + "`, tracking off, "
        "in one fresh folder per repetition",
        f"{args.repeats} repetitions (sampler seed r = 0, 1, ...)"])
    rows, ratio = [], []
    for rep in range(args.repeats):
        pair = one_pair(args, rep)
        ratio.append(pair["report"] / pair["study"])
        rows.append([rep, f"{pair['study']:.0f}", f"{pair['report']:.0f}", f"{ratio[-1]:.2f}",
                     pair["trainings"], pair["seeds"], f"{pair['epochs']:.0f}"])
        print(f"(repetition {rep + 1} of {args.repeats} done; load "
              f"{', '.join(f'{v:.2f}' for v in os.getloadavg())})", file=sys.stderr, flush=True)
    print_table(["sampler seed", "study s", "report s", "report / study", "trainings",
                 "seeds per arm (best first)", "epochs of the arms' trainings"], rows)
    print(f"\nreport / study, median (min-max): {med(ratio, '{:.2f}')}")


if __name__ == "__main__":
    main()
