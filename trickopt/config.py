"""Typed configuration for one training run (data, model, train), validated once at the edge.

A config file is YAML with the sections `data`, `model` and `train`; every key has a default
here, so a file sets only what it changes. `load_run_config` collects *every* problem before
raising, each naming the field, the bad value and what is allowed, so a user fixes a file in
one pass. The study layer (`trickopt.study.config`) reuses `parse_section` for its own sections.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """Invalid configuration. `errors` holds one line per problem, each naming the field."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


# ---------------------------------------------------------------------------------------------
# The model of a run. Defaults are a small, fast, sensible digits MLP run on the CPU.


@dataclass
class DataConfig:
    name: str = "digits"  # one of trickopt.data.DATASETS
    path: str | None = None  # a CSV or .npz file, for name: file
    target: str = "target"  # the label column (CSV) or array (.npz), for name: file
    scaling: str = "z-score"  # none | min-max | z-score, fitted on the training split only
    val_fraction: float = 0.2  # 60/20/20 by default: enough validation data to rank trials
    test_fraction: float = 0.2
    split_seed: int = 0  # the split stays fixed across trials, whatever the training seed
    n_samples: int = 5000  # synthetic only: make_classification sizes
    n_features: int = 20
    n_classes: int = 2
    root: str = "~/.cache/trickopt"  # where torchvision data sets are downloaded

    def check(self, prefix: str, errors: list[str]) -> None:
        from trickopt.data import DATASETS
        from trickopt.tricks.scaling import SCALINGS, canonical_scaling

        check_choice(errors, f"{prefix}.name", self.name, DATASETS)
        try:
            canonical_scaling(self.scaling)
        except ValueError:
            errors.append(f"{prefix}.scaling: must be one of {', '.join(SCALINGS)}; "
                          f"got {self.scaling!r}")
        check_range(errors, f"{prefix}.val_fraction", self.val_fraction, 0, 1, "a float in (0, 1)")
        check_range(errors, f"{prefix}.test_fraction", self.test_fraction, 0, 1,
                    "a float in (0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            errors.append(f"{prefix}: val_fraction + test_fraction must be < 1; got "
                          f"{self.val_fraction} + {self.test_fraction}")
        if self.name == "file" and not self.path:
            errors.append(f"{prefix}.path: required when {prefix}.name is 'file' "
                          "(a .csv or .npz file)")
        if self.name == "file" and self.path and not Path(self.path).expanduser().is_file():
            errors.append(f"{prefix}.path: no such file; got {self.path!r}")
        check_min(errors, f"{prefix}.n_samples", self.n_samples, 10)
        check_min(errors, f"{prefix}.n_features", self.n_features, 2)
        check_min(errors, f"{prefix}.n_classes", self.n_classes, 2)


@dataclass
class ModelConfig:
    arch: str = "mlp"  # mlp | cnn (cnn needs image-shaped data such as digits 1x8x8)
    depth: int = 2  # hidden layers (mlp)
    width: int = 128  # units per hidden layer (mlp)
    channels: list[int] = field(default_factory=lambda: [16, 32])  # conv stages (cnn)
    activation: str = "relu"
    dropout: float = 0.0
    dropout_kind: str = "auto"  # auto: alpha dropout for selu, standard otherwise
    norm: str = "none"
    norm_position: str = "before_activation"

    def check(self, prefix: str, errors: list[str]) -> None:
        from trickopt.models import ACTIVATIONS, ARCHS
        from trickopt.tricks.dropout import DROPOUT_KINDS
        from trickopt.tricks.norm import NORM_KINDS, NORM_POSITIONS, normalize_norm_kind

        check_choice(errors, f"{prefix}.arch", self.arch, ARCHS)
        check_min(errors, f"{prefix}.depth", self.depth, 0)
        check_min(errors, f"{prefix}.width", self.width, 1)
        if not self.channels or any(c < 1 for c in self.channels):
            errors.append(f"{prefix}.channels: must be a non-empty list of ints >= 1; "
                          f"got {self.channels!r}")
        check_choice(errors, f"{prefix}.activation", self.activation, ACTIVATIONS)
        check_probability(errors, f"{prefix}.dropout", self.dropout)
        check_choice(errors, f"{prefix}.dropout_kind", self.dropout_kind,
                     ("auto",) + DROPOUT_KINDS)
        try:
            normalize_norm_kind(self.norm)
        except ValueError:
            errors.append(f"{prefix}.norm: must be one of {', '.join(NORM_KINDS)}; "
                          f"got {self.norm!r}")
        check_choice(errors, f"{prefix}.norm_position", self.norm_position, NORM_POSITIONS)


@dataclass
class TrainConfig:
    max_epochs: int = 50  # an upper bound: early stopping usually ends a run well before
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9  # sgd only
    l1: float = 0.0
    l1_mode: str = "proximal"  # proximal gives exact zeros; subgradient never does
    l2: float = 0.0
    l2_mode: str | None = None  # None: the optimizer's own (adamw decoupled, else coupled)
    schedule: str = "constant"
    schedule_params: dict = field(default_factory=dict)  # torch's names: step_size, gamma, ...
    stopper: str = "patience"  # none | patience | gl | pq | up
    stopper_params: dict = field(default_factory=lambda: {"patience": 10})
    device: str = "auto"  # auto: cuda, then mps, then cpu
    bf16: bool = True  # bf16 autocast, on CUDA only
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None leaves torch's choice

    def check(self, prefix: str, errors: list[str]) -> None:
        from trickopt.tricks.early_stopping import STOPPER_PARAMS, create_stopper
        from trickopt.tricks.optim import OPTIMIZERS
        from trickopt.tricks.regularization import L1_MODES, L2_MODES
        from trickopt.tricks.schedules import SCHEDULES

        check_min(errors, f"{prefix}.max_epochs", self.max_epochs, 1)
        check_min(errors, f"{prefix}.batch_size", self.batch_size, 1)
        check_positive(errors, f"{prefix}.lr", self.lr)
        check_choice(errors, f"{prefix}.optimizer", self.optimizer, OPTIMIZERS)
        check_range(errors, f"{prefix}.momentum", self.momentum, 0, 1, "a float in [0, 1)",
                    low_inclusive=True)
        check_non_negative(errors, f"{prefix}.l1", self.l1)
        check_non_negative(errors, f"{prefix}.l2", self.l2)
        check_choice(errors, f"{prefix}.l1_mode", self.l1_mode, L1_MODES)
        if self.l2_mode is not None:
            check_choice(errors, f"{prefix}.l2_mode", self.l2_mode, L2_MODES)
        if self.optimizer == "adamw" and self.l2_mode == "coupled":
            errors.append(f"{prefix}.l2_mode: adamw always decouples weight decay; got "
                          "'coupled' (use optimizer adam for coupled L2)")
        if check_choice(errors, f"{prefix}.schedule", self.schedule, SCHEDULES):
            check_schedule_params(errors, f"{prefix}.schedule_params", self.schedule,
                                  self.schedule_params)
        if check_choice(errors, f"{prefix}.stopper", self.stopper, tuple(STOPPER_PARAMS)):
            try:
                create_stopper(self.stopper, **self.stopper_params)
            except (TypeError, ValueError) as exc:
                errors.append(f"{prefix}.stopper_params: {exc}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            errors.append(f"{prefix}.device: must be auto, cpu, cuda, cuda:N or mps; "
                          f"got {self.device!r}")
        if self.threads is not None:
            check_min(errors, f"{prefix}.threads", self.threads, 1)


    @property
    def resolved_l2_mode(self) -> str:
        if self.l2_mode is not None:
            return self.l2_mode
        return "decoupled" if self.optimizer == "adamw" else "coupled"


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ---------------------------------------------------------------------------------------------
# Checks. Each appends "field: what is allowed; got value" and returns whether the value passed.


def check_choice(errors: list[str], name: str, value: Any, allowed: tuple) -> bool:
    if value in allowed:
        return True
    errors.append(f"{name}: must be one of {', '.join(map(str, allowed))}; got {value!r}")
    return False


def check_min(errors: list[str], name: str, value: int | float, low: int | float) -> bool:
    if value >= low:
        return True
    errors.append(f"{name}: must be >= {low}; got {value!r}")
    return False


def check_positive(errors: list[str], name: str, value: float) -> bool:
    if math.isfinite(value) and value > 0:
        return True
    errors.append(f"{name}: must be a finite float > 0; got {value!r}")
    return False


def check_non_negative(errors: list[str], name: str, value: float) -> bool:
    if math.isfinite(value) and value >= 0:
        return True
    errors.append(f"{name}: must be a finite float >= 0; got {value!r}")
    return False


def check_probability(errors: list[str], name: str, value: float) -> bool:
    return check_range(errors, name, value, 0, 1, "a float in [0, 1)", low_inclusive=True)


def check_range(errors: list[str], name: str, value: float, low: float, high: float,
                allowed: str, *, low_inclusive: bool = False) -> bool:
    above = value >= low if low_inclusive else value > low
    if above and value < high:
        return True
    errors.append(f"{name}: must be {allowed}; got {value!r}")
    return False


def check_schedule_params(errors: list[str], name: str, schedule: str, params: dict) -> bool:
    """Dry-run the scheduler on a throwaway optimizer: torch's own checks become config errors."""
    import torch

    from trickopt.tricks.schedules import create_scheduler

    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    try:
        create_scheduler(schedule, dummy, epochs=10, steps_per_epoch=10, **params)
    except (TypeError, ValueError) as exc:
        errors.append(f"{name}: {exc}")
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Parsing: a mapping onto a dataclass, with unknown keys and wrong types reported.


def parse_section(cls: type, raw: Any, prefix: str, errors: list[str]) -> Any:
    """Build dataclass `cls` from mapping `raw`, appending every problem to `errors`.

    Unknown keys and wrong types are reported here; `cls.check` (if any) reports the ranges and
    names. The returned instance holds defaults in place of rejected values.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{prefix}: must be a mapping of keys to values; got {raw!r}")
        raw = {}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        if key not in names:
            errors.append(f"{prefix}.{key}: unknown key; allowed: {', '.join(names)}")
            continue
        ok, converted = _convert(value, hints[key])
        if ok:
            values[key] = converted
        else:
            errors.append(f"{prefix}.{key}: must be {_type_name(hints[key])}; got {value!r}")
    section = cls(**values)
    if hasattr(section, "check"):
        section.check(prefix, errors)
    return section


def _convert(value: Any, hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return True, None
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(value, inner[0])
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if hint is dict or origin is dict:
        return isinstance(value, dict), value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            return False, value
        converted = [_convert(v, item) for v in value]
        return all(ok for ok, _ in converted), [v for _, v in converted]
    return True, value


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return f"{_type_name(inner[0])} or null"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}s"
    return {bool: "true or false", int: "an int", float: "a float", str: "a string",
            dict: "a mapping"}.get(hint, str(hint))


# ---------------------------------------------------------------------------------------------
# Files and --set overrides.


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` as a float: YAML 1.1 (PyYAML) wants `1.0e-3`."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, except that `1e-3` is a float (as in YAML 1.2, JSON and Python)."""
    return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader: no arbitrary objects


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; an unreadable or malformed file is a ConfigError naming it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file ({exc.strerror})"]) from None
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError([f"{path}: malformed YAML{line}: "
                           f"{getattr(exc, 'problem', None) or exc}"]) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: must hold a mapping of sections; got {type(raw).__name__}"])
    return raw


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `--set section.key=value` overrides; the value is parsed as YAML (1e-3, true, [1])."""
    errors = []
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            errors.append(f"--set {item}: must look like section.key=value, e.g. train.lr=0.01")
            continue
        try:
            value = load_yaml(text)
        except yaml.YAMLError:
            value = text
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                errors.append(f"--set {item}: {part} is not a section")
                break
            node = child
        else:
            node[parts[-1]] = value
    if errors:
        raise ConfigError(errors)
    return raw


RUN_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def load_run_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Read, override and validate a run config; raises ConfigError listing every problem."""
    raw = read_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, list(overrides))
    return parse_run_config(raw)


def parse_run_config(raw: dict, *, origin: str = "") -> RunConfig:
    errors: list[str] = []
    for key in raw:
        if key not in RUN_SECTIONS:
            errors.append(f"{origin}{key}: unknown section; allowed: {', '.join(RUN_SECTIONS)}")
    sections = {name: parse_section(cls, raw.get(name), f"{origin}{name}", errors)
                for name, cls in RUN_SECTIONS.items()}
    if errors:
        raise ConfigError(errors)
    return RunConfig(**sections)
