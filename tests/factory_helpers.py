"""A model and a data factory importable by name (`factory_helpers:build`), for the tests
whose spawned workers must import them."""

from __future__ import annotations

import numpy as np
from torch import nn

from trickopt.data import splits_from_arrays


def build(tricks, input_shape, n_classes, *, width: int = 8):
    return nn.Sequential(nn.Flatten(), *tricks.block(nn.Linear(input_shape[0], width), width),
                         nn.Linear(width, n_classes))


def load(config):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 5))
    y = (x[:, 0] - x[:, 2] > 0).astype(int)
    return splits_from_arrays(x, y, config)
