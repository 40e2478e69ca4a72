"""Optimizer factory: SGD, Adam or AdamW with weights and non-weights in separate groups.

Group 0 holds the penalised weights (``split_parameters``) and carries the L2 decay when
the optimizer implements the requested L2 mode itself; group 1 holds biases, norm
parameters and weight-norm magnitudes with ``weight_decay = 0``. Group 0 is flagged
``"penalised": True`` so that ``Regularization.before_step`` / ``after_step`` find it.

How each (optimizer, l2_mode) pair realises L2 with strength ``l2``:

=========  ============================================  ===============================
name       ``l2_mode="coupled"`` (grad += l2 * w)        ``l2_mode="decoupled"``
=========  ============================================  ===============================
sgd        ``torch.optim.SGD(weight_decay=l2)``          SGD, plus ``before_step`` (SGDW)
adam       ``torch.optim.Adam(weight_decay=l2)``         ``torch.optim.AdamW(weight_decay=l2)``
adamw      ValueError (AdamW is decoupled by definition)  ``torch.optim.AdamW(weight_decay=l2)``
=========  ============================================  ===============================

``"adamw"`` is therefore a synonym for ``"adam"`` with decoupled L2; asking it for coupled
L2 with ``l2 > 0`` is a contradiction and raises rather than silently switching modes.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from trickopt.tricks.constraints import bad_arguments, one_of, real
from trickopt.tricks.regularization import Regularization, split_parameters

OPTIMIZERS = ("sgd", "adam", "adamw")
OPTIMIZER_CONSTRAINTS = {  # the arguments of `create_optimizer`
    "name": one_of(*OPTIMIZERS),
    "lr": real(0, low_open=True),
    "momentum": real(0, 1, high_open=True),
}

logger = logging.getLogger(__name__)


def create_optimizer(
    name: str,
    model: nn.Module,
    *,
    lr: float,
    regularization: Regularization | None = None,
    momentum: float = 0.9,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """Build an optimizer whose L2 decay touches weights only.

    Args:
        name: One of ``OPTIMIZERS`` (case-insensitive).
        model: The model to optimize; only parameters with ``requires_grad`` are included.
        lr: Learning rate, a finite float > 0.
        regularization: Supplies ``l2`` and ``l2_mode``; None means no L2. L1 is applied by
            ``Regularization.penalty`` / ``after_step``, not here.
        momentum: SGD momentum in [0, 1); 0.9 is the usual default for SGD. Adam and AdamW
            ignore it (their betas stay at torch's (0.9, 0.999)).
        fused: Use torch's fused kernels. None picks fused wherever torch supports it for
            these parameters, else torch's default.

    Returns:
        The optimizer, with group 0 = penalised weights, group 1 = everything else; a
        single group when both l1 and l2 are 0.

    Raises:
        ValueError: Unknown name, bad lr or momentum, or ``"adamw"`` with coupled L2.

    Example:
        >>> reg = Regularization(l2=1e-4, l2_mode="decoupled")
        >>> opt = create_optimizer("adam", nn.Linear(3, 2), lr=1e-3, regularization=reg)
        >>> type(opt).__name__, [g["weight_decay"] for g in opt.param_groups]
        ('AdamW', [0.0001, 0.0])
    """
    key = name.lower() if isinstance(name, str) else name
    regularization = regularization if regularization is not None else Regularization()
    _validate(key, lr, momentum, regularization)
    optimizer_class, options = _class_and_options(key, regularization.l2_mode, momentum)
    decays_itself = key != "sgd" or regularization.l2_mode == "coupled"
    penalised, not_penalised = split_parameters(model)
    groups = [
        {
            "params": penalised,
            # Explicit even when 0: AdamW would otherwise default to weight_decay=0.01.
            "weight_decay": float(regularization.l2) if decays_itself else 0.0,
            "penalised": True,
        },
        {"params": not_penalised, "weight_decay": 0.0, "penalised": False},
    ]
    if regularization.l1 == 0 and regularization.l2 == 0:
        # Nothing to penalise: one group. A second group costs one more fused kernel launch
        # per step, ~2% of a digits epoch (benchmarks/fit_overhead.py).
        groups = [{"params": penalised + not_penalised, "weight_decay": 0.0,
                   "penalised": False}]
    logger.debug(
        "%s: decaying %d tensors (%d values), not decaying %d tensors",
        optimizer_class.__name__,
        len(penalised),
        sum(p.numel() for p in penalised),
        len(not_penalised),
    )
    if fused is not None:
        return optimizer_class(groups, lr=lr, fused=fused, **options)
    return _create_preferring_fused(optimizer_class, groups, lr=lr, **options)


def _validate(key: object, lr: float, momentum: float, regularization: Regularization) -> None:
    errors = bad_arguments({"name": key, "lr": lr, "momentum": momentum}, OPTIMIZER_CONSTRAINTS)
    if key == "adamw" and regularization.l2 > 0 and regularization.l2_mode == "coupled":
        errors.append(
            "optimizer 'adamw' always decouples weight decay; got l2_mode='coupled' with "
            f"l2={regularization.l2!r}: use name='adam' for coupled L2, or "
            "l2_mode='decoupled'"
        )
    if errors:
        raise ValueError("invalid optimizer settings: " + "; ".join(errors))


def _class_and_options(
    key: str, l2_mode: str, momentum: float
) -> tuple[type[torch.optim.Optimizer], dict]:
    if key == "sgd":
        return torch.optim.SGD, {"momentum": momentum}
    if key == "adam" and l2_mode == "coupled":
        return torch.optim.Adam, {}
    return torch.optim.AdamW, {}


def _create_preferring_fused(
    optimizer_class: type[torch.optim.Optimizer], groups: list[dict], **options
) -> torch.optim.Optimizer:
    # Fused on CPU too: measured on 2 CPU threads (torch 2.13, digits-sized MLP
    # 64->128->10, batch 128), Adam's step took ~60 us fused vs ~135 us for the default
    # for-loop and ~140 us foreach, and a whole forward/backward/step ~395 us vs ~515 us;
    # AdamW 69 vs 182 us, SGD with momentum 38 vs 70 us.
    try:
        return optimizer_class(groups, fused=True, **options)
    except RuntimeError:
        # This torch has no fused kernel for these parameters' device or dtype (e.g. CPU
        # before torch 2.4, MPS): torch's default implementation is equivalent.
        return optimizer_class(groups, **options)
