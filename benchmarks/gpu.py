"""On one GPU: time per epoch (fp32 vs bf16, trickopt's device-resident batching vs a
DataLoader loop) and trials per minute with 1, 2 and 4 concurrent trials sharing the card.

Question: where a task has a GPU, how much do trickopt's GPU paths buy? Three figures, each
printed with the card's name (torch.cuda.get_device_name):

1. ms per epoch for digits (the default study's CNN, channels 16-32) and for the synthetic
   200,000 x 128 tabular problem (configs/data/synthetic_large.yaml; the scale-out study's MLP,
   3 x 256), batch 128, Adam as trickopt creates it, no stopper / schedule / L1 / L2, for four
   variants timed interleaved (the order rotates each repetition) after a warm-up:
   * `fit fp32`: trickopt.train.fit with train.bf16 false (data on the device once, a shuffled
     index per epoch, one host sync per epoch);
   * `fit bf16`: the same with train.bf16 true (bf16 autocast, trickopt's default on CUDA);
   * `DataLoader fp32` / `DataLoader bf16`: the tutorial loop, DataLoader(TensorDataset(x, y),
     batch_size=128, shuffle=True) over CPU tensors, `.to(device)` per batch, the same model,
     optimizer and autocast, the loss summed on the device, one validation pass per epoch.
   Goals (the reasons trickopt has these paths): fit / DataLoader < 1 and bf16 / fp32 <= 1 on
   the synthetic set; digits is launch-bound and shows what small models pay.
2. trials per minute of the default study (digits CNN, all tricks, max 30 epochs) with
   `python -m trickopt.study --workers K --device cuda`, K = 1, 2, 4, all on the one GPU
   (trickopt pins workers to GPUs only when there are several), tracking off, refit none,
   journal storage; trials/minute = N / the optimize phase (benchmarks/phase_clock.py), whole
   command beside it. K=1 trains in the calling process with torch's default CPU threads; K > 1
   workers get cores // K threads each.

Everything is sized for under ~8 minutes on an H100 (`--budget-s` stops starting new work when
the time is spent and says what it skipped). With no CUDA device the script prints "no CUDA
device: skipped" and exits 0, so that CI's `--quick` run passes on a CPU machine;
`--device cpu` runs the same code on the CPU (a smoke test of this script, not a GPU figure).

Run:
    python benchmarks/gpu.py                  # on a GPU machine, < ~8 minutes on an H100
    python benchmarks/gpu.py --quick          # a minute at most; on CPU: skipped, exit 0
    python benchmarks/gpu.py --only epochs    # or: --only trials
    python benchmarks/gpu.py --device cpu --quick   # smoke test of the script itself
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch
import torch.nn.functional as F
from study_runs import (
    REPO,
    load_average,
    machine_facts,
    med,
    median,
    parse_summary,
    run_command,
    study_command,
)
from torch.utils.data import DataLoader, TensorDataset

START = time.monotonic()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for "
                        "a smoke test of this script")
    parser.add_argument("--only", choices=("epochs", "trials"), help="run one part only")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--digits-epochs", type=int, default=20,
                        help="epochs per timed call, digits (20)")
    parser.add_argument("--synthetic-epochs", type=int, default=2,
                        help="epochs per timed call, synthetic 200k (2)")
    parser.add_argument("--synthetic-rows", type=int, default=200_000,
                        help="rows of the synthetic set (200000, as synthetic_large.yaml)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved repetitions of the epoch timings (3)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4],
                        help="concurrent trials on the GPU (1 2 4)")
    parser.add_argument("--n-trials", type=int, default=24,
                        help="trials per study for trials/minute (24)")
    parser.add_argument("--trial-repeats", type=int, default=2,
                        help="interleaved repetitions of the trials/minute runs (2)")
    parser.add_argument("--budget-s", type=float, default=450,
                        help="start no new measurement after this many seconds (450)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, < 1 minute: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.digits_epochs, args.synthetic_epochs, args.repeats = 2, 1, 1
        args.synthetic_rows, args.n_trials, args.trial_repeats = 20_000, 2, 1
        args.workers = [1, 2]
        args.budget_s = min(args.budget_s, 50)
    return args


def card_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from study_runs import cpu_model
    return f"CPU {cpu_model()} (smoke test, not a GPU figure)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def over_budget(args: argparse.Namespace, what: str) -> bool:
    spent = time.monotonic() - START
    if spent > args.budget_s:
        print(f"\n(skipped {what}: {spent:.0f} s spent, over --budget-s {args.budget_s:.0f})")
        return True
    return False


# ---------------------------------------------------------------------------------------------
# 1. ms per epoch


def problems(args: argparse.Namespace):
    """(name, splits, model config) for digits and the synthetic set."""
    from trickopt.config import load_run_config
    from trickopt.data import load_data

    digits = load_run_config(REPO / "configs/data/digits.yaml")
    digits.model.arch, digits.model.channels = "cnn", [16, 32]
    synthetic = load_run_config(REPO / "configs/data/synthetic_large.yaml",
                                [f"data.n_samples={args.synthetic_rows}"])
    synthetic.model.arch, synthetic.model.width, synthetic.model.depth = "mlp", 256, 3
    for cfg, epochs in ((digits, args.digits_epochs), (synthetic, args.synthetic_epochs)):
        started = time.perf_counter()
        splits = load_data(cfg.data)
        shape = "x".join(map(str, splits.input_shape))
        name = (f"digits ({len(splits.y_train)} train rows of {shape}; CNN 16-32)"
                if cfg.data.name == "digits" else
                f"synthetic ({len(splits.y_train)} train rows of {shape}; MLP 3x256)")
        yield name, splits, cfg, epochs, time.perf_counter() - started


def train_config(cfg, args: argparse.Namespace, epochs: int, bf16: bool):
    train = copy.deepcopy(cfg.train)
    train.max_epochs, train.batch_size, train.lr, train.optimizer = epochs, args.batch_size, \
        1e-3, "adam"
    train.stopper, train.stopper_params = "none", {}
    train.schedule, train.schedule_params = "constant", {}
    train.l1 = train.l2 = 0.0
    train.device, train.bf16 = args.device, bf16
    return train


def dataloader_loop(model, splits, train, device: torch.device, bf16: bool) -> None:
    from trickopt.train import evaluate_sums
    from trickopt.tricks.optim import create_optimizer
    from trickopt.tricks.regularization import Regularization

    loader = DataLoader(TensorDataset(splits.x_train, splits.y_train),
                        batch_size=train.batch_size, shuffle=True)
    optimizer = create_optimizer("adam", model, lr=train.lr, regularization=Regularization())
    x_val, y_val = splits.x_val.to(device), splits.y_val.to(device)
    use_bf16 = bf16 and device.type == "cuda"
    for _ in range(train.max_epochs):
        model.train()
        total = torch.zeros((), device=device)
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                loss = F.cross_entropy(model(xb).float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        val_loss, correct = evaluate_sums(model, x_val, y_val)  # fp32, as fit validates
        torch.stack([total, val_loss, correct]).tolist()


def epoch_times(args: argparse.Namespace, device: torch.device, card: str) -> None:
    print(f"## 1. ms per epoch on {card}\n")
    print(f"Batch {args.batch_size}, Adam (create_optimizer), no tricks; {args.repeats} "
          "repetitions interleaved (rotating order) after one warm-up call per variant; "
          "ratios are per repetition, median (min–max).\n")
    print("| card | problem | variant | ms/epoch: median (min–max) | vs fit fp32 | "
          "peak GPU MiB |")
    print("|---|---|---|---:|---:|---:|")
    summary = []
    for name, splits, cfg, epochs, load_s in problems(args):
        if over_budget(args, f"epoch timings of {name}"):
            break
        ms = time_problem(args, device, card, f"{name}, data made in {load_s:.1f} s", splits,
                          cfg, epochs)
        summary.append((name, ms))
    for name, ms in summary:
        fit_dl = [a / b for a, b in zip(ms["fit fp32"], ms["DataLoader fp32"])]
        bf16 = [a / b for a, b in zip(ms["fit bf16"], ms["fit fp32"])]
        print(f"\n{card}, {name}: fit / DataLoader (fp32) = {med(fit_dl, '{:.3f}')}; "
              f"fit bf16 / fit fp32 = {med(bf16, '{:.3f}')}.")
    print()


def time_problem(args: argparse.Namespace, device: torch.device, card: str, name: str, splits,
                 cfg, epochs: int) -> dict[str, list[float]]:
    """The four variants on one problem, interleaved; prints their rows, returns ms/epoch."""
    from trickopt.models import build_model
    from trickopt.train import fit

    torch.manual_seed(0)
    template = build_model(cfg.model, splits.input_shape, splits.n_classes)

    def run_fit(model, n, bf16):
        history = fit(model, splits, train_config(cfg, args, n, bf16))
        assert history.epochs_trained == n, history.stop_reason

    def run_loader(model, n, bf16):
        dataloader_loop(model.to(device), splits, train_config(cfg, args, n, bf16), device,
                        bf16)

    variants = {"fit fp32": (run_fit, False), "fit bf16": (run_fit, True),
                "DataLoader fp32": (run_loader, False), "DataLoader bf16": (run_loader, True)}
    peak: dict[str, float] = {}

    def timed(variant: str, n: int) -> float:
        fn, bf16 = variants[variant]
        model = copy.deepcopy(template)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        started = time.perf_counter()
        fn(model, n, bf16)
        sync(device)
        seconds = time.perf_counter() - started
        if device.type == "cuda":
            peak[variant] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        return seconds

    names = list(variants)
    for variant in names:
        timed(variant, 1)  # warm-up: CUDA context, kernels, allocator
    ms: dict[str, list[float]] = {v: [] for v in names}
    for rep in range(args.repeats):
        shift = rep % len(names)
        for variant in names[shift:] + names[:shift]:
            ms[variant].append(1e3 * timed(variant, epochs) / epochs)
    for variant in names:
        ratios = [a / b for a, b in zip(ms[variant], ms["fit fp32"])]
        print(f"| {card} | {name} | {variant} | {med(ms[variant], '{:.1f}')} | "
              f"{med(ratios, '{:.3f}')} | {peak.get(variant, float('nan')):.0f} |", flush=True)
    return ms


# ---------------------------------------------------------------------------------------------
# 2. trials per minute with K concurrent trials on the one GPU


def trials_per_minute(args: argparse.Namespace, device: torch.device, card: str) -> None:
    def argv_of(k) -> list[str]:
        return (["--workers", str(k), "--n-trials", str(args.n_trials), "--device", args.device,
                 "--no-progress", "--set", "tracking.enabled=false", "--set", "refit=none"]
                + (["--set", "train.max_epochs=3"] if args.quick else []))

    print(f"## 2. Trials per minute, K concurrent trials on one {card}\n")
    print(f"`python -m trickopt.study {' '.join(argv_of('K'))}` (the default study: digits "
          f"CNN, all tricks; journal storage; through benchmarks/phase_clock.py), "
          f"{args.trial_repeats} repetition(s), interleaved.\n")
    runs: dict[int, list] = {k: [] for k in args.workers}
    for rep in range(args.trial_repeats):
        order = args.workers if rep % 2 == 0 else list(reversed(args.workers))
        for k in order:
            if over_budget(args, f"trials/minute K={k}, repetition {rep + 1}"):
                break
            run = run_command(f"K={k}", study_command(*argv_of(k))).check()
            run.summary = parse_summary(run.stdout)
            runs[k].append(run)
            print(f"(rep {rep + 1} K={k}: {run.wall:.1f} s)", file=sys.stderr, flush=True)
    n = args.n_trials
    print("| card | K | runs | trials/min (optimize): median (min–max) | trials/min (whole) | "
          "epochs/min (optimize) | vs K=1 (optimize) | trials complete/pruned/failed |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    base = median([n / r.phase("optimize") * 60 for r in runs[args.workers[0]]]) \
        if runs[args.workers[0]] else float("nan")
    for k in args.workers:
        if not runs[k]:
            print(f"| {card} | {k} | 0 | skipped | | | | |")
            continue
        per_min = [n / r.phase("optimize") * 60 for r in runs[k]]
        whole = [n / r.wall * 60 for r in runs[k]]
        epochs = [r.summary.get("epochs", 0) / r.phase("optimize") * 60 for r in runs[k]]
        s = runs[k][-1].summary
        print(f"| {card} | {k} | {len(runs[k])} | {med(per_min, '{:.1f}')} | "
              f"{med(whole, '{:.1f}')} | {med(epochs, '{:.0f}')} | "
              f"{median(per_min) / base:.2f} | "
              f"{s.get('complete', 0)}/{s.get('pruned', 0)}/{s.get('fail', 0)} |", flush=True)
    print()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: skipped (benchmarks/gpu.py measures a GPU; "
              "torch.cuda.is_available() is False here)")
        return 0
    if device.type not in ("cuda", "cpu"):
        print(f"--device {args.device}: only cuda[:N] or cpu", file=sys.stderr)
        return 2
    card = card_name(device)
    extra = [f"card: {card}"]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        extra.append(f"CUDA {torch.version.cuda}, {props.total_memory / 2 ** 30:.0f} GiB, "
                     f"{torch.cuda.device_count()} device(s) visible; bf16 supported: "
                     f"{torch.cuda.is_bf16_supported()}")
    machine_facts("trickopt on one GPU: epochs and concurrent trials", extra)
    if args.only in (None, "epochs"):
        epoch_times(args, device, card)
    if args.only in (None, "trials"):
        trials_per_minute(args, device, card)
    print(f"Total {time.monotonic() - START:.0f} s on {card}. "
          f"Load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
