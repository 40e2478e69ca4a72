"""The built-in models, written as model factories: an MLP, a 2-D CNN and a 1-D CNN.

A model factory is `build(tricks, input_shape, n_classes, **params) -> nn.Module`: `tricks`
(a `trickopt.tricks.Tricks`) hands out the trial's norm, dropout, weight norm and activation
as modules, `input_shape` is one sample's shape, and `params` are the model's own knobs. The
built-in models below are factories like any user's; `build_model` calls the one a
`ModelConfig` names (a built-in `arch`, or a user `factory: "module:function"`).

Each hidden block is `Linear/Conv -> [norm] -> activation -> [norm] -> dropout`, where the norm
sits before or after the activation (`norm_position`: the seed discusses both; its advice is
after, the original BatchNorm paper put it before). Weight norm is not a layer: it
reparametrises the Linear/Conv itself (one magnitude per output unit).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trickopt.factories import resolve_factory
from trickopt.tricks.pieces import ACTIVATIONS, Tricks, create_activation

__all__ = ["ACTIVATIONS", "ARCHS", "build_model", "cnn", "cnn1d", "create_activation", "mlp",
           "model_params", "seeded_model"]


def mlp(tricks: Tricks, input_shape: tuple[int, ...], n_classes: int, *, depth: int = 2,
        width: int = 128) -> nn.Module:
    """Multi-layer perceptron; inputs of any shape are flattened first.

    Example:
        >>> import torch
        >>> model = mlp(Tricks(norm="batch", dropout=0.1), (64,), 10, depth=2, width=32)
        >>> model(torch.randn(5, 64)).shape
        torch.Size([5, 10])
    """
    layers: list[nn.Module] = [nn.Flatten()]
    features = math.prod(input_shape)
    for _ in range(depth):
        layers += tricks.block(nn.Linear(features, width), width)
        features = width
    layers.append(nn.Linear(features, n_classes))
    return nn.Sequential(*layers)


def cnn(tricks: Tricks, input_shape: tuple[int, ...], n_classes: int, *,
        channels: list[int] = (16, 32)) -> nn.Module:
    """3x3 conv stages on (C, H, W) images, each halving the image, then a linear classifier.

    Example:
        >>> import torch
        >>> model = cnn(Tricks(norm="batch"), (1, 8, 8), 10, channels=[16, 32])
        >>> model(torch.randn(5, 1, 8, 8)).shape
        torch.Size([5, 10])
    """
    if len(input_shape) != 3:
        raise ValueError(f"model.arch: cnn needs image-shaped data (C, H, W); this data set "
                         f"has samples of shape {tuple(input_shape)}: use arch mlp")
    in_channels, height, width = input_shape
    if min(height, width) < 2 ** len(channels):
        raise ValueError(f"a {height}x{width} image allows at most "
                         f"{min(height, width).bit_length() - 1} conv stages; "
                         f"got channels={list(channels)}")
    layers: list[nn.Module] = []
    for out_channels in channels:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        layers += tricks.block(conv, out_channels, dims=2, dropout=False)
        layers.append(nn.MaxPool2d(2))
        in_channels, height, width = out_channels, height // 2, width // 2
    # Dropout on the flattened features, where the classifier can co-adapt the most.
    layers += [nn.Flatten(), tricks.dropout(), nn.Linear(in_channels * height * width, n_classes)]
    return nn.Sequential(*[m for m in layers if not isinstance(m, nn.Identity)])


def cnn1d(tricks: Tricks, input_shape: tuple[int, ...], n_classes: int, *,
          channels: list[int] = (32, 32, 32), kernel_size: int = 5) -> nn.Module:
    """1-D conv stages on (C, L) sequences (or (L,), read as one channel), each halving the
    sequence by max-pooling, then a linear classifier: the MNIST-1D paper's CNN with pooling
    in place of its strides (strided: 2x faster per epoch here, but 90% test accuracy
    against 96% pooled, one seed each), the tricks placed.

    Example:
        >>> import torch
        >>> model = cnn1d(Tricks(norm="layer"), (1, 40), 10, channels=[8, 8])
        >>> model(torch.randn(5, 1, 40)).shape
        torch.Size([5, 10])
    """
    if len(input_shape) not in (1, 2):
        raise ValueError(f"model.arch: cnn1d needs sequences (C, L) or (L,); this data set has "
                         f"samples of shape {tuple(input_shape)}")
    in_channels, length = (1, input_shape[0]) if len(input_shape) == 1 else input_shape
    if length < 2 ** len(channels):
        raise ValueError(f"a sequence of length {length} allows at most "
                         f"{length.bit_length() - 1} conv stages; got channels={list(channels)}")
    layers: list[nn.Module] = [nn.Unflatten(1, (1, length))] if len(input_shape) == 1 else []
    for out_channels in channels:
        conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        layers += tricks.block(conv, out_channels, dims=1, dropout=False)
        layers.append(nn.MaxPool1d(2))
        in_channels, length = out_channels, length // 2
    layers += [nn.Flatten(), tricks.dropout(), nn.Linear(in_channels * length, n_classes)]
    return nn.Sequential(*[m for m in layers if not isinstance(m, nn.Identity)])


BUILT_IN = {"mlp": mlp, "cnn": cnn, "cnn1d": cnn1d}
ARCHS = tuple(BUILT_IN)
# The ModelConfig fields each built-in model takes as its params.
_FIELDS = {"mlp": ("depth", "width"), "cnn": ("channels",), "cnn1d": ("channels",)}


def model_factory(config):
    """The factory a `ModelConfig` names: its own `factory`, else the built-in `arch`."""
    if config.factory is not None:
        return resolve_factory(config.factory, "model.factory")
    return BUILT_IN[config.arch]


def model_params(config) -> dict:
    """The keyword arguments the factory gets: a built-in's shape fields, then `params`."""
    fields = {} if config.factory is not None else \
        {name: getattr(config, name) for name in _FIELDS[config.arch]}
    return {**fields, **config.params}


def build_model(config, input_shape: tuple[int, ...], n_classes: int, *,
                tricks: Tricks | None = None) -> nn.Module:
    """Build the model a `ModelConfig` describes for data of `input_shape` (one sample)."""
    tricks = tricks if tricks is not None else Tricks.from_config(config)
    return model_factory(config)(tricks, tuple(input_shape), n_classes, **model_params(config))


def seeded_model(config, input_shape: tuple[int, ...], n_classes: int, *,
                 seed: int) -> nn.Module:
    """`build_model` with reproducible initial weights: `torch.manual_seed(seed)`, then build.

    The seed must come first because every layer draws its initial weights from torch's
    global RNG as it is constructed; seeding after `build_model` would fix only what is drawn
    later (dropout masks), and two runs of one configuration would start from different
    weights. The global RNG is left seeded, as `torch.manual_seed` leaves it.

    Example:
        >>> from trickopt.config import ModelConfig
        >>> a = seeded_model(ModelConfig(), (64,), 10, seed=3)
        >>> b = seeded_model(ModelConfig(), (64,), 10, seed=3)
        >>> all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
        True
    """
    torch.manual_seed(seed)
    return build_model(config, input_shape, n_classes)
