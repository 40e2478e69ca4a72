"""A model built through the factory interface against the same model written by hand, in fit.

MNIST-1D, the default study's 1-D CNN (3 conv stages of 32 channels, batch norm before the
activation, dropout 0.1 before the head), built twice: by `trickopt.models.cnn1d` from a
`Tricks`, and as a plain `nn.Sequential` of the same torch layers, given the same weights.
Both trained by `fit` (Adam, batch 128, no other trick), interleaved, ms per epoch.

Run:
    python benchmarks/factory_overhead.py --threads 1   # 5 epochs x 9 repetitions
    python benchmarks/factory_overhead.py --quick       # seconds: checks that it runs
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics

import torch
from common import machine_facts, med, ms_per_epoch, print_table, ratios, without_tricks
from torch import nn

from trickopt.config import RunConfig
from trickopt.data import load_data
from trickopt.models import cnn1d
from trickopt.train import fit
from trickopt.tricks import Tricks

REFERENCE = "written by hand"


def by_hand(channels: list[int], kernel: int, n_classes: int) -> nn.Sequential:
    layers, in_channels, length = [], 1, 40
    for out in channels:
        layers += [nn.Conv1d(in_channels, out, kernel, padding=kernel // 2),
                   nn.BatchNorm1d(out), nn.ReLU(), nn.MaxPool1d(2)]
        in_channels, length = out, length // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Dropout(0.1),
                         nn.Linear(in_channels * length, n_classes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per call (5)")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved repetitions (9)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument("--quick", action="store_true", help="1 epoch x 2 repetitions")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats = 1, 2
    torch.set_num_threads(args.threads)
    config = RunConfig()
    config.data.name = "mnist1d"
    splits = load_data(config.data)
    train = without_tricks(config.train, epochs=args.epochs, device="cpu")
    torch.manual_seed(0)
    factory_model = cnn1d(Tricks(norm="batch", dropout=0.1), splits.input_shape,
                          splits.n_classes, channels=[32, 32, 32], kernel_size=5)
    hand_model = by_hand([32, 32, 32], 5, splits.n_classes)
    # The same weights: the two differ only in how they were put together.
    hand_model.load_state_dict(factory_model.state_dict())
    machine_facts("A factory-built model against the same model by hand, in fit", [
        f"cpu, torch threads {torch.get_num_threads()}; MNIST-1D, {len(splits.y_train)} train "
        f"rows, batch 128, Adam lr 1e-3; {args.epochs} epochs x {args.repeats} repetitions, "
        "interleaved, after a warm-up call each"])

    def train_copy(template):
        return lambda _, e: fit(copy.deepcopy(template), splits,
                                dataclasses.replace(train, max_epochs=e))

    ms = ms_per_epoch({"factory (cnn1d + Tricks)": train_copy(factory_model),
                       REFERENCE: train_copy(hand_model)}, None,
                      epochs=args.epochs, repeats=args.repeats)
    print_table(["model", "median ms/epoch", "min–max ms/epoch",
                 "ratio to by hand: median (min–max)"],
                [[name, f"{statistics.median(v):.1f}", f"{min(v):.1f}–{max(v):.1f}",
                  med(ratios(v, ms[REFERENCE]))] for name, v in ms.items()])


if __name__ == "__main__":
    main()
