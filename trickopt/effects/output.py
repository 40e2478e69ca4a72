"""A report as files: `report.md` (with its plots), `report.json` and the plots as PNG."""

from __future__ import annotations

import math
from pathlib import Path

from trickopt.effects.plots import draw_forest, draw_isolation, draw_paired
from trickopt.effects.replay import draw_replay
from trickopt.effects.report import Report, as_json, as_markdown
from trickopt.effects.stats import CONFIDENCE


def save_report(report: Report, folder: Path) -> dict[str, Path]:
    """Write the report into `folder` (created); returns {file name: path}. Files are
    written whole or not at all (a temporary file renamed), so an interrupted write never
    leaves a half report where a previous one was."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    plots: dict[str, str] = {}
    for title, name, draw in _plots(report):
        path = folder / name
        draw(path)
        files[name], plots[title] = path, name
    for name, text in (("report.md", as_markdown(report, plots)),
                       ("report.json", as_json(report))):
        files[name] = write_whole(folder / name, text)
    return files


def write_whole(path: Path, text: str) -> Path:
    """Write `text` to `path` whole or not at all: a temporary file, renamed."""
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(text)
    partial.replace(path)
    return path


def _plots(report: Report):
    """(title, file name, draw(path)) of each plot the report has data for."""
    score = report.score
    best = report.arms[0]
    compared = [a for a in report.arms[1:] if a.effect is not None]
    if compared:
        rows = [(a.arm, a.effect.mean, a.effect.low, a.effect.high, a.verdict)
                for a in compared]
        yield ("Effects: best minus each arm, with 95% CIs", "forest.png",
               lambda path: draw_forest(rows, score_label=score, delta=report.delta,
                                        confidence=CONFIDENCE, path=path))
        sign = -1 if score == "test_rmse" else 1  # drawn as the metric, not negated
        by_seed = {s: sign * v for s, v in zip(best.seeds, best.scores)}
        arms = {a.arm: {s: sign * v for s, v in zip(a.seeds, a.scores)} for a in compared}
        yield ("Per seed: the best and each arm, paired", "paired.png",
               lambda path: draw_paired(by_seed, arms, score_label=score, path=path))
    rows = [r for r in report.trials.rows if r.best is not None and math.isfinite(r.best)]
    if rows:
        yield ("Isolation: the best trial per value of each knob (from the study's trials)",
               "isolation.png",
               lambda path: draw_isolation(rows, metric=report.metric,
                                           direction=report.direction, path=path))
    if report.replay:
        yield ("Early stopping replayed: epochs used against test loss", "replay.png",
               lambda path: draw_replay(report.replay, path))


def as_artifacts(files: dict[str, Path], prefix: str) -> dict[str, str | bytes]:
    """The saved files as the tracking process takes them: {prefix/name: text, or bytes for
    a plot}."""
    return {f"{prefix}/{name}": path.read_bytes() if path.suffix == ".png" else path.read_text()
            for name, path in files.items()}


def publish(report: Report, folder: Path, tracker=None, *, out=None) -> dict[str, Path]:
    """Print the table, save the files into `folder`, and send them (and the arms' mean test
    scores) to the study's MLflow parent run where tracking is on."""
    import sys

    from trickopt.effects.report import format_table

    out = out if out is not None else sys.stdout
    print("\n" + format_table(report), file=out)
    files = save_report(report, folder)
    print(f"\nreport written: {folder}/ ({', '.join(sorted(files))})", file=out)
    if tracker is not None:
        tracker.log_parent(
            metrics={f"report.{a.arm.replace(' ', '_')}.{report.score}":
                     (-1 if report.score == "test_rmse" else 1) * sum(a.scores) / len(a.scores)
                     for a in report.arms if a.scores},
            tags={"report.chosen_trial": report.chosen_trial},
            files=as_artifacts(files, "report"))
        print(f"and to the study's MLflow parent run in {tracker.display_uri} (artifacts "
              "report/; every training is a child run tagged phase=report)", file=out)
    return files
