"""Models against torch's own layers and a hand-written forward pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from trickopt.config import ModelConfig
from trickopt.models import build_model, cnn, cnn1d, mlp, seeded_model
from trickopt.tricks import Tricks


def MLP(in_features: int, n_classes: int, *, depth: int = 2, width: int = 128, **tricks):
    """The built-in mlp factory, called as a study calls it."""
    return mlp(Tricks(**tricks), (in_features,), n_classes, depth=depth, width=width)


def SmallCNN(input_shape: tuple, n_classes: int, *, channels: list, **tricks):
    return cnn(Tricks(**tricks), input_shape, n_classes, channels=channels)


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


def test_cnn1d_forward_equals_torch_functional_ops_by_hand():
    torch.manual_seed(0)
    model = cnn1d(Tricks(activation="tanh"), (2, 16), 3, channels=[4, 5], kernel_size=3)
    convs = [m for m in model if isinstance(m, nn.Conv1d)]
    head = model[-1]
    x = torch.randn(6, 2, 16)
    h = x
    for conv in convs:
        h = F.max_pool1d(torch.tanh(F.conv1d(h, conv.weight, conv.bias, padding=1)), 2)
    expected = F.linear(h.flatten(1), head.weight, head.bias)
    assert [(c.in_channels, c.out_channels) for c in convs] == [(2, 4), (4, 5)]
    assert head.in_features == 5 * 4
    torch.testing.assert_close(model(x), expected)


def test_cnn1d_reads_a_flat_sequence_as_one_channel():
    model = cnn1d(Tricks(), (40,), 10, channels=[8, 8, 8])
    assert model(torch.randn(3, 40)).shape == (3, 10)
    with pytest.raises(ValueError, match="at most 5 conv stages"):
        cnn1d(Tricks(), (40,), 10, channels=[8] * 6)


@pytest.mark.parametrize("kind, expected", [("batch", nn.BatchNorm1d), ("layer", nn.GroupNorm),
                                            ("weight", None), ("none", None)])
def test_cnn1d_places_the_searched_norm_for_sequences(kind, expected):
    model = cnn1d(Tricks(norm=kind), (1, 16), 2, channels=[4])
    norms = [m for m in model if isinstance(m, (nn.BatchNorm1d, nn.GroupNorm))]
    assert [type(m) for m in norms] == ([expected] if expected else [])
    conv = model[0]
    assert parametrize.is_parametrized(conv, "weight") == (kind == "weight")
    if kind == "layer":  # layer norm over (C, L) per sample, as torch's LayerNorm computes it
        x = torch.randn(5, 4, 16)
        reference = F.layer_norm(x, (4, 16))
        torch.testing.assert_close(norms[0](x), reference, rtol=1e-4, atol=1e-5)


def test_tricks_remember_what_the_factory_asked_for():
    tricks = Tricks(norm="batch", dropout=0.2)
    nn.Sequential(nn.Linear(3, 4), tricks.dropout())
    assert tricks.asked == {"dropout"}
    tricks.weight_norm(nn.Linear(3, 4))
    assert tricks.asked == {"dropout", "norm"}
    assert tricks.norm_position == "before_activation"
    assert "norm_position" in tricks.asked


def test_build_model_calls_a_user_factory_with_its_params():
    calls = []

    def build(tricks, input_shape, n_classes, *, width):
        calls.append((input_shape, n_classes, width, tricks.norm_kind))
        return nn.Sequential(nn.Flatten(), nn.Linear(12, width), tricks.norm(width),
                             nn.Linear(width, n_classes))

    model = build_model(ModelConfig(factory=build, params={"width": 6}, norm="layer"), (3, 4), 2)
    assert calls == [((3, 4), 2, 6, "layer")]
    assert isinstance(model[2], nn.LayerNorm) and model[2].normalized_shape == (6,)
