"""What a study leaves behind: the console summary and the parent run's metrics and artifacts."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import optuna
import yaml


def send_parent_plots(tracker, study: optuna.Study, importances: dict[str, float]) -> Path:
    """Have the tracking process draw the study's plots into a new folder, which is returned,
    and log them to the parent run; it draws them while this process refits."""
    folder = Path(tempfile.mkdtemp(prefix="trickopt-report-"))
    tracker.log_parent_plots(study.get_trials(deepcopy=False), study.direction.name.lower(),
                             importances, folder)
    return folder


def log_parent_summary(tracker, study: optuna.Study, config, result, folder: Path) -> None:
    """Best value, trials per state, epochs against budget, importances and the study file,
    written through `folder` (which the tracking process deletes when it is done)."""
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
    (folder / "study.yaml").write_text(yaml.safe_dump(_masked(config.raw)))
    tracker.log_parent_artifact(folder / "study.yaml")
    if config.source:
        from trickopt.urls import mask_passwords_in_text

        original = Path(config.source)
        source = folder / "source"
        source.mkdir(exist_ok=True)
        (source / original.name).write_text(mask_passwords_in_text(original.read_text()))
        tracker.log_parent_artifact(source / original.name, "source")
    (folder / "importances.json").write_text(json.dumps(result.importances, indent=2))
    tracker.log_parent_artifact(folder / "importances.json")
    tracker.remove_folder(folder)


def _masked(raw: dict) -> dict:
    """The study as run, with any password in a storage or tracking URL masked."""
    from trickopt.urls import mask_password

    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for section, key in (("study", "storage"), ("tracking", "uri")):
        if isinstance(raw.get(section), dict) and isinstance(raw[section].get(key), str):
            raw[section][key] = mask_password(raw[section][key])
    return raw or {"default_study": True}


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
    if result.tracking_error:
        lines.append(f"MLflow tracking stopped: {result.tracking_error}")
    elif result.tracking_uri:
        lines.append(f"see every trial: {mlflow_ui_command(result.tracking_uri)}")
    return "\n".join(lines)


def mlflow_ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser (the MLflow server)"
    return f"mlflow ui --backend-store-uri {uri}"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
