"""A study file: the run sections (data, model, train) plus search, study, tracking and refit.

The dataclass defaults *are* the default study (`python -m trickopt.study` with no file): a
CNN on digits searched over all tricks. A study file sets only what it changes, may start from
presets with `extends: [path, ...]` (relative to the file; later files and the file itself win),
and is validated as a whole before anything is created: every problem is reported at once.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trickopt.config import (
    RUN_SECTIONS,
    ConfigError,
    DataConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    check_choice,
    check_min,
    parse_section,
    read_yaml,
)

SAMPLERS = ("tpe", "random", "qmc", "gp")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "wilcoxon", "none")
METRICS = {"val_loss": "minimize", "val_accuracy": "maximize"}
# Our defaults where Optuna's do not fit epoch-level reports. Median and percentile wait for 5
# finished trials and 3 epochs: earlier, the median is noise. Percentile needs its percentile.
PRUNER_DEFAULTS = {"median": {"n_startup_trials": 5, "n_warmup_steps": 3},
                   "percentile": {"percentile": 25.0, "n_startup_trials": 5,
                                  "n_warmup_steps": 3}}
REFITS = ("none", "train_val", "train_val_test")
DEFAULT_STUDY_NAME = "trickopt-digits-cnn"


@dataclass
class StudySection:
    name: str = DEFAULT_STUDY_NAME
    n_trials: int = 40  # trials per run of the command; a rerun adds as many again
    timeout: float | None = None  # seconds for this run of the command; None: no limit
    metric: str = "val_loss"  # val_loss (minimize) or val_accuracy (maximize)
    direction: str | None = None  # derived from the metric; if given it must agree
    sampler: str = "tpe"
    sampler_params: dict = field(default_factory=dict)
    pruner: str = "median"
    pruner_params: dict = field(default_factory=dict)  # on top of PRUNER_DEFAULTS[pruner]
    seed: int | None = 0  # sampler seed; None draws a fresh one
    storage: str | None = None  # an Optuna storage URL; None: ./trickopt.journal
    workers: int = 1  # worker processes on this machine, one per GPU where there are several
    # RDB storages only: a worker silent this long is dead; its trial is failed and retried.
    heartbeat_interval: int = 10  # seconds
    grace_period: int = 60  # seconds; > a few heartbeats, so a busy worker is not declared dead

    def check(self, prefix: str, errors: list[str]) -> None:
        if not self.name.strip():
            errors.append(f"{prefix}.name: must be a non-empty string; got {self.name!r}")
        check_min(errors, f"{prefix}.n_trials", self.n_trials, 1)
        if self.timeout is not None and not self.timeout > 0:
            errors.append(f"{prefix}.timeout: must be a number of seconds > 0 or null; "
                          f"got {self.timeout!r}")
        if check_choice(errors, f"{prefix}.metric", self.metric, tuple(METRICS)):
            if self.direction is not None and self.direction != METRICS[self.metric]:
                errors.append(f"{prefix}.direction: {self.metric} is always "
                              f"{METRICS[self.metric]}d; got {self.direction!r}")
        if check_choice(errors, f"{prefix}.sampler", self.sampler, SAMPLERS):
            _dry_run(errors, f"{prefix}.sampler_params", create_sampler, self.sampler,
                     self.sampler_params, 0)
        if check_choice(errors, f"{prefix}.pruner", self.pruner, PRUNERS):
            _dry_run(errors, f"{prefix}.pruner_params", create_pruner, self.pruner,
                     self.pruner_params, 10)
        check_min(errors, f"{prefix}.workers", self.workers, 1)
        check_min(errors, f"{prefix}.heartbeat_interval", self.heartbeat_interval, 1)
        if self.grace_period <= self.heartbeat_interval:
            errors.append(f"{prefix}.grace_period: must be > heartbeat_interval "
                          f"({self.heartbeat_interval}); got {self.grace_period!r}")
        if self.workers > 1 and self.storage is not None and self.storage.startswith("sqlite"):
            errors.append(f"{prefix}.workers: {self.workers} workers cannot share SQLite safely "
                          "(\"database is locked\"); use PostgreSQL (--storage "
                          "postgresql://...) or a journal file (--storage journal:PATH)")

    @property
    def resolved_direction(self) -> str:
        return METRICS[self.metric]


@dataclass
class TrackingSection:
    enabled: bool = True
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here
    experiment: str | None = None  # None: the study name


@dataclass
class StudyConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(arch="cnn"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_epochs=30))
    search: dict[str, Any] = field(default_factory=lambda: _default_search())
    study: StudySection = field(default_factory=StudySection)
    tracking: TrackingSection = field(default_factory=TrackingSection)
    refit: str = "train_val"
    source: str | None = None  # the study file, or None for the built-in default
    raw: dict = field(default_factory=dict)  # the merged mapping, logged as an artifact

    @property
    def run(self):
        from trickopt.config import RunConfig
        return RunConfig(data=self.data, model=self.model, train=self.train)


SECTIONS = ("extends", "data", "model", "train", "search", "study", "tracking", "refit")


def create_sampler(name: str, params: dict, seed: int | None):
    import optuna

    if name == "tpe":
        # group=True: conditional sub-parameters form their own groups, so Optuna 5's
        # multivariate TPE samples them jointly instead of warning and going independent.
        # `group` is marked experimental; we choose it knowingly, so its warning is noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, group=True, **params)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed, **params)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, **params)
    return optuna.samplers.GPSampler(seed=seed, **params)


def create_pruner(name: str, params: dict, max_epochs: int):
    import optuna

    pruners = optuna.pruners
    params = {**PRUNER_DEFAULTS.get(name, {}), **params}
    with warnings.catch_warnings():  # Wilcoxon is marked experimental; chosen knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _pruner(pruners, name, params, max_epochs)


def _pruner(pruners, name: str, params: dict, max_epochs: int):
    if name == "none":
        return pruners.NopPruner(**params)
    if name == "hyperband":
        return pruners.HyperbandPruner(**{"max_resource": max_epochs, **params})
    factory = {"median": pruners.MedianPruner, "percentile": pruners.PercentilePruner,
               "successive_halving": pruners.SuccessiveHalvingPruner,
               "wilcoxon": pruners.WilcoxonPruner}[name]
    return factory(**params)


def _dry_run(errors: list[str], field_name: str, factory, name: str, params: dict,
             extra: Any) -> None:
    """Build the Optuna object once: its own argument checks become config errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            factory(name, params, extra)
    except (TypeError, ValueError) as exc:
        errors.append(f"{field_name}: {exc}")


def _default_search() -> dict[str, Any]:
    # trickopt.study.space imports the trick modules, hence torch: imported where needed, so
    # that reading a study file (`read_study_file`) stays cheap.
    from trickopt.study.space import ALL_TRICKS, parse_search

    return parse_search(ALL_TRICKS, "", [])


def read_study_file(path: str | Path | None = None, overrides: list[str] = ()) -> dict:
    """The study as written: presets merged and overrides applied, not validated yet."""
    raw = _read_with_presets(Path(path)) if path is not None else {}
    return apply_overrides(copy.deepcopy(raw), list(overrides))


def load_study_config(path: str | Path | None = None, overrides: list[str] = ()) -> StudyConfig:
    """Read, merge presets, override and validate; raises ConfigError listing every problem."""
    config = parse_study_config(read_study_file(path, overrides))
    config.source = str(path) if path is not None else None
    return config


def _read_with_presets(path: Path, seen: tuple = ()) -> dict:
    raw = read_yaml(path)
    extends = raw.pop("extends", [])
    if isinstance(extends, str):
        extends = [extends]
    if not isinstance(extends, list):
        raise ConfigError([f"{path}: extends must be a path or a list of paths; got {extends!r}"])
    merged: dict = {}
    for item in extends:
        preset = (path.parent / item).resolve()
        if preset in seen:
            raise ConfigError([f"{path}: extends {item!r} includes itself"])
        if not preset.is_file():
            raise ConfigError([f"{path}: extends {item!r}, but {preset} does not exist"])
        _merge(merged, _read_with_presets(preset, seen + (preset,)))
    return _merge(merged, raw)


def _merge(into: dict, update: dict) -> dict:
    """Deep-merge sections; a `search` entry or a list is replaced whole, never mixed."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key != "search" \
                and not _is_distribution(value):
            _merge(into[key], value)
        elif key == "search" and isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key].update(value)
        else:
            into[key] = value
    return into


def _is_distribution(value: dict) -> bool:
    return "choices" in value or "low" in value


def parse_study_config(raw: dict) -> StudyConfig:
    from trickopt.study.space import ALL_TRICKS, parse_search

    errors: list[str] = []
    for key in raw:
        if key not in SECTIONS:
            errors.append(f"{key}: unknown section; allowed: {', '.join(SECTIONS[1:])}")
    defaults = StudyConfig()
    run = {}
    for name, cls in RUN_SECTIONS.items():
        # Sections start from the study's defaults (a CNN, 30 epochs), not the run's.
        base = vars(copy.deepcopy(getattr(defaults, name)))
        section = raw.get(name, {})
        merged = {**base, **section} if isinstance(section, dict) else section
        run[name] = parse_section(cls, merged, name, errors)
    # Search entries override the default (all tricks) knob by knob, like every section:
    # `search: {norm: batch}` fixes one trick and leaves the others searched.
    raw_search = raw.get("search", {})
    search = parse_search({**ALL_TRICKS, **raw_search} if isinstance(raw_search, dict)
                          else raw_search, "search", errors)
    study = parse_section(StudySection, raw.get("study"), "study", errors)
    tracking = parse_section(TrackingSection, raw.get("tracking"), "tracking", errors)
    refit = raw.get("refit", "train_val")
    check_choice(errors, "refit", refit, REFITS)
    _check_search_against_run(search, run, errors)
    if errors:
        raise ConfigError(errors)
    return StudyConfig(**run, search=search, study=study, tracking=tracking, refit=refit,
                       raw=raw)


def _check_search_against_run(search: dict, run: dict, errors: list[str]) -> None:
    if run["model"].arch == "cnn" and ("width" in search or "depth" in search):
        errors.append("search: width and depth shape the mlp; model.arch is cnn "
                      "(use model.channels, or set model.arch: mlp)")
