"""A comparison as a table, and as files: `report.md`, `report.json` and the isolation plot
(the Playbook's: the best result per scientific value, with every seed's)."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from trickopt.effects.compare import Comparison, ValueResult
from trickopt.effects.output import as_artifacts, write_whole
from trickopt.effects.plots import DPI, HELPS, NEUTRAL, TESTED, WIDTH

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RULE = ("verdict: the trick-effect report's rule, fixed in advance, read as the reference "
        "against the value: helps = 95% CI of the mean difference above 0 and the reference "
        "wins on >= 75% of seeds (the reference is better); hurts = the mirror (the value is "
        "better on test); negligible = CI inside +/- delta (half the reference's SD over "
        "seeds); otherwise inconclusive, with the seeds it would take. p: Wilcoxon signed-rank, "
        "Holm-corrected across values.")


BASELINE_RULE = ("verdict: the trick-effect report's rule, fixed in advance, read as the "
                 "value against the baseline: helps = 95% CI of the mean difference above 0 "
                 "and the value wins on >= 75% of seeds; hurts = the mirror (the baseline is "
                 "better on test); negligible = CI inside +/- delta (half the baseline's SD "
                 "over seeds); otherwise inconclusive, with the seeds it would take. p: "
                 "Wilcoxon signed-rank, Holm-corrected across values.")


def format_table(c: Comparison) -> str:
    w = max([28] + [len(v.label) for v in c.values])  # the value column's width
    if c.baseline:
        reference = (f"baseline: {c.reference} (the claim's; every other value is read "
                     "against it)")
        difference, rule = "value - baseline [95% CI]", BASELINE_RULE
        sign = "value is better than the baseline"
    else:
        reference = f"reference: {c.reference} (the best mean {c.metric} over the seeds)"
        difference, rule = "reference - value [95% CI]", RULE
        sign = "reference is better"
    lines = [f"== comparison: study {c.study!r}, scientific {' x '.join(c.scientific)}, "
             f"nuisance {', '.join(c.nuisance)} tuned per value in {c.trials} trials, seeds "
             f"{c.seeds[0]}..{c.seeds[-1]} (paired) ==",
             reference if c.reference else "reference: none (no value has a finished re-run)",
             f"this run: {c.tuning_trials_run} tuning trials and {c.reruns_run} re-runs in "
             f"{c.seconds / 60:.1f} min (finished ones are kept, never repeated)", "",
             "tuning (each value its own study, the same budget):",
             f"  {'value':<{w}} {'trials':>6} {'complete':>8} {'pruned':>6} "
             f"{'best ' + c.metric:>14}  tuned"]
    for v in c.values:
        t = v.tuning
        best = f"{t.best_value:>14.5g}" if t.best_value is not None else f"{'-':>14}"
        tuned = ", ".join(f"{k}={_short(x)}" for k, x in t.nuisance.items())
        lines.append(f"  {v.label:<{w}} {t.trials:>6} {t.complete:>8} {t.pruned:>6} {best}  "
                     f"{tuned}")
    lines += ["", "each value's best re-run on the paired seeds:",
              f"  {'value':<{w}} {'seeds':>5} {c.metric + ' mean':>15} {c.score + ' +/- SD':>24} "
              f"{difference:>30} {'win':>5} {'p (Holm)':>9}  verdict"]
    for v in c.values:
        head = (f"  {v.label:<{w}} {len(v.seeds):>5} {_number(v.val_mean, 15, '.5g')} "
                f"{_number(v.test_mean, 13, '.4f')} +/- {_number(v.test_sd, 6, '.4f')}")
        if v.effect is None:
            lines.append(f"{head} {'':>30} {'':>5} {'':>9}  {v.verdict}")
            continue
        e = v.effect
        ci = f"{e.mean:+.4f} [{e.low:+.4f}, {e.high:+.4f}]"
        lines.append(f"{head} {ci:>30} {e.win_rate:>5.2f} {v.p_holm:>9.3f}  {v.verdict}")
    measure = MEASURE_NAMES.get(c.measure, c.score)
    lines += [f"(differences in {measure}, signed so that > 0 means the {sign}; "
              f"win: the share of seeds on which it is; delta = {c.delta:.4f})", rule, "",
              "cost, test loss and weights (means over the seeds, seconds the median; weights: "
              "not biases or norm parameters):",
              f"  {'value':<{w}} {'epochs':>7} {'s/training':>10} {'test loss':>10} "
              f"{'weights = 0':>12} {'|w| < 1e-3':>11}"]
    for v in c.values:
        lines.append(f"  {v.label:<{w}} {_mean(v.epochs, 7, '.1f')} "
                     f"{_number(statistics.median(v.seconds) if v.seconds else None, 10, '.2f')}"
                     f" {_mean(v.test_losses, 10, '.4f')}"
                     f" {_mean(v.zeros, 12, '.2%')} {_mean(v.small_weights, 11, '.2%')}")
    if c.claim_verdict:
        lines += ["", f"claim ({_EXPECTED[c.expect]}): {c.claim_verdict}", CLAIM_RULE]
    return "\n".join(lines)


_EXPECTED = {"better": "the other values beat the baseline",
             "worse": "the other values do worse than the baseline",
             "same": "the values do as well as the baseline",
             "different": "the values do better or worse than the baseline",
             "not_worse": "no value does worse than the baseline"}
CLAIM_RULE = ("claim verdict, fixed in advance: supported where some value goes the expected "
              "way and none the other; contradicted where some value goes the other way and "
              "none the expected one; mixed where both; otherwise no detectable effect at this "
              "scale (for 'same': supported only where every value is negligible, for 'different' "
              "contradicted only then; for 'not_worse': supported where every value helps or "
              "is negligible, contradicted where one hurts).")


def _setting(value) -> str:
    if isinstance(value, dict):
        return "/".join(f"{n:,}" for n in value.values()) + " (" + "/".join(value) + ")"
    return str(value)


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs"


MEASURE_NAMES = {"zeros": "the fraction of weights exactly 0",
                 "small_weights": "the fraction of weights with |w| < 1e-3"}


def _mean(values: list[float], width: int, spec: str) -> str:
    return _number(statistics.mean(values) if values else None, width, spec)


def _number(value: float | None, width: int, spec: str) -> str:
    return f"{value:>{width}{spec}}" if value is not None else f"{'-':>{width}}"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def as_json(c: Comparison) -> str:
    return json.dumps(asdict(c), indent=2, default=str)


def as_markdown(c: Comparison, plots: dict[str, str]) -> str:
    text = f"# Comparison: {c.study}\n\n"
    if c.claim:
        text += f"**Claim:** {c.claim}\n\n"
    if c.claim_verdict:
        text += f"**Verdict:** {c.claim_verdict}\n\n"
    if c.setting:
        text += "**Setting:** " + "; ".join(f"{k} {_setting(v)}" for k, v in c.setting.items())
        text += (f"; {c.trials} tuning trials per value ({', '.join(c.nuisance)} tuned), "
                 f"seeds {c.seeds[0]}..{c.seeds[-1]} paired.\n\n")
    text += (f"**Cost:** {c.tuning_trials_run} tuning trials and {c.reruns_run} re-runs in "
             f"{c.seconds / 60:.1f} min on this machine ({_machine()}).\n\n")
    if c.finding:
        text += f"**What this shows** (written by hand, after the run): {c.finding.strip()}\n\n"
    text += f"```\n{format_table(c)}\n```\n"
    for title, path in plots.items():
        text += f"\n## {title}\n\n![{title}]({path})\n"
    return text


# -- the isolation plot ----------------------------------------------------------------------
def isolation_figure(values: Sequence[ValueResult], *, reference: str | None, metric: str,
                     direction: str, score: str, baseline: bool = False) -> Figure:
    """Two panels, one column per scientific value: the study's metric on validation (what
    chose the reference) and the test score (what is compared), each seed a dot and the mean
    a dash; the reference in colour."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [v for v in values if v.seeds]
    if not shown:
        raise ValueError("an isolation plot needs at least one value with re-runs; got none")
    figure = Figure(figsize=(WIDTH, 4.5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # Agg, no pyplot: nothing left open, no display asked for
    axes = figure.subplots(1, 2)
    better = {metric: "higher" if direction == "maximize" else "lower",
              score: "lower" if score == "test_rmse" else "higher"}
    for ax, name, per_seed in ((axes[0], metric, lambda v: v.val_metrics),
                               (axes[1], score, lambda v: v.test_scores)):
        for x, v in enumerate(shown):
            colour = HELPS if v.label == reference else TESTED
            ys = [y for y in per_seed(v) if math.isfinite(y)]
            offsets = [0.12 * (i - (len(ys) - 1) / 2) / max(1, len(ys) - 1) for i in
                       range(len(ys))]  # side by side, so that equal scores stay visible
            ax.scatter([x + o for o in offsets], ys, s=18, color=colour, alpha=0.7, zorder=3)
            if ys:
                ax.plot([x], [sum(ys) / len(ys)], "_", color=colour, markersize=22,
                        markeredgewidth=2.5, zorder=4)
            if name == metric and v.tuning.best_value is not None:
                ax.plot([x + 0.25], [v.tuning.best_value], "o", color=colour,
                        fillstyle="none", markersize=7, zorder=4)
        ax.set_xticks(range(len(shown)), [f"{v.label}\n(n={len(v.seeds)})" for v in shown],
                      fontsize=8, rotation=30 if len(shown) > 3 else 0,
                      horizontalalignment="right" if len(shown) > 3 else "center")
        ax.set_xlim(-0.5, len(shown) - 0.5)
        ax.set_title(f"{name} ({better[name]} is better)", fontsize=10)
        ax.grid(axis="y", color="0.9", linewidth=0.5)
    chosen = "baseline (the claim's)" if baseline else f"reference (best mean {metric})"
    figure.suptitle(f"each value's best configuration re-run per seed (dots) and their mean "
                    f"(dash); ring: the tuning's best, one seed\n{chosen}: {reference}, in "
                    "green", fontsize=9, color=NEUTRAL)
    return figure


def save_comparison(c: Comparison, folder: Path) -> dict[str, Path]:
    """Write the files into `folder` (created); returns {file name: path}. Each is written
    whole or not at all (a temporary file renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    plots: dict[str, str] = {}
    if any(v.seeds for v in c.values):
        path = folder / "isolation.png"
        figure = isolation_figure(c.values, reference=c.reference, metric=c.metric,
                                  direction=c.direction, score=c.score, baseline=c.baseline)
        figure.savefig(path, dpi=DPI)
        figure.clear()
        files[path.name] = path
        plots["Isolation: each scientific value's best, per seed"] = path.name
    for name, text in (("report.md", as_markdown(c, plots)), ("report.json", as_json(c))):
        files[name] = write_whole(folder / name, text)
    return files


def publish(c: Comparison, folder: Path, tracker=None, *,
            out: TextIO | None = None) -> dict[str, Path]:
    """Print the table, save the files into `folder`, and send them to the study's MLflow
    parent run (artifacts `compare/`) where tracking is on."""
    out = out if out is not None else sys.stdout
    print("\n" + format_table(c), file=out)
    files = save_comparison(c, folder)
    print(f"\ncomparison written: {folder}/ ({', '.join(sorted(files))})", file=out)
    if tracker is not None:
        tracker.log_parent(
            tags={"compare.reference": c.reference},
            files=as_artifacts(files, "compare"))
        print(f"and to the study's MLflow parent run in {tracker.display_uri} (artifacts "
              "compare/; every training is a child run tagged phase=tune or phase=compare, "
              "scientific and seed)", file=out)
    return files
