"""Early stopping: Keras-style patience and Prechelt's GL, PQ and UP criteria.

Every stopper follows one protocol, in epochs (the n-th call to `step` is epoch n):
`step(val_loss, train_loss=None) -> bool` (True: stop now); attributes `best`, `best_epoch`,
`stopped_epoch`, `epoch`, `reason` (None, or a `StopReason`: PATIENCE, GL, PQ, UP,
NON_FINITE); `reset()`, `state_dict()`, `load_state_dict()`. A nan/inf loss stops at once
with reason "non_finite" and never becomes the best. After a stop, `step` returns True and
changes nothing until `reset()`.

Prechelt's criteria are from L. Prechelt, "Early Stopping -- but when?" (1998). They are
ratios of losses, so GL and PQ raise ValueError on a negative loss. Pure Python.
"""

from __future__ import annotations

import enum
import inspect
import math
from abc import ABC, abstractmethod
from typing import Any, Literal

from trickopt.tricks.constraints import Constraint, integer, must_be, one_of, real, shown


class StopReason(str, enum.Enum):
    """Why a run ended: one enum from the stopper that decides it, through `fit`'s History and
    the Optuna trial, to the MLflow tag `stop_reason` that shows it. A `str`, so it compares
    and serialises as its value ("patience")."""

    PATIENCE = "patience"  # Keras-style: no improvement for `patience` epochs
    GL = "gl"  # Prechelt's generalization loss
    PQ = "pq"  # Prechelt's progress quotient
    UP = "up"  # Prechelt's successive validation-loss rises
    NON_FINITE = "non_finite"  # a nan/inf loss
    MAX_EPOCHS = "max_epochs"  # the epoch budget ran out
    PRUNED = "pruned"  # `fit`'s on_epoch_end asked to stop: in a study, Optuna's pruner
    ERROR = "error"  # the run raised
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM
    WORKER_DIED = "worker_died"  # its process died; found by the next run (study only)

    def __str__(self) -> str:
        return self.value


STOPPERS = ("none", "patience", "gl", "pq", "up")
# Each stopper's constructor arguments: the constructors, `create_stopper` and the config check
# all read these. (Which are required is read from the constructors: `STOPPER_REQUIRED`.)
STOPPER_CONSTRAINTS: dict[str, dict[str, Constraint]] = {
    "none": {},
    "patience": {"patience": integer(1), "min_delta": real(0), "mode": one_of("min", "max")},
    "gl": {"alpha": real(0, low_open=True)},
    "pq": {"alpha": real(0, low_open=True), "strip": integer(1)},
    "up": {"s": integer(1), "strip": integer(1)},
}
STOPPER_PARAMS: dict[str, tuple[str, ...]] = {
    kind: tuple(constraints) for kind, constraints in STOPPER_CONSTRAINTS.items()
}


def _check(kind: str, **values: Any) -> None:
    for name, value in values.items():
        constraint = STOPPER_CONSTRAINTS[kind][name]
        if not constraint(value):
            raise ValueError(must_be(repr(name), constraint.text, value, name=name))


def _check_not_negative(name: str, value: float) -> None:
    if value < 0:
        raise ValueError(must_be(name, "a loss >= 0 for Prechelt's ratio criteria", value))


def _ratio_minus_one(value: float, reference: float) -> float:
    """`value / reference - 1` for values >= 0, with 0/0 -> 0 and x/0 -> inf."""
    if reference == 0:
        return 0.0 if value == 0 else math.inf
    return value / reference - 1.0


def generalization_loss(val_loss: float, lowest_val_loss: float) -> float:
    """Prechelt's GL(t) = 100 * (E_va(t) / E_opt(t) - 1), in percent; e.g. (1.2, 1.0) -> 20."""
    return 100.0 * _ratio_minus_one(val_loss, lowest_val_loss)


def training_progress(strip_train_losses: list[float]) -> float:
    """Prechelt's P_k(t) = 1000 * (sum / (k * min) - 1) over a strip of k train losses."""
    k = len(strip_train_losses)
    return 1000.0 * _ratio_minus_one(sum(strip_train_losses), k * min(strip_train_losses))


class Stopper(ABC):
    """Shared bookkeeping of the protocol; subclasses implement `_decide`."""

    _mode: Literal["min", "max"] = "min"
    _extra_state: tuple[str, ...] = ()  # subclass state that state_dict() also saves

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget all steps, as if freshly constructed."""
        self.best = math.inf if self._mode == "min" else -math.inf
        self.best_epoch = 0
        self.stopped_epoch = 0
        self.epoch = 0
        self.reason: StopReason | None = None
        self._reset_extra()

    def _reset_extra(self) -> None:  # noqa: B027 - optional hook
        pass

    def step(self, val_loss: float, train_loss: float | None = None) -> bool:
        """Record one epoch's losses; return True if training should stop now."""
        if self.reason is not None:
            return True
        val = float(val_loss)
        train = None if train_loss is None else float(train_loss)
        self._validate(val, train)  # raises before any state changes
        self.epoch += 1
        if not math.isfinite(val) or (train is not None and not math.isfinite(train)):
            return self._stop(StopReason.NON_FINITE)
        reason = self._decide(val, train)
        return False if reason is None else self._stop(reason)

    def _validate(self, val: float, train: float | None) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    def _decide(self, val: float, train: float | None) -> StopReason | None:
        """Update the state with a finite epoch; return the stop reason, or None."""

    def _track_lowest(self, val: float) -> None:
        if val < self.best:
            self.best, self.best_epoch = val, self.epoch

    def _stop(self, reason: StopReason) -> bool:
        self.reason, self.stopped_epoch = reason, self.epoch
        return True

    def _state_keys(self) -> tuple[str, ...]:
        return ("best", "best_epoch", "stopped_epoch", "epoch", "reason", *self._extra_state)

    def state_dict(self) -> dict[str, Any]:
        """Plain values; `best` may be +-inf, which Python's json writes as Infinity."""
        state = {key: getattr(self, key) for key in self._state_keys()}
        return {key: list(v) if isinstance(v, list) else v for key, v in state.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict()` of a stopper of the same class returned."""
        expected = sorted(self._state_keys())
        if sorted(state) != expected:
            name = type(self).__name__
            raise ValueError(f"{name} state needs keys {expected}; got {sorted(state)}.")
        for key, value in state.items():
            setattr(self, key, list(value) if isinstance(value, list) else value)
        if self.reason is not None:
            self.reason = StopReason(self.reason)  # from a JSON round trip: a plain str

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(epoch={self.epoch}, best={self.best}, reason={self.reason!r})"


class NoStopping(Stopper):
    """Never stops (except on a nan/inf loss), but tracks the lowest val loss.

    Example:
        >>> s = NoStopping()
        >>> [s.step(v) for v in (3.0, 1.0, 2.0)], s.best_epoch
        ([False, False, False], 2)
    """

    def _decide(self, val: float, train: float | None) -> StopReason | None:
        self._track_lowest(val)
        return None


class EarlyStopping(Stopper):
    """Keras' EarlyStopping: stop after `patience` epochs without improvement.

    An epoch improves iff ``value < best - min_delta`` (mode "min") or
    ``value > best + min_delta`` (mode "max"); an equal value is no improvement. As in
    Keras, only an improvement moves `best` and `best_epoch` (so with min_delta > 0, `best`
    may not be the lowest value seen), and with no improvement after epoch b it stops at
    epoch b + patience.

    Args:
        patience: Epochs without improvement before stopping (>= 1).
        min_delta: Smallest change that counts as an improvement (>= 0; 0 as in Keras).
        mode: "min" for losses, "max" for scores such as accuracy.

    Example:
        >>> s = EarlyStopping(2)
        >>> [s.step(v) for v in (1.0, 0.5, 0.6, 0.5)], s.best_epoch, s.reason
        ([False, False, False, True], 2, 'patience')
    """

    _extra_state = ("wait",)

    def __init__(
        self, patience: int, *, min_delta: float = 0.0, mode: Literal["min", "max"] = "min"
    ) -> None:
        _check("patience", patience=patience, min_delta=min_delta, mode=mode)
        self.patience, self.min_delta, self._mode = patience, float(min_delta), mode
        super().__init__()

    def _reset_extra(self) -> None:
        self.wait = 0  # epochs since the last improvement

    def is_improvement(self, value: float) -> bool:
        """Whether `value` beats `best` by more than `min_delta`."""
        if self._mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _decide(self, val: float, train: float | None) -> StopReason | None:
        if self.is_improvement(val):
            self.best, self.best_epoch, self.wait = val, self.epoch, 0
            return None
        self.wait += 1
        return StopReason.PATIENCE if self.wait >= self.patience else None


class GL(Stopper):
    """Prechelt's GL_alpha: stop as soon as GL(t) > alpha (see `generalization_loss`).

    Checked every epoch; E_opt(t), the lowest validation loss up to t, is `best`.

    Args:
        alpha: Threshold in percent (> 0); Prechelt tried 1 to 5.

    Example:
        >>> s = GL(10.0)  # epoch 3: 100 * (1.2 / 1.0 - 1) = 20 > 10
        >>> [s.step(v) for v in (1.0, 1.05, 1.2)], s.reason
        ([False, False, True], 'gl')
    """

    def __init__(self, alpha: float) -> None:
        _check("gl", alpha=alpha)
        self.alpha = float(alpha)
        super().__init__()

    def _validate(self, val: float, train: float | None) -> None:  # noqa: B027 - optional hook
        _check_not_negative("val_loss", val)

    def _decide(self, val: float, train: float | None) -> StopReason | None:
        self._track_lowest(val)
        return StopReason.GL if generalization_loss(val, self.best) > self.alpha else None


class PQ(Stopper):
    """Prechelt's PQ_alpha: stop when GL(t) / P_k(t) > alpha at the end of a strip.

    P_k(t) (see `training_progress`) is the training progress over the strip of k epochs
    ending at t; the test runs only when t is a multiple of k. If P_k is 0 (flat training)
    the quotient is taken as +inf when GL > 0 (so it stops) and 0 when GL is 0; a strip
    minimum of 0 with a positive sum gives P_k = +inf and quotient 0. Needs `train_loss` on
    every step (ValueError if None).

    Args:
        alpha: Threshold on GL / P_k (> 0); Prechelt tried 0.5 to 3.
        strip: Strip length k in epochs (>= 1); Prechelt used 5.

    Example:
        >>> s = PQ(0.5, strip=2)  # epoch 4: GL = 20, P_2 = 1000 * (2.01 / 2 - 1) = 5
        >>> [s.step(v, t) for v, t in ((1.0, 1.0), (1.0, 1.0), (1.1, 1.01), (1.2, 1.0))]
        [False, False, False, True]
    """

    _extra_state = ("strip_train",)

    def __init__(self, alpha: float, strip: int = 5) -> None:
        _check("pq", alpha=alpha, strip=strip)
        self.alpha, self.strip = float(alpha), strip
        super().__init__()

    def _reset_extra(self) -> None:
        self.strip_train: list[float] = []  # train losses of the current strip

    def _validate(self, val: float, train: float | None) -> None:  # noqa: B027 - optional hook
        if train is None:
            raise ValueError("PQ needs train_loss on every step (for P_k); got None.")
        _check_not_negative("val_loss", val)
        _check_not_negative("train_loss", train)

    def _decide(self, val: float, train: float | None) -> StopReason | None:
        self._track_lowest(val)
        self.strip_train.append(train)
        if self.epoch % self.strip != 0:
            return None
        gl = generalization_loss(val, self.best)
        progress = training_progress(self.strip_train)
        self.strip_train = []
        if progress == 0:
            quotient = math.inf if gl > 0 else 0.0
        else:
            quotient = gl / progress
        return StopReason.PQ if quotient > self.alpha else None


class UP(Stopper):
    """Prechelt's UP_s: stop when the val loss rose at the ends of s successive strips.

    Checked only at strip ends (t a multiple of k): UP_1 stops when E_va(t) > E_va(t - k);
    UP_s stops when UP_{s-1} held at t - k and E_va(t) > E_va(t - k).

    Args:
        s: Successive rising strips needed (>= 1); Prechelt tried 2 to 4.
        strip: Strip length k in epochs (>= 1); Prechelt used 5.

    Example:
        >>> s = UP(1, strip=2)  # strip ends: epoch 2 -> 1.0, epoch 4 -> 1.1 > 1.0
        >>> [s.step(v) for v in (2.0, 1.0, 0.9, 1.1)], s.best_epoch
        ([False, False, False, True], 3)
    """

    _extra_state = ("last_strip_end_loss", "rises")

    def __init__(self, s: int, strip: int = 5) -> None:
        _check("up", s=s, strip=strip)
        self.s, self.strip = s, strip
        super().__init__()

    def _reset_extra(self) -> None:
        self.last_strip_end_loss: float | None = None
        self.rises = 0  # successive strip ends whose val loss rose

    def _decide(self, val: float, train: float | None) -> StopReason | None:
        self._track_lowest(val)
        if self.epoch % self.strip != 0:
            return None
        previous, self.last_strip_end_loss = self.last_strip_end_loss, val
        self.rises = self.rises + 1 if previous is not None and val > previous else 0
        return StopReason.UP if self.rises >= self.s else None


_STOPPER_CLASSES: dict[str, type[Stopper]] = {
    "none": NoStopping, "patience": EarlyStopping, "gl": GL, "pq": PQ, "up": UP,
}
STOPPER_REQUIRED: dict[str, tuple[str, ...]] = {  # the arguments without a default
    kind: tuple(p.name for p in inspect.signature(cls).parameters.values()
                if p.default is p.empty)
    for kind, cls in _STOPPER_CLASSES.items()
}


def create_stopper(kind: str, **params: Any) -> Stopper:
    """Build a stopper by name.

    Args:
        kind: One of `STOPPERS`.
        **params: Constructor arguments; `STOPPER_PARAMS[kind]` lists those accepted.

    Raises:
        ValueError: An unknown kind, or a missing, unexpected or bad parameter.

    Example:
        >>> create_stopper("patience", patience=3, min_delta=0.01)
        EarlyStopping(epoch=0, best=inf, reason=None)
    """
    if kind not in STOPPERS:
        raise ValueError(f"Unknown stopper kind {shown(kind)}; allowed: {', '.join(STOPPERS)}.")
    allowed = list(STOPPER_PARAMS[kind])
    unexpected = [name for name in params if name not in allowed]
    if unexpected:
        raise ValueError(f"Unexpected {shown(unexpected)} for stopper {kind!r}; "
                         f"allowed: {allowed}.")
    missing = [name for name in STOPPER_REQUIRED[kind] if name not in params]
    if missing:
        raise ValueError(f"Stopper {kind!r} needs parameter(s) {missing}; allowed: {allowed}.")
    return _STOPPER_CLASSES[kind](**params)
