"""Optuna's plots of a finished study, as PNG files: drawn in the tracking process only."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger("trickopt.tracking")

PLOTS = ("plot_optimization_history", "plot_intermediate_values", "plot_slice")
SLICE_PARAMS = 6  # a slice plot of every knob is ~20 panels that take seconds and no one reads
LEGEND_TRIALS = 10  # the learning-curve plot names each trial in its legend up to this many
# zlib's fastest level: a quarter less time to save than the default (6), files ~15 % larger
PNG = {"pil_kwargs": {"compress_level": 1}}


def import_plotting() -> None:
    """Import what drawing needs (about 0.3 s here), so that it can be done ahead. Not
    optuna.importance: it imports scikit-learn (1.1 s here), for an importance plot whose
    numbers the study process has computed already (drawn here by `_draw_importances`)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a training server
    import matplotlib.pyplot  # noqa: F401
    import optuna.visualization.matplotlib  # noqa: F401


def draw_plots(trials: list, direction: str, importances: dict[str, float],
               folder: Path) -> list[Path]:
    """Optuna's plots of a study made of `trials` (FrozenTrials), as PNG files in `folder`."""
    import_plotting()
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
        return []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction)  # in memory, for the plotting functions
    study.add_trials(trials)
    top = sorted(importances, key=importances.get, reverse=True)[:SLICE_PARAMS] or None
    kwargs = {"plot_slice": {"params": top}}
    paths = []
    if importances:
        try:
            paths.append(_draw_importances(importances, folder / "param_importances.png"))
        except Exception as exc:  # noqa: BLE001 - one plot failing must not cost the others
            log.warning("could not draw the importances: %s", exc)
    for name in PLOTS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                axes = getattr(optuna_plots, name)(study, **kwargs.get(name, {}))
            except Exception as exc:  # noqa: BLE001 - one plot failing must not cost the others
                log.warning("could not draw %s: %s", name, exc)
                continue
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            if name == "plot_intermediate_values" and first.get_legend() is not None \
                    and len(trials) > LEGEND_TRIALS:
                first.get_legend().remove()  # one entry per trial: unreadable, slow to draw
            figure = first.get_figure()
            figure.set_size_inches(10, 6)
            path = folder / f"{name.removeprefix('plot_')}.png"
            figure.savefig(path, dpi=72, **PNG)  # warnings off: "tight layout not applied"
        plt.close("all")
        paths.append(path)
    return paths


def _draw_importances(importances: dict[str, float], path: Path) -> Path:
    """The importances the study reported (not a second estimate), largest on top."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = sorted(importances, key=importances.get)
    figure = Figure(figsize=(10, 6))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    bars = axes.barh(names, [importances[name] for name in names], color="#1f77b4")
    axes.bar_label(bars, fmt="%.2f", padding=3)
    axes.set_xlabel("importance for the objective value (Optuna's default evaluator, PED-ANOVA)")
    axes.set_title("Hyperparameter importances")
    axes.set_xlim(0, max(1.0, max(importances.values()) * 1.1))
    figure.tight_layout()
    figure.savefig(path, dpi=72, **PNG)
    return path
