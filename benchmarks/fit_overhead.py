"""Training-loop overhead: `trickopt.train.fit` against a minimal hand-written loop, per epoch.

Same model (the default MLP), data (digits), batch 128, Adam lr 1e-3, threads and device; fit
without tricks. Interleaved on copies of one model, E epochs per call (set-up amortised):
fit; the hand loop (device-resident tensors, a randperm per epoch, one validation pass and
one host sync per epoch, with the Adam class and `fused` setting fit's create_optimizer picks:
the reference); the same with torch.optim.Adam defaults; and a DataLoader(TensorDataset,
shuffle=True) loop with fit's Adam.

Run:
    python benchmarks/fit_overhead.py --threads 1     # 20 epochs x 11 repetitions
    python benchmarks/fit_overhead.py --quick         # seconds: checks that it runs
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics

import torch
import torch.nn.functional as F
from common import machine_facts, med, ms_per_epoch, print_table, ratios, without_tricks
from torch.utils.data import DataLoader, TensorDataset

from trickopt.config import RunConfig
from trickopt.data import load_data
from trickopt.models import build_model
from trickopt.train import fit, resolve_device
from trickopt.tricks.optim import create_optimizer
from trickopt.tricks.regularization import Regularization

REFERENCE = "hand loop (fit's Adam)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs per call (20)")
    parser.add_argument("--repeats", type=int, default=11, help="interleaved repetitions (11)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument("--quick", action="store_true", help="2 epochs x 2 repetitions")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats = 2, 2
    if min(args.epochs, args.repeats, args.threads) < 1:
        parser.error(f"--epochs, --repeats, --threads must be >= 1; got {vars(args)}")
    return args


def hand_loop(model, data: dict, epochs: int, make_optimizer, *, loader: bool) -> None:
    optimizer = make_optimizer(model)
    x, y, x_val, y_val = data["x"], data["y"], data["x_val"], data["y_val"]
    dataset = DataLoader(TensorDataset(data["x_cpu"], data["y_cpu"]), batch_size=128,
                         shuffle=True) if loader else None
    for _ in range(epochs):
        model.train()
        total = torch.zeros((), device=x.device)
        if loader:
            batches = ((xb.to(x.device), yb.to(x.device)) for xb, yb in dataset)
        else:
            order = torch.randperm(len(y), device=x.device)
            batches = ((x[i], y[i]) for i in order.split(128))
        for xb, yb in batches:
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.detach()
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            accuracy = (logits.argmax(1) == y_val).float().mean()
            torch.stack([total, F.cross_entropy(logits, y_val), accuracy]).tolist()  # 1 sync


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = RunConfig()
    splits = load_data(config.data)
    torch.manual_seed(0)
    template = build_model(config.model, splits.input_shape, splits.n_classes).to(device)
    train = without_tricks(config.train, epochs=args.epochs, device=args.device)
    train.threads = args.threads
    probe = create_optimizer("adam", copy.deepcopy(template), lr=train.lr,
                             regularization=Regularization())
    fused = probe.defaults.get("fused")
    fused_kw = {} if fused is None else {"fused": fused}
    data = {"x": splits.x_train.to(device), "y": splits.y_train.to(device),
            "x_val": splits.x_val.to(device), "y_val": splits.y_val.to(device),
            "x_cpu": splits.x_train, "y_cpu": splits.y_train}

    def fits_adam(model):
        return type(probe)(model.parameters(), lr=train.lr, **fused_kw)

    def default_adam(model):
        return torch.optim.Adam(model.parameters(), lr=train.lr)

    machine_facts("Training-loop overhead: fit against a hand-written loop, ms per epoch", [
        f"device {device}, torch threads {torch.get_num_threads()}; digits, "
        f"{len(splits.y_train)} train / {len(splits.y_val)} val rows, batch 128; "
        f"{type(probe).__name__}(lr={train.lr}, fused={fused})",
        f"{args.epochs} epochs x {args.repeats} repetitions per variant, interleaved, after "
        "a warm-up call each"])
    ms = ms_per_epoch({
        "fit": lambda m, e: fit(m, splits, dataclasses.replace(train, max_epochs=e)),
        REFERENCE: lambda m, e: hand_loop(m, data, e, fits_adam, loader=False),
        "hand loop (Adam defaults)": lambda m, e: hand_loop(m, data, e, default_adam,
                                                            loader=False),
        "DataLoader loop": lambda m, e: hand_loop(m, data, e, fits_adam, loader=True),
    }, template, epochs=args.epochs, repeats=args.repeats)
    print_table(["variant", "median ms/epoch", "min–max ms/epoch",
                 "ratio to the hand loop: median (min–max)"],
                [[name, f"{statistics.median(v):.3f}", f"{min(v):.3f}–{max(v):.3f}",
                  med(ratios(v, ms[REFERENCE]))] for name, v in ms.items()])

if __name__ == "__main__":
    main()
