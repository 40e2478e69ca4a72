"""What a study leaves behind: the console summary and the parent run's metrics and artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import yaml

from trickopt.urls import mask_password, mask_passwords_in_text


def log_parent_summary(tracker, study: optuna.Study, config, result) -> None:
    """Best value, trials per state, epochs against budget, importances and the study file
    (passwords masked), sent to the parent run."""
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
    for key in ("test_loss", "test_accuracy", "test_rmse"):
        if result.refit and result.refit.get(key) is not None:
            metrics[f"refit_{key}"] = result.refit[key]
    files = {"study.yaml": yaml.safe_dump(_masked(config.raw)),
             "importances.json": json.dumps(result.importances, indent=2)}
    if config.source:  # the file as the user wrote it, comments and all
        original = Path(config.source)
        files[f"source/{original.name}"] = mask_passwords_in_text(original.read_text())
    tracker.log_parent(metrics=metrics, params={"metric": config.study.metric,
                                                "direction": config.study.resolved_direction,
                                                "sampler": config.study.sampler,
                                                "pruner": config.study.pruner},
                       tags=tags, files=files)


def _masked(raw: dict) -> dict:
    """The study as run, with any password in a storage or tracking URL masked."""
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
    if result.ignored_tricks:
        lines.append("searched but ignored by the model (no effect, whatever their "
                     f"importance): {', '.join(result.ignored_tricks)}")
    if result.importances:
        top = sorted(result.importances.items(), key=lambda kv: -kv[1])[:5]
        lines.append("top importances: " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    for key, value in (result.best_trial_test or {}).items():
        if key != "test_loss":
            lines.append(f"{key.replace('_', ' ')}, best trial's own model: {value:.4f}")
    if result.refit:
        score = result.refit["score"]
        if result.refit[score] is None:
            lines.append(f"refit on train+val+test for {result.refit['epochs']} epochs: a "
                         "production model; no held-out data is left, so no test score")
        else:
            lines.append(f"{score.replace('_', ' ')}, refit on train+val (trial "
                         f"{result.refit['trial']}, {result.refit['epochs']} epochs): "
                         f"{result.refit[score]:.4f}")
    if result.report is not None:
        lines.append(f"trick-effect report: trial {result.report.chosen_trial} is best on "
                     f"average over seeds; {result.report_folder}/report.md")
    lines.append(f"optuna storage: {result.storage}")
    if result.tracking_error:
        lines.append(f"MLflow tracking stopped: {result.tracking_error}")
    elif result.tracking_uri:
        lines += mlflow_ui_lines(result.tracking_uri, result.experiment_id)
    return "\n".join(lines)


UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def mlflow_ui_lines(uri: str, experiment_id: str | None) -> list[str]:
    """How to see the study in MLflow's UI: the command to start it (for a local store), and
    the link to the experiment's runs in the model-training view (MLflow 3 opens on its
    GenAI view otherwise)."""
    if uri.startswith(("http://", "https://")):
        parts = urlsplit(uri)
        host = parts.hostname or "127.0.0.1"
        base = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "") + \
            parts.path.rstrip("/")
        lines = []
    else:
        base = UI_ADDRESS
        lines = [f"see every trial: {mlflow_ui_command(uri)}, then open"]
    if experiment_id is None:
        return lines + [f"  {base}"]
    link = f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return (lines or ["see every trial:"]) + [f"  {link}"]


def mlflow_ui_command(uri: str) -> str:
    default = f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    return "mlflow ui" if uri == default else f"mlflow ui --backend-store-uri {uri}"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
