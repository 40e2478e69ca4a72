"""Models against torch's own layers and a hand-written forward pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from trickopt.config import ModelConfig
from trickopt.models import MLP, SmallCNN, build_model, seeded_model


def layer_types(model: nn.Module) -> list[type]:
    return [type(m) for m in model]


def test_mlp_output_shape_and_forward_equal_a_hand_computation():
    torch.manual_seed(0)
    model = MLP(12, 4, depth=2, width=7, activation="tanh")
    x = torch.randn(5, 3, 4)  # image-like input is flattened first
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 7), (7, 7), (7, 4)]
    h = x.reshape(5, 12)
    h = torch.tanh(F.linear(h, linears[0].weight, linears[0].bias))
    h = torch.tanh(F.linear(h, linears[1].weight, linears[1].bias))
    expected = F.linear(h, linears[2].weight, linears[2].bias)
    torch.testing.assert_close(model(x), expected)


def test_cnn_output_shape_and_stages():
    model = SmallCNN((1, 8, 8), 10, channels=[4, 6])
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 4), (4, 6)]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model) == 2
    head = model[-1]
    assert isinstance(head, nn.Linear) and head.in_features == 6 * 2 * 2


def test_cnn_with_too_many_stages_for_the_image_is_a_value_error():
    with pytest.raises(ValueError, match="at most 3 conv stages"):
        SmallCNN((1, 8, 8), 10, channels=[4, 4, 4, 4])


def test_batch_norm_before_and_after_the_activation():
    before = MLP(6, 2, depth=1, width=5, norm="batch", norm_position="before_activation")
    after = MLP(6, 2, depth=1, width=5, norm="batch", norm_position="after_activation")
    assert layer_types(before) == [nn.Flatten, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert layer_types(after) == [nn.Flatten, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Linear]
    assert before[2].num_features == 5


def test_batch_norm_in_a_cnn_is_2d():
    model = SmallCNN((1, 8, 8), 3, channels=[4], norm="batch")
    assert layer_types(model)[:4] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]


def test_weight_norm_reparametrises_the_hidden_layers_and_adds_no_layer():
    model = MLP(6, 2, depth=2, width=5, norm="weight")
    # A parametrised Linear is a subclass (ParametrizedLinear): compare with isinstance.
    expected = [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert len(model) == len(expected)
    assert all(isinstance(m, t) for m, t in zip(model, expected))
    hidden, head = [model[1], model[3]], model[5]
    assert all(parametrize.is_parametrized(m, "weight") for m in hidden)
    assert not parametrize.is_parametrized(head)
    # w = g * v / ||v|| per output unit (Salimans & Kingma 2016).
    g = hidden[0].parametrizations.weight.original0
    v = hidden[0].parametrizations.weight.original1
    torch.testing.assert_close(hidden[0].weight, g * v / v.norm(dim=1, keepdim=True))


def test_selu_gets_alpha_dropout_and_relu_standard_dropout():
    selu = MLP(6, 2, depth=1, width=5, activation="selu", dropout=0.2)
    relu = MLP(6, 2, depth=1, width=5, activation="relu", dropout=0.2)
    assert layer_types(selu) == [nn.Flatten, nn.Linear, nn.SELU, nn.AlphaDropout, nn.Linear]
    assert layer_types(relu) == [nn.Flatten, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert selu[3].p == 0.2
    forced = MLP(6, 2, depth=1, width=5, activation="selu", dropout=0.2,
                 dropout_kind="standard")
    assert isinstance(forced[3], nn.Dropout)


def test_build_model_refuses_a_cnn_on_flat_data():
    with pytest.raises(ValueError, match="cnn needs image-shaped data"):
        build_model(ModelConfig(arch="cnn"), (30,), 2)


def test_build_model_follows_the_mlp_config():
    config = ModelConfig(arch="mlp", depth=3, width=9, activation="gelu", dropout=0.25,
                         norm="layer", norm_position="after_activation")
    model = build_model(config, (1, 8, 8), 10)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == \
        [(64, 9), (9, 9), (9, 9), (9, 10)]
    assert layer_types(model)[1:6] == [nn.Linear, nn.GELU, nn.LayerNorm, nn.Dropout, nn.Linear]
    assert all(m.p == 0.25 for m in model if isinstance(m, nn.Dropout))
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_build_model_follows_the_cnn_config():
    config = ModelConfig(arch="cnn", channels=[3, 5], activation="elu", dropout=0.1,
                         norm="group")
    model = build_model(config, (2, 8, 8), 4)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(2, 3), (3, 5)]
    assert sum(isinstance(m, nn.ELU) for m in model) == 2
    assert sum(isinstance(m, nn.GroupNorm) for m in model) == 2
    assert [m.p for m in model if isinstance(m, nn.Dropout)] == [0.1]
    assert model(torch.randn(2, 2, 8, 8)).shape == (2, 4)


def test_seeded_model_starts_from_the_weights_torch_draws_right_after_the_seed():
    # Reference: torch's own Linear layers, built in the same order right after the seed.
    torch.manual_seed(7)
    reference = [nn.Linear(64, 9), nn.Linear(9, 9), nn.Linear(9, 3)]
    torch.rand(1000)  # whatever ran before must not matter
    model = seeded_model(ModelConfig(depth=2, width=9), (1, 8, 8), 3, seed=7)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    for got, expected in zip(linears, reference, strict=True):
        torch.testing.assert_close(got.weight, expected.weight, rtol=0, atol=0)
        torch.testing.assert_close(got.bias, expected.bias, rtol=0, atol=0)
    other = seeded_model(ModelConfig(depth=2, width=9), (1, 8, 8), 3, seed=8)
    assert not torch.equal(other[1].weight, linears[0].weight)
