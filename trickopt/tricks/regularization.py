"""L1 and L2 weight penalties, applied to weights only.

Only weight tensors (``dim >= 2``) are penalised: biases, norm gains and shifts, and
weight-norm magnitudes never are. A bias fits one variable and needs far less data than a
weight, which couples two, so penalising it mostly adds underfitting. A weight-norm
magnitude ``g`` of ``w = g * v / ||v||`` is an ``(out, 1)`` tensor, so ``dim`` alone would
decay it; it is excluded by name, while the direction ``v`` is penalised.

Definitions (``w`` ranges over the penalised weights, ``lr`` is the param group's current
learning rate):

* L1: ``Omega_1 = sum |w|``. ``"subgradient"`` adds ``l1 * Omega_1`` to the loss (its
  gradient is ``l1 * sign(w)``), which shrinks weights but almost never makes them exactly
  zero. ``"proximal"`` soft-thresholds after each step,
  ``w <- sign(w) * max(|w| - lr * l1, 0)`` (ISTA), which gives exact zeros.
* L2: ``Omega_2 = 1/2 ||w||^2``, whose gradient is ``l2 * w``. ``"coupled"`` adds that
  gradient before the optimizer's update (``weight_decay`` of ``torch.optim.SGD`` /
  ``Adam``); ``"decoupled"`` shrinks the weights outside the update,
  ``w <- w * (1 - lr * l2)`` (AdamW / SGDW, Loshchilov & Hutter 2019). L2 is never added to
  the loss: the optimizer built by ``trickopt.tricks.optim.create_optimizer`` applies it.

The training loop calls, each batch: ``loss + penalty(model)`` (when not None), backward,
``before_step(optimizer)``, ``optimizer.step()``, ``after_step(optimizer)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from trickopt.tricks.constraints import bad_arguments, one_of, real

L1_MODES = ("subgradient", "proximal")
L2_MODES = ("coupled", "decoupled")
REGULARIZATION_CONSTRAINTS = {  # the arguments of `Regularization`; 0 disables a penalty
    "l1": real(0), "l1_mode": one_of(*L1_MODES), "l2": real(0), "l2_mode": one_of(*L2_MODES),
}

# parametrizations.weight_norm stores the magnitude as `original0` (the direction is
# `original1`); the legacy torch.nn.utils.weight_norm stores it as `weight_g`.
_MAGNITUDE_NAME = re.compile(r"(^|\.)parametrizations\.[^.]+\.original0$|(^|\.)weight_g$")


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split the trainable parameters into (penalised, not penalised).

    Args:
        model: Any module.

    Returns:
        Two lists in ``model.named_parameters()`` order: the weights (``dim >= 2``, not a
        weight-norm magnitude), and everything else that requires grad.

    Example:
        >>> weights, others = split_parameters(nn.Linear(3, 2))
        >>> [tuple(p.shape) for p in weights], [tuple(p.shape) for p in others]
        ([(2, 3)], [(2,)])
    """
    penalised: list[nn.Parameter] = []
    not_penalised: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.dim() >= 2 and not _MAGNITUDE_NAME.search(name):
            penalised.append(param)
        else:
            not_penalised.append(param)
    return penalised, not_penalised


def _sum_abs(params: Sequence[torch.Tensor]) -> torch.Tensor:
    if not params:
        return torch.zeros(())
    return torch.stack(torch._foreach_norm(params, 1)).sum()


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Return ``sum |w|`` over the penalised weights (differentiable).

    Example:
        >>> layer = nn.Linear(2, 1)
        >>> _ = nn.init.constant_(layer.weight, -1.5)
        >>> l1_penalty(layer).item()
        3.0
    """
    return _sum_abs(split_parameters(model)[0])


def l2_penalty(model: nn.Module) -> torch.Tensor:
    """Return ``1/2 * sum w**2`` over the penalised weights; its gradient is ``w``.

    Example:
        >>> layer = nn.Linear(2, 1)
        >>> _ = nn.init.constant_(layer.weight, 2.0)
        >>> l2_penalty(layer).item()
        4.0
    """
    penalised = split_parameters(model)[0]
    if not penalised:
        return torch.zeros(())
    return 0.5 * torch.stack([param.pow(2).sum() for param in penalised]).sum()


def weight_sparsity(model: nn.Module) -> float:
    """Return the fraction of penalised weight entries that are exactly zero.

    One host sync: meant for once per epoch, not per batch. A model without weights has
    sparsity 0.0.

    Example:
        >>> layer = nn.Linear(4, 1)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[0.0, 1.0, 0.0, 2.0]]))
        >>> weight_sparsity(layer)
        0.5
    """
    return _weight_fraction(model, lambda weight: weight == 0)


def small_weight_fraction(model: nn.Module, threshold: float = 1e-3) -> float:
    """Return the fraction of penalised weight entries with ``|w| < threshold``: how sparse
    the weights are in effect where nothing makes them exactly zero (subgradient L1, L2).

    Example:
        >>> layer = nn.Linear(4, 1)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[0.0, 1e-4, -1e-4, 2.0]]))
        >>> small_weight_fraction(layer)
        0.75
    """
    return _weight_fraction(model, lambda weight: weight.abs() < threshold)


def _weight_fraction(model: nn.Module, counts) -> float:
    """The fraction of penalised weight entries for which `counts(weights)` is true."""
    penalised = split_parameters(model)[0]
    if not penalised:
        return 0.0
    with torch.no_grad():
        hits = torch.stack([counts(param).sum() for param in penalised]).sum()
    return hits.item() / sum(param.numel() for param in penalised)


def soft_threshold_(params: Sequence[torch.Tensor], threshold: float | torch.Tensor) -> None:
    """In place, ``w <- sign(w) * max(|w| - threshold, 0)`` for every tensor in ``params``.

    Computed as ``w - clamp(w, -threshold, threshold)``, which is the same value and gives
    exact zeros (``w - w == 0``) with one temporary per tensor.

    Args:
        params: Tensors to shrink (gradients are not recorded).
        threshold: A float >= 0, or a 0-d tensor (e.g. a tensor learning rate times l1).

    Example:
        >>> w = torch.tensor([-3.0, -0.5, 0.2, 2.0])
        >>> soft_threshold_([w], 1.0)
        >>> w.tolist()
        [-2.0, 0.0, 0.0, 1.0]
    """
    if not params:
        return
    with torch.no_grad():
        if isinstance(threshold, torch.Tensor):
            for param in params:
                param.sub_(param.clamp(-threshold, threshold))
            return
        if not threshold >= 0:
            raise ValueError(f"soft_threshold_ needs a threshold >= 0; got {threshold=}")
        clipped = torch._foreach_clamp_min(list(params), -threshold)
        torch._foreach_clamp_max_(clipped, threshold)
        torch._foreach_sub_(list(params), clipped)


def _penalised_groups(optimizer: torch.optim.Optimizer) -> list[dict]:
    groups = [group for group in optimizer.param_groups if group.get("penalised")]
    if not groups:
        raise ValueError(
            "the optimizer has no param group flagged 'penalised': True; build it with "
            "trickopt.tricks.optim.create_optimizer(..., regularization=...)"
        )
    return groups


@dataclass(kw_only=True)
class Regularization:
    """L1 and L2 penalty strengths and how each is applied (see the module docstring).

    Args:
        l1: L1 strength (lambda_1), a finite float >= 0; 0 disables L1.
        l1_mode: ``"proximal"`` (default: the only mode that yields exact zeros) or
            ``"subgradient"``.
        l2: L2 strength (lambda_2), a finite float >= 0; 0 disables L2.
        l2_mode: ``"coupled"`` (default: classic weight decay) or ``"decoupled"``.

    Example:
        >>> model = nn.Linear(3, 2)
        >>> reg = Regularization(l1=1e-3, l1_mode="subgradient")
        >>> reg.penalty(model) is not None, Regularization(l2=1e-4).penalty(model)
        (True, None)
    """

    l1: float = 0.0
    l1_mode: Literal["subgradient", "proximal"] = "proximal"
    l2: float = 0.0
    l2_mode: Literal["coupled", "decoupled"] = "coupled"
    # (model, its penalised weights): one scan of named_parameters per model, not per batch.
    _bound: tuple[nn.Module, list[nn.Parameter]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        errors = bad_arguments({name: getattr(self, name) for name in REGULARIZATION_CONSTRAINTS},
                               REGULARIZATION_CONSTRAINTS)
        if errors:
            raise ValueError("invalid Regularization: " + "; ".join(errors))

    def bind(self, model: nn.Module) -> Regularization:
        """Cache ``model``'s penalised weights; call again if its parameters change."""
        self._bound = (model, split_parameters(model)[0])
        return self

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """Return the term to add to the loss: ``l1 * sum |w|`` for subgradient L1, else None.

        None means there is nothing to add, so the training loop adds nothing.
        """
        if self.l1 == 0 or self.l1_mode != "subgradient":
            return None
        if self._bound is None or self._bound[0] is not model:
            self.bind(model)
        return self.l1 * _sum_abs(self._bound[1])

    def before_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Apply decoupled L2 that the optimizer does not do itself; call before ``step()``.

        Each penalised group whose ``weight_decay`` is 0 (SGD built for decoupled L2) is
        shrunk by ``w <- w * (1 - lr * l2)`` with the group's current lr; with momentum
        this is SGDW: ``w <- w * (1 - lr * l2) - lr * buf``. AdamW groups decay themselves.
        """
        if self.l2 == 0 or self.l2_mode != "decoupled":
            return
        with torch.no_grad():
            for group in _penalised_groups(optimizer):
                if group["weight_decay"] == 0 and group["params"]:
                    torch._foreach_mul_(group["params"], 1.0 - group["lr"] * self.l2)

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Apply proximal L1; call right after ``step()``, before the LR schedule advances.

        Soft-thresholds every penalised group with threshold ``lr * l1``, ``lr`` being the
        group's learning rate of the step just taken. This is exact ISTA for SGD without
        momentum; with momentum or Adam it is the usual heuristic.
        """
        if self.l1 == 0 or self.l1_mode != "proximal":
            return
        for group in _penalised_groups(optimizer):
            soft_threshold_(group["params"], group["lr"] * self.l1)
