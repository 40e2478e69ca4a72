"""A trial's model tricks as ready-made pieces, for a model you write yourself.

A model factory `build(tricks, input_shape, n_classes, **params) -> nn.Module` receives a
`Tricks` and places its pieces in its own architecture: a norm layer of the searched kind for
a width and a dimensionality, a dropout module, weight norm on a layer, the activation, and
where the norm sits relative to the activation. The built-in models (`trickopt.models`) are
written this way too.

`Tricks` remembers which pieces the factory asked for (`asked`): a study warns when a trick
it searches was never asked for, since every trial spent on it is wasted.

Example:
    >>> from torch import nn
    >>> tricks = Tricks(norm="batch", dropout=0.1)
    >>> model = nn.Sequential(*tricks.block(nn.Linear(8, 16), 16), nn.Linear(16, 2))
    >>> [type(m).__name__ for m in model]
    ['Linear', 'BatchNorm1d', 'ReLU', 'Dropout', 'Linear']
    >>> sorted(tricks.asked)
    ['activation', 'dropout', 'norm', 'norm_position']
"""

from __future__ import annotations

from torch import nn

from trickopt.tricks.dropout import create_dropout
from trickopt.tricks.norm import apply_weight_norm, create_norm, normalize_norm_kind

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "selu": nn.SELU,
                "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU}
ACTIVATIONS = tuple(_ACTIVATIONS)
MODEL_TRICKS = ("norm", "norm_position", "dropout", "activation")  # what `asked` may hold


def create_activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of: {', '.join(ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class Tricks:
    """The model-side tricks of one configuration, handed out as modules.

    Args:
        norm: a norm kind (`NORM_KINDS`, any spelling `normalize_norm_kind` takes).
        norm_position: "before_activation" or "after_activation" (used by `block`).
        dropout: drop probability in [0, 1); 0 gives `nn.Identity`.
        dropout_kind: "standard", "alpha", or "auto" (alpha for SELU, whose self-normalisation
            standard dropout destroys; standard otherwise).
        activation: one of `ACTIVATIONS`.
    """

    def __init__(self, *, norm: str = "none", norm_position: str = "before_activation",
                 dropout: float = 0.0, dropout_kind: str = "auto", activation: str = "relu"):
        self.norm_kind = normalize_norm_kind(norm)
        self._norm_position = norm_position
        self.dropout_rate = dropout
        self.dropout_kind = dropout_kind
        self.activation_name = activation
        self.asked: set[str] = set()

    @classmethod
    def from_config(cls, config) -> Tricks:
        """The tricks a `ModelConfig` (or anything with the same fields) chooses."""
        return cls(norm=config.norm, norm_position=config.norm_position,
                   dropout=config.dropout, dropout_kind=config.dropout_kind,
                   activation=config.activation)

    def norm(self, width: int, dims: int = 0) -> nn.Module:
        """A norm layer for `width` channels of inputs with `dims` spatial dimensions (0:
        (N, C) features, 1: (N, C, L) sequences, 2: (N, C, H, W) images). `nn.Identity` for
        "none", and for "weight", which is applied to a layer instead (`weight_norm`)."""
        self.asked.add("norm")
        return create_norm(self.norm_kind, width, dims=dims)

    def weight_norm(self, layer: nn.Module) -> nn.Module:
        """`layer` reparametrised with weight norm when the norm is "weight"; else `layer`."""
        self.asked.add("norm")
        return apply_weight_norm(layer) if self.norm_kind == "weight" else layer

    @property
    def norm_position(self) -> str:
        self.asked.add("norm_position")
        return self._norm_position

    def dropout(self, spatial: bool = False) -> nn.Module:
        """A dropout module (whole channels of images with `spatial`); identity at rate 0."""
        self.asked.add("dropout")
        kind = self.dropout_kind
        if kind == "auto":
            kind = "alpha" if self.activation_name == "selu" else "standard"
        return create_dropout(self.dropout_rate, kind=kind, spatial=spatial)

    def activation(self) -> nn.Module:
        self.asked.add("activation")
        return create_activation(self.activation_name)

    def block(self, layer: nn.Module, width: int, dims: int = 0, *,
              dropout: bool = True) -> list[nn.Module]:
        """`layer -> [norm] -> activation -> [norm] -> [dropout]` as a list of modules, the
        norm before or after the activation as searched, weight norm applied to `layer` when
        searched; identities left out. `dropout=False` leaves the dropout to the caller."""
        layer = self.weight_norm(layer)
        norm, activation = self.norm(width, dims), self.activation()
        pair = [norm, activation] if self.norm_position == "before_activation" \
            else [activation, norm]
        parts = [layer, *pair] + ([self.dropout()] if dropout else [])
        return [p for p in parts if not isinstance(p, nn.Identity)]
