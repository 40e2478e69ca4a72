"""On one GPU: ms per epoch (fp32 against bf16; fit's device-resident batching against a
DataLoader loop) and trials per hour with K concurrent trials sharing the card.

1. ms per epoch on digits (the default study's CNN, 16-32 channels) and the synthetic 200,000
   x 128 set (configs/data/synthetic_large.yaml; MLP 3 x 256), Adam, batch 128, no tricks:
   fit with train.bf16 off / on, and a DataLoader(TensorDataset) loop over CPU tensors with
   `.to(device)` per batch, the same model, optimizer and autocast.
2. trials per hour of the default study, `python -m trickopt.study --workers K --device cuda`,
   tracking off, refit none. Every row carries the card's name.

Without CUDA it prints "no CUDA device: skipped" and exits 0; `--device cpu` runs the same
code on the CPU (a smoke test, not a figure).

Run:
    python benchmarks/gpu.py                  # minutes on an H100; --only epochs / trials
    python benchmarks/gpu.py --quick          # < 1 minute; on a CPU machine: skipped
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import (
    REPO,
    cpu_model,
    interleave,
    machine_facts,
    med,
    ms_per_epoch,
    print_table,
    ratios,
    run_command,
    study_command,
    throughput_table,
    without_tricks,
)
from torch.utils.data import DataLoader, TensorDataset

from trickopt.config import load_run_config
from trickopt.data import load_data
from trickopt.models import build_model
from trickopt.train import evaluate_sums, fit
from trickopt.tricks.optim import create_optimizer
from trickopt.tricks.regularization import Regularization


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    parser.add_argument("--only", choices=("epochs", "trials"), help="one part only")
    parser.add_argument("--repeats", type=int, default=3, help="epoch timings' repetitions (3)")
    parser.add_argument("--trial-repeats", type=int, default=2, help="studies' repetitions (2)")
    parser.add_argument("--synthetic-rows", type=int, default=200_000, help="(200000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="(1 2 4)")
    parser.add_argument("--n-trials", type=int, default=24, help="trials per study (24)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    args = parser.parse_args()
    args.epochs = {"digits": 20, "synthetic": 2}
    if args.quick:
        args.repeats, args.trial_repeats, args.n_trials, args.workers = 1, 1, 2, [1, 2]
        args.synthetic_rows = 5_000
        args.epochs = {"digits": 2, "synthetic": 1}
    return args


def problems(args: argparse.Namespace):
    digits = load_run_config(REPO / "configs/data/digits.yaml")
    digits.model.arch, digits.model.channels = "cnn", [16, 32]
    synthetic = load_run_config(REPO / "configs/data/synthetic_large.yaml",
                                [f"data.n_samples={args.synthetic_rows}"])
    synthetic.model.arch, synthetic.model.width, synthetic.model.depth = "mlp", 256, 3
    return {"digits, CNN 16-32": (digits, args.epochs["digits"]),
            f"synthetic {args.synthetic_rows} rows, MLP 3x256": (synthetic,
                                                                args.epochs["synthetic"])}


def dataloader_loop(model, splits, train, device: torch.device) -> None:
    loader = DataLoader(TensorDataset(splits.x_train, splits.y_train), batch_size=128,
                        shuffle=True)
    optimizer = create_optimizer("adam", model, lr=train.lr, regularization=Regularization())
    x_val, y_val = splits.x_val.to(device), splits.y_val.to(device)
    for _ in range(train.max_epochs):
        model.train()
        total = torch.zeros((), device=device)
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            with torch.autocast("cuda", torch.bfloat16, enabled=train.bf16 and xb.is_cuda):
                loss = F.cross_entropy(model(xb).float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        torch.stack([total, *evaluate_sums(model, x_val, y_val)]).tolist()


def epoch_times(args: argparse.Namespace, device: torch.device, card: str) -> None:
    def variant(splits, cfg, loop: str, bf16: bool):
        def train(model, epochs: int) -> None:
            config = without_tricks(cfg.train, epochs=epochs, device=str(device), bf16=bf16)
            if loop == "fit":
                fit(model, splits, config)
            else:
                dataloader_loop(model, splits, config, device)
        return train

    rows = []
    for name, (cfg, epochs) in problems(args).items():
        splits = load_data(cfg.data)
        torch.manual_seed(0)
        template = build_model(cfg.model, splits.input_shape, splits.n_classes).to(device)
        ms = ms_per_epoch({f"{loop} {'bf16' if bf16 else 'fp32'}": variant(splits, cfg, loop, bf16)
                           for loop in ("fit", "DataLoader") for bf16 in (False, True)},
                          template, epochs=epochs, repeats=args.repeats)
        rows += [[card, name, v, med(ms[v], "{:.2f}"), med(ratios(ms[v], ms["fit fp32"])),
                  med(ratios(ms[v], ms[f"DataLoader {v.split()[-1]}"]))] for v in ms]
    print_table(["card", "problem", "variant", "ms/epoch", "vs fit fp32",
                 "vs DataLoader, same precision"], rows, left=3)


def trials_per_hour(args: argparse.Namespace, device: torch.device, card: str) -> None:
    def side(k: int):
        return lambda: run_command(study_command(
            "--workers", str(k), "--n-trials", str(args.n_trials), "--device", str(device),
            "--no-progress", "--set", "tracking.enabled=false", "--set", "refit=none",
            *(["--set", "train.max_epochs=1"] if args.quick else [])))

    runs = interleave({f"{card}, K={k}": side(k) for k in args.workers}, args.trial_repeats)
    throughput_table(runs, args.n_trials, "card, K concurrent trials")


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: skipped (benchmarks/gpu.py measures a GPU; "
              "torch.cuda.is_available() is False here)")
        return
    card = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU {cpu_model()} (smoke test, not a GPU figure)")
    machine_facts("trickopt on one GPU: epochs and concurrent trials",
                  [f"card: {card}; CUDA {torch.version.cuda}; repetitions: {args.repeats} "
                   f"(epochs), {args.trial_repeats} (studies)"])
    if args.only in (None, "epochs"):
        epoch_times(args, device, card)
    if args.only in (None, "trials"):
        trials_per_hour(args, device, card)


if __name__ == "__main__":
    main()
