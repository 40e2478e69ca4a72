"""The study layer: Optuna searches over the tricks; every trial is tracked in MLflow.

Run it with `python -m trickopt.study [STUDY.yaml]`; from Python, `run_study(config)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trickopt.study.config import StudyConfig, load_study_config
    from trickopt.study.runner import run_study

__all__ = ["StudyConfig", "load_study_config", "run_study"]


def __getattr__(name: str):
    # Imported on first use: `python -m trickopt.study` starts its tracking process before
    # torch and optuna are imported (see trickopt.study.cli), which an eager import here
    # would undo.
    if name in ("StudyConfig", "load_study_config"):
        from trickopt.study import config

        return getattr(config, name)
    if name == "run_study":
        from trickopt.study.runner import run_study

        return run_study
    raise AttributeError(f"module 'trickopt.study' has no attribute {name!r}")
