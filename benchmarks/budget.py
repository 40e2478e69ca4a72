"""Budget: how many epochs do the two levels of early stopping save, and what do they cost?

studies/digits.yaml (CNN on digits, the default study until 2026-12-01; all tricks, val_loss,
TPE, refit train_val), same trials and sampler seeds, under: full (stopper fixed to none, no
pruner); stopper only (the default stopper search); pruner only: P (stopper none, Optuna's
pruner P with trickopt's defaults); both: P. Per study: the epochs all trials trained (refit
excluded), the best trial's val_loss and val accuracy (replayed, as trials store no accuracy:
deterministic on the CPU, and checked), the refit's test accuracy, and the share of the main
thread's samples inside a pruner's `prune`. One process, one torch thread; "% full" is the mean
over seeds against full's mean.

Run:
    python benchmarks/budget.py                  # 3 seeds x 12 variants x 40 trials, ~12 min
    python benchmarks/budget.py --quick          # 1 seed, 2 trials of 2 epochs, 4 variants
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import threading
import time
import warnings

import torch
from common import DIGITS_STUDY, machine_facts, print_table
from optuna.trial import FixedTrial, TrialState

from trickopt.data import load_data
from trickopt.models import build_model
from trickopt.study.config import PRUNERS, load_study_config
from trickopt.study.objective import decided_params
from trickopt.study.runner import run_study
from trickopt.study.space import ALL_TRICKS
from trickopt.train import fit

OPTUNA_PRUNERS = [p for p in PRUNERS if p != "none"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=40, help="trials per study (40)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="(0 1 2)")
    parser.add_argument("--epochs", type=int, default=30, help="train.max_epochs (30)")
    parser.add_argument("--pruners", nargs="+", choices=OPTUNA_PRUNERS, default=OPTUNA_PRUNERS)
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, 2 trials, 2 epochs, median only: checks that it runs")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.seeds, args.epochs, args.pruners = 2, [0], 2, ["median"]
    if min(args.trials, args.epochs) < 1:
        parser.error(f"--trials and --epochs must be >= 1; got {args.trials}, {args.epochs}")
    return args


def variants(pruners: list[str]) -> list[tuple[str, bool, str]]:
    """(name, default stopper search?, pruner)."""
    return ([("full", False, "none"), ("stopper only", True, "none")]
            + [(f"pruner only: {p}", False, p) for p in pruners]
            + [(f"both: {p}", True, p) for p in pruners])


class PruneShare(threading.Thread):
    """Samples the main thread's stack: the share of samples inside a pruner's `prune`."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples = self.in_prune = 0
        self.stop = threading.Event()

    def run(self) -> None:
        main = threading.main_thread().ident
        while not self.stop.wait(0.005):
            frame = sys._current_frames().get(main)
            self.samples += 1
            while frame is not None:
                code = frame.f_code
                if code.co_name == "prune" and "optuna" in code.co_filename:
                    self.in_prune += 1
                    break
                frame = frame.f_back


def run_one(name: str, stopper: bool, pruner: str, seed: int, args, data) -> dict:
    search = {**ALL_TRICKS} if stopper else {**ALL_TRICKS, "stopper": "none"}
    sampler = PruneShare()
    with tempfile.TemporaryDirectory(prefix="trickopt-budget-") as folder:
        config = load_study_config(DIGITS_STUDY, [
            f"study.name=budget-{seed}", f"study.storage=journal:{folder}/study.journal",
            f"study.seed={seed}", f"study.n_trials={args.trials}", f"study.pruner={pruner}",
            f"train.max_epochs={args.epochs}", "train.device=cpu", "train.threads=1",
            "tracking.enabled=false", "refit=train_val", "search=" + json.dumps(search)])
        sampler.start()
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = run_study(config, progress=False, out=io.StringIO())
        wall = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
        trials = result.study.get_trials(deepcopy=False)  # before the journal is removed
        best = result.study.best_trial if result.states.get("COMPLETE") else None
    row = {"variant": name, "seed": seed, "wall": wall, "epochs": result.epochs_trained,
           "prune_share": sampler.in_prune / max(1, sampler.samples),
           "complete": result.states.get("COMPLETE", 0),
           "pruned": result.states.get("PRUNED", 0),
           "to_max": sum(t.user_attrs.get("epochs_trained") == args.epochs for t in trials
                         if t.state != TrialState.PRUNED)}
    if best is None:
        return row
    _, run_config = decided_params(FixedTrial(best.params), config)
    torch.manual_seed(run_config.train.seed)
    model = build_model(run_config.model, data.input_shape, data.n_classes)
    replay = fit(model, data, run_config.train)
    if (replay.best["val_loss"], replay.best_epoch) != (best.value,
                                                        best.user_attrs.get("best_epoch")):
        print(f"warning: {name}, seed {seed}: the best trial's replay differs from the trial",
              file=sys.stderr)
    row.update(val_loss=best.value, val_accuracy=replay.best["val_accuracy"],
               refit_accuracy=result.refit["test_accuracy"])
    return row


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    data = load_data(load_study_config(DIGITS_STUDY, []).data)
    machine_facts("Budget: epochs saved by the stopper (level 1) and the pruner (level 2)", [
        f"the default study, {args.trials} trials, max_epochs {args.epochs}, sampler seeds "
        f"{' '.join(map(str, args.seeds))}; one torch thread; tracking off",
        f"{len(data.y_val)} validation and {len(data.y_test)} test examples"])
    rows = []
    for seed in args.seeds:
        for name, stopper, pruner in variants(args.pruners):
            rows.append(run_one(name, stopper, pruner, seed, args, data))
            print(f"seed {seed}, {name}: {rows[-1]['epochs']} epochs, {rows[-1]['wall']:.0f} s",
                  file=sys.stderr, flush=True)

    def mean(variant: str, key: str) -> float:
        values = [r[key] for r in rows if r["variant"] == variant and key in r]
        return statistics.fmean(values) if values else float("nan")

    table = []
    for name, _, _ in variants(args.pruners):
        cells = [name]
        for key, fmt in (("epochs", "{:.0f}"), ("val_accuracy", "{:.4f}"),
                         ("refit_accuracy", "{:.4f}"), ("val_loss", "{:.4f}")):
            ratio = 100 * mean(name, key) / mean("full", key)
            cells += [fmt.format(mean(name, key)), f"{ratio:.1f}"]
        to_max = sum(r["to_max"] for r in rows if r["variant"] == name)
        cells += [f"{mean(name, 'complete'):.1f} / {mean(name, 'pruned'):.1f}", to_max,
                  f"{mean(name, 'wall'):.0f}", f"{100 * mean(name, 'prune_share'):.0f}"]
        table.append(cells)
    print_table(["variant", "epochs", "epochs % full", "best val acc", "% full",
                 "refit test acc", "% full", "best val_loss", "% full",
                 "complete / pruned per study", "unpruned trials at max_epochs (all seeds)",
                 "s per study", "% of time in prune"], table)


if __name__ == "__main__":
    main()
