"""Tests for trickopt.tricks.norm against torch's own layers and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trickopt.tricks.norm import (
    NORM_KINDS,
    NORM_POSITIONS,
    BatchRenorm1d,
    BatchRenorm2d,
    apply_weight_norm,
    create_norm,
    normalize_norm_kind,
)

EPS = 1e-5
SHAPES = {False: (16, 4), True: (6, 4, 3, 3)}  # spatial -> input shape, C = 4


def _randomise_affine(*layers: nn.Module) -> None:
    """Give all layers the same random gamma/beta, so affine bugs cannot hide behind 1 and 0."""
    gen = torch.Generator().manual_seed(123)
    c = layers[0].weight.shape
    weight, bias = torch.randn(c, generator=gen) + 1.5, torch.randn(c, generator=gen)
    with torch.no_grad():
        for layer in layers:
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)


# ---------------------------------------------------------------- names and factory


@pytest.mark.parametrize("spelling, kind", [
    ("LayerNorm", "layer"), ("layer_norm", "layer"), ("layer", "layer"), ("layer-norm", "layer"),
    ("BatchNorm", "batch"), ("batch", "batch"), ("GroupNorm", "group"), ("group_norm", "group"),
    ("weight_norm", "weight"), ("WeightNorm", "weight"), ("BatchRenorm", "batch_renorm"),
    ("batch_renorm", "batch_renorm"), ("batch-renorm", "batch_renorm"), ("none", "none"),
    (None, "none"),
])
def test_normalize_norm_kind(spelling, kind):
    assert normalize_norm_kind(spelling) == kind


@pytest.mark.parametrize("bad", ["foo", "", "instance", "batchre", 3])
def test_unknown_norm_kind_lists_valid_names(bad):
    with pytest.raises(ValueError) as err:
        normalize_norm_kind(bad)
    assert str(err.value) == (f"unknown norm kind {bad!r}; expected one of: "
                              "none, batch, layer, group, weight, batch_renorm")
    with pytest.raises(ValueError, match="unknown norm kind"):
        create_norm(bad, 8)


def test_constants():
    assert NORM_KINDS == ("none", "batch", "layer", "group", "weight", "batch_renorm")
    assert NORM_POSITIONS == ("before_activation", "after_activation")


@pytest.mark.parametrize("kind", [None, "none", "weight"])
def test_identity_kinds(kind):
    assert isinstance(create_norm(kind, 8), nn.Identity)
    assert isinstance(create_norm(kind, 8, spatial=True), nn.Identity)


@pytest.mark.parametrize("bad", [0, -3, 2.0, True])
def test_create_norm_rejects_bad_num_features(bad):
    with pytest.raises(ValueError, match=rf"num_features must be an int >= 1; got {bad!r}"):
        create_norm("batch", bad)


@pytest.mark.parametrize("channels, groups", [(64, 32), (32, 32), (48, 24), (96, 32),
                                              (7, 7), (37, 1), (100, 25)])
def test_group_norm_default_groups_is_largest_divisor_up_to_32(channels, groups):
    assert create_norm("group", channels, spatial=True).num_groups == groups


@pytest.mark.parametrize("groups", [3, 0, -2])
def test_group_norm_rejects_non_divisor(groups):
    with pytest.raises(ValueError, match=rf"num_features=8; got num_groups={groups}"):
        create_norm("group", 8, num_groups=groups)


def test_factory_passes_kwargs():
    assert create_norm("batch", 4, momentum=0.3).momentum == 0.3
    assert create_norm("layer", 4, eps=1e-3).eps == 1e-3
    assert create_norm("group", 4, num_groups=2, eps=1e-3).eps == 1e-3
    renorm = create_norm("BatchRenorm", 4, spatial=True, r_max=2.0)
    assert isinstance(renorm, BatchRenorm2d) and renorm.r_max == 2.0
    assert isinstance(create_norm("batch_renorm", 4), BatchRenorm1d)


# ---------------------------------------------------------------- parity with torch layers


def _reference(kind: str, spatial: bool, c: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(c) if spatial else nn.BatchNorm1d(c)
    if kind == "group":
        return nn.GroupNorm(2, c)
    return nn.GroupNorm(1, c) if spatial else nn.LayerNorm(c)


@pytest.mark.parametrize("spatial", [False, True])
@pytest.mark.parametrize("kind", ["batch", "layer", "group"])
def test_create_norm_matches_torch_layer(kind, spatial):
    torch.manual_seed(0)
    c = SHAPES[spatial][1]
    ours = create_norm(kind, c, spatial=spatial, num_groups=2)
    ref = _reference(kind, spatial, c)
    assert type(ours) is type(ref)
    _randomise_affine(ours, ref)
    for _ in range(3):
        x = torch.randn(SHAPES[spatial]) * 2 + 1
        torch.testing.assert_close(ours(x), ref(x))
    ours.eval(), ref.eval()
    x = torch.randn(SHAPES[spatial])
    torch.testing.assert_close(ours(x), ref(x))


def test_spatial_layer_norm_is_layer_norm_over_chw():
    torch.manual_seed(0)
    x = torch.randn(5, 6, 4, 3) * 3 + 2
    layer = create_norm("LayerNorm", 6, spatial=True)  # default affine: weight 1, bias 0
    torch.testing.assert_close(layer(x), F.layer_norm(x, (6, 4, 3), eps=layer.eps))


# ---------------------------------------------------------------- weight norm


def test_weight_norm_forward_is_g_times_row_normalised_v():
    torch.manual_seed(0)
    layer = apply_weight_norm(nn.Linear(5, 3))
    assert hasattr(layer, "parametrizations") and hasattr(layer.parametrizations, "weight")
    magnitude = layer.parametrizations.weight.original0
    direction = layer.parametrizations.weight.original1
    assert magnitude.shape == (3, 1) and direction.shape == (3, 5)
    with torch.no_grad():
        magnitude.copy_(torch.tensor([[0.5], [2.0], [-1.5]]))
    x = torch.randn(7, 5)
    g, v, b = (t.detach().numpy().astype(np.float64) for t in (magnitude, direction, layer.bias))
    row_norm = np.sqrt((v ** 2).sum(axis=1, keepdims=True))  # one norm per output unit
    expected = x.numpy().astype(np.float64) @ (g * v / row_norm).T + b
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_weight_norm_conv_has_one_magnitude_per_output_channel():
    torch.manual_seed(0)
    conv = apply_weight_norm(nn.Conv2d(3, 4, 3))
    assert conv.parametrizations.weight.original0.shape == (4, 1, 1, 1)
    # At initialisation g = ||v|| per output channel, so each filter keeps its norm.
    v = conv.parametrizations.weight.original1.detach()
    np.testing.assert_allclose(conv.weight.detach().flatten(1).norm(dim=1).numpy(),
                               v.flatten(1).norm(dim=1).numpy(), rtol=1e-6)


def test_weight_norm_rejects_bad_layers():
    with pytest.raises(ValueError, match="got ReLU"):
        apply_weight_norm(nn.ReLU())
    layer = apply_weight_norm(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="already parametrized"):
        apply_weight_norm(layer)
    with pytest.raises(ValueError, match=r"dim must be an int in \[-2, 2\); got 2"):
        apply_weight_norm(nn.Linear(2, 2), dim=2)


# ---------------------------------------------------------------- batch renorm vs BatchNorm


@pytest.mark.parametrize("spatial", [False, True])
def test_batch_renorm_without_clipping_room_equals_batch_norm(spatial):
    torch.manual_seed(0)
    c, momentum = SHAPES[spatial][1], 0.2
    bn_cls, brn_cls = (nn.BatchNorm2d, BatchRenorm2d) if spatial else (nn.BatchNorm1d,
                                                                        BatchRenorm1d)
    bn = bn_cls(c, momentum=momentum).double()
    brn = brn_cls(c, r_max=1.0, d_max=0.0, momentum=momentum).double()
    _randomise_affine(bn, brn)
    upstream = torch.randn(SHAPES[spatial], dtype=torch.float64)
    for _ in range(4):
        x = torch.randn(SHAPES[spatial], dtype=torch.float64) * 3 + 2
        outputs, grads = [], []
        for layer in (bn, brn):
            layer.zero_grad()
            xi = x.clone().requires_grad_(True)
            y = layer(xi)
            (y * upstream).sum().backward()
            outputs.append(y.detach())
            grads.append((xi.grad, layer.weight.grad, layer.bias.grad))
        torch.testing.assert_close(outputs[1], outputs[0])
        for ours, ref in zip(grads[1], grads[0]):
            torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(brn.running_mean, bn.running_mean)
    torch.testing.assert_close(brn.running_var, bn.running_var)
    assert int(brn.num_batches_tracked) == int(bn.num_batches_tracked) == 4
    bn.eval(), brn.eval()
    x = torch.randn(SHAPES[spatial], dtype=torch.float64)
    torch.testing.assert_close(brn(x), bn(x))
    assert brn.state_dict().keys() == bn.state_dict().keys()


# ---------------------------------------------------------------- batch renorm, Algorithm 1


def hand_batch_renorm(x, running_mean, running_var, gamma, beta, *, r_max, d_max, momentum):
    """Ioffe (2017) Algorithm 1 in float64 numpy; running stats follow torch's convention."""
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mu_b, var_b = x.mean(axis=axes), x.var(axis=axes)  # biased, as BatchNorm normalises
    sigma_b, sigma = np.sqrt(var_b + EPS), np.sqrt(running_var + EPS)
    r = np.clip(sigma_b / sigma, 1 / r_max, r_max)
    d = np.clip((mu_b - running_mean) / sigma, -d_max, d_max)
    x_hat = (x - mu_b.reshape(shape)) / sigma_b.reshape(shape) * r.reshape(shape)
    y = gamma.reshape(shape) * (x_hat + d.reshape(shape)) + beta.reshape(shape)
    n = x.size // x.shape[1]
    new_mean = (1 - momentum) * running_mean + momentum * mu_b
    new_var = (1 - momentum) * running_var + momentum * var_b * n / (n - 1)
    return y, new_mean, new_var, r, d


# Per channel: r clipped high & d clipped low; r clipped low; nothing clipped; both clipped.
FAR_MEAN = np.array([10.0, -10.0, 0.5, -60.0])
FAR_VAR = np.array([0.01, 100.0, 2.0, 25.0])


def _renorm_with_far_stats(spatial: bool, **kwargs) -> nn.Module:
    layer = (BatchRenorm2d if spatial else BatchRenorm1d)(4, **kwargs).double()
    _randomise_affine(layer)
    with torch.no_grad():
        layer.running_mean.copy_(torch.from_numpy(FAR_MEAN))
        layer.running_var.copy_(torch.from_numpy(FAR_VAR))
    return layer


def _check_against_hand(layer, x, r_max, d_max):
    state = [t.detach().numpy().copy() for t in (layer.running_mean, layer.running_var,
                                                 layer.weight, layer.bias)]
    expected, new_mean, new_var, r, d = hand_batch_renorm(
        x.numpy(), *state, r_max=r_max, d_max=d_max, momentum=layer.momentum)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.running_mean.numpy(), new_mean, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var.numpy(), new_var, rtol=1e-12)
    return r, d


@pytest.mark.parametrize("spatial", [False, True])
def test_batch_renorm_clipping_matches_algorithm_1(spatial):
    torch.manual_seed(0)
    layer = _renorm_with_far_stats(spatial, momentum=0.1)
    x = torch.randn(SHAPES[spatial], dtype=torch.float64)
    r, d = _check_against_hand(layer, x, r_max=3.0, d_max=5.0)
    # The test only means something if clipping really happened where intended.
    np.testing.assert_allclose(r[[0, 1, 3]], [3.0, 1 / 3, 1 / 3])
    np.testing.assert_allclose(d[[0, 3]], [-5.0, 5.0])
    assert 1 / 3 < r[2] < 3 and abs(d[1]) < 5 and abs(d[2]) < 5


def test_batch_renorm_r_and_d_carry_no_gradient():
    torch.manual_seed(0)
    layer = _renorm_with_far_stats(False)
    x = torch.randn(16, 4, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(16, 4, dtype=torch.float64)
    rm, rv = layer.running_mean.clone(), layer.running_var.clone()
    (layer(x) * upstream).sum().backward()

    def hand_grad(detach: bool) -> torch.Tensor:
        xi = x.detach().clone().requires_grad_(True)
        mu, var = xi.mean(0), xi.var(0, unbiased=False)
        sigma_b, sigma = torch.sqrt(var + EPS), torch.sqrt(rv + EPS)
        r = (sigma_b / sigma).clamp(1 / 3.0, 3.0)
        d = ((mu - rm) / sigma).clamp(-5.0, 5.0)
        if detach:
            r, d = r.detach(), d.detach()
        y = layer.weight.detach() * ((xi - mu) / sigma_b * r + d) + layer.bias.detach()
        (y * upstream).sum().backward()
        return xi.grad

    torch.testing.assert_close(x.grad, hand_grad(detach=True))
    # Channel 2 is unclipped, so letting r and d carry gradient would change the result.
    assert not torch.allclose(x.grad[:, 2], hand_grad(detach=False)[:, 2])


def test_batch_renorm_warmup_relaxes_limits_linearly():
    torch.manual_seed(0)
    layer = _renorm_with_far_stats(False, warmup_steps=10, momentum=0.01)
    x = torch.randn(16, 4, dtype=torch.float64)
    # Step 0: limits (1, 0) -> plain batch normalisation with batch statistics.
    ref = F.batch_norm(x, None, None, layer.weight.detach(), layer.bias.detach(),
                       training=True, eps=EPS)
    torch.testing.assert_close(layer(x).detach(), ref)
    for _ in range(4):  # steps 1..4
        layer(torch.randn(16, 4, dtype=torch.float64))
    # Step 5 of 10: r_max = 1 + (3 - 1) * 0.5 = 2, d_max = 5 * 0.5 = 2.5.
    r, d = _check_against_hand(layer, x, r_max=2.0, d_max=2.5)
    np.testing.assert_allclose([r[0], d[0]], [2.0, -2.5])  # channel 0 hits the halved limits
    with torch.no_grad():
        layer.num_batches_tracked.fill_(25)  # past warm-up: the full limits
    _check_against_hand(layer, x, r_max=3.0, d_max=5.0)


def test_batch_renorm_eval_uses_running_stats_like_batch_norm():
    layer = _renorm_with_far_stats(True).eval()
    x = torch.randn(SHAPES[True], dtype=torch.float64)
    shape = (1, -1, 1, 1)
    rm, rv = (torch.from_numpy(a).view(shape) for a in (FAR_MEAN, FAR_VAR))
    expected = layer.weight.view(shape) * (x - rm) / torch.sqrt(rv + EPS) + layer.bias.view(shape)
    torch.testing.assert_close(layer(x), expected.detach())
    assert int(layer.num_batches_tracked) == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"r_max": 0.5}, "r_max must be a float >= 1; got r_max=0.5"),
    ({"d_max": -1.0}, "d_max must be a float >= 0; got d_max=-1.0"),
    ({"momentum": 0.0}, r"momentum must be a float in \(0, 1\]; got momentum=0.0"),
    ({"momentum": 1.5}, r"got momentum=1.5"),
    ({"eps": 0.0}, "eps must be a float > 0; got eps=0.0"),
    ({"warmup_steps": -1}, "warmup_steps must be an int >= 0; got warmup_steps=-1"),
    ({"warmup_steps": 2.5}, "got warmup_steps=2.5"),
    ({"num_features": 0}, "num_features must be an int >= 1; got num_features=0"),
])
def test_batch_renorm_validates_arguments(kwargs, message):
    kwargs = {"num_features": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        BatchRenorm1d(kwargs.pop("num_features"), **kwargs)


def test_batch_renorm_reports_all_bad_arguments_at_once():
    with pytest.raises(ValueError, match="r_max=0.0.*momentum=2"):
        BatchRenorm2d(4, r_max=0.0, momentum=2)


def test_batch_renorm_rejects_bad_inputs_and_has_repr():
    with pytest.raises(ValueError, match=r"got shape \(2, 4\)"):
        BatchRenorm2d(4)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchRenorm1d(4)(torch.randn(1, 4))
    assert "r_max=3.0, d_max=5.0, momentum=0.01" in repr(BatchRenorm1d(4))
