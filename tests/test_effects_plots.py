"""The trick-effect report's plots, read back from what matplotlib drew: the bars end at the
given interval ends, only seeds both arms ran are paired, values not tested are grey, the PNG
files have the planned size, and no two labels overlap with 8 long-named arms or 6 knobs."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.colors import to_rgb
from matplotlib.image import imread
from matplotlib.text import Text

from trickopt.effects.plots import (
    draw_forest,
    draw_isolation,
    draw_paired,
    forest_figure,
    isolation_figure,
    paired_figure,
)
from trickopt.effects.trials import ValueRow

# Differences best - arm in test accuracy, as a report on 8 seeds gives them (made up).
FOREST = [("no dropout", 0.004, 0.001, 0.007, "helps"),
          ("no norm", -0.003, -0.006, -0.001, "hurts"),
          ("no schedule", 0.002, -0.003, 0.008, "inconclusive, about 14 seeds needed")]
DELTA = 0.0015
FOREST_OPTIONS = {"score_label": "test_accuracy", "delta": DELTA, "confidence": 0.95}
LONG_ARMS = [(f"no {name}", 0.001 * (i - 3), 0.001 * (i - 5), 0.001 * (i - 1), verdict)
             for i, (name, verdict) in enumerate([
                 ("dropout", "helps"), ("norm", "hurts"), ("regularizer", "negligible"),
                 ("schedule", "inconclusive, about 14 seeds needed"),
                 ("stopper", "inconclusive, about 120 seeds needed"),
                 ("exponential moving average of the weights", "helps"),
                 ("label smoothing with a long descriptive name", "negligible"),
                 ("tricks at all, every one of them switched off", "hurts")])]


def value_row(knob, value, complete, best, median, pruned=0):
    return ValueRow(knob, value, complete + pruned, complete, pruned, best, median, None)


# A val_loss study: "layer" and "constant" have fewer than 2 complete trials (not tested);
# "constant" was only ever pruned, so its best and median are the pruned trials' reports.
TRIALS = [value_row("norm", "none", 1, 0.40, 0.40),
          value_row("norm", "batch", 5, 0.31, 0.52),
          value_row("norm", "layer", 1, 0.35, 0.35, pruned=2),
          value_row("schedule", "constant", 0, 0.62, 0.70, pruned=2),
          value_row("schedule", "cosine_warm_restarts", 4, 0.30, 0.45)]


def test_importing_the_plots_does_not_import_matplotlib():
    code = "import sys, trickopt.effects.plots; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_forest_bars_end_at_the_interval_ends_with_the_mean_marked():
    figure = forest_figure(FOREST, **FOREST_OPTIONS)
    ax = figure.axes[0]
    y_of = {label.get_text(): y for label, y in zip(ax.get_yticklabels(), ax.get_yticks())}
    (bars,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    ends = {segment[0][1]: sorted(segment[:, 0]) for segment in bars.get_segments()}
    means = {y: x for x, y in points.get_offsets()}
    for name, mean, low, high, _ in FOREST:
        assert ends[y_of[name]] == pytest.approx([low, high], abs=1e-12)
        assert means[y_of[name]] == pytest.approx(mean, abs=1e-12)
    # The first arm on top, as in the report's table.
    top, bottom = (ax.transData.transform((0, y_of[FOREST[i][0]]))[1] for i in (0, -1))
    assert top > bottom
    zero_lines = [line for line in ax.lines if set(line.get_xdata()) == {0}]
    assert len(zero_lines) == 1
    (band,) = ax.patches
    assert (band.get_bbox().x0, band.get_bbox().x1) == pytest.approx((-DELTA, DELTA))
    assert ax.get_xlabel().startswith("best - arm, test_accuracy (95% paired bootstrap CI)")
    other_level = forest_figure(FOREST, **{**FOREST_OPTIONS, "confidence": 0.9})
    assert "(90% paired bootstrap CI)" in other_level.axes[0].get_xlabel()


def test_forest_verdicts_stand_at_the_right_of_their_rows_in_their_colours():
    figure = forest_figure(FOREST, **FOREST_OPTIONS)
    ax = figure.axes[0]
    (right,) = ax.child_axes
    verdicts = [label.get_text().replace("\n", " ") for label in right.get_yticklabels()]
    assert verdicts == [verdict for *_, verdict in FOREST]
    assert list(right.get_yticks()) == list(ax.get_yticks())
    (bars,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    for label, bar_colour in zip(right.get_yticklabels(), bars.get_colors()):
        assert to_rgb(label.get_color()) == pytest.approx(bar_colour[:3])
    helps, hurts, inconclusive = (tuple(c[:3]) for c in bars.get_colors())
    assert len({helps, hurts, inconclusive}) == 3


def test_forest_refuses_no_rows_and_intervals_that_miss_their_mean():
    with pytest.raises(ValueError, match="at least one arm"):
        forest_figure([], **FOREST_OPTIONS)
    rows = [("bad", 0.04, 0.01, 0.03, "helps"), ("fine", 0.02, 0.01, 0.03, "helps"),
            ("worse", 0.05, 0.06, 0.01, "helps")]
    with pytest.raises(ValueError, match="'bad'.*got 0.01 <= 0.04 <= 0.03; arm 'worse'"):
        forest_figure(rows, **FOREST_OPTIONS)


def test_paired_plot_joins_only_the_seeds_both_arms_ran():
    best = {1: 0.95, 2: 0.96, 3: 0.97, 4: 0.94}
    arms = {"no dropout": {1: 0.94, 2: 0.97, 3: 0.96, 4: 0.93},
            "no norm": {2: 0.95, 4: 0.94, 9: 0.99},  # seed 9: raced, no best to pair with
            "no stopper": {7: 0.9}}
    figure = paired_figure(best, arms, score_label="test_accuracy")
    panels = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title().split("\n")[0] for ax in panels] == list(arms)
    # Seeds by hand: all four; 2 and 4; none.
    expected = {"no dropout": [1, 2, 3, 4], "no norm": [2, 4], "no stopper": []}
    colour_of = {}
    for ax, (name, seeds) in zip(panels, expected.items()):
        (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
        (dots,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        drawn = sorted(tuple(map(tuple, segment)) for segment in lines.get_segments())
        assert drawn == sorted(((0, best[s]), (1, arms[name][s])) for s in seeds)
        assert len(dots.get_offsets()) == 2 * len(seeds)
        for segment, colour in zip(lines.get_segments(), lines.get_colors()):
            (_, b), (_, a) = segment
            colour_of.setdefault(np.sign(b - a), set()).add(tuple(colour))
    # Every "best higher" pair in one colour, every "arm higher" one in another; 4 - 4 ties.
    assert {sign: len(colours) for sign, colours in colour_of.items()} == {1: 1, -1: 1, 0: 1}
    assert len(set.union(*colour_of.values())) == 3
    assert "best higher on 3 of 4 seeds" in panels[0].get_title()
    assert "0 of 0 seeds" in panels[2].get_title()


def test_isolation_plots_best_and_median_per_value_and_greys_values_not_tested():
    figure = isolation_figure(TRIALS, metric="val_loss", direction="minimize")
    panels = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["norm", "schedule"]
    for ax in panels:
        rows = [row for row in TRIALS if row.knob == ax.get_title()]
        labels = ax.get_xticklabels()
        assert [label.get_text() for label in labels] == \
            [f"{row.value} (n={row.complete})" for row in rows]
        for line in ax.lines:
            row = rows[int(line.get_xdata()[0])]
            expected = row.best if line.get_marker() == "o" else row.median
            assert line.get_ydata()[0] == pytest.approx(expected)
            assert _is_grey(line.get_color()) == (not row.tested)
        assert sorted(line.get_marker() for line in ax.lines) == sorted(["o", "_"] * len(rows))
        for label, row in zip(labels, rows):
            assert _is_grey(label.get_color()) == (not row.tested)
    assert panels[0].get_ylabel() == "val_loss (lower is better)"
    maximized = isolation_figure(TRIALS, metric="val_accuracy", direction="maximize")
    assert maximized.axes[0].get_ylabel() == "val_accuracy (higher is better)"
    with pytest.raises(ValueError, match="direction must be.*got 'max'"):
        isolation_figure(TRIALS, metric="val_loss", direction="max")


def _is_grey(colour) -> bool:
    """A light grey, told apart from the near-black of tested values."""
    r, g, b = to_rgb(colour)
    return r == g == b and r > 0.4


def test_each_plot_is_a_png_of_the_planned_size(tmp_path):
    best = {seed: 0.96 + 0.001 * seed for seed in range(1, 6)}
    arms = {name: {s: v - mean for s, v in best.items()} for name, mean, *_ in FOREST}
    drawn = {"forest": (draw_forest(FOREST, **FOREST_OPTIONS, path=tmp_path / "forest.png"),
                        forest_figure(FOREST, **FOREST_OPTIONS)),
             "paired": (draw_paired(best, arms, score_label="test_accuracy",
                                    path=tmp_path / "paired.png"),
                        paired_figure(best, arms, score_label="test_accuracy")),
             "isolation": (draw_isolation(TRIALS, metric="val_loss", direction="minimize",
                                          path=tmp_path / "isolation.png"),
                           isolation_figure(TRIALS, metric="val_loss", direction="minimize"))}
    # A colour each plot draws with (the file holds the plot, not an empty canvas): the
    # "helps" green of the first arm, and the near-black of tested values.
    ink = {"forest": "#009E73", "paired": "#009E73", "isolation": "#222222"}
    for name, (path, figure) in drawn.items():
        assert path == tmp_path / f"{name}.png"
        pixels = imread(path)
        _, height = figure.get_size_inches() * 100  # 100 dpi, not cropped
        assert pixels.shape == (round(height), 800, 4), name
        assert 250 <= height <= 700, name
        assert np.all(np.abs(pixels[..., :3] - to_rgb(ink[name])) < 0.02, axis=-1).sum() > 50
    # More arms, a taller forest plot.
    taller = forest_figure(LONG_ARMS, **FOREST_OPTIONS)
    assert taller.get_size_inches()[1] > drawn["forest"][1].get_size_inches()[1]


def test_labels_stay_apart_with_eight_long_named_arms_and_six_knobs():
    best = {seed: 0.96 + 0.002 * math.sin(seed) for seed in range(1, 9)}
    arms = {name: {s: v - mean for s, v in best.items()} for name, mean, *_ in LONG_ARMS}
    knobs = {"norm": ["none", "batch", "layer", "batch_renorm"],
             "schedule": ["constant", "cosine", "cosine_warm_restarts", "step", "one_cycle"],
             "stopper": ["none", "patience", "prechelt_generalization_loss"],
             "regularizer_kind_with_a_long_name": ["l1", "l2", "elastic_net"],
             "optimizer": ["sgd", "adamw"], "activation": ["relu", "gelu", "silu", "tanh"]}
    trials = [value_row(knob, value, i % 3, 0.3 + 0.01 * i, 0.5 - 0.01 * i)
              for knob, values in knobs.items() for i, value in enumerate(values)]
    for figure in (forest_figure(LONG_ARMS, **FOREST_OPTIONS),
                   paired_figure(best, arms, score_label="test_accuracy"),
                   isolation_figure(trials, metric="val_loss", direction="minimize")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "constrained layout not applied", say
            figure.canvas.draw()
        texts = _drawn_texts(figure)
        assert len(texts) > 20
        bounds = figure.bbox
        for _, text, box in texts:
            assert bounds.x0 - 1 <= box.x0 and box.x1 <= bounds.x1 + 1, text.get_text()
            assert bounds.y0 - 1 <= box.y0 and box.y1 <= bounds.y1 + 1, text.get_text()
        for (row_a, a, box_a), (row_b, b, box_b) in itertools.combinations(texts, 2):
            if row_a is not None and row_a is row_b and a.get_rotation():
                assert _slanted_apart(a, b, figure), (a.get_text(), b.get_text())
            else:
                assert not _boxes_overlap(box_a, box_b), (a.get_text(), b.get_text())


def _drawn_texts(figure) -> list[tuple[object, Text, object]]:
    """(axis, text, box on the page) of each text the last draw put on the page, axis being
    the one whose ticks it labels (None for other texts): titles, axis labels, the tick
    labels within the view of visible axes, and the legends."""
    texts = [(None, t) for legend in figure.legends
             for t in [*legend.get_texts(), legend.get_title()]]
    visible = [ax for ax in figure.axes if ax.get_visible()]
    for ax in visible + [child for parent in visible for child in parent.child_axes]:
        texts += [(None, ax.title), (None, ax.xaxis.label), (None, ax.yaxis.label)]
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks():
                if low - 1e-9 <= tick.get_loc() <= high + 1e-9:
                    texts += [(axis, tick.label1), (axis, tick.label2)]
    renderer = figure.canvas.get_renderer()
    return [(axis, t, t.get_window_extent(renderer)) for axis, t in texts
            if t.get_visible() and t.get_text().strip()]


def _boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 - 1 and b.x0 < a.x1 - 1 and a.y0 < b.y1 - 1 and b.y0 < a.y1 - 1


def _slanted_apart(a: Text, b: Text, figure) -> bool:
    """Slanted tick labels side by side have boxes that overlap when the texts do not: the
    texts are apart when their anchors lie further apart, across the slant, than a line of
    text is tall."""
    slant = math.radians(a.get_rotation())
    renderer = figure.canvas.get_renderer()
    tall = max(renderer.get_text_width_height_descent(t.get_text(), t.get_fontproperties(),
                                                      ismath=False)[1] for t in (a, b))
    (xa, ya), (xb, yb) = (t.get_transform().transform(t.get_position()) for t in (a, b))
    return abs(-(xb - xa) * math.sin(slant) + (yb - ya) * math.cos(slant)) >= tall
