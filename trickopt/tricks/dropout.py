"""Dropout layers by name: standard (inverted) dropout and alpha dropout for SELU networks."""

from __future__ import annotations

from typing import Literal

from torch import nn

from trickopt.tricks.constraints import must_be, real, shown

DROPOUT_KINDS: tuple[str, ...] = ("standard", "alpha")
# 1 is excluded: it would drop every unit, and inverted dropout would divide by 1 - p = 0.
PROBABILITY = real(0, 1, high_open=True)


def check_probability(p: float, name: str = "dropout") -> float:
    """Return `p` as a float if it meets `PROBABILITY` (a real number in [0, 1)), else raise.

    Example:
        >>> check_probability(0.25)
        0.25
    """
    if not PROBABILITY(p):
        raise ValueError(must_be(name, PROBABILITY.text, p))
    return float(p)


def create_dropout(
    p: float,
    *,
    kind: Literal["standard", "alpha"] = "standard",
    spatial: bool = False,
) -> nn.Module:
    """Create a dropout layer that drops with probability `p`.

    Args:
        p: Drop probability in [0, 1); 0 gives `nn.Identity`, so "no dropout" costs nothing.
        kind: "standard": `nn.Dropout`, inverted dropout. In training each unit is zeroed
            with probability p and kept units are scaled by 1 / (1 - p), so the expected
            activation is unchanged and eval mode is the identity (no rescaling at test
            time). "alpha": `nn.AlphaDropout`, for SELU networks: dropped units are set to
            SELU's negative saturation value and an affine correction keeps the mean and
            variance of SELU activations (0 and 1), preserving self-normalisation.
        spatial: Drop whole channels of (N, C, H, W) inputs instead of single values:
            `nn.Dropout2d` for "standard", `nn.FeatureAlphaDropout` for "alpha".

    Example:
        >>> create_dropout(0.1, spatial=True)
        Dropout2d(p=0.1, inplace=False)
    """
    if kind not in DROPOUT_KINDS:
        raise ValueError(f"unknown dropout kind {shown(kind)}; expected one of: "
                         f"{', '.join(DROPOUT_KINDS)}")
    p = check_probability(p)
    if p == 0.0:
        return nn.Identity()
    if kind == "alpha":
        return nn.FeatureAlphaDropout(p) if spatial else nn.AlphaDropout(p)
    return nn.Dropout2d(p) if spatial else nn.Dropout(p)
