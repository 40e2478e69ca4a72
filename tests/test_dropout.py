"""Tests for trickopt.tricks.dropout against the definitions of (inverted and alpha) dropout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trickopt.tricks.dropout import DROPOUT_KINDS, check_probability, create_dropout

# SELU constants from Klambauer et al. (2017), "Self-Normalizing Neural Networks".
SELU_ALPHA, SELU_LAMBDA = 1.6732632423543772, 1.0507009873554805


@pytest.mark.parametrize("p", [0, 0.0, 0.5, 0.999, np.float32(0.25)])
def test_check_probability_accepts_unit_interval(p):
    assert check_probability(p) == float(p) and isinstance(check_probability(p), float)


@pytest.mark.parametrize("p", [1.0, 1, -0.1, 1.5, math.nan, True, "0.5", None])
def test_check_probability_rejects(p):
    with pytest.raises(ValueError, match=r"dropout must be a float in \[0, 1\); got "):
        check_probability(p)


def test_check_probability_message_names_field_and_value():
    with pytest.raises(ValueError) as err:
        check_probability(1.0)
    assert str(err.value) == "dropout must be a float in [0, 1); got 1.0"
    with pytest.raises(ValueError, match=r"^head_dropout must be .*got -0.5$"):
        check_probability(-0.5, name="head_dropout")


@pytest.mark.parametrize("kind, spatial, cls", [
    ("standard", False, nn.Dropout), ("standard", True, nn.Dropout2d),
    ("alpha", False, nn.AlphaDropout), ("alpha", True, nn.FeatureAlphaDropout),
])
def test_create_dropout_types(kind, spatial, cls):
    layer = create_dropout(0.3, kind=kind, spatial=spatial)
    assert type(layer) is cls and layer.p == 0.3
    assert isinstance(create_dropout(0.0, kind=kind, spatial=spatial), nn.Identity)


def test_create_dropout_rejects_unknown_kind_and_bad_p():
    assert DROPOUT_KINDS == ("standard", "alpha")
    with pytest.raises(ValueError, match="unknown dropout kind 'gaussian'; expected one of: "
                                         "standard, alpha"):
        create_dropout(0.1, kind="gaussian")
    with pytest.raises(ValueError, match="got 1.0"):
        create_dropout(1.0)


def test_standard_dropout_is_inverted_dropout():
    torch.manual_seed(0)
    p = 0.3
    layer = create_dropout(p)
    x = torch.rand(200_000) + 0.5  # no zeros, so a zero output means "dropped"
    y = layer(x)
    kept = y != 0
    # Kept units are scaled by exactly 1 / (1 - p); the rest are zero.
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    assert abs((~kept).float().mean().item() - p) < 0.01
    assert abs(y.mean().item() / x.mean().item() - 1) < 0.01  # expectation preserved
    layer.eval()
    assert torch.equal(layer(x), x)


def test_spatial_dropout_drops_whole_channels():
    torch.manual_seed(0)
    p = 0.5
    y = create_dropout(p, spatial=True)(torch.ones(64, 8, 5, 5))
    per_channel = y.flatten(2)
    # Each (sample, channel) map is either all zero or all 1 / (1 - p).
    assert torch.all(per_channel.amin(2) == per_channel.amax(2))
    assert set(per_channel[:, :, 0].unique().tolist()) == {0.0, 1 / (1 - p)}


def test_alpha_dropout_keeps_selu_mean_and_variance():
    torch.manual_seed(0)
    p = 0.2
    x = F.selu(torch.randn(400_000))  # SELU of N(0, 1) has mean 0 and variance 1
    assert abs(x.mean().item()) < 0.01 and abs(x.var().item() - 1) < 0.01
    layer = create_dropout(p, kind="alpha")
    y = layer(x)
    assert abs(y.mean().item()) < 0.01 and abs(y.var().item() - 1) < 0.02
    # Paper's affine correction: dropped units go to a * alpha' + b, kept ones to a * x + b.
    q, alpha_prime = 1 - p, -SELU_LAMBDA * SELU_ALPHA
    a = (q + alpha_prime ** 2 * q * (1 - q)) ** -0.5
    b = -a * (1 - q) * alpha_prime
    dropped = torch.isclose(y, torch.tensor(a * alpha_prime + b), atol=1e-6)
    torch.testing.assert_close(y[~dropped], a * x[~dropped] + b)
    assert abs(dropped.float().mean().item() - p) < 0.01
    layer.eval()
    assert torch.equal(layer(x), x)
