"""The study layer: Optuna searches over the tricks; every trial is tracked in MLflow.

Run it with `python -m trickopt.study [STUDY.yaml]`; from Python, `run_study(config)`.
"""

from trickopt.study.config import StudyConfig, load_study_config
from trickopt.study.runner import run_study

__all__ = ["StudyConfig", "load_study_config", "run_study"]
