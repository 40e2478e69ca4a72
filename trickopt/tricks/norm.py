"""Normalization layers by name: batch, layer, group, weight norm and batch renormalization.

`create_norm` is the one factory the models call; `BatchRenorm1d`/`BatchRenorm2d` implement
Ioffe (2017), "Batch Renormalization", Algorithm 1, with the maths in the pure function
`batch_renorm` so it can be tested without a module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from trickopt.tricks.constraints import bad_arguments, integer, must_be, real, shown

NORM_KINDS: tuple[str, ...] = ("none", "batch", "layer", "group", "weight", "batch_renorm")
NORM_POSITIONS: tuple[str, ...] = ("before_activation", "after_activation")
NUM_FEATURES = integer(1)  # the channel count C of every norm layer
SPATIAL_DIMS = integer(0, 3)  # 0: features (N, C); 1: sequences (N, C, L); 2: images
# BatchRenorm's arguments (see BatchRenorm1d). r_max and d_max may be inf: no clipping at all.
RENORM_CONSTRAINTS = {
    "num_features": NUM_FEATURES,
    "r_max": real(1, finite=False),  # 1 = BatchNorm
    "d_max": real(0, finite=False),  # 0 = BatchNorm
    "momentum": real(0, 1, low_open=True),
    "eps": real(0, low_open=True, finite=False),
    "warmup_steps": integer(0),
}

# GroupNorm's paper default (Wu & He 2018, G=32); we take the largest divisor of C below it.
_MAX_DEFAULT_GROUPS = 32

# Compact spelling (lower case, no '-', '_' or spaces) -> canonical kind, with and without
# a trailing "norm": "LayerNorm", "layer_norm" and "layer" all become "layernorm"/"layer".
_NORM_ALIASES: dict[str, str] = {}
for _kind in NORM_KINDS:
    _compact = _kind.replace("_", "")
    _NORM_ALIASES[_compact] = _kind
    if _kind != "none" and not _compact.endswith("norm"):
        _NORM_ALIASES[_compact + "norm"] = _kind


def _unknown_kind_error(kind: object) -> ValueError:
    return ValueError(f"unknown norm kind {shown(kind)}; expected one of: {', '.join(NORM_KINDS)}")


def normalize_norm_kind(kind: str | None) -> str:
    """Return the canonical name of a norm kind; `None` means "none".

    Example:
        >>> normalize_norm_kind("LayerNorm"), normalize_norm_kind("batch-renorm")
        ('layer', 'batch_renorm')
    """
    if kind is None:
        return "none"
    if not isinstance(kind, str):
        raise _unknown_kind_error(kind)
    compact = kind.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    if compact not in _NORM_ALIASES:
        raise _unknown_kind_error(kind)
    return _NORM_ALIASES[compact]


def default_num_groups(num_channels: int) -> int:
    """Largest divisor of `num_channels` that is <= 32 (GroupNorm's paper default is 32).

    Example:
        >>> default_num_groups(64), default_num_groups(48), default_num_groups(7)
        (32, 24, 7)
    """
    return max(g for g in range(1, min(num_channels, _MAX_DEFAULT_GROUPS) + 1)
               if num_channels % g == 0)


def create_norm(
    kind: str | None,
    num_features: int,
    *,
    spatial: bool = False,
    dims: int | None = None,
    num_groups: int | None = None,
    **kwargs,
) -> nn.Module:
    """Create a normalization layer for `num_features` channels.

    Args:
        kind: One of `NORM_KINDS` (any spelling `normalize_norm_kind` accepts); `None` = none.
        num_features: Channel count C.
        spatial: False for inputs (N, C); True for images (N, C, H, W).
        dims: The spatial dimensions of the input, instead of `spatial`: 0 for features
            (N, C), 1 for sequences (N, C, L), 2 for images (N, C, H, W).
        num_groups: Groups for "group" norm; default is the largest divisor of C that is
            <= 32. Ignored by the other kinds, so one config can be passed to all of them.
        **kwargs: Passed to the layer (e.g. `eps`, `momentum`).

    "none" and "weight" give `nn.Identity`: weight norm is not a layer but a
    reparametrisation of the Linear/Conv weight itself; apply it with `apply_weight_norm`.
    Spatial "layer" norm is `nn.GroupNorm(1, C)`: it normalises over (C, L) or (C, H, W) per
    sample, which is layer norm, but with one affine weight per channel instead of per element.

    Example:
        >>> create_norm("group_norm", 48, spatial=True).num_groups
        24
    """
    kind = normalize_norm_kind(kind)
    if not NUM_FEATURES(num_features):
        raise ValueError(must_be("num_features", NUM_FEATURES.text, num_features))
    if dims is None:
        dims = 2 if spatial else 0
    if not SPATIAL_DIMS(dims):
        raise ValueError(must_be("dims", SPATIAL_DIMS.text, dims))
    if kind in ("none", "weight"):
        return nn.Identity()
    # BatchNorm1d and BatchRenorm1d take (N, C) and (N, C, L) alike.
    if kind == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(num_features, **kwargs)
    if kind == "batch_renorm":
        return (BatchRenorm2d if dims == 2 else BatchRenorm1d)(num_features, **kwargs)
    if kind == "layer":
        if dims > 0:  # over (C, L) or (C, H, W) per sample
            return nn.GroupNorm(1, num_features, **kwargs)
        return nn.LayerNorm(num_features, **kwargs)
    # kind == "group"
    if num_groups is None:
        num_groups = default_num_groups(num_features)
    if not integer(1)(num_groups) or num_features % num_groups != 0:
        raise ValueError(must_be("num_groups", f"a positive divisor of {num_features=}",
                                 num_groups, name="num_groups"))
    return nn.GroupNorm(num_groups, num_features, **kwargs)


def apply_weight_norm(layer: nn.Linear | nn.Conv2d, *, dim: int = 0) -> nn.Linear | nn.Conv2d:
    """Reparametrise `layer.weight` as w = g * v / ||v|| in place (Salimans & Kingma 2016).

    With `dim=0` the norm is taken over every dimension except 0, so there is one
    magnitude g per output unit: per row of a Linear weight (out, in), per output channel
    of a Conv weight (out, in, kh, kw). That is the paper's choice: each neuron's length
    is learned separately from its direction. g has shape (out, 1) / (out, 1, 1, 1) and
    lives at `layer.parametrizations.weight.original0`, v at `original1`.

    Example:
        >>> layer = apply_weight_norm(nn.Linear(4, 3))
        >>> tuple(layer.parametrizations.weight.original0.shape)
        (3, 1)
    """
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        raise ValueError(
            f"apply_weight_norm needs a layer with a weight of >= 2 dims (Linear, Conv); "
            f"got {type(layer).__name__}")
    if parametrize.is_parametrized(layer, "weight"):
        raise ValueError(f"{type(layer).__name__}.weight is already parametrized")
    dims = integer(-weight.dim(), weight.dim())
    if not dims(dim):
        raise ValueError(must_be("dim", dims.text, dim))
    return weight_norm(layer, name="weight", dim=dim)


def batch_renorm(
    x: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    r_max: float | torch.Tensor,
    d_max: float | torch.Tensor,
    momentum: float,
    eps: float,
) -> torch.Tensor:
    """Training-mode batch renormalization (Ioffe 2017, Algorithm 1) over dim 1 (channels).

    y = weight * ((x - mu_B) / sigma_B * r + d) + bias, with sigma_B = sqrt(var_B + eps)
    from the biased batch variance, sigma = sqrt(running_var + eps),
    r = clip(sigma_B / sigma, 1/r_max, r_max) and d = clip((mu_B - mu) / sigma, -d_max, d_max).
    r and d are detached: the paper treats them as constants in backprop.

    Like `F.batch_norm`, the running stats are then updated in place with torch's convention
    new = (1 - momentum) * old + momentum * batch, where running_var gets the *unbiased*
    batch variance. The paper averages sigma rather than the variance; we follow torch so
    the buffers mean the same as BatchNorm's and match it exactly when r_max=1, d_max=0.

    Example:
        >>> c = 3; x = torch.randn(8, c)
        >>> y = batch_renorm(x, torch.zeros(c), torch.ones(c), torch.ones(c), torch.zeros(c),
        ...                  r_max=3.0, d_max=5.0, momentum=0.01, eps=1e-5)
        >>> y.shape
        torch.Size([8, 3])
    """
    reduce_dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)  # broadcasts per-channel stats over (N, C, ...)
    batch_var, batch_mean = torch.var_mean(x, dim=reduce_dims, correction=0)
    batch_std = torch.sqrt(batch_var + eps)
    running_std = torch.sqrt(running_var + eps)
    with torch.no_grad():
        r = torch.clamp(batch_std / running_std, min=1.0 / r_max, max=r_max)
        d = torch.clamp((batch_mean - running_mean) / running_std, min=-d_max, max=d_max)
        count = x.numel() // x.shape[1]
        running_mean.mul_(1.0 - momentum).add_(batch_mean, alpha=momentum)
        running_var.mul_(1.0 - momentum).add_(batch_var * (count / (count - 1)), alpha=momentum)
    x_hat = (x - batch_mean.view(shape)) / batch_std.view(shape) * r.view(shape) + d.view(shape)
    return x_hat * weight.view(shape) + bias.view(shape)


class _BatchRenorm(nn.Module):
    """Shared body of BatchRenorm1d/2d; subclasses only fix the accepted input ranks."""

    _input_dims: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        *,
        r_max: float = 3.0,
        d_max: float = 5.0,
        momentum: float = 0.01,
        eps: float = 1e-5,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        errors = bad_arguments({"num_features": num_features, "r_max": r_max, "d_max": d_max,
                                "momentum": momentum, "eps": eps, "warmup_steps": warmup_steps},
                               RENORM_CONSTRAINTS)
        if errors:
            raise ValueError("; ".join(errors))
        self.num_features = num_features
        self.r_max = float(r_max)
        self.d_max = float(d_max)
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.warmup_steps = warmup_steps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        # Counts training forward passes; it is also the warm-up step t (0 on the first).
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def current_limits(self) -> tuple[float | torch.Tensor, float | torch.Tensor]:
        """(r_max_t, d_max_t) for the next training step, relaxed linearly from (1, 0)."""
        if self.warmup_steps == 0:
            return self.r_max, self.d_max
        # A tensor computation, so the step count never has to leave the device.
        steps = self.num_batches_tracked.to(self.running_var.dtype)
        progress = (steps / self.warmup_steps).clamp(max=1.0)
        return 1.0 + (self.r_max - 1.0) * progress, self.d_max * progress

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in self._input_dims:
            raise ValueError(f"{type(self).__name__} expects inputs with {self._input_dims} "
                             f"dims; got shape {tuple(x.shape)}")
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                self.bias, training=False, eps=self.eps)
        if x.numel() // x.shape[1] < 2:
            raise ValueError(f"{type(self).__name__} needs more than 1 value per channel "
                             f"when training; got shape {tuple(x.shape)}")
        r_max, d_max = self.current_limits()
        y = batch_renorm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         r_max=r_max, d_max=d_max, momentum=self.momentum, eps=self.eps)
        self.num_batches_tracked.add_(1)
        return y

    def extra_repr(self) -> str:
        return (f"{self.num_features}, r_max={self.r_max}, d_max={self.d_max}, "
                f"momentum={self.momentum}, eps={self.eps}, warmup_steps={self.warmup_steps}")


class BatchRenorm1d(_BatchRenorm):
    """Batch renormalization for (N, C) or (N, C, L) inputs; a drop-in for BatchNorm1d.

    Args:
        num_features: Channel count C.
        r_max: Limit of the std correction r, clipped to [1/r_max, r_max]; 1 = BatchNorm.
        d_max: Limit of the mean correction d, clipped to [-d_max, d_max]; 0 = BatchNorm.
        momentum: Running-stat update rate m: new = (1 - m) * old + m * batch. The default
            0.01 (BatchNorm uses 0.1) keeps the running stats that r and d pull towards smooth.
        eps: Added to variances before the square root, as in BatchNorm.
        warmup_steps: Training steps K over which the limits relax linearly from r_max=1,
            d_max=0 (plain BatchNorm, while running stats are still poor) to their values.

    Eval mode is exactly BatchNorm with the running stats; `state_dict` has BatchNorm's keys.

    Example:
        >>> layer = BatchRenorm1d(16, warmup_steps=1000)
        >>> layer(torch.randn(32, 16)).shape
        torch.Size([32, 16])
    """

    _input_dims = (2, 3)


class BatchRenorm2d(_BatchRenorm):
    """Batch renormalization for (N, C, H, W) inputs, per channel over (N, H, W).

    Same arguments as `BatchRenorm1d`; a drop-in for BatchNorm2d.

    Example:
        >>> BatchRenorm2d(8)(torch.randn(4, 8, 5, 5)).shape
        torch.Size([4, 8, 5, 5])
    """

    _input_dims = (4,)
