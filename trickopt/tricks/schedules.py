"""Learning-rate schedules built on ``torch.optim.lr_scheduler``, with one stepping rule.

The rule: the training loop calls ``schedule.after_batch()`` after every optimizer step and
``schedule.after_epoch(monitored_value)`` after every epoch's validation. Each schedule
advances in exactly one of the two:

* per batch (``per_batch=True``; unit: optimizer steps): ``onecycle`` and
  ``warmup_cosine``, whose natural unit is the optimizer step;
* per epoch (unit: epochs): all others. ``plateau`` reads the monitored value (the
  validation loss by default); the others ignore it.

Sub-parameters keep torch's names. With ``lr0`` the optimizer's lr, ``e`` the epochs done,
``t`` the optimizer steps done and ``T = epochs * steps_per_epoch``, the lr used next is:

* ``constant``: ``lr0``.
* ``step(step_size=max(1, epochs // 3), gamma=0.1)``: ``lr0 * gamma**(e // step_size)``;
  the default is the ResNet recipe (x0.1 every 30 of 90 epochs).
* ``multistep(milestones=[epochs // 2, 3 * epochs // 4], gamma=0.1)``: ``lr0 * gamma**k``,
  ``k`` = milestones <= ``e``; the default is the CIFAR ResNet recipe (50% and 75%).
* ``exponential(gamma=0.01**(1 / epochs))``: ``lr0 * gamma**e``; by default it ends at 1%.
* ``cosine(T_max=epochs, eta_min=0)``: ``eta_min + (lr0 - eta_min)(1 + cos(pi e / T_max))/2``.
* ``cosine_restarts(T_0=max(1, epochs // 3), T_mult=1, eta_min=0)``: SGDR, cycles of
  ``T_0, T_0 * T_mult, ...`` epochs, each a cosine from ``lr0`` to ``eta_min``.
* ``warmup_cosine(warmup_epochs=0.05 * epochs, eta_min=0)``: with
  ``W = round(warmup_epochs * steps_per_epoch)`` warm-up steps, ``lr0 * (t + 1) / (W + 1)``
  for ``t < W`` (linear from ~0, never exactly 0 so no step is wasted, as nanoGPT), then
  ``eta_min + (lr0 - eta_min)(1 + cos(pi (t - W) / (T - W)))/2``. 5% is Goyal et al.'s 5
  of 90 epochs.
* ``onecycle(max_lr=lr0, pct_start=0.3, anneal_strategy="cos", div_factor=25,
  final_div_factor=1e4, cycle_momentum=False)``: ``torch``'s OneCycleLR over ``T`` steps.
  ``cycle_momentum`` defaults to False (torch: True) so that the schedule changes only
  the lr, and comparing schedules does not also compare momentum policies.
* ``plateau(factor=0.1, patience=10, threshold=1e-4, mode="min", min_lr=0)``:
  ReduceLROnPlateau, ``patience`` in epochs, relative threshold.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable

from torch.optim import Optimizer, lr_scheduler

from trickopt.tricks.constraints import BOOL, Constraint, integer, must_be, real, shown

SCHEDULE_PARAMS: dict[str, tuple[str, ...]] = {
    "constant": (),
    "step": ("step_size", "gamma"),
    "multistep": ("milestones", "gamma"),
    "exponential": ("gamma",),
    "cosine": ("T_max", "eta_min"),
    "cosine_restarts": ("T_0", "T_mult", "eta_min"),
    "warmup_cosine": ("warmup_epochs", "eta_min"),
    "onecycle": (
        "max_lr", "pct_start", "anneal_strategy", "div_factor", "final_div_factor",
        "cycle_momentum",
    ),
    "plateau": ("factor", "patience", "threshold", "mode", "min_lr"),
}
SCHEDULES = tuple(SCHEDULE_PARAMS)
_PER_BATCH = frozenset({"onecycle", "warmup_cosine"})


def _noted(constraint: Constraint, note: str) -> Constraint:
    return dataclasses.replace(constraint, text=f"{constraint.text} ({note})")


def _is_milestones(v: object) -> bool:
    if not isinstance(v, (list, tuple)) or not v or not all(map(integer(1), v)):
        return False
    return all(a < b for a, b in itertools.pairwise(v))


# One constraint per parameter name; a name means the same thing in every schedule.
_CONSTRAINTS: dict[str, Constraint] = {
    "step_size": _noted(integer(1), "epochs"),
    # gamma > 1 would grow the lr: almost surely a typo for a decay schedule.
    "gamma": real(0, 1, low_open=True),
    "milestones": Constraint("a non-empty increasing list of ints >= 1 (epochs)", _is_milestones),
    "T_max": _noted(integer(1), "epochs"),
    "T_0": _noted(integer(1), "epochs"),
    "T_mult": integer(1),
    "eta_min": _noted(real(0), "an absolute lr"),
    "warmup_epochs": _noted(real(0), "epochs; fractions allowed"),
    "max_lr": real(0, low_open=True),
    "pct_start": real(0, 1, low_open=True, high_open=True),
    "anneal_strategy": Constraint("'cos' or 'linear'", lambda v: v in ("cos", "linear")),
    "div_factor": real(0, low_open=True),
    "final_div_factor": real(0, low_open=True),
    "cycle_momentum": BOOL,
    "factor": real(0, 1, low_open=True, high_open=True),
    "patience": _noted(integer(0), "epochs"),
    "threshold": real(0),
    "mode": Constraint("'min' or 'max'", lambda v: v in ("min", "max")),
    "min_lr": real(0),
}
# What each schedule accepts, for `create_scheduler` and the config check alike.
SCHEDULE_CONSTRAINTS: dict[str, dict[str, Constraint]] = {
    name: {param: _CONSTRAINTS[param] for param in params}
    for name, params in SCHEDULE_PARAMS.items()
}


class LRSchedule:
    """A torch LR scheduler plus the unit it advances in (see the module docstring).

    Attributes:
        scheduler: The ``torch.optim.lr_scheduler`` object.
        per_batch: True if it advances in ``after_batch`` (optimizer steps), False if in
            ``after_epoch`` (epochs).

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> schedule = create_scheduler("step", opt, epochs=4, steps_per_epoch=10,
        ...                             step_size=2, gamma=0.5)
        >>> for epoch in range(3):
        ...     opt.step(); schedule.after_batch(); schedule.after_epoch(None)
        >>> schedule.current_lr()
        0.05
    """

    def __init__(self, scheduler: lr_scheduler.LRScheduler | None, *, per_batch: bool,
                 optimizer: Optimizer | None = None) -> None:
        self.scheduler = scheduler  # None for `constant`: nothing to step
        self.optimizer = optimizer if optimizer is not None else scheduler.optimizer
        self.per_batch = per_batch
        self._takes_value = isinstance(scheduler, lr_scheduler.ReduceLROnPlateau)

    def after_batch(self) -> None:
        """Advance a per-batch schedule by one optimizer step; a no-op for the others."""
        if self.per_batch:
            self.scheduler.step()

    def after_epoch(self, value: float | None = None) -> None:
        """Advance a per-epoch schedule; ``plateau`` needs ``value`` (the monitored metric)."""
        if self.per_batch or self.scheduler is None:
            return
        if not self._takes_value:
            self.scheduler.step()
            return
        if value is None:
            raise ValueError("schedule 'plateau' needs the monitored value; got value=None")
        self.scheduler.step(value)

    def current_lr(self) -> float:
        """Return the learning rate of the first param group (all groups share it)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)

    def __repr__(self) -> str:
        unit = "batch" if self.per_batch else "epoch"
        name = type(self.scheduler).__name__ if self.scheduler is not None else "constant"
        return f"LRSchedule({name}, per_{unit})"


def create_scheduler(
    name: str, optimizer: Optimizer, *, epochs: int, steps_per_epoch: int, **params: object
) -> LRSchedule:
    """Build one of ``SCHEDULES`` for a run of ``epochs`` x ``steps_per_epoch`` steps.

    Args:
        name: One of ``SCHEDULES`` (case-insensitive; ``-`` reads as ``_``).
        optimizer: The optimizer whose lr (``lr0``) the schedule drives.
        epochs: Planned epochs, an int >= 1.
        steps_per_epoch: Optimizer steps per epoch (``len(train_loader)``), an int >= 1.
        **params: The schedule's sub-parameters, ``SCHEDULE_PARAMS[name]``; defaults are in
            the module docstring.

    Raises:
        ValueError: Unknown name, unknown sub-parameter or invalid value; all problems are
            reported together.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> create_scheduler("onecycle", opt, epochs=2, steps_per_epoch=5).per_batch
        True
    """
    key = name.lower().replace("-", "_") if isinstance(name, str) else name
    if key not in SCHEDULE_PARAMS:
        raise ValueError(f"unknown schedule {shown(name)}; allowed: {SCHEDULES}")
    _validate(key, epochs, steps_per_epoch, params)
    if key == "constant":
        # No torch scheduler at all: attaching one wraps optimizer.step, a few us per step.
        return LRSchedule(None, per_batch=False, optimizer=optimizer)
    scheduler = _BUILDERS[key](optimizer, epochs, steps_per_epoch, params)
    return LRSchedule(scheduler, per_batch=key in _PER_BATCH)


def _validate(key: str, epochs: object, steps_per_epoch: object, params: dict) -> None:
    errors = [
        must_be(repr(field), "an int >= 1", value, name=field)
        for field, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch))
        if not integer(1)(value)
    ]
    declared = SCHEDULE_CONSTRAINTS[key]
    for param, value in params.items():
        if param not in declared:
            errors.append(f"unknown parameter {shown(param)}; allowed: {tuple(declared)}")
        elif not declared[param](value):
            errors.append(must_be(f"parameter {param!r}", declared[param].text, value, name=param))
    if errors:
        raise ValueError(f"invalid schedule {key!r}: " + "; ".join(errors))


class _WarmupCosine:
    """LambdaLR factor for ``warmup_cosine``: ``lr(t) / lr0`` (a class, so it pickles)."""

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float) -> None:
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_ratio = min_ratio  # eta_min / lr0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        # Past the planned end the lr stays at eta_min instead of rising again.
        progress = min(step - self.warmup_steps, self.total_steps - self.warmup_steps)
        cosine = (1 + math.cos(math.pi * progress / (self.total_steps - self.warmup_steps))) / 2
        return self.min_ratio + (1 - self.min_ratio) * cosine


def _warmup_cosine(
    optimizer: Optimizer, epochs: int, steps: int, p: dict
) -> lr_scheduler.LRScheduler:
    total = epochs * steps
    warmup_epochs = p.get("warmup_epochs", 0.05 * epochs)
    warmup = round(warmup_epochs * steps)
    if warmup >= total:
        raise ValueError(
            "invalid schedule 'warmup_cosine': parameter 'warmup_epochs' must leave at least "
            f"one optimizer step of cosine, i.e. be < epochs={epochs}; got {warmup_epochs=}"
        )
    eta_min = p.get("eta_min", 0.0)
    factors = [
        _WarmupCosine(warmup, total, eta_min / base if base else 0.0)
        for base in (g.get("initial_lr", g["lr"]) for g in optimizer.param_groups)
    ]
    return lr_scheduler.LambdaLR(optimizer, factors)


def _onecycle(optimizer: Optimizer, epochs: int, steps: int, p: dict) -> lr_scheduler.LRScheduler:
    return lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=p.get("max_lr", optimizer.param_groups[0]["lr"]),
        total_steps=epochs * steps,
        pct_start=p.get("pct_start", 0.3),
        anneal_strategy=p.get("anneal_strategy", "cos"),
        div_factor=p.get("div_factor", 25.0),
        final_div_factor=p.get("final_div_factor", 1e4),
        cycle_momentum=p.get("cycle_momentum", False),
    )


def _default_milestones(epochs: int) -> list[int]:
    return sorted({max(1, epochs // 2), max(1, 3 * epochs // 4)})


_Builder = Callable[[Optimizer, int, int, dict], lr_scheduler.LRScheduler]
_BUILDERS: dict[str, _Builder] = {
    "step": lambda opt, epochs, steps, p: lr_scheduler.StepLR(
        opt, step_size=p.get("step_size", max(1, epochs // 3)), gamma=p.get("gamma", 0.1)
    ),
    "multistep": lambda opt, epochs, steps, p: lr_scheduler.MultiStepLR(
        opt, milestones=p.get("milestones", _default_milestones(epochs)),
        gamma=p.get("gamma", 0.1),
    ),
    "exponential": lambda opt, epochs, steps, p: lr_scheduler.ExponentialLR(
        opt, gamma=p.get("gamma", 0.01 ** (1 / epochs))
    ),
    "cosine": lambda opt, epochs, steps, p: lr_scheduler.CosineAnnealingLR(
        opt, T_max=p.get("T_max", epochs), eta_min=p.get("eta_min", 0.0)
    ),
    "cosine_restarts": lambda opt, epochs, steps, p: lr_scheduler.CosineAnnealingWarmRestarts(
        opt, T_0=p.get("T_0", max(1, epochs // 3)), T_mult=p.get("T_mult", 1),
        eta_min=p.get("eta_min", 0.0),
    ),
    "warmup_cosine": _warmup_cosine,
    "onecycle": _onecycle,
    "plateau": lambda opt, epochs, steps, p: lr_scheduler.ReduceLROnPlateau(
        opt, mode=p.get("mode", "min"), factor=p.get("factor", 0.1),
        patience=p.get("patience", 10), threshold=p.get("threshold", 1e-4),
        min_lr=p.get("min_lr", 0.0),
    ),
}
