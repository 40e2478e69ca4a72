"""The trick-effect report's plots, as PNG files: a forest plot of the paired differences, the
per-seed pairs behind them, and the isolation plot of the study's trials.

The functions take plain data (tuples, dicts, the `ValueRow`s of `trials.py`), not the
`Report`, so they can be drawn from a saved `report.json` too. Each `*_figure` builds a
matplotlib Figure that a test can inspect; each `draw_*` builds it and writes it to `path`.
matplotlib is imported inside the functions: importing this module does not pay for it.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from trickopt.effects.trials import ValueRow

# A markdown page shows an 8-inch figure at 100 dpi (800 px) without scaling it down.
WIDTH, DPI = 8.0, 100
PAIRED_COLUMNS = 4  # panels per row: 8 arms fit in two rows of 2-inch panels
KNOB_COLUMNS = 3  # knob values need more width than a pair of seeds
PANEL_CHARS = 24  # tick-label characters that fit side by side under one of 3 knob panels
NAME_CHARS = 22  # wrap arm and knob names longer than this: labels then stay apart

# Okabe-Ito colours, told apart by colour-blind readers too.
HELPS, HURTS, INCONCLUSIVE = "#009E73", "#D55E00", "#0072B2"
NEUTRAL = "#8C8C8C"  # negligible verdicts, tied seeds, values not tested
TESTED = "#222222"

ForestRow = tuple[str, float, float, float, str]  # arm, mean, CI low, CI high, verdict


def draw_forest(rows: Sequence[ForestRow], *, score_label: str, delta: float,
                confidence: float, path: str | Path) -> Path:
    """Write the forest plot of `forest_figure` to `path` (PNG) and return the path.

    Example:
        >>> draw_forest([("no dropout", 0.004, 0.001, 0.007, "helps")],
        ...             score_label="test_accuracy", delta=0.002, confidence=0.95,
        ...             path="forest.png")
        PosixPath('forest.png')
    """
    figure = forest_figure(rows, score_label=score_label, delta=delta, confidence=confidence)
    return _save(figure, path)


def forest_figure(rows: Sequence[ForestRow], *, score_label: str, delta: float,
                  confidence: float) -> Figure:
    """One row per arm, top to bottom in the given order: its confidence interval of the
    mean difference best - arm (> 0: the trick helps) as a bar, the mean as a point, and
    the verdict at the right; a line at 0 and a shaded band for the negligible zone +/- delta.
    `confidence` is the level the intervals were computed at (`stats.CONFIDENCE`): passed
    in, so that drawing does not import scipy.
    """
    errors = [f"arm {name!r}: the interval must hold the mean; got {low} <= {mean} <= {high}"
              for name, mean, low, high, _ in rows if not low <= mean <= high]
    if not rows:
        errors.append("a forest plot needs at least one arm; got no rows")
    if errors:
        raise ValueError("; ".join(errors))
    names, means, lows, highs, verdicts = zip(*rows)
    colours = [_verdict_colour(v) for v in verdicts]
    ys = list(range(len(rows)))
    figure = _new_figure(height=max(3.0, 1.5 + 0.5 * len(rows)))
    ax = figure.add_subplot()
    if delta > 0:
        ax.axvspan(-delta, delta, color="0.9", zorder=0)
    ax.axvline(0, color="black", linewidth=1, zorder=2)  # above the grid (zorder 1.5)
    ax.hlines(ys, lows, highs, colors=colours, linewidth=2.5, zorder=3)
    ax.scatter(means, ys, c=colours, s=45, zorder=4)
    ax.set_yticks(ys, [_wrap(name) for name in names])
    ax.set_ylim(len(rows) - 0.5, -0.5)  # the first row on top, as in the report's table
    right = ax.secondary_yaxis("right")
    right.set_yticks(ys, [_wrap(v, 24) for v in verdicts])
    right.tick_params(length=0)
    for label, colour in zip(right.get_yticklabels(), colours):
        label.set_color(colour)
    ax.set_xlabel(f"best - arm, {score_label} ({confidence:.0%} paired bootstrap CI)\n"
                  f"> 0: the trick helps; shaded: negligible, within +/- {delta:.3g}")
    ax.grid(axis="x", color="0.85", linewidth=0.5)
    return figure


def draw_paired(best_by_seed: Mapping[int, float], arms: Mapping[str, Mapping[int, float]], *,
                score_label: str, path: str | Path) -> Path:
    """Write the per-seed pairs of `paired_figure` to `path` (PNG) and return the path.

    Example:
        >>> draw_paired({1: 0.97, 2: 0.96}, {"no dropout": {1: 0.95, 2: 0.96}},
        ...             score_label="test_accuracy", path="paired.png")
        PosixPath('paired.png')
    """
    return _save(paired_figure(best_by_seed, arms, score_label=score_label), path)


def paired_figure(best_by_seed: Mapping[int, float], arms: Mapping[str, Mapping[int, float]],
                  *, score_label: str) -> Figure:
    """One panel per arm: for each seed both ran, the best's score and the arm's joined by a
    line, coloured by which of the two is higher. Seeds that only one of them ran (racing
    adds seeds to open arms only) have no pair and are left out."""
    if not arms:
        raise ValueError("a paired plot needs at least one arm; got none")
    columns = min(len(arms), PAIRED_COLUMNS)
    grid_rows = math.ceil(len(arms) / columns)
    figure = _new_figure(height=1.4 + 2.8 * grid_rows)
    axes = figure.subplots(grid_rows, columns, sharey=True, squeeze=False)
    for ax, (name, arm_by_seed) in zip(axes.flat, arms.items()):
        _draw_pairs(ax, name, best_by_seed, arm_by_seed)
    for ax in axes.flat[len(arms):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(score_label)
    figure.legend(handles=_legend([("best higher", HELPS, "-"), ("arm higher", HURTS, "-"),
                                   ("equal", NEUTRAL, "-")]),
                  loc="outside upper center", ncols=3, frameon=False)
    return figure


def _draw_pairs(ax: Axes, name: str, best_by_seed: Mapping[int, float],
                arm_by_seed: Mapping[int, float]) -> None:
    from matplotlib.collections import LineCollection

    seeds = sorted(best_by_seed.keys() & arm_by_seed.keys())
    best = [best_by_seed[s] for s in seeds]
    arm = [arm_by_seed[s] for s in seeds]
    colours = [HELPS if b > a else HURTS if b < a else NEUTRAL for b, a in zip(best, arm)]
    ax.add_collection(LineCollection([[(0, b), (1, a)] for b, a in zip(best, arm)],
                                     colors=colours, linewidth=1.2, alpha=0.8))
    ax.scatter([0] * len(seeds) + [1] * len(seeds), best + arm, c=colours * 2, s=16,
               zorder=3)
    ax.set_xticks([0, 1], ["best", "arm"])
    ax.set_xlim(-0.35, 1.35)
    higher = sum(b > a for b, a in zip(best, arm))
    ax.set_title(f"{_wrap(name, 18)}\nbest higher on {higher} of {len(seeds)} seeds",
                 fontsize=9)
    if not seeds:
        ax.text(0.5, 0.5, "no seed in common", transform=ax.transAxes, ha="center",
                color=NEUTRAL)


def draw_isolation(rows: Sequence[ValueRow], *, metric: str,
                   direction: Literal["minimize", "maximize"], path: str | Path) -> Path:
    """Write the isolation plot of `isolation_figure` to `path` (PNG) and return the path.

    Example:
        >>> view = trials_view(study)
        >>> draw_isolation(view.rows, metric="val_loss", direction=view.direction,
        ...                path="isolation.png")
        PosixPath('isolation.png')
    """
    return _save(isolation_figure(rows, metric=metric, direction=direction), path)


def isolation_figure(rows: Sequence[ValueRow], *, metric: str,
                     direction: Literal["minimize", "maximize"]) -> Figure:
    """One panel per knob, in the order of `rows`: per value, the best trial (a point) and the
    median (a dash) of the trials with that value, "n" complete trials under it; values with
    too few complete trials to say anything (`tested` false) in grey. `direction` is the
    study's: it says which way is better on the axis."""
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"direction must be 'minimize' or 'maximize'; got {direction!r}")
    by_knob: dict[str, list[ValueRow]] = {}
    for row in rows:
        by_knob.setdefault(row.knob, []).append(row)
    if not by_knob:
        raise ValueError("an isolation plot needs at least one knob value; got no rows")
    columns = min(len(by_knob), KNOB_COLUMNS)
    grid_rows = math.ceil(len(by_knob) / columns)
    figure = _new_figure(height=1.6 + 2.9 * grid_rows)
    axes = figure.subplots(grid_rows, columns, sharey=True, squeeze=False)
    for ax, (knob, knob_rows) in zip(axes.flat, by_knob.items()):
        _draw_knob(ax, knob, knob_rows, panel_chars=PANEL_CHARS * KNOB_COLUMNS // columns)
    for ax in axes.flat[len(by_knob):]:
        ax.set_visible(False)
    better = "lower" if direction == "minimize" else "higher"
    for row in axes:
        row[0].set_ylabel(f"{metric} ({better} is better)")
    figure.legend(handles=_legend([("best trial", TESTED, "o"), ("median", TESTED, "_"),
                                   ("not tested (< 2 complete)", NEUTRAL, "o")]),
                  loc="outside upper center", ncols=3, frameon=False,
                  title="per value: n complete trials; pruned ones count at their best report",
                  title_fontsize=9)
    return figure


def _draw_knob(ax: Axes, knob: str, rows: list[ValueRow], *, panel_chars: int) -> None:
    for x, row in enumerate(rows):
        colour = TESTED if row.tested else NEUTRAL
        if row.best is not None:
            ax.plot([x], [row.best], "o", color=colour, markersize=7)
        if row.median is not None:
            ax.plot([x], [row.median], "_", color=colour, markersize=18, markeredgewidth=2)
    labels = [f"{row.value} (n={row.complete})" for row in rows]
    ax.set_xticks(range(len(rows)), labels)
    for label, row in zip(ax.get_xticklabels(), rows):
        label.set_color(TESTED if row.tested else NEUTRAL)
    # Labels wider than their share of the panel would run into each other: slant them, and
    # stand them upright where even slanted ones would touch (more than 8 values a panel).
    if max(map(len, labels)) * len(rows) > panel_chars:
        for label in ax.get_xticklabels():
            label.set(rotation=35 if len(rows) <= 8 else 90, horizontalalignment="right",
                      rotation_mode="anchor")
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_title(_wrap(knob, 28), fontsize=10)
    ax.grid(axis="y", color="0.9", linewidth=0.5)


def _new_figure(*, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")
    # Agg, and no pyplot: nothing is registered in pyplot's list of open figures, so nothing
    # is left open there, and the report's process never asks for a display.
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    figure.savefig(path, dpi=DPI)  # not bbox_inches="tight": the size stays as planned
    figure.clear()  # free the artists now rather than at the next collection
    return path


def _legend(entries: list[tuple[str, str, str]]) -> list:
    from matplotlib.lines import Line2D

    handles = []
    for label, colour, marker in entries:
        style = {"linestyle": "-", "marker": None} if marker == "-" else \
            {"linestyle": "none", "marker": marker, "markersize": 10 if marker == "_" else 6,
             "markeredgewidth": 2}
        handles.append(Line2D([], [], color=colour, label=label, **style))
    return handles


def _verdict_colour(verdict: str) -> str:
    kind = verdict.partition(",")[0]  # "inconclusive, about 12 seeds needed"
    return {"helps": HELPS, "hurts": HURTS, "negligible": NEUTRAL}.get(kind, INCONCLUSIVE)


def _wrap(text: str, width: int = NAME_CHARS) -> str:
    return textwrap.fill(text, width)
