"""How much does `trickopt.train.fit` cost per epoch against a minimal hand-written loop?

Same model (the default MLP, 64->128->128->10), same data (digits, default DataConfig split),
same batch size (128), same Adam (lr 1e-3), same thread count and device; fit runs with no
tricks (stopper "none", schedule "constant", l1 = l2 = 0, dropout 0, no bf16 autocast).
Goal: fit / hand <= 1.10.

Variants, timed interleaved (the order rotates each repetition) on fresh copies of one
initial model, each running E epochs per repetition; ms/epoch = the call's wall time / E, so
fit's own set-up (optimizer, scheduler, stopper) is amortised over E like the hand loop's
optimizer construction:

* ``fit``: ``trickopt.train.fit`` (training + validation + its per-epoch bookkeeping: metrics
  dict, weight sparsity, stopper, best-weights copy, scheduler step).
* ``hand (fit's Adam)``: the loop a competent user writes, the reference: tensors already on
  the device, ``torch.randperm`` per epoch, forward, ``F.cross_entropy``, ``zero_grad``,
  ``backward``, ``step``, the train loss summed on the device; then one validation pass and one
  host sync (``tolist``) per epoch. Its Adam uses the class and ``fused`` setting that
  ``create_optimizer`` picks for fit, so the row isolates fit's overhead (it puts every
  parameter in one group, as a user does; fit's two groups, weights / the rest, count as
  fit's overhead).
* ``hand (Adam defaults)``: the same loop with ``torch.optim.Adam(params, lr=1e-3)``, for
  information (what the user would type).
* ``DataLoader loop``: the tutorial loop, ``DataLoader(TensorDataset(x, y), batch_size=128,
  shuffle=True)``, with fit's Adam; same validation, for context.

Ratios are the median (and min-max) of per-repetition ratios to ``hand (fit's Adam)``: the
runs of one repetition are a fraction of a second apart, so slow machine noise mostly cancels.

Run:
    python benchmarks/fit_overhead.py                 # 1 thread, 20 epochs x 11 repetitions
    python benchmarks/fit_overhead.py --threads 2
    python benchmarks/fit_overhead.py --quick         # a few seconds, for CI
    python benchmarks/fit_overhead.py --profile       # + where fit's extra time goes
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
import timeit
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trickopt.config import RunConfig
from trickopt.data import load_data
from trickopt.models import build_model
from trickopt.train import fit, resolve_device
from trickopt.tricks.optim import create_optimizer
from trickopt.tricks.regularization import Regularization

GOAL = 1.10
LR = 1e-3
REFERENCE = "hand (fit's Adam)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="epochs per repetition (20)")
    parser.add_argument("--repeats", type=int, default=11, help="interleaved repetitions (11)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up epochs per variant (3)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto, ...")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (2 epochs x 2 repetitions): checks that it runs")
    parser.add_argument("--profile", action="store_true",
                        help="also show where fit's extra time goes: isolated costs, "
                             "torch.profiler op counts, cProfile")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.repeats, args.warmup = 2, 2, 1
    if min(args.epochs, args.repeats, args.threads, args.batch_size) < 1 or args.warmup < 0:
        parser.error("--epochs, --repeats, --threads, --batch-size must be >= 1, --warmup >= 0")
    return args


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# The variants. Each takes a fresh model and returns nothing; the caller times it.


def fit_config(args: argparse.Namespace, epochs: int):
    cfg = RunConfig()
    train = cfg.train
    train.max_epochs = epochs
    train.batch_size = args.batch_size
    train.lr = LR
    train.optimizer = "adam"
    train.stopper, train.stopper_params = "none", {}
    train.schedule, train.schedule_params = "constant", {}
    train.l1 = train.l2 = 0.0
    train.threads = args.threads
    train.device = args.device
    train.bf16 = False  # fit's bf16 autocast (CUDA only) would be work the hand loop skips
    return cfg


def validate(model: nn.Module, x_val: torch.Tensor, y_val: torch.Tensor,
             train_loss: torch.Tensor) -> list[float]:
    """The hand loops' end of epoch: one validation pass, one host sync."""
    model.eval()
    with torch.no_grad():
        logits = model(x_val)
        val_loss = F.cross_entropy(logits, y_val)
        accuracy = (logits.argmax(dim=1) == y_val).float().mean()
    return torch.stack([train_loss, val_loss, accuracy]).tolist()


def hand_loop(model: nn.Module, data: dict, epochs: int, batch_size: int,
              make_optimizer: Callable[[nn.Module], torch.optim.Optimizer]) -> None:
    x, y, x_val, y_val = data["x"], data["y"], data["x_val"], data["y_val"]
    optimizer = make_optimizer(model)
    n = len(y)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, device=x.device)
        train_loss = torch.zeros((), device=x.device)
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            train_loss += loss.detach()
        validate(model, x_val, y_val, train_loss)


def dataloader_loop(model: nn.Module, data: dict, epochs: int, batch_size: int,
                    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer]) -> None:
    device = data["x_val"].device
    loader = DataLoader(TensorDataset(data["x_cpu"], data["y_cpu"]), batch_size=batch_size,
                        shuffle=True)
    optimizer = make_optimizer(model)
    for _ in range(epochs):
        model.train()
        train_loss = torch.zeros((), device=device)
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            train_loss += loss.detach()
        validate(model, data["x_val"], data["y_val"], train_loss)


def fits_optimizer(model: nn.Module) -> tuple[type[torch.optim.Optimizer], bool | None]:
    """The optimizer class and `fused` setting fit's `create_optimizer` picks by default."""
    probe = create_optimizer("adam", copy.deepcopy(model), lr=LR,
                             regularization=Regularization())
    return type(probe), probe.defaults.get("fused")


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = fit_config(args, args.epochs)
    splits = load_data(cfg.data)
    torch.manual_seed(0)
    template = build_model(cfg.model, splits.input_shape, splits.n_classes).to(device)
    opt_class, fused = fits_optimizer(template)
    fused_kw = {} if fused is None else {"fused": fused}

    def fits_adam(model: nn.Module) -> torch.optim.Optimizer:
        return opt_class(model.parameters(), lr=LR, **fused_kw)

    def default_adam(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=LR)

    data = {"x": splits.x_train.to(device), "y": splits.y_train.to(device),
            "x_val": splits.x_val.to(device), "y_val": splits.y_val.to(device),
            "x_cpu": splits.x_train, "y_cpu": splits.y_train}
    batch = args.batch_size

    def run_fit(model: nn.Module, epochs: int) -> None:
        history = fit(model, splits, fit_config(args, epochs).train)
        assert history.epochs_trained == epochs, history.stop_reason

    variants: dict[str, Callable[[nn.Module, int], None]] = {
        "fit": run_fit,
        REFERENCE: lambda m, e: hand_loop(m, data, e, batch, fits_adam),
        "hand (Adam defaults)": lambda m, e: hand_loop(m, data, e, batch, default_adam),
        "DataLoader loop": lambda m, e: dataloader_loop(m, data, e, batch, fits_adam),
    }

    n_train, n_val = len(splits.y_train), len(splits.y_val)
    print("# fit overhead: trickopt.train.fit vs a hand-written loop, per epoch\n")
    print(f"- torch {torch.__version__}, Python {platform.python_version()}, "
          f"device {device}, intra-op threads {torch.get_num_threads()} "
          f"(os.cpu_count {os.cpu_count()})")
    print(f"- CPU: {cpu_model()}")
    if device.type == "cuda":
        print(f"- GPU: {torch.cuda.get_device_name(device)}")
    if hasattr(os, "getloadavg"):
        print(f"- load average at start: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    hand_steps = -(-n_train // batch)
    # fit folds a trailing batch of one sample into the previous batch (see _Run.__init__).
    fit_steps = max(1, n_train // batch + (1 if n_train % batch > 1 else 0))
    steps = f"{hand_steps}" if hand_steps == fit_steps else f"hand {hand_steps}, fit {fit_steps}"
    n_params = sum(p.numel() for p in template.parameters())
    print(f"- data: digits, {n_train} train / {n_val} val rows, batch {batch} ({steps} "
          f"steps/epoch); model: {n_params} parameters; optimizer for fit and the hand loop: "
          f"{opt_class.__name__}(lr={LR}, fused={fused})")
    print(f"- {args.epochs} epochs x {args.repeats} repetitions per variant, interleaved, "
          f"after {args.warmup} warm-up epoch(s) each\n")

    def timed(name: str, epochs: int) -> float:
        model = copy.deepcopy(template)
        sync(device)
        started = time.perf_counter()
        variants[name](model, epochs)
        sync(device)
        return time.perf_counter() - started

    names = list(variants)
    if args.warmup:
        for name in names:
            timed(name, args.warmup)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(args.repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(timed(name, args.epochs))

    ms = {name: [1e3 * s / args.epochs for s in values] for name, values in seconds.items()}
    print("| variant | median ms/epoch | min–max ms/epoch | ratio to hand loop: median "
          "(min–max) |")
    print("|---|---:|---:|---:|")
    for name in names:
        ratios = [a / b for a, b in zip(ms[name], ms[REFERENCE])]
        print(f"| {name} | {statistics.median(ms[name]):.3f} | {min(ms[name]):.3f}–"
              f"{max(ms[name]):.3f} | {statistics.median(ratios):.3f} "
              f"({min(ratios):.3f}–{max(ratios):.3f}) |")
    fit_ratio = statistics.median(a / b for a, b in zip(ms["fit"], ms[REFERENCE]))
    verdict = "meets" if fit_ratio <= GOAL else "misses"
    if args.quick:
        verdict = "--quick is too small for a verdict on"
    print(f"\nfit / hand loop = {fit_ratio:.3f}: {verdict} the goal of <= {GOAL:.2f}.")
    if hasattr(os, "getloadavg"):
        print(f"Load average at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")

    if args.profile:
        profile(variants, template, data, args.epochs, batch, fits_adam)
    return 0


def profile(variants: dict, template: nn.Module, data: dict, epochs: int, batch: int,
            fits_adam: Callable[[nn.Module], torch.optim.Optimizer]) -> None:
    """Where fit's extra time goes: isolated costs, extra torch ops, trickopt's Python."""
    print("\n## Profile of fit's extras\n")
    isolated_costs(template, data, batch, fits_adam)
    op_count_diff(variants, template, epochs)
    python_profile(variants, template, epochs)


def isolated_costs(template: nn.Module, data: dict, batch: int,
                   fits_adam: Callable[[nn.Module], torch.optim.Optimizer]) -> None:
    """Each thing fit does that the hand loop does not, timed alone (min of 5 x 200 calls)."""
    from trickopt.train import evaluate_sums
    from trickopt.tricks.early_stopping import create_stopper
    from trickopt.tricks.regularization import weight_sparsity
    from trickopt.tricks.schedules import create_scheduler

    x, y = data["x"][:batch], data["y"][:batch]
    models = [copy.deepcopy(template) for _ in range(3)]
    for model in models:
        F.cross_entropy(model(x), y).backward()  # gradients for step() to use
    plain = fits_adam(models[0])
    grouped = create_optimizer("adam", models[1], lr=LR, regularization=Regularization())
    scheduled = create_optimizer("adam", models[2], lr=LR, regularization=Regularization())
    schedule = create_scheduler("constant", scheduled, epochs=20, steps_per_epoch=9)
    model, x_val, y_val = models[0], data["x_val"], data["y_val"]
    loss = F.cross_entropy(model(x), y)
    total = torch.zeros((), device=x.device)
    stopper, falling = create_stopper("none"), [1.0]

    def best_copy():
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def stopper_step():
        falling[0] *= 0.999
        stopper.step(falling[0], 1.0)

    def fit_validation():
        return torch.stack([total, *evaluate_sums(model, x_val, y_val)]).tolist()

    per_step = {
        "optimizer.step(): torch Adam, 1 param group (hand loop)": plain.step,
        "optimizer.step(): create_optimizer's 2 param groups": grouped.step,
        "optimizer.step(): 2 groups + LR scheduler's step wrapper (fit)": scheduled.step,
        "total += loss.detach() (hand loop)": lambda: total.add_(loss.detach()),
        "total += loss.detach() * len(index) (fit)": lambda: total.add_(loss.detach() * batch),
    }
    per_epoch = {
        "validation + sync: hand loop": lambda: validate(model, x_val, y_val, total),
        "validation + sync: evaluate_sums (fit)": fit_validation,
        "weight_sparsity(model) (fit)": lambda: weight_sparsity(model),
        "best-weights copy, when val loss improves (fit)": best_copy,
        "schedule.after_epoch() (fit)": lambda: schedule.after_epoch(1.0),
        "stopper.step() (fit)": stopper_step,
    }
    cases = {("step", k): v for k, v in per_step.items()}
    cases.update({("epoch", k): v for k, v in per_epoch.items()})
    rounds: dict[tuple[str, str], list[float]] = {key: [] for key in cases}
    for call in cases.values():
        call()
    for _ in range(7):  # rounds interleave the cases, so a noisy second hits them all alike
        for key, call in cases.items():
            rounds[key].append(min(timeit.repeat(call, number=100, repeat=3)) / 100)
    print("Isolated costs, microseconds per call (timeit, min of 3 x 100 calls, median of 7 "
          "interleaved rounds; warm caches, so a floor for the cost inside the loop):\n")
    print("| per | what | us/call: median (min–max) |")
    print("|---|---|---:|")
    for (per, name), values in rounds.items():
        print(f"| {per} | {name} | {1e6 * statistics.median(values):.1f} "
              f"({1e6 * min(values):.1f}–{1e6 * max(values):.1f}) |")


def op_count_diff(variants: dict, template: nn.Module, epochs: int) -> None:
    """torch ops that fit calls more often than the hand loop (torch.profiler, per epoch)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    tables = {}
    for name in ("fit", REFERENCE):
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            variants[name](copy.deepcopy(template), epochs)
        tables[name] = {e.key: (e.count, e.self_cpu_time_total) for e in prof.key_averages()}
    fit_ops, hand_ops = tables["fit"], tables[REFERENCE]
    rows = []
    for key in set(fit_ops) | set(hand_ops):
        (fc, ft), (hc, ht) = fit_ops.get(key, (0, 0.0)), hand_ops.get(key, (0, 0.0))
        if fc != hc:
            rows.append((ft - ht, key, fc / epochs, hc / epochs, ft / epochs, ht / epochs))
    rows.sort(reverse=True)
    print(f"\ntorch.profiler, {epochs} epochs each: ops whose call count differs, per epoch "
          "(self CPU us are noisy; the counts are exact):\n")
    print("| op | calls fit | calls hand | self us fit | self us hand |")
    print("|---|---:|---:|---:|---:|")
    for _, key, fc, hc, ft, ht in rows:
        print(f"| {key} | {fc:g} | {hc:g} | {ft:.0f} | {ht:.0f} |")


def python_profile(variants: dict, template: nn.Module, epochs: int) -> None:
    """cProfile of fit, restricted to trickopt's own functions (cumulative time)."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    variants["fit"](copy.deepcopy(template), epochs)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
    stats.print_stats("trickopt", 15)
    text = out.getvalue()
    print(f"\ncProfile of fit, {epochs} epochs (cumulative seconds; trickopt's functions):\n")
    print(text[text.find("   ncalls"):].rstrip())


if __name__ == "__main__":
    sys.exit(main())
