"""An MLP and a small CNN assembled from the trick modules.

Each hidden block is `Linear/Conv -> [norm] -> activation -> [norm] -> dropout`, where the norm
sits before or after the activation (`norm_position`: the seed discusses both; its advice is
after, the original BatchNorm paper put it before). Weight norm is not a layer: it
reparametrises the Linear/Conv itself (one magnitude per output unit).
"""

from __future__ import annotations

import torch
from torch import nn

from trickopt.tricks.dropout import create_dropout
from trickopt.tricks.norm import apply_weight_norm, create_norm, normalize_norm_kind

ARCHS = ("mlp", "cnn")
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "selu": nn.SELU,
                "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU}
ACTIVATIONS = tuple(_ACTIVATIONS)


def create_activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of: {', '.join(ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def _dropout_kind(kind: str, activation: str) -> str:
    # Standard dropout destroys SELU's self-normalisation; alpha dropout keeps mean and variance.
    if kind == "auto":
        return "alpha" if activation == "selu" else "standard"
    return kind


def _block(layer: nn.Module, width: int, *, activation: str, dropout: float, dropout_kind: str,
           norm: str, norm_position: str, spatial: bool) -> list[nn.Module]:
    norm = normalize_norm_kind(norm)
    if norm == "weight":
        layer = apply_weight_norm(layer)
    parts = [layer]
    norm_layer = create_norm(norm, width, spatial=spatial)
    act = create_activation(activation)
    parts += [norm_layer, act] if norm_position == "before_activation" else [act, norm_layer]
    parts.append(create_dropout(dropout, kind=_dropout_kind(dropout_kind, activation),
                                spatial=False))
    return [p for p in parts if not isinstance(p, nn.Identity)]


class MLP(nn.Sequential):
    """Multi-layer perceptron; image-shaped inputs are flattened first.

    Example:
        >>> import torch
        >>> model = MLP(64, 10, depth=2, width=32, dropout=0.1, norm="batch")
        >>> model(torch.randn(5, 64)).shape
        torch.Size([5, 10])
    """

    def __init__(self, in_features: int, n_classes: int, *, depth: int = 2, width: int = 128,
                 activation: str = "relu", dropout: float = 0.0, dropout_kind: str = "auto",
                 norm: str = "none", norm_position: str = "before_activation"):
        layers: list[nn.Module] = [nn.Flatten()]
        features = in_features
        for _ in range(depth):
            layers += _block(nn.Linear(features, width), width, activation=activation,
                             dropout=dropout, dropout_kind=dropout_kind, norm=norm,
                             norm_position=norm_position, spatial=False)
            features = width
        layers.append(nn.Linear(features, n_classes))
        super().__init__(*layers)


class SmallCNN(nn.Sequential):
    """3x3 conv stages, each halving the image, then a linear classifier.

    Example:
        >>> import torch
        >>> model = SmallCNN((1, 8, 8), 10, channels=[16, 32], norm="batch")
        >>> model(torch.randn(5, 1, 8, 8)).shape
        torch.Size([5, 10])
    """

    def __init__(self, input_shape: tuple[int, int, int], n_classes: int, *,
                 channels: list[int] = (16, 32), activation: str = "relu", dropout: float = 0.0,
                 dropout_kind: str = "auto", norm: str = "none",
                 norm_position: str = "before_activation"):
        in_channels, height, width = input_shape
        if len(channels) > 0 and min(height, width) < 2 ** len(channels):
            raise ValueError(f"a {height}x{width} image allows at most "
                             f"{min(height, width).bit_length() - 1} conv stages; "
                             f"got channels={list(channels)}")
        layers: list[nn.Module] = []
        for out_channels in channels:
            conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
            layers += _block(conv, out_channels, activation=activation, dropout=0.0,
                             dropout_kind=dropout_kind, norm=norm, norm_position=norm_position,
                             spatial=True)
            layers.append(nn.MaxPool2d(2))
            in_channels, height, width = out_channels, height // 2, width // 2
        layers.append(nn.Flatten())
        # Dropout on the flattened features, where the classifier can co-adapt the most.
        layers.append(create_dropout(dropout, kind=_dropout_kind(dropout_kind, activation)))
        layers.append(nn.Linear(in_channels * height * width, n_classes))
        super().__init__(*[m for m in layers if not isinstance(m, nn.Identity)])


def build_model(config, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Build the model a `ModelConfig` describes for data of `input_shape` (one sample)."""
    common = dict(activation=config.activation, dropout=config.dropout,
                  dropout_kind=config.dropout_kind, norm=config.norm,
                  norm_position=config.norm_position)
    if config.arch == "cnn":
        if len(input_shape) != 3:
            raise ValueError(f"model.arch: cnn needs image-shaped data (C, H, W); this data set "
                             f"has samples of shape {input_shape}: use arch mlp")
        return SmallCNN(tuple(input_shape), n_classes, channels=list(config.channels), **common)
    in_features = 1
    for size in input_shape:
        in_features *= size
    return MLP(in_features, n_classes, depth=config.depth, width=config.width, **common)


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
