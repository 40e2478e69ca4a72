"""Optuna's plots of a finished study, as PNG files: drawn in the tracking process only."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger("trickopt.tracking")

PLOTS = ("plot_optimization_history", "plot_intermediate_values", "plot_param_importances",
         "plot_slice")
SLICE_PARAMS = 6  # a slice plot of every knob is ~20 panels that take seconds and no one reads
LEGEND_TRIALS = 10  # the learning-curve plot names each trial in its legend up to this many


def import_plotting() -> None:
    """Import what drawing needs (about 1.2 s here), so that it can be done ahead."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a training server
    import matplotlib.pyplot  # noqa: F401
    import optuna.importance  # noqa: F401 - for the importance plot: 0.8 s here
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
    # The importance plot shows the importances the study reported, not a second estimate.
    kwargs = {"plot_slice": {"params": top},
              "plot_param_importances": {"evaluator": _reported(importances)}}
    paths = []
    for name in PLOTS:
        if name == "plot_param_importances" and not importances:
            continue
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
            figure.savefig(path, dpi=72)  # warnings off: "tight layout not applied"
        plt.close("all")
        paths.append(path)
    return paths


def _reported(importances: dict[str, float]):
    """An Optuna importance evaluator that returns the importances computed already."""
    from optuna.importance import BaseImportanceEvaluator

    class Reported(BaseImportanceEvaluator):
        def evaluate(self, study, params=None, *, target=None) -> dict[str, float]:
            return dict(importances)

    return Reported()
