"""Budget: how many epochs do the two levels of early stopping save, and what do they cost?

The default study (a CNN on digits, every trick searched, max 30 epochs, val_loss as the
metric, TPE, refit on train+val) is run with the same number of trials and the same sampler
seeds under these variants:

* ``full``: every trial trained to max_epochs: the stopper fixed to "none" (no level 1) and
  ``study.pruner: none`` (no level 2). The reference for epochs and accuracy.
* ``stopper only``: the default stopper search (patience / gl / pq / up as in ALL_TRICKS), no
  pruner.
* ``pruner: P``: the stopper fixed to "none", Optuna's pruner P with trickopt's defaults
  (PRUNER_DEFAULTS; hyperband gets max_resource = max_epochs), for P in median, percentile,
  successive_halving, hyperband, wilcoxon.
* ``both: P``: the default stopper search plus pruner P.

Per study it records the best trial's val_loss (the study value) and its val_accuracy at its
best epoch (trials do not store it, so the best trial is replayed: training is deterministic
for a seed on the CPU, and the replay is checked against the stored value and best epoch), the
test accuracy after the train+val refit (``StudyResult.refit``), the best trial's own model's
test accuracy (``StudyResult.best_trial_test``), and the epochs trained by all trials
(``StudyResult.epochs_trained``; the refit and the replays are not counted).

Goal (issue "Benchmarks", item 4): both levels together reach >= 99 % of the full-training best
with <= 35 % of its epochs. Judged on accuracy: the best trial's val accuracy and the refit
test accuracy, each as the mean over seeds relative to full's mean, and the epoch fraction
(mean epochs / full's mean epochs).

Everything counted is epochs and scores, not seconds: the machine may be busy. One process,
one torch thread.

Run:
    python benchmarks/budget.py               # 3 seeds x 12 variants x 40 trials: ~10-15 min
                                              # on 2 cores; writes benchmarks/results/budget.md
    python benchmarks/budget.py --trials 30 --seeds 0 1 2 --epochs 30
    python benchmarks/budget.py --pruners median hyperband
    python benchmarks/budget.py --quick       # 1 seed, 4 trials, 4 epochs, full / stopper /
                                              # median / both-median: checks that it runs
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import io
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import FixedTrial, TrialState

import trickopt.study.runner as runner_module
from trickopt.data import load_data
from trickopt.models import build_model
from trickopt.study.config import PRUNER_DEFAULTS, PRUNERS, load_study_config
from trickopt.study.objective import decided_params
from trickopt.study.runner import run_study
from trickopt.study.space import ALL_TRICKS
from trickopt.train import fit

GOAL_ACCURACY = 0.99  # of full's
GOAL_EPOCHS = 0.35  # of full's
OPTUNA_PRUNERS = tuple(p for p in PRUNERS if p != "none")
RESULTS = Path(__file__).resolve().parent / "results" / "budget.md"
# TPE's first trials are random and, for one seed, the same in every variant.
TPE_STARTUP = inspect.signature(optuna.samplers.TPESampler).parameters["n_startup_trials"].default


@dataclass(frozen=True)
class Variant:
    name: str
    stopper: bool  # the default stopper search (level 1), or the stopper fixed to "none"
    pruner: str  # an Optuna pruner (level 2), or "none"

    @property
    def kind(self) -> str:
        if self.pruner == "none":
            return "stopper" if self.stopper else "full"
        return "both" if self.stopper else "pruner"


def make_variants(pruners: list[str]) -> list[Variant]:
    return ([Variant("full", False, "none"), Variant("stopper only", True, "none")]
            + [Variant(f"pruner: {p}", False, p) for p in pruners]
            + [Variant(f"both: {p}", True, p) for p in pruners])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=40, help="trials per study (40)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="sampler seeds (0 1 2)")
    parser.add_argument("--epochs", type=int, default=30, help="train.max_epochs (30)")
    parser.add_argument("--pruners", nargs="+", choices=OPTUNA_PRUNERS,
                        default=list(OPTUNA_PRUNERS), help="pruners to compare (all)")
    parser.add_argument("--device", default="cpu",
                        help="train.device (cpu: trials are deterministic, replays exact)")
    parser.add_argument("--output", type=Path, default=None,
                        help="markdown report (default benchmarks/results/budget.md; "
                             "none with --quick)")
    parser.add_argument("--no-output", action="store_true", help="print only")
    parser.add_argument("--raw", type=Path, default=None,
                        help="also dump every study's numbers as JSON here")
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, 4 trials, 4 epochs, only full / stopper only / median / "
                             "both: median (checks that it runs; < 60 s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.seeds, args.epochs, args.pruners = 4, [0], 4, ["median"]
    if args.trials < 1 or args.epochs < 1 or not args.seeds:
        parser.error("--trials and --epochs must be >= 1 and --seeds non-empty")
    if args.output is None and not args.quick and not args.no_output:
        args.output = RESULTS
    if args.no_output:
        args.output = None
    return args


# ---------------------------------------------------------------------------------------------
# One study.


def study_overrides(variant: Variant, seed: int, args: argparse.Namespace,
                    folder: str) -> list[str]:
    overrides = [f"study.name=budget-{variant.kind}-{variant.pruner}-seed{seed}",
                 f"study.storage=journal:{folder}/study.journal",
                 f"study.seed={seed}", f"study.n_trials={args.trials}",
                 f"study.pruner={variant.pruner}", f"train.max_epochs={args.epochs}",
                 f"train.device={args.device}", "train.threads=1",
                 "tracking.enabled=false", "refit=train_val"]
    if not variant.stopper:
        # The whole search section, not `search.stopper=none`: without a study file that one
        # override would *replace* the default search (every other knob would stop being
        # searched). JSON is YAML, so the override parser reads it as a mapping.
        overrides.append("search=" + json.dumps({**ALL_TRICKS, "stopper": "none"}))
    return overrides


def replay_best(config, data, best: optuna.trial.FrozenTrial) -> dict:
    """The best trial retrained exactly as its trial ran: its best epoch's metrics."""
    _, run_config = decided_params(FixedTrial(best.params), config)
    torch.manual_seed(run_config.train.seed)
    model = build_model(run_config.model, data.input_shape, data.n_classes)
    history = fit(model, data, run_config.train)
    return {"val_accuracy": history.best["val_accuracy"], "val_loss": history.best["val_loss"],
            "best_epoch": history.best_epoch}


class PrunerTimer:
    """Seconds spent in the pruner's `prune` (the one place a pruner costs time, not epochs).

    The runner builds the pruner itself, so its `create_pruner` is wrapped for the duration of
    one study. If the runner stops using that name, nothing is timed (seconds stay None)."""

    def __init__(self) -> None:
        self.seconds: float | None = None
        self._original = getattr(runner_module, "create_pruner", None)

    def __enter__(self) -> PrunerTimer:
        if self._original is not None:
            runner_module.create_pruner = self._create
        return self

    def __exit__(self, *exc) -> None:
        if self._original is not None:
            runner_module.create_pruner = self._original

    def _create(self, *args, **kwargs):
        pruner = self._original(*args, **kwargs)
        prune, self.seconds = pruner.prune, 0.0

        def timed(study, trial):
            started = time.perf_counter()
            try:
                return prune(study, trial)
            finally:
                self.seconds += time.perf_counter() - started

        pruner.prune = timed  # the instance is unchanged: isinstance checks still hold
        return pruner


def warning_key(item: warnings.WarningMessage) -> str:
    text = str(item.message).splitlines()[0] if str(item.message) else ""
    text = re.sub(r"\d+", "N", text)[:110]
    return f"{item.category.__name__}: {text}"


def run_one(variant: Variant, seed: int, args: argparse.Namespace, data) -> dict:
    with tempfile.TemporaryDirectory(prefix="trickopt-budget-") as folder:
        config = load_study_config(None, study_overrides(variant, seed, args, folder))
        stopper_spec = config.search.get("stopper")
        assert (stopper_spec == "none") != variant.stopper, stopper_spec
        assert len(config.search) == len(ALL_TRICKS), sorted(config.search)
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught, PrunerTimer() as timer:
            warnings.simplefilter("always")
            result = run_study(config, progress=False, out=io.StringIO())
        wall = time.perf_counter() - started
        study = result.study
        trials = study.get_trials(deepcopy=False)
        pruned_at = [t.user_attrs.get("epochs_trained") for t in trials
                     if t.state == TrialState.PRUNED]
        row = {"variant": variant.name, "kind": variant.kind, "pruner": variant.pruner,
               "seed": seed, "n_val": len(data.y_val), "n_test": len(data.y_test),
               "trials": args.trials, "max_epochs": args.epochs,
               "states": dict(result.states), "epochs_trained": result.epochs_trained,
               "epochs_budget": result.epochs_budget,
               "saved_by_stopping": result.epochs_saved_by_stopping,
               "saved_by_pruning": result.epochs_saved_by_pruning,
               "pruned_at": pruned_at, "wall_s": wall, "pruner_s": timer.seconds,
               "stop_reasons": dict(Counter(t.user_attrs.get("stop_reason", "?")
                                            for t in trials)),
               "warnings": dict(Counter(warning_key(w) for w in caught))}
        if not result.states.get("COMPLETE"):
            return {**row, "best_val_loss": None}
        best = study.best_trial
        replay = replay_best(config, data, best)
        row.update(best_trial=best.number, best_val_loss=best.value,
                   best_epoch=best.user_attrs.get("best_epoch"),
                   best_val_accuracy=replay["val_accuracy"],
                   replay_exact=(replay["val_loss"] == best.value
                                 and replay["best_epoch"] == best.user_attrs.get("best_epoch")),
                   best_trial_test_accuracy=result.best_trial_test["test_accuracy"],
                   refit_test_accuracy=result.refit["test_accuracy"],
                   refit_epochs=result.refit["epochs"])
        return row


# ---------------------------------------------------------------------------------------------
# Summary.


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def summarize(rows: list[dict], variants: list[Variant]) -> list[dict]:
    full = {r["seed"]: r for r in rows if r["kind"] == "full"}
    full_val = mean([r["best_val_accuracy"] for r in full.values()])
    full_refit = mean([r["refit_test_accuracy"] for r in full.values()])
    full_epochs = mean([r["epochs_trained"] for r in full.values()])
    full_loss = mean([r["best_val_loss"] for r in full.values()])
    out = []
    for variant in variants:
        mine = [r for r in rows if r["variant"] == variant.name
                and r.get("best_val_loss") is not None]
        if not mine:
            continue
        val = [r["best_val_accuracy"] for r in mine]
        refit = [r["refit_test_accuracy"] for r in mine]
        epochs = mean([r["epochs_trained"] for r in mine])
        val_ratio = [r["best_val_accuracy"] / full[r["seed"]]["best_val_accuracy"]
                     for r in mine if r["seed"] in full]
        refit_ratio = [r["refit_test_accuracy"] / full[r["seed"]]["refit_test_accuracy"]
                       for r in mine if r["seed"] in full]
        s = {"variant": variant.name, "kind": variant.kind, "pruner": variant.pruner,
             "seeds": len(mine),
             "val_loss": mean([r["best_val_loss"] for r in mine]),
             "val_loss_frac": mean([r["best_val_loss"] for r in mine]) / full_loss,
             "val_accuracy": mean(val), "val_range": (min(val), max(val)),
             "refit_accuracy": mean(refit), "refit_range": (min(refit), max(refit)),
             "best_trial_test": mean([r["best_trial_test_accuracy"] for r in mine]),
             "epochs": epochs, "epochs_frac": epochs / full_epochs,
             "val_frac": mean(val) / full_val, "val_frac_range": _range(val_ratio),
             "refit_frac": mean(refit) / full_refit, "refit_frac_range": _range(refit_ratio),
             "complete": mean([r["states"].get("COMPLETE", 0) for r in mine]),
             "complete_range": _range([r["states"].get("COMPLETE", 0) for r in mine]),
             "pruned": mean([r["states"].get("PRUNED", 0) for r in mine]),
             "best_in_startup": sum(r["best_trial"] < TPE_STARTUP for r in mine),
             "pruner_share": (sum(r["pruner_s"] or 0 for r in mine)
                              / sum(r["wall_s"] for r in mine)),
             "failed": mean([r["states"].get("FAIL", 0) for r in mine]),
             "pruned_epoch": mean([e for r in mine for e in r["pruned_at"]]),
             "replays_exact": all(r["replay_exact"] for r in mine)}
        s["misses"] = goal_misses(s)
        out.append(s)
    return out


def _range(values: list[float]) -> tuple[float, float]:
    return (min(values), max(values)) if values else (float("nan"), float("nan"))


def goal_misses(s: dict) -> list[str]:
    misses = []
    if s["epochs_frac"] > GOAL_EPOCHS:
        misses.append(f"epochs {s['epochs_frac']:.0%} > {GOAL_EPOCHS:.0%}")
    if s["val_frac"] < GOAL_ACCURACY:
        misses.append(f"val acc {s['val_frac']:.1%} < {GOAL_ACCURACY:.0%}")
    if s["refit_frac"] < GOAL_ACCURACY:
        misses.append(f"refit acc {s['refit_frac']:.1%} < {GOAL_ACCURACY:.0%}")
    return misses


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def summary_table(summary: list[dict]) -> str:
    lines = ["| variant | best val_loss (% full) | best val acc (min–max) "
             "| refit test acc (min–max) | best-trial test acc | epochs (mean) | epochs % full "
             "| val acc % full (min–max) | refit acc % full (min–max) "
             "| complete / pruned per study | goal |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for s in summary:
        goal = "yes" if not s["misses"] else "no: " + "; ".join(s["misses"])
        if s["kind"] == "full":
            goal = "(reference)"
        lines.append(
            f"| {s['variant']} | {s['val_loss']:.4f} ({pct(s['val_loss_frac'])}) "
            f"| {s['val_accuracy']:.4f} ({s['val_range'][0]:.4f}–{s['val_range'][1]:.4f}) "
            f"| {s['refit_accuracy']:.4f} ({s['refit_range'][0]:.4f}–"
            f"{s['refit_range'][1]:.4f}) "
            f"| {s['best_trial_test']:.4f} | {s['epochs']:.0f} | {pct(s['epochs_frac'])} "
            f"| {pct(s['val_frac'])} ({pct(s['val_frac_range'][0])}–"
            f"{pct(s['val_frac_range'][1])}) "
            f"| {pct(s['refit_frac'])} ({pct(s['refit_frac_range'][0])}–"
            f"{pct(s['refit_frac_range'][1])}) "
            f"| {s['complete']:.1f} / {s['pruned']:.1f} | {goal} |")
    return "\n".join(lines)


def detail_table(rows: list[dict]) -> str:
    lines = ["| variant | seed | best trial | val_loss | val acc | best epoch | refit test acc "
             "| best-trial test acc | epochs | complete / pruned / fail | pruned at epoch (mean) "
             "| study s | in pruner s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: "
             "| ---: |"]
    for r in rows:
        st = r["states"]
        states = f"{st.get('COMPLETE', 0)} / {st.get('PRUNED', 0)} / {st.get('FAIL', 0)}"
        pruned = f"{mean(r['pruned_at']):.1f}" if r["pruned_at"] else "–"
        timing = f"{r['wall_s']:.0f} | " + (f"{r['pruner_s']:.1f}" if r["pruner_s"] is not None
                                             else "–")
        if r.get("best_val_loss") is None:
            lines.append(f"| {r['variant']} | {r['seed']} | – | – | – | – | – | – "
                         f"| {r['epochs_trained']} | {states} | {pruned} | {timing} |")
            continue
        lines.append(f"| {r['variant']} | {r['seed']} | {r['best_trial']} "
                     f"| {r['best_val_loss']:.4f} | {r['best_val_accuracy']:.4f} "
                     f"| {r['best_epoch']} | {r['refit_test_accuracy']:.4f} "
                     f"| {r['best_trial_test_accuracy']:.4f} | {r['epochs_trained']} | {states} "
                     f"| {pruned} | {timing} |")
    return "\n".join(lines)


def goal_lines(summary: list[dict]) -> list[str]:
    both = [s for s in summary if s["kind"] == "both"]
    meeting = [s["variant"] for s in both if not s["misses"]]
    lines = [f"Goal (both levels, >= {GOAL_ACCURACY:.0%} of full's val accuracy and refit test "
             f"accuracy with <= {GOAL_EPOCHS:.0%} of its epochs): "
             + (f"met by {', '.join(meeting)}." if meeting else "met by no 'both' variant.")]
    others = [s["variant"] for s in summary if s["kind"] in ("stopper", "pruner")
              and not s["misses"]]
    if others:
        lines.append(f"Also within the goal with one level only: {', '.join(others)}.")
    on_loss = [s["variant"] for s in summary if s["kind"] != "full"
               and s["val_loss_frac"] <= 1 / GOAL_ACCURACY and s["epochs_frac"] <= GOAL_EPOCHS]
    lines.append("Read on the study's own metric instead (best val_loss within 1 % of full's, "
                 f"<= {GOAL_EPOCHS:.0%} of its epochs): "
                 + (f"met by {', '.join(on_loss)}." if on_loss else "met by no variant."))
    return lines


def recommend(summary: list[dict]) -> str:
    """The default pruner: of the 'both' variants at >= 99 % accuracy on both counts, the one
    with the fewest epochs; if none is, the most accurate (mean of the two ratios)."""
    both = [s for s in summary if s["kind"] == "both"]
    if not both:
        return "No 'both' variant ran: no recommendation."
    accurate = [s for s in both if min(s["val_frac"], s["refit_frac"]) >= GOAL_ACCURACY]
    if accurate:
        pick = min(accurate, key=lambda s: s["epochs"])
        why = (f"of the pruners that keep both the best trial's val accuracy and the refit test "
               f"accuracy at >= {GOAL_ACCURACY:.0%} of full training ("
               + ", ".join(s["pruner"] for s in accurate)
               + f"), it trains the fewest epochs: {pct(pick['epochs_frac'])} % of full's, "
               f"at {pct(pick['val_frac'])} % (val) and {pct(pick['refit_frac'])} % (refit "
               f"test) of full's accuracy")
    else:
        pick = max(both, key=lambda s: s["val_frac"] + s["refit_frac"])
        why = (f"no pruner keeps both accuracies at >= {GOAL_ACCURACY:.0%} of full's; it comes "
               f"closest ({pct(pick['val_frac'])} % val, {pct(pick['refit_frac'])} % refit test) "
               f"with {pct(pick['epochs_frac'])} % of full's epochs")
    text = (f"Rule: among the 'both' variants at >= {GOAL_ACCURACY:.0%} of full's accuracy, the "
            f"fewest epochs. By it the default pruner should be **{pick['pruner']}**: {why}.")
    median = next((s for s in both if s["pruner"] == "median"), None)
    if median is not None and median is not pick:
        text += (f" The price is complete trials: {pick['pruner']} leaves "
                 f"{pick['complete']:.1f} complete trials per study "
                 f"({pick['complete_range'][0]:.0f}–{pick['complete_range'][1]:.0f}) against "
                 f"{median['complete']:.1f} for the current default, median (which "
                 + ("also meets the goal" if not median["misses"] else
                    "misses the goal: " + "; ".join(median["misses"]))
                 + f", at {pct(median['epochs_frac'])} % of the epochs), and trickopt's "
                 "parameter importances are computed from complete trials only.")
    return text


def machine_facts() -> list[str]:
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], capture_output=True, text=True, timeout=10,
                                  cwd=Path(__file__).resolve().parent).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"
    dirty = git("status", "--porcelain", "--", "trickopt")
    return [f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; torch threads: 1; "
            f"one process",
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"optuna {optuna.__version__}, {platform.platform()}",
            f"trickopt at git {git('rev-parse', '--short', 'HEAD')}"
            + (" (trickopt/ had uncommitted changes)" if dirty else ""),
            f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def automatic_notes(summary: list[dict], rows: list[dict]) -> list[str]:
    notes = []
    by_name = {s["variant"]: s for s in summary}
    n_val = rows[0]["n_val"]
    stopper = by_name.get("stopper only")
    if stopper:
        reasons = Counter()
        for r in rows:
            if r["variant"] == stopper["variant"]:
                reasons.update(r["stop_reasons"])
        early = sum(n for reason, n in reasons.items() if reason != "max_epochs")
        notes.append(f"Level 1 alone (stopper only) trains {pct(stopper['epochs_frac'])} % of "
                     f"full's epochs at {pct(stopper['val_frac'])} % (val) / "
                     f"{pct(stopper['refit_frac'])} % (refit test) of its accuracy; "
                     f"{early} of {sum(reasons.values())} trials ended before max_epochs "
                     f"(stop reasons: {', '.join(f'{k} {v}' for k, v in reasons.most_common())})"
                     + (". Level 1 alone is far from the epoch goal."
                        if stopper["epochs_frac"] > GOAL_EPOCHS else "."))
    accs = [s["val_accuracy"] for s in summary]
    if "full" in by_name:
        margin = (1 - GOAL_ACCURACY) * by_name["full"]["val_accuracy"] * n_val
        span = (max(accs) - min(accs)) * n_val
        notes.append(f"The variants' mean best val accuracies span {min(accs):.4f}–"
                     f"{max(accs):.4f}, i.e. {span:.1f} of {n_val} validation examples, while "
                     f"99 % of full's is {margin:.1f} examples below it"
                     + (": accuracy is nearly saturated on this task, the accuracy goal is easy "
                        "to meet and the epoch fraction decides" if span < margin else "")
                     + f". Over {by_name['full']['seeds']} seed(s), a difference of one or two "
                     "examples is noise.")
    worse = [s for s in summary if s["kind"] in ("pruner", "both")]
    if "full" in by_name and worse:
        notes.append("The study's own metric, val_loss, is a stricter reading: the best val_loss "
                     "as % of full's is " + ", ".join(f"{s['variant']} {pct(s['val_loss_frac'])}"
                                                        for s in worse)
                     + " (above 100 is worse). Accuracy and val_loss disagree at this scale: a "
                     "lower loss is not always more correct examples.")
    pruned_variants = [s for s in summary if s["kind"] in ("pruner", "both")]
    if pruned_variants:
        startup = sum(s["best_in_startup"] for s in pruned_variants)
        total = sum(s["seeds"] for s in pruned_variants)
        full_startup = by_name["full"]["best_in_startup"] if "full" in by_name else 0
        notes.append(f"In {startup} of {total} studies with a pruner the best trial is one of "
                     f"TPE's first {TPE_STARTUP} (random) trials, which are the same for every "
                     f"variant of a seed (full: {full_startup} of {by_name['full']['seeds']})"
                     + (". With most trials pruned, TPE's model-guided trials seldom beat the "
                        "random start: the pruned studies' best is largely the startup's."
                        if startup > total / 2 and mean([s["pruned"] for s in pruned_variants])
                        > rows[0]["trials"] / 2 else "."))
    pairs = [(by_name.get(f"pruner: {p}"), by_name.get(f"both: {p}"))
             for p in OPTUNA_PRUNERS]
    pairs = [(a, b) for a, b in pairs if a and b]
    if pairs:
        notes.append("Level 1 on top of level 2 (pruner only -> both): epochs % of full "
                     + ", ".join(f"{b['pruner']} {pct(a['epochs_frac'])} -> "
                                 f"{pct(b['epochs_frac'])}" for a, b in pairs)
                     + "; best val_loss "
                     + ", ".join(f"{b['pruner']} {a['val_loss']:.4f} -> {b['val_loss']:.4f}"
                                 for a, b in pairs) + "."
                     + (" Here the stopper never improved a pruner's best val_loss: it saves "
                        "a few more epochs and costs val_loss (not accuracy)."
                        if all(b["val_loss"] >= a["val_loss"] for a, b in pairs) else ""))
    missed = [s for s in summary if s["kind"] != "full" and s["epochs_frac"] > GOAL_EPOCHS]
    if missed:
        parts = []
        for s in missed:
            mine = [r for r in rows if r["variant"] == s["variant"]]
            trained = sum(r["epochs_trained"] for r in mine)
            in_complete = trained - sum(sum(r["pruned_at"]) for r in mine)
            parts.append(f"{s['variant']} {pct(s['epochs_frac'])} % of full's epochs, "
                         f"{in_complete / trained:.0%} of them in {s['complete']:.1f} complete "
                         f"trials per study ({in_complete / max(1, s['complete'] * s['seeds']):.1f}"
                         " epochs each)")
        notes.append("What keeps a variant above the epoch goal is the trials that are never "
                     "pruned: " + "; ".join(parts) + ". Without level 1 each of them runs all "
                     "max_epochs, so complete trials / trials is already a floor on the epoch "
                     "fraction; with level 1, the floor is what the lenient searched stoppers "
                     "leave.")
    where = []
    for s in summary:
        if s["kind"] in ("pruner", "both"):
            counts = Counter(e for r in rows if r["variant"] == s["variant"]
                             for e in r["pruned_at"])
            if not counts:
                notes.append(f"{s['variant']}: pruned no trial in any seed.")
                continue
            top = ", ".join(f"{e} ({n})" for e, n in counts.most_common(4))
            where.append(f"{s['variant']}: {top}")
    if where:
        notes.append("Epochs at which trials were pruned, most frequent first (count, all "
                     "seeds): " + "; ".join(where) + ". Median and percentile prune from epoch 3 "
                     "(n_warmup_steps), successive halving and hyperband at their rungs, "
                     "wilcoxon from epoch 4 (with p_threshold 0.1 a one-sided signed-rank test "
                     "needs 4 paired epochs: 3 give p >= 1/8).")
    low = [s for s in summary if s["kind"] in ("pruner", "both")
           and s["complete"] < 0.25 * rows[0]["trials"]]
    if low:
        notes.append("Complete trials per study (mean, min–max): "
                     + ", ".join(f"{s['variant']} {s['complete']:.1f} "
                                 f"({s['complete_range'][0]:.0f}–{s['complete_range'][1]:.0f})"
                                 for s in low)
                     + ". trickopt's parameter importances (fANOVA) use complete trials only.")
    slow = [s for s in summary if s["pruner_share"] > 0.2]
    if slow:
        notes.append("Time in the pruner, as a share of the studies' wall time: "
                     + ", ".join(f"{s['variant']} {s['pruner_share']:.0%}" for s in slow)
                     + ". Optuna's WilcoxonPruner calls scipy.stats.wilcoxon (method auto), "
                     "which runs an exhaustive permutation test (2^n resamples) when the paired "
                     "differences hold ties or zeros and n <= 13; best-so-far reports produce "
                     "ties whenever neither trial improves, so up to epoch 13 one prune call can "
                     "take over a second. Epochs are not affected, wall time is.")
    steps_warning = sum(count for r in rows for key, count in r["warnings"].items()
                        if "does not exist in the best trial" in key)
    if steps_warning:
        notes.append(f"WilcoxonPruner warned {steps_warning} times that the current trial has "
                     "epochs the best trial lacks: with level 1 on, the best trial often "
                     "stopped earlier than the trial being judged, and the epochs past its end "
                     "are ignored by the test.")
    non_finite = {s["variant"]: sum(r["stop_reasons"].get("non_finite_loss", 0) for r in rows
                                    if r["variant"] == s["variant"]) for s in summary}
    non_finite = {k: v for k, v in non_finite.items() if v}
    if non_finite:
        notes.append("Trials ended by a non-finite loss (all seeds): "
                     + ", ".join(f"{k} {v}" for k, v in non_finite.items())
                     + ". That is why full can train fewer than trials x max_epochs epochs: "
                     "stopper \"none\" still stops on NaN / inf.")
    failed = [s["variant"] for s in summary if s["failed"]]
    if failed:
        notes.append(f"Failed trials (no finite val_loss) occurred in: {', '.join(failed)}; "
                     "StudyResult.epochs_trained does not count their epochs.")
    if all(s["replays_exact"] for s in summary):
        notes.append("Every best trial's replay reproduced its stored val_loss and best epoch "
                     "exactly, so the val accuracies are those of the trials themselves.")
    else:
        bad = [f"{r['variant']} seed {r['seed']}" for r in rows
               if r.get("best_val_loss") is not None and not r["replay_exact"]]
        notes.append("The replay of the best trial did not reproduce its stored val_loss / "
                     f"best epoch exactly for: {', '.join(bad)} (its val accuracy is then the "
                     "replay's).")
    return [n for n in notes if n]


def warnings_table(rows: list[dict]) -> str:
    total: dict[str, Counter] = {}
    for r in rows:
        total.setdefault(r["variant"], Counter()).update(r["warnings"])
    lines = ["| variant | warning (digits as N) | count, all seeds |", "| --- | --- | ---: |"]
    for variant, counter in total.items():
        for key, count in counter.most_common():
            lines.append(f"| {variant} | {key.replace('|', '/')} | {count} |")
    return "\n".join(lines) if len(lines) > 2 else "(none)"


def markdown(args, argv, rows, summary, wall: float, load: tuple) -> str:
    command = "python benchmarks/budget.py" + (" " + shlex.join(argv) if argv else "")
    defaults = {p: dict(PRUNER_DEFAULTS.get(p, {})) for p in args.pruners}
    if "hyperband" in defaults:
        defaults["hyperband"].setdefault("max_resource", args.epochs)
    defaults_text = "; ".join(f"{p}: {d or 'Optuna defaults'}" for p, d in defaults.items())
    parts = [
        "# Budget: epochs saved by the stopper (level 1) and the pruner (level 2)", "",
        "Question (issue \"Benchmarks\", item 4): with the same trials and seeds, how many "
        "epochs do trickopt's two levels of early stopping save against training every trial "
        "to max_epochs, and how much of the best result do they keep? Goal: both levels "
        f"together reach >= {GOAL_ACCURACY:.0%} of the full-training best with <= "
        f"{GOAL_EPOCHS:.0%} of its epochs.", "",
        f"Command (from the repository root): `{command}`", "",
        "Machine: " + "; ".join(machine_facts()) + f". Load average at start / end: "
        f"{load[0]:.2f} / {load[1]:.2f} (shared machine; only epochs and scores are compared, "
        f"never seconds). Wall time: {wall / 60:.1f} min.", "",
        f"Study: the default (CNN on digits, all tricks, val_loss, TPE, refit train_val), "
        f"{args.trials} trials, max_epochs {args.epochs}, sampler seeds "
        f"{', '.join(map(str, args.seeds))} (training seed fixed at 0). Pruner settings: "
        f"{defaults_text} (anything not named: Optuna's defaults).", "",
        "Columns: means over seeds. *val acc* is the best trial's val accuracy at its best "
        "epoch; *refit test acc* the test accuracy after retraining the best configuration on "
        "train+val for its best epoch count; *best-trial test acc* the best trial's own model "
        "on test; *epochs* all trials' epochs (refit excluded); *% full* is the mean over "
        "seeds against full's mean, with the min–max of the per-seed ratios (same seed) in "
        f"brackets. One validation example is 1/{rows[0]['n_val']} = "
        f"{100 / rows[0]['n_val']:.2f} % of accuracy, one test example 1/{rows[0]['n_test']}.",
        "",
        summary_table(summary), "",
        *[f"{line}" for line in goal_lines(summary)], "",
        "## Recommendation", "",
        recommend(summary), "",
        "## Notes", "",
        *[f"* {note}" for note in automatic_notes(summary, rows)], "",
        "## Every study", "",
        detail_table(rows), "",
        "## Warnings raised during the studies", "",
        warnings_table(rows), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(1)
    variants = make_variants(args.pruners)
    data = load_data(load_study_config(None, []).data)
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    rows = []
    for seed in args.seeds:
        for variant in variants:
            row = run_one(variant, seed, args, data)
            rows.append(row)
            print(f"[{time.perf_counter() - started:7.0f} s] seed {seed} {variant.name:28s} "
                  f"epochs {row['epochs_trained']:5d}  states {row['states']}  "
                  f"val_loss {row.get('best_val_loss') or float('nan'):.4f}  "
                  f"val_acc {row.get('best_val_accuracy') or float('nan'):.4f}  "
                  f"refit {row.get('refit_test_accuracy') or float('nan'):.4f}  "
                  f"({row['wall_s']:.0f} s)", file=sys.stderr, flush=True)
            if args.raw:
                args.raw.write_text(json.dumps(rows, indent=1))
    wall = time.perf_counter() - started
    summary = summarize(rows, variants)
    print(summary_table(summary))
    print()
    print("\n".join(goal_lines(summary)))
    print(recommend(summary))
    print(f"\nwall time {wall / 60:.1f} min")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(markdown(args, argv, rows, summary, wall,
                                        (load_start, os.getloadavg()[0])))
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
