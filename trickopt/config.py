"""Typed configuration for one training run (data, model, train), validated once at the edge.

A config file is YAML with the sections `data`, `model` and `train`; every key has a default
here, so a file sets only what it changes. `load_run_config` collects *every* problem before
raising, each naming the field, the bad value and what is allowed, so a user fixes a file in
one pass. The study layer (`trickopt.study.config`) reuses `parse_section` for its own sections.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trickopt.tricks.constraints import (
    Constraint,
    check_params,
    integer,
    must_be,
    one_of,
    optional,
    real,
    shown,
    unknown,
)


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
    # A data factory of your own, "module:function", called with this section; it replaces
    # name and returns trickopt.data.Splits (see trickopt.data.splits_from_arrays).
    factory: str | None = None
    params: dict = field(default_factory=dict)  # anything your factory reads from the section
    task: str | None = None  # classification | regression; None: what the data says

    def check(self, prefix: str) -> list[str]:
        from trickopt.data import DATASETS, TASKS
        from trickopt.tricks.scaling import SCALINGS, canonical_scaling

        fraction = real(0, 1, low_open=True, high_open=True)
        errors = check_fields(self, prefix, {
            "name": one_of(*DATASETS), "scaling": _spelled(canonical_scaling, SCALINGS),
            "val_fraction": fraction, "test_fraction": fraction,
            "n_samples": integer(10), "n_features": integer(2), "n_classes": integer(2),
            "factory": optional(FACTORY), "task": optional(one_of(*TASKS)),
        })
        if self.val_fraction + self.test_fraction >= 1:
            errors.append(f"{prefix}: val_fraction + test_fraction must be < 1; got "
                          f"{self.val_fraction} + {self.test_fraction}")
        if self.name == "file" and not self.path:
            errors.append(f"{prefix}.path: required when {prefix}.name is 'file' "
                          "(a .csv or .npz file)")
        if self.name == "file" and self.path and not _is_file(self.path):
            errors.append(f"{prefix}.path: no such file; got {shown(self.path)}")
        return errors


@dataclass
class ModelConfig:
    arch: str = "mlp"  # mlp | cnn (images such as digits 1x8x8) | cnn1d (sequences)
    depth: int = 2  # hidden layers (mlp)
    width: int = 128  # units per hidden layer (mlp)
    channels: list[int] = field(default_factory=lambda: [16, 32])  # conv stages (cnn, cnn1d)
    # A model factory of your own, "module:function" (see trickopt.models); it replaces arch.
    factory: str | None = None
    params: dict = field(default_factory=dict)  # the factory's own knobs (searched or fixed)
    activation: str = "relu"
    dropout: float = 0.0
    dropout_kind: str = "auto"  # auto: alpha dropout for selu, standard otherwise
    norm: str = "none"
    norm_position: str = "before_activation"

    def check(self, prefix: str) -> list[str]:
        from trickopt.models import ACTIVATIONS, ARCHS
        from trickopt.tricks.dropout import DROPOUT_KINDS, PROBABILITY
        from trickopt.tricks.norm import NORM_KINDS, NORM_POSITIONS, normalize_norm_kind

        return check_fields(self, prefix, {
            # Upper bounds far past any model trained here, below what exhausts memory
            # (a width of 77,021 alone asks 24 GB): a typo must not be an OOM kill.
            "arch": one_of(*ARCHS), "depth": integer(0, MAX_DEPTH + 1),
            "width": integer(1, MAX_WIDTH + 1),
            "channels": Constraint(f"a list of 1 to {MAX_DEPTH} ints in [1, {MAX_WIDTH}]",
                                   lambda v: isinstance(v, list) and 0 < len(v) <= MAX_DEPTH
                                   and all(map(integer(1, MAX_WIDTH + 1), v))),
            "activation": one_of(*ACTIVATIONS), "dropout": PROBABILITY,
            "dropout_kind": one_of("auto", *DROPOUT_KINDS),
            "norm": _spelled(normalize_norm_kind, NORM_KINDS),
            "norm_position": one_of(*NORM_POSITIONS),
            "factory": optional(FACTORY),
            "params": Constraint("a mapping of the model's own knob names to values",
                                 lambda v: all(isinstance(k, str) and k.isidentifier()
                                               for k in v)),
        })


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

    def check(self, prefix: str) -> list[str]:
        # The tricks' own declared constraints: a config accepts what the tricks accept.
        from trickopt.tricks.early_stopping import STOPPER_CONSTRAINTS, STOPPER_REQUIRED
        from trickopt.tricks.optim import OPTIMIZER_CONSTRAINTS as OPTIM
        from trickopt.tricks.regularization import REGULARIZATION_CONSTRAINTS as REG
        from trickopt.tricks.schedules import SCHEDULE_CONSTRAINTS

        errors = check_fields(self, prefix, {
            "max_epochs": integer(1), "batch_size": integer(1), "lr": OPTIM["lr"],
            "optimizer": OPTIM["name"], "momentum": OPTIM["momentum"],
            "l1": REG["l1"], "l1_mode": REG["l1_mode"], "l2": REG["l2"],
            "l2_mode": optional(REG["l2_mode"]), "schedule": one_of(*SCHEDULE_CONSTRAINTS),
            "stopper": one_of(*STOPPER_CONSTRAINTS), "device": _DEVICE,
            "threads": optional(integer(1)), "seed": integer(0, TORCH_SEED_END),
        })
        if self.device != "auto" and _DEVICE(self.device) and not _device_exists(self.device):
            errors.append(f"{prefix}.device: {self.device!r} is not on this machine (use auto "
                          "or cpu)")
        if self.optimizer == "adamw" and self.l2_mode == "coupled":
            errors.append(f"{prefix}.l2_mode: adamw always decouples weight decay; got "
                          "'coupled' (use optimizer adam for coupled L2)")
        if self.schedule in SCHEDULE_CONSTRAINTS:
            errors += check_params(f"{prefix}.schedule_params", self.schedule_params,
                                   SCHEDULE_CONSTRAINTS[self.schedule])
        warmup = self.schedule_params.get("warmup_epochs")
        if self.schedule == "warmup_cosine" and real(0)(warmup) and warmup >= self.max_epochs:
            errors.append(must_be(f"{prefix}.schedule_params.warmup_epochs:",
                                  f"< max_epochs ({self.max_epochs})", warmup))
        if self.stopper in STOPPER_CONSTRAINTS:
            errors += check_params(f"{prefix}.stopper_params", self.stopper_params,
                                   STOPPER_CONSTRAINTS[self.stopper],
                                   required=STOPPER_REQUIRED[self.stopper])
        return errors

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
# Checks: the shared constraints (trickopt.tricks.constraints) applied to a section's fields.


def check_fields(section: Any, prefix: str, constraints: dict[str, Constraint]) -> list[str]:
    """One line per field of `section` that breaks its constraint: "prefix.field: must be..."."""
    return check_params(prefix, {name: getattr(section, name) for name in constraints},
                        constraints)


def _spelled(parse: Callable[[str], str], allowed: tuple) -> Constraint:
    """One of `allowed` in any spelling that `parse` accepts (e.g. "LayerNorm" for "layer")."""
    def test(value: Any) -> bool:
        try:
            parse(value)
        except ValueError:
            return False
        return True
    return Constraint(f"one of {allowed!r}", test)


# "module:function" or "package.module:Class.method"; imported (and checked) by the study.
FACTORY = Constraint('"module:function", e.g. "my_models:build"', lambda v: isinstance(v, str)
                     and re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", v) is not None)

_DEVICE = Constraint("auto, cpu, cuda, cuda:N or mps",
                     lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None)


MAX_WIDTH = 16_384  # units (mlp) or channels (cnn) per layer
MAX_DEPTH = 64  # hidden layers (mlp) or conv stages (cnn)
TORCH_SEED_END = 2**64  # torch.manual_seed takes seeds below this


def _device_exists(name: str) -> bool:
    import torch

    kind, _, index = name.partition(":")
    if kind == "cuda":
        return torch.cuda.is_available() and int(index or 0) < torch.cuda.device_count()
    if kind == "mps":
        return getattr(torch.backends, "mps", None) is not None and \
            torch.backends.mps.is_available()
    return True


def _is_file(path: str) -> bool:
    try:
        return Path(path).expanduser().is_file()
    except (OSError, ValueError):  # a name too long for the OS, or one holding a NUL
        return False


# ---------------------------------------------------------------------------------------------
# Parsing: a mapping onto a dataclass, with unknown keys and wrong types reported.


def parse_section(cls: type, raw: Any, prefix: str, errors: list[str]) -> Any:
    """Build dataclass `cls` from mapping `raw`, appending every problem to `errors`.

    Unknown keys and wrong types are reported here; `cls.check(prefix)` (if any) returns the
    lines for ranges and names. The returned instance holds defaults in place of rejected values.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(must_be(f"{prefix}:", "a mapping of keys to values", raw))
        raw = {}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        if key not in names:
            errors.append(unknown(prefix, key, "key", names))
            continue
        ok, converted = _convert(value, hints[key])
        if ok:
            values[key] = converted
        else:
            errors.append(must_be(f"{prefix}.{key}:", _type_name(hints[key]), value))
    section = cls(**values)
    if hasattr(section, "check"):
        errors.extend(section.check(prefix))
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
        item = _type_name(typing.get_args(hint)[0]).removeprefix("an ").removeprefix("a ")
        return f"a list of {item}s"
    return {bool: "true or false", int: "an int", float: "a float", str: "a string",
            dict: "a mapping"}.get(hint, str(hint))


# ---------------------------------------------------------------------------------------------
# Files and --set overrides.


# Limits on what a config may be: far above any real study file, far below what hurts. An
# alias-heavy file ("billion laughs") or one nested hundreds deep costs gigabytes or a
# RecursionError to anything that walks it.
MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
MAX_YAML_ALIASES = 100


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` as a float (YAML 1.1, PyYAML, wants `1.0e-3`), and
    refuses documents nested deeper than MAX_YAML_DEPTH or with more than MAX_YAML_ALIASES
    aliases."""

    _depth = _aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise _TooBig(f"more than {MAX_YAML_ALIASES} aliases (*name)")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _TooBig(f"nested more than {MAX_YAML_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _TooBig(yaml.YAMLError):
    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, except that `1e-3` is a float (as in YAML 1.2, JSON and Python)."""
    return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader: no arbitrary objects


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; an unreadable, non-UTF-8 or malformed file is a ConfigError naming
    it."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ConfigError([f"{path}: is not a regular file; a config file is YAML text"])
    if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: is {path.stat().st_size} bytes; a config file may be at "
                           f"most {MAX_CONFIG_BYTES} bytes"])
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file ({exc.strerror})"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: is not UTF-8 text (byte {exc.start}: {exc.reason}); a "
                           "config file is YAML text"]) from None
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
            errors.append(unknown("", f"{origin}{key}", "section", RUN_SECTIONS))
    sections = {name: parse_section(cls, raw.get(name), f"{origin}{name}", errors)
                for name, cls in RUN_SECTIONS.items()}
    if errors:
        raise ConfigError(errors)
    return RunConfig(**sections)
