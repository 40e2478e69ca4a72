"""Regenerate every claim report: `python studies/claims/run_all.py [NAME ...]`.

Each claim study (`studies/claims/*.yaml`, its first line the command for it alone) runs from
nothing in a fresh journal of its own, MLflow off, and writes its report into
`studies/claims/reports/compare-<study>/` (report.md, report.json, isolation.png), replacing
the one committed there. NAME: run only the files of that stem (e.g. dropout_mlp).
Extra `--set KEY=VALUE` pairs go to every study (e.g. a smaller budget to try it out; with
any, the scripts of `SCRIPTS`, claims a comparison cannot express, run at their smallest).
Then `SUMMARY.md` in the reports folder sums the verdicts up in one table, read from every
`report.json` there, and each report gets its file's current `compare.finding` (the
hand-written "what this shows", written once the result is known) without training again
(`--summary-only`: just these two); the README's "What the tricks did" is the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPORTS = HERE / "reports"


SCRIPTS = ("refit_train_val",)  # claims that a comparison study cannot express


def claim_files(names: list[str]) -> list[Path]:
    files = sorted(HERE.glob("*.yaml"))
    unknown = set(names) - {f.stem for f in files} - set(SCRIPTS)
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
    parser.add_argument("--summary-only", action="store_true",
                        help="only write SUMMARY.md from the reports there are")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()  # the studies run in a scratch folder
    files = claim_files(args.names)
    if not args.summary_only:
        code = run(files, out, args.overrides)
        for script in SCRIPTS:
            if not code and (not args.names or script in args.names):
                print(f"== {script}.py", flush=True)
                code = subprocess.run([sys.executable, str(HERE / f"{script}.py"), "--out",
                                       str(out), *(["--seeds", "2", "--max-epochs", "1"]
                                                   if args.overrides else [])]).returncode
        if code:
            return code
    every = claim_files([])  # the summary covers every claim, not only those run now
    for path in every:
        refresh_finding(path, out)
    (out / "SUMMARY.md").write_text(summary(every, out))
    print(f"summary: {out / 'SUMMARY.md'}")
    return 0


def run(files: list[Path], out: Path, overrides: list[str]) -> int:
    for path in files:
        with tempfile.TemporaryDirectory() as scratch:
            command = [sys.executable, "-m", "trickopt.compare", str(path), "--out", str(out),
                       "--storage", str(Path(scratch) / "claim.journal"), "--no-progress",
                       *[f"--set={o}" for o in overrides]]
            print(f"== {path.name}", flush=True)
            started = time.perf_counter()
            done = subprocess.run(command, cwd=scratch)
            print(f"== {path.name}: exit {done.returncode} after "
                  f"{(time.perf_counter() - started) / 60:.1f} min", flush=True)
            if done.returncode != 0:
                return done.returncode
    return 0


def summary(files: list[Path], out: Path) -> str:
    """One row per claim report in `out`: the claim, its task, the verdict, the largest
    difference from the baseline with its CI, the seeds and the cost."""
    rows = ["| claim study | claim | setting | verdict | largest difference from the "
            "baseline [95% CI] | seeds | cost |", "|---|---|---|---|---|---:|---:|"]
    for path in files:
        folder = next(out.glob(f"compare-{_study_name(path)}"), None)
        if folder is None or not (folder / "report.json").exists():
            rows.append(f"| `{path.name}` | (no report yet) | | | | | |")
            continue
        r = json.loads((folder / "report.json").read_text())
        compared = [v for v in r["values"] if v.get("effect")]
        largest = max(compared, key=lambda v: abs(v["effect"]["mean"]), default=None)
        measure = {"zeros": "weights = 0", "small_weights": "|w| < 1e-3"}.get(
            r.get("measure", "test_score"), r["score"].replace("_", " "))
        difference = (f"{largest['label']}: {largest['effect']['mean']:+.4f} "
                      f"[{largest['effect']['low']:+.4f}, {largest['effect']['high']:+.4f}] "
                      f"{measure}" if largest else "-")
        s = r["setting"]
        setting = f"{s.get('data')}, {s.get('model')}, {s.get('max epochs')} epochs"
        link = f"[{path.stem}]({folder.name}/report.md)"
        rows.append(f"| {link} | {r['claim']} | {setting} | **{r['claim_verdict']}** | "
                    f"{difference} | {len(r['seeds'])} | {r['seconds'] / 60:.1f} min |")
    for script in SCRIPTS:
        folder = out / script.replace("_", "-")
        if not (folder / "report.json").exists():
            rows.append(f"| `{script}.py` | (no report yet) | | | | | |")
            continue
        r = json.loads((folder / "report.json").read_text())
        e = r["effects"]["own"]
        rows.append(f"| [{script}]({folder.name}/report.md) | {r['claim']} | "
                    f"{'; '.join(r['setting'])} | **{r['claim_verdict']}** | "
                    f"train+val against the trial's own model: {e['mean']:+.4f} "
                    f"[{e['low']:+.4f}, {e['high']:+.4f}] test accuracy | {len(r['seeds'])} | "
                    f"{r['seconds'] / 60:.1f} min |")
    return ("# What the tricks did\n\nGenerated by `python studies/claims/run_all.py` from the "
            "reports in this folder; each row links its report (tables, plot, setting, "
            "cost).\n\n" + "\n".join(rows) + "\n")


def refresh_finding(path: Path, out: Path) -> None:
    """Put the file's `compare.finding` into its report (report.md and report.json), where
    the comparison writes it, replacing the one there."""
    folder = out / f"compare-{_study_name(path)}"
    if not (folder / "report.json").exists():
        return
    finding = (_read(path)["compare"].get("finding") or "").strip()
    data = json.loads((folder / "report.json").read_text())
    data["finding"] = finding
    (folder / "report.json").write_text(json.dumps(data, indent=2))
    text = (folder / "report.md").read_text()
    head, table = text.split("```\n", 1)  # the paragraph goes just before the table
    paragraphs = [p for p in head.split("\n\n") if p and not p.startswith(FINDING)]
    if finding:
        paragraphs.append(f"{FINDING} {finding}")
    (folder / "report.md").write_text("\n\n".join(paragraphs) + "\n\n```\n" + table)


FINDING = "**What this shows** (written by hand, after the run):"  # as the report writes it


def _read(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def _study_name(path: Path) -> str:
    return _read(path)["study"]["name"]


if __name__ == "__main__":
    raise SystemExit(main())
