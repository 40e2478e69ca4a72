"""What a study leaves behind: the console summary and the parent run's metrics and artifacts."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import optuna
import yaml

PLOTS = ("plot_optimization_history", "plot_intermediate_values", "plot_param_importances",
         "plot_slice")
SLICE_PARAMS = 6


def log_parent_summary(tracker, study: optuna.Study, config, result) -> None:
    """Best value, trials per state, epochs against budget, importances, plots, study file."""
    metrics = {f"trials_{state.lower()}": n for state, n in result.states.items()}
    metrics.update(epochs_trained=result.epochs_trained, epochs_budget=result.epochs_budget,
                   epochs_saved_by_stopping=result.epochs_saved_by_stopping,
                   epochs_saved_by_pruning=result.epochs_saved_by_pruning)
    metrics.update({f"importance.{k}": v for k, v in result.importances.items()})
    tags = {"storage": result.storage, "optuna.study_name": study.study_name}
    if result.states.get("COMPLETE"):
        metrics["best_value"] = study.best_value
        tags["best_trial"] = study.best_trial.number
    for key, value in (result.best_trial_test or {}).items():
        metrics[f"best_trial_{key}"] = value
    for key in ("test_loss", "test_accuracy"):
        if result.refit and result.refit.get(key) is not None:
            metrics[f"refit_{key}"] = result.refit[key]
    tracker.log_parent(metrics=metrics, params={"metric": config.study.metric,
                                                "direction": config.study.resolved_direction,
                                                "sampler": config.study.sampler,
                                                "pruner": config.study.pruner}, tags=tags)
    folder = Path(tempfile.mkdtemp(prefix="trickopt-report-"))
    (folder / "study.yaml").write_text(yaml.safe_dump(_masked(config.raw)))
    tracker.log_parent_artifact(folder / "study.yaml")
    if config.source:
        from trickopt.urls import mask_passwords_in_text

        original = Path(config.source)
        (folder / original.name).write_text(mask_passwords_in_text(original.read_text()))
        tracker.log_parent_artifact(folder / original.name, "source")
    (folder / "importances.json").write_text(json.dumps(result.importances, indent=2))
    tracker.log_parent_artifact(folder / "importances.json")
    for path in _plots(study, folder, result.importances):
        tracker.log_parent_artifact(path, "plots")
    # The writer thread reads these files later; the folder is left for the OS to clean.


def _masked(raw: dict) -> dict:
    """The study as run, with any password in a storage or tracking URL masked."""
    from trickopt.urls import mask_password

    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for section, key in (("study", "storage"), ("tracking", "uri")):
        if isinstance(raw.get(section), dict) and isinstance(raw[section].get(key), str):
            raw[section][key] = mask_password(raw[section][key])
    return raw or {"default_study": True}


def _plots(study: optuna.Study, folder: Path, importances: dict[str, float]) -> list[Path]:
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return []
    import matplotlib

    matplotlib.use("Agg")  # no display on a training server
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    # A slice plot of every knob is a grid of ~20 panels that takes seconds to draw and no
    # one reads: show the most important ones.
    top = sorted(importances, key=importances.get, reverse=True)[:SLICE_PARAMS] or None
    kwargs = {"plot_slice": {"params": top}, "plot_param_importances": {}}
    paths = []
    for name in PLOTS:
        if name == "plot_param_importances" and not importances:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                axes = getattr(optuna_plots, name)(study, **kwargs.get(name, {}))
            except (ValueError, RuntimeError):
                continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
        figure.set_size_inches(10, 6)
        path = folder / f"{name.removeprefix('plot_')}.png"
        figure.savefig(path, dpi=72)
        plt.close("all")
        paths.append(path)
    return paths


def format_summary(result, config) -> str:
    study = result.study
    lines = ["", f"== study {study.study_name!r} " + ("(interrupted) " if result.interrupted
                                                     else "") + "=="]
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result.states.items()))
    lines.append(f"trials: {states or 'none'}")
    if result.states.get("COMPLETE"):
        best = study.best_trial
        lines.append(f"best {config.study.metric}: {best.value:.5g} (trial {best.number}, "
                     f"best epoch {best.user_attrs.get('best_epoch')})")
        lines.append("best parameters: " + ", ".join(f"{k}={_short(v)}"
                                                     for k, v in best.params.items()))
    if result.epochs_budget:
        saved = result.epochs_budget - result.epochs_trained
        lines.append(
            f"epochs trained: {result.epochs_trained} of a budget of {result.epochs_budget} "
            f"({100 * saved / result.epochs_budget:.0f}% saved: "
            f"{100 * result.epochs_saved_by_stopping / result.epochs_budget:.0f}% by early "
            f"stopping, {100 * result.epochs_saved_by_pruning / result.epochs_budget:.0f}% "
            "by pruning)")
    if result.importances:
        top = sorted(result.importances.items(), key=lambda kv: -kv[1])[:5]
        lines.append("top importances: " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    if result.best_trial_test:
        lines.append(f"test accuracy, best trial's own model: "
                     f"{result.best_trial_test['test_accuracy']:.4f}")
    if result.refit:
        if result.refit["test_accuracy"] is None:
            lines.append(f"refit on train+val+test for {result.refit['epochs']} epochs: a "
                         "production model; no held-out data is left, so no test score")
        else:
            lines.append(f"test accuracy, refit on train+val for {result.refit['epochs']} "
                         f"epochs: {result.refit['test_accuracy']:.4f}")
    lines.append(f"optuna storage: {result.storage}")
    if result.tracking_uri:
        lines.append(f"see every trial: {mlflow_ui_command(result.tracking_uri)}")
    return "\n".join(lines)


def mlflow_ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser (the MLflow server)"
    return f"mlflow ui --backend-store-uri {uri}"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
