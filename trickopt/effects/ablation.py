"""Part B of the trick-effect report: a seeded ablation around the best configuration.

Arms: the best configuration; for each trick that is on in it, the same configuration with
that trick off (dropout 0, norm none, regularizer none, schedule constant, stopper none); and
a "no tricks" baseline with all of them off. Seed i (1..n) sets `train.seed` (initial
weights, batch order, dropout masks) and `data.split_seed` (the train/val split) alike in
every arm, so every comparison is paired by seed; the study's own sampler seed plays no part.
Each training is scored on the test split with the weights of its best epoch (by val loss).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

from trickopt.data import load_data
from trickopt.models import seeded_model
from trickopt.train import evaluate, fit, score_name

BEST, BASELINE = "best", "no tricks"


def _off_dropout(c):
    c.model.dropout = 0.0


def _off_norm(c):
    c.model.norm = "none"


def _off_regularizer(c):
    c.train.l1 = c.train.l2 = 0.0


def _off_schedule(c):
    c.train.schedule, c.train.schedule_params = "constant", {}


def _off_stopper(c):
    c.train.stopper, c.train.stopper_params = "none", {}


# trick -> (is it on in this run config?, switch it off in place)
TRICKS: dict[str, tuple[Callable, Callable]] = {
    "dropout": (lambda c: c.model.dropout > 0, _off_dropout),
    "norm": (lambda c: c.model.norm != "none", _off_norm),
    "regularizer": (lambda c: c.train.l1 > 0 or c.train.l2 > 0, _off_regularizer),
    "schedule": (lambda c: c.train.schedule != "constant", _off_schedule),
    "stopper": (lambda c: c.train.stopper != "none", _off_stopper),
}


def arms(best) -> dict[str, object]:
    """{arm name: run config}: the best, one arm per trick on in it ("no <trick>"), and the
    baseline with every trick off (left out when the best has no trick on)."""
    result = {BEST: best}
    baseline = copy.deepcopy(best)
    for trick, (is_on, switch_off) in TRICKS.items():
        if is_on(best):
            arm = copy.deepcopy(best)
            switch_off(arm)
            result[f"no {trick}"] = arm
            switch_off(baseline)
    if len(result) > 2:  # with one trick on, its arm is the baseline already
        result[BASELINE] = baseline
    return result


@dataclass(frozen=True)
class Outcome:
    """One training of one arm on one seed."""

    arm: str
    seed: int
    test_loss: float
    test_score: float  # accuracy (classification) or rmse (regression)
    best_epoch: int
    epochs: int
    seconds: float
    task: str = "classification"


def train_arm(run_config, arm: str, seed: int) -> Outcome:
    """Train `run_config` with seed `seed` for model, batches, dropout and the data split."""
    config = copy.deepcopy(run_config)
    config.train.seed = seed
    config.data.split_seed = seed
    data = load_data(config.data)
    started = time.perf_counter()
    model = seeded_model(config.model, data.input_shape, data.n_classes, seed=seed)
    history = fit(model, data, config.train)
    test_loss, test_score = evaluate(model, data.x_test, data.y_test, data.task)
    return Outcome(arm, seed, test_loss, test_score, history.best_epoch,
                   history.epochs_trained, time.perf_counter() - started, data.task)


def higher_is_better(outcome: Outcome, task: str) -> float:
    """The score the statistics compare, signed so that higher is better."""
    return outcome.test_score if score_name(task) == "accuracy" else -outcome.test_score
