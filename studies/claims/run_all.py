"""Regenerate every claim report: `python studies/claims/run_all.py [NAME ...]`.

Each claim study (`studies/claims/*.yaml`, its first line the command for it alone) runs from
nothing in a fresh journal of its own, MLflow off, and writes its report into
`studies/claims/reports/compare-<study>/` (report.md, report.json, isolation.png), replacing
the one committed there. NAME: run only the files of that stem (e.g. dropout_mlp).
Extra `--set KEY=VALUE` pairs go to every study (e.g. a smaller budget to try it out).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPORTS = HERE / "reports"


def claim_files(names: list[str]) -> list[Path]:
    files = sorted(HERE.glob("*.yaml"))
    unknown = set(names) - {f.stem for f in files}
    if unknown:
        raise SystemExit(f"error: no claim study named {', '.join(sorted(unknown))}; allowed: "
                         f"{', '.join(f.stem for f in files)}")
    return [f for f in files if not names or f.stem in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME")
    parser.add_argument("--out", default=str(REPORTS), help="where the reports go")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()  # the studies run in a scratch folder
    for path in claim_files(args.names):
        with tempfile.TemporaryDirectory() as scratch:
            command = [sys.executable, "-m", "trickopt.compare", str(path), "--out", str(out),
                       "--storage", str(Path(scratch) / "claim.journal"), "--no-progress",
                       *[f"--set={o}" for o in args.overrides]]
            print(f"== {path.name}", flush=True)
            started = time.perf_counter()
            done = subprocess.run(command, cwd=scratch)
            print(f"== {path.name}: exit {done.returncode} after "
                  f"{(time.perf_counter() - started) / 60:.1f} min", flush=True)
            if done.returncode != 0:
                return done.returncode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
