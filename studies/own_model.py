"""Your own model and data in a study: a small residual 1-D network on your own data loader.

`studies/own_model.yaml` names the two functions below; the study imports this file by name
(it sits next to the study file), so spawned workers and other machines find it too.

    python -m trickopt.study studies/own_model.yaml
"""

from __future__ import annotations

import numpy as np
from torch import nn

from trickopt.data import splits_from_arrays
from trickopt.tricks import Tricks


class ResidualBlock(nn.Module):
    """x + f(x), where f is conv -> [norm] -> activation -> [norm] -> conv: the trial's norm,
    norm position, weight norm and activation come from `tricks`."""

    def __init__(self, tricks: Tricks, width: int, kernel_size: int):
        super().__init__()
        conv = nn.Conv1d(width, width, kernel_size, padding=kernel_size // 2)
        self.body = nn.Sequential(
            *tricks.block(conv, width, dims=1, dropout=False),
            tricks.weight_norm(nn.Conv1d(width, width, kernel_size, padding=kernel_size // 2)))

    def forward(self, x):
        return x + self.body(x)


def build(tricks: Tricks, input_shape: tuple[int, ...], n_classes: int, *, width: int = 32,
          blocks: int = 2, kernel_size: int = 5) -> nn.Module:
    """The model factory: `width` channels, `blocks` residual blocks, then pooling and a
    linear head with the trial's dropout before it."""
    channels, _length = input_shape
    return nn.Sequential(
        nn.Conv1d(channels, width, kernel_size, padding=kernel_size // 2),
        *[ResidualBlock(tricks, width, kernel_size) for _ in range(blocks)],
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), tricks.dropout(), nn.Linear(width, n_classes))


def load(config):
    """The data factory: noisy waves of 8 shapes (sine, square, saw, ... at two frequencies),
    randomly shifted, as (rows, 1 channel, 64 steps). `config` is the study's data section:
    its `params` (here `rows` and `noise`), `split_seed`, `val_fraction`, `test_fraction` and
    `scaling`, which `splits_from_arrays` applies as trickopt does to its own data sets."""
    rows, noise = config.params.get("rows", 3000), config.params.get("noise", 0.8)
    rng = np.random.default_rng(12345)  # the data set is fixed; the split follows split_seed
    t = np.linspace(0, 1, 64, endpoint=False)
    labels = rng.integers(0, 8, size=rows)
    phase = rng.uniform(0, 1, size=(rows, 1))
    frequency = np.where(labels % 2 == 0, 2.0, 3.0)[:, None]
    u = (frequency * t + phase) % 1.0
    shapes = [np.sin(2 * np.pi * u), np.sign(np.sin(2 * np.pi * u)), 2 * u - 1,
              1 - 4 * np.abs(u - 0.5)]
    x = np.choose((labels // 2)[:, None], shapes) + noise * rng.normal(size=(rows, 64))
    return splits_from_arrays(x[:, None, :], labels, config)
