"""The search space: which knobs a study may turn, their conditions, and how a trial sets them.

Each entry of a study's `search` section is either a fixed value (`dropout: 0.2`) or a
distribution: `{low, high, log?, step?}` for numbers, `{choices: [...]}` for anything.
Parameters are the tricks plus the nuisance knobs of the Deep Learning Tuning Playbook (lr,
batch size, optimizer). Conditional parameters (a schedule's sub-parameters, a stopper's
threshold, an L1 strength) are distinct parameters with their own names, sampled only when
their parent makes them active: `step_gamma` and `exp_gamma` are not the same knob. With the
TPE sampler we set `group=True`, which is what Optuna 5's multivariate TPE needs to handle such
a dynamic space without falling back to independent sampling.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from trickopt.config import MAX_DEPTH, MAX_WIDTH
from trickopt.tricks.constraints import (
    Constraint,
    check,
    integer,
    must_be,
    one_of,
    real,
    shown,
    unknown,
)
from trickopt.tricks.dropout import PROBABILITY
from trickopt.tricks.early_stopping import STOPPER_CONSTRAINTS, STOPPERS
from trickopt.tricks.norm import NORM_KINDS, NORM_POSITIONS
from trickopt.tricks.optim import OPTIMIZER_CONSTRAINTS
from trickopt.tricks.schedules import SCHEDULE_CONSTRAINTS, SCHEDULES

REGULARIZERS = ("none", "l1", "l2", "l1_l2")


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False
    step: float | None = None


@dataclass(frozen=True)
class Choice:
    choices: tuple


@dataclass(frozen=True)
class Param:
    """One knob: its value type, where it lands in the run config, and when it is active."""

    kind: str  # "float", "int" or "choice"
    target: tuple[str, ...]  # ("model", "dropout"), ("train", "schedule_params", "gamma"), ...
    constraint: Constraint  # what a fixed value, a choice or a range's ends may be
    parent: str | None = None  # the knob this one depends on
    parent_values: tuple = ()  # ...and the values of it that make this one active


# A knob that sets a trick's argument takes the trick's own declared constraint.
_SCHEDULE, _STOPPER = SCHEDULE_CONSTRAINTS, STOPPER_CONSTRAINTS
_POSITIVE = real(0, low_open=True)  # a strength the regularizer switched on; a warm-up
PARAMS: dict[str, Param] = {
    # Nuisance parameters: always tuned, never the question.
    "optimizer": Param("choice", ("train", "optimizer"), OPTIMIZER_CONSTRAINTS["name"]),
    "lr": Param("float", ("train", "lr"), OPTIMIZER_CONSTRAINTS["lr"]),
    "batch_size": Param("int", ("train", "batch_size"), integer(1)),
    "momentum": Param("float", ("train", "momentum"), OPTIMIZER_CONSTRAINTS["momentum"],
                      parent="optimizer", parent_values=("sgd",)),
    # Model shape.
    "width": Param("int", ("model", "width"), integer(1, MAX_WIDTH + 1)),
    "depth": Param("int", ("model", "depth"), integer(0, MAX_DEPTH + 1)),
    # The tricks.
    "dropout": Param("float", ("model", "dropout"), PROBABILITY),
    "norm": Param("choice", ("model", "norm"), one_of(*NORM_KINDS)),
    "norm_position": Param("choice", ("model", "norm_position"), one_of(*NORM_POSITIONS),
                           parent="norm", parent_values=tuple(k for k in NORM_KINDS
                                                              if k not in ("none", "weight"))),
    "regularizer": Param("choice", ("train", "regularizer"), one_of(*REGULARIZERS)),
    "l1": Param("float", ("train", "l1"), _POSITIVE,
                parent="regularizer", parent_values=("l1", "l1_l2")),
    "l2": Param("float", ("train", "l2"), _POSITIVE,
                parent="regularizer", parent_values=("l2", "l1_l2")),
    "schedule": Param("choice", ("train", "schedule"), one_of(*SCHEDULES)),
    "step_size": Param("int", ("train", "schedule_params", "step_size"),
                       _SCHEDULE["step"]["step_size"], parent="schedule",
                       parent_values=("step",)),
    "step_gamma": Param("float", ("train", "schedule_params", "gamma"),
                        _SCHEDULE["step"]["gamma"], parent="schedule", parent_values=("step",)),
    "exp_gamma": Param("float", ("train", "schedule_params", "gamma"),
                       _SCHEDULE["exponential"]["gamma"], parent="schedule",
                       parent_values=("exponential",)),
    "restart_period": Param("int", ("train", "schedule_params", "T_0"),
                            _SCHEDULE["cosine_restarts"]["T_0"], parent="schedule",
                            parent_values=("cosine_restarts",)),
    "warmup_epochs": Param("float", ("train", "schedule_params", "warmup_epochs"), _POSITIVE,
                           parent="schedule", parent_values=("warmup_cosine",)),
    "onecycle_pct_start": Param("float", ("train", "schedule_params", "pct_start"),
                                _SCHEDULE["onecycle"]["pct_start"], parent="schedule",
                                parent_values=("onecycle",)),
    "plateau_factor": Param("float", ("train", "schedule_params", "factor"),
                            _SCHEDULE["plateau"]["factor"], parent="schedule",
                            parent_values=("plateau",)),
    "plateau_patience": Param("int", ("train", "schedule_params", "patience"),
                              _SCHEDULE["plateau"]["patience"], parent="schedule",
                              parent_values=("plateau",)),
    "stopper": Param("choice", ("train", "stopper"), one_of(*STOPPERS)),
    "patience": Param("int", ("train", "stopper_params", "patience"),
                      _STOPPER["patience"]["patience"], parent="stopper",
                      parent_values=("patience",)),
    "gl_alpha": Param("float", ("train", "stopper_params", "alpha"), _STOPPER["gl"]["alpha"],
                      parent="stopper", parent_values=("gl",)),
    "pq_alpha": Param("float", ("train", "stopper_params", "alpha"), _STOPPER["pq"]["alpha"],
                      parent="stopper", parent_values=("pq",)),
    "up_s": Param("int", ("train", "stopper_params", "s"), _STOPPER["up"]["s"],
                  parent="stopper", parent_values=("up",)),
}

# "All tricks": the default search space. lr's range spans what SGD and Adam both need.
ALL_TRICKS: dict[str, Any] = {
    "optimizer": {"choices": ["sgd", "adam", "adamw"]},
    "lr": {"low": 1e-4, "high": 3e-1, "log": True},
    "batch_size": {"choices": [32, 64, 128, 256]},
    "dropout": {"low": 0.0, "high": 0.5},
    "norm": {"choices": ["none", "batch", "layer", "weight", "batch_renorm"]},
    "norm_position": {"choices": ["before_activation", "after_activation"]},
    "regularizer": {"choices": ["none", "l1", "l2", "l1_l2"]},
    "l1": {"low": 1e-6, "high": 1e-2, "log": True},
    "l2": {"low": 1e-6, "high": 1e-1, "log": True},
    "schedule": {"choices": ["constant", "step", "exponential", "cosine", "warmup_cosine",
                             "onecycle", "plateau"]},
    "step_size": {"low": 2, "high": 10},
    "step_gamma": {"low": 0.1, "high": 0.9},
    "exp_gamma": {"low": 0.8, "high": 0.99},
    "warmup_epochs": {"low": 0.5, "high": 5.0},
    "onecycle_pct_start": {"low": 0.1, "high": 0.5},
    "plateau_factor": {"low": 0.1, "high": 0.7},
    "plateau_patience": {"low": 1, "high": 5},
    "stopper": {"choices": ["patience", "gl", "pq", "up"]},
    "patience": {"low": 2, "high": 20},
    "gl_alpha": {"low": 0.5, "high": 10.0, "log": True},
    "pq_alpha": {"low": 0.1, "high": 5.0, "log": True},
    "up_s": {"low": 1, "high": 4},
}


# The built-in models' shape: knobs of model.width/depth, meaningless for a model factory of
# the user's own, whose knobs are its `model.params`.
BUILT_IN_SHAPE = ("width", "depth")
_ANY = Constraint("any value", lambda v: True)
_NUMBER = Constraint("a finite number", real(-math.inf).test)


def parse_search(raw: Any, prefix: str, errors: list[str]) -> dict[str, Any]:
    """Validate a `search` mapping into {name: fixed value | Range | Choice}."""
    if not isinstance(raw, dict):
        errors.append(must_be(f"{prefix}:", "a mapping of parameter names to values or "
                              "distributions", raw))
        return {}
    space = {}
    for name, spec in raw.items():
        if name not in PARAMS:
            errors.append(unknown(prefix, name, "search parameter", PARAMS))
            continue
        field = f"{prefix}.{name}"
        parsed = _parse_one(PARAMS[name], spec, field, errors)
        if parsed is not None:
            space[name] = parsed
    return space


def parse_model_params(raw: dict, prefix: str, errors: list[str]) -> tuple[dict, dict]:
    """Split a model's own knobs (`model.params`) into (fixed values, searched knobs).

    A value that is a distribution (`{low, high}` or `{choices}`) is searched under the knob's
    own name; an int range (both ends ints) gives ints. Any other value is passed as it is.
    """
    fixed, searched = {}, {}
    for name, spec in raw.items():
        if isinstance(spec, dict) and ("choices" in spec or "low" in spec):
            whole = "choices" not in spec and all(
                isinstance(spec.get(end), int) and not isinstance(spec.get(end), bool)
                for end in ("low", "high"))
            param = Param("choice" if "choices" in spec else "int" if whole else "float",
                          ("model", "params", name), _ANY if "choices" in spec else _NUMBER)
            parsed = _parse_one(param, spec, f"{prefix}.{name}", errors)
            if parsed is not None:
                searched[name] = parsed
        else:
            fixed[name] = spec
    return fixed, searched


def knobs(space: dict[str, Any], base) -> dict[str, Param]:
    """Every knob a space may hold for run config `base`: trickopt's, and the model's own
    (`model.params`), which replace the built-in models' width and depth for a factory."""
    table = dict(PARAMS)
    if base.model.factory is not None:
        for name in BUILT_IN_SHAPE:
            del table[name]
    for name, spec in space.items():
        if name not in table:
            kind = "choice" if not isinstance(spec, Range) else \
                "int" if isinstance(spec.low, int) and isinstance(spec.high, int) else "float"
            table[name] = Param(kind, ("model", "params", name), _ANY)
    return table


def _parse_one(param: Param, spec: Any, field: str, errors: list[str]) -> Any:
    if not isinstance(spec, dict):
        return _check_value(param, spec, field, errors)
    if "choices" in spec:
        return _parse_choice(param, spec, field, errors)
    return _parse_range(param, spec, field, errors)


def _check_value(param: Param, value: Any, field: str, errors: list[str], what: str = "") -> Any:
    if param.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    problems = check(f"{field}{what}", value, param.constraint)
    errors += problems
    return None if problems else value


def _parse_choice(param: Param, spec: dict, field: str, errors: list[str]) -> Choice | None:
    extra = [str(key) for key in spec if key != "choices"]
    if extra:
        errors.append(f"{field}: unknown key(s) {shown(extra)} beside choices")
    choices = spec["choices"]
    if not isinstance(choices, list) or not choices:
        errors.append(must_be(f"{field}.choices:", "a non-empty list", choices))
        return None
    n_errors = len(errors)
    values = [_check_value(param, c, field, errors, ".choices") for c in choices]
    return Choice(tuple(values)) if len(errors) == n_errors else None


def _parse_range(param: Param, spec: dict, field: str, errors: list[str]) -> Range | None:
    if param.kind == "choice":
        errors.append(must_be(f"{field}:", "a value or {choices: [...]} (it is categorical)",
                              spec))
        return None
    extra = set(spec) - {"low", "high", "log", "step"}
    missing = {"low", "high"} - set(spec)
    if extra or missing:
        errors.append(must_be(f"{field}:", "a range: low, high and optionally log, step",
                              spec))
        return None
    n_errors = len(errors)
    low = _check_value(param, spec["low"], field, errors, ".low")
    high = _check_value(param, spec["high"], field, errors, ".high")
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        errors.append(must_be(f"{field}.log:", "true or false", log))
    if len(errors) > n_errors:
        return None
    if low >= high:
        errors.append(must_be(f"{field}.high:", f"> low ({shown(low)})", high))
    if log and low <= 0:
        errors.append(must_be(f"{field}.low:", "> 0 in a log range", low))
    if step is not None and (log or not real(0, low_open=True)(step)):
        errors.append(must_be(f"{field}.step:", "a number > 0, and cannot go with log", step))
    elif step is not None and param.kind == "int" and step != int(step):
        errors.append(must_be(f"{field}.step:", "a whole number (the knob is an int)", step))
    elif step is not None and low < high and step > high - low:
        errors.append(must_be(f"{field}.step:", f"<= high - low ({shown(high - low)})", step))
    return Range(low, high, log, step) if len(errors) == n_errors else None


def suggest(trial, space: dict[str, Any], base) -> dict[str, Any]:
    """Decide every active parameter for `trial` (an optuna.Trial): searched or fixed.

    `base` is the run config; a parent that the space leaves out keeps its base value, so
    e.g. `step_gamma` is active when the space fixes or omits `schedule` and it is `step`.
    """
    context = _base_values(base)
    decided = {}
    for name, param in knobs(space, base).items():
        if name not in space:
            continue
        if param.parent is not None and context.get(param.parent) not in param.parent_values:
            continue
        spec = space[name]
        if isinstance(spec, Choice):
            value = trial.suggest_categorical(name, list(spec.choices))
        elif isinstance(spec, Range) and param.kind == "int":
            value = trial.suggest_int(name, int(spec.low), int(spec.high), log=spec.log,
                                      step=int(spec.step or 1))
        elif isinstance(spec, Range):
            value = trial.suggest_float(name, spec.low, spec.high, log=spec.log, step=spec.step)
        else:
            value = spec
        decided[name] = context[name] = value
    return decided


def _base_values(base) -> dict[str, Any]:
    train = base.train
    regularizer = {(False, False): "none", (True, False): "l1", (False, True): "l2",
                   (True, True): "l1_l2"}[(train.l1 > 0, train.l2 > 0)]
    return {"optimizer": train.optimizer, "norm": base.model.norm,
            "regularizer": regularizer, "schedule": train.schedule, "stopper": train.stopper}


def apply(base, params: dict[str, Any]):
    """A copy of run config `base` with the trial's parameters set."""
    config = copy.deepcopy(base)
    if "schedule" in params and params["schedule"] != base.train.schedule:
        config.train.schedule_params = {}  # the base's sub-parameters belong to its schedule
    if "stopper" in params and params["stopper"] != base.train.stopper:
        config.train.stopper_params = {}
    table = knobs(params, base)
    for name, value in params.items():
        target = table[name].target
        if target == ("train", "regularizer"):
            config.train.l1 = config.train.l1 if value in ("l1", "l1_l2") else 0.0
            config.train.l2 = config.train.l2 if value in ("l2", "l1_l2") else 0.0
            continue
        node = getattr(config, target[0])
        if len(target) == 2:
            setattr(node, target[1], value)
        else:
            getattr(node, target[1])[target[2]] = value
    return config
