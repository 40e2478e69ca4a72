"""Prechelt's replay: every early-stopping rule, run offline on curves trained without one.

Why a replay is exact: a stopper changes nothing in training before it fires, and `fit`
restores the weights of the stopper's best epoch. So a run trained with `stopper=none` to its
full budget holds everything any rule would have seen: a rule that stops at epoch T delivers
the model of its best epoch within 1..T, and `train_curve` records that model's test loss.
The real stoppers of `trickopt.tricks.early_stopping` are driven, never re-implemented.

When each criterion looks at the validation loss (k = 5 epochs, Prechelt's strip). Prechelt
(1998) measured the validation error only at strip ends, so for him E_opt and the delivered
network range over strip ends only; trickopt reads the val loss every epoch. Hence:

- "GL2" checks GL every epoch (trickopt live); "GL2/strip" is fed epochs 5, 10, ... only
  (`every=5`): Prechelt's GL exactly.
- "UP2" (strip 5, fed every epoch) stops when Prechelt's UP does (it compares strip ends),
  but delivers the best of every epoch; "UP2/strip" (`every=5`, strip 1: the fed epochs are
  the strip ends) is Prechelt's UP exactly, stop and delivered model alike.
- "PQ0.5" (strip 5, fed every epoch) has Prechelt's P_k (the train losses of all 5 epochs of
  the strip) and checks at strip ends, but its E_opt in GL(t), and its delivered model, range
  over every epoch: its GL(t) is >= his, so it fires no later. An exact strip-end PQ cannot be
  fed: with `every=5` the stopper sees one train loss per strip, and P_1 is always 0.

Depends on torch and trickopt; matplotlib only inside `draw_replay`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trickopt.train import History, evaluate, fit, resolve_device
from trickopt.tricks.early_stopping import create_stopper

STRIP = 5  # Prechelt's strip length k, in epochs
FAMILIES = {"gl": "GL", "pq": "PQ", "up": "UP", "patience": "patience", "none": "none"}
PRECHELT_FINDING = ("Prechelt 1998 (1296 MLP runs, 12 problems, 14 criteria): slower criteria "
                    "gave about 4% better generalization for about 4x the training time.")
WHEN_EVALUATED = (f"trickopt checks GL every epoch and PQ/UP at strip ends of {STRIP} epochs, "
                  "with E_opt and the delivered model over every epoch; Prechelt looked at the "
                  f"val loss only every {STRIP}th epoch, for all criteria: the /strip rules "
                  "replay that exactly, PQ but for E_opt and the delivered model.")


def train_curve(model, data, train_config) -> tuple[History, list[dict]]:
    """`fit` the model, scoring it on the test split after every epoch.

    The test pass cannot perturb training: `evaluate` runs in eval mode under no_grad and
    draws no random numbers, and each epoch's `train_epoch` switches back to train mode. The
    config is used as given: set `stopper="none"` for a curve every rule can be replayed on.

    Returns:
        fit's History, and one dict per epoch with `epoch`, `train_loss`, `val_loss`,
        `test_loss` and `test_score` (accuracy, or rmse for regression: `score_name`).

    Example:
        >>> from trickopt.config import RunConfig
        >>> from trickopt.data import load_data
        >>> from trickopt.models import seeded_model
        >>> cfg = RunConfig(); cfg.train.max_epochs = 2; cfg.train.stopper = "none"
        >>> cfg.train.stopper_params = {}
        >>> splits = load_data(cfg.data)
        >>> model = seeded_model(cfg.model, splits.input_shape, splits.n_classes, seed=0)
        >>> history, curve = train_curve(model, splits, cfg.train)
        >>> len(curve), sorted(curve[0])
        (2, ['epoch', 'test_loss', 'test_score', 'train_loss', 'val_loss'])
    """
    # The test split moves to the training device once, as fit moves train and val.
    device = resolve_device(train_config.device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    tests: list[tuple[float, float]] = []

    def score_on_test(epoch: int, metrics: dict) -> bool:
        tests.append(evaluate(model, x_test, y_test, data.task))
        return False  # never stops the run

    history = fit(model, data, train_config, on_epoch_end=score_on_test)
    curve = [{"epoch": row["epoch"], "train_loss": row["train_loss"],
              "val_loss": row["val_loss"], "test_loss": test_loss, "test_score": test_score}
             for row, (test_loss, test_score) in zip(history.epochs, tests)]
    return history, curve


@dataclass(frozen=True)
class Rule:
    """A stopping rule to replay: a stopper, and how often it looks at the val loss.

    Args:
        name: Shown in tables ("GL2", "GL2/strip", "PQ0.5", "patience 5", "none").
        kind: A `create_stopper` kind.
        params: Its `create_stopper` parameters.
        every: The val loss is looked at on epochs every, 2 * every, ... only (1: each
            epoch, as trickopt; 5: at strip ends, as Prechelt); the stopper counts those.
    """

    name: str
    kind: str
    params: dict = field(default_factory=dict, hash=False)  # a dict cannot be hashed
    every: int = 1

    def __post_init__(self) -> None:
        create_stopper(self.kind, **self.params)  # raises on a bad kind or parameter
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"Rule {self.name!r}: every must be an int >= 1; "
                             f"got {self.every!r}.")

    @property
    def family(self) -> str:
        return FAMILIES[self.kind]


# Prechelt's thresholds: GL alpha (percent), PQ alpha, UP s (successive rising strips).
GL_ALPHAS, PQ_ALPHAS, UP_RISES = (1, 2, 3, 5), (0.5, 0.75, 1, 2, 3), (2, 3, 4, 6, 8)
PRECHELT_RULES: tuple[Rule, ...] = (  # his 14 criteria as he ran them, up to PQ's E_opt
    *(Rule(f"GL{a:g}/strip", "gl", {"alpha": a}, every=STRIP) for a in GL_ALPHAS),
    *(Rule(f"PQ{a:g}", "pq", {"alpha": a, "strip": STRIP}) for a in PQ_ALPHAS),
    *(Rule(f"UP{s}/strip", "up", {"s": s, "strip": 1}, every=STRIP) for s in UP_RISES),
)
TRICKOPT_RULES: tuple[Rule, ...] = (  # the same criteria as trickopt's live stoppers run them
    Rule("none", "none"),
    *(Rule(f"patience {p}", "patience", {"patience": p}) for p in (2, 5, 10)),
    *(Rule(f"GL{a:g}", "gl", {"alpha": a}) for a in GL_ALPHAS),
    *(Rule(f"PQ{a:g}", "pq", {"alpha": a, "strip": STRIP}) for a in PQ_ALPHAS),
    *(Rule(f"UP{s}", "up", {"s": s, "strip": STRIP}) for s in UP_RISES),
)
DEFAULT_RULES: tuple[Rule, ...] = (  # the PQ rules are in both
    *TRICKOPT_RULES, *(rule for rule in PRECHELT_RULES if rule not in TRICKOPT_RULES))


@dataclass(frozen=True)
class Replayed:
    """What one rule would have done on one curve."""

    rule: str
    stop_epoch: int  # the last epoch trained
    fired: bool  # stopped before the budget: a criterion first met on its last epoch saved none
    best_epoch: int  # the epoch whose model it delivers; 0: no finite val loss was looked at
    epochs_used: int  # = stop_epoch
    val_loss: float  # of the delivered model (the last epoch's when best_epoch is 0, as in fit)
    test_loss: float
    test_score: float


def replay(curve: Sequence[dict], rule: Rule) -> Replayed:
    """Drive `rule`'s stopper over a curve from `train_curve` (trained to its full budget).

    Example:
        >>> val = [1.0, 0.8, 0.9, 0.95, 0.85]
        >>> curve = [{"epoch": e, "train_loss": 0.5, "val_loss": v, "test_loss": v + 0.1,
        ...           "test_score": 0.9} for e, v in enumerate(val, start=1)]
        >>> r = replay(curve, Rule("patience 2", "patience", {"patience": 2}))
        >>> r.stop_epoch, r.fired, r.best_epoch, round(r.test_loss, 2)
        (4, True, 2, 0.9)
    """
    budget = len(curve)
    if budget == 0 or [row["epoch"] for row in curve] != list(range(1, budget + 1)):
        raise ValueError(f"replay needs a curve of epochs 1, 2, ...; got {budget} rows.")
    stopper = create_stopper(rule.kind, **rule.params)
    stop_epoch = budget
    for epoch in range(rule.every, budget + 1, rule.every):
        row = curve[epoch - 1]
        if stopper.step(row["val_loss"], row["train_loss"]):
            stop_epoch = epoch
            break
    best_epoch = stopper.best_epoch * rule.every  # its n-th step is epoch n * every
    delivered = curve[(best_epoch or stop_epoch) - 1]
    return Replayed(rule.name, stop_epoch, stop_epoch < budget, best_epoch, stop_epoch,
                    delivered["val_loss"], delivered["test_loss"], delivered["test_score"])


@dataclass(frozen=True)
class ReplayRow:
    """One rule over the seeds; changes are against the fastest rule (fewest mean epochs)."""

    rule: str
    family: str  # GL, PQ, UP, patience or none
    seeds: int
    mean_epochs: float  # epochs used (trained), over the seeds
    mean_test_loss: float  # of the delivered models
    mean_test_score: float
    fired_share: float  # of the seeds where it stopped before the budget
    fired_in_first_strip: int  # seeds where it stopped by epoch 5: early noise, not overfitting
    fastest_rule: str  # the rule with the fewest mean epochs: the reference of the two below
    epochs_ratio: float  # mean_epochs / the fastest rule's, as Prechelt's "4x"
    test_loss_change_pct: float  # 100 * (mean_test_loss / the fastest's - 1); < 0: better


def replay_table(curves: dict[int, list[dict]],
                 rules: Sequence[Rule] = DEFAULT_RULES) -> list[ReplayRow]:
    """Replay each rule on the curve of each seed and average over the seeds.

    The fastest rule is the first in `rules` with the fewest mean epochs; the ratios are of
    the means over seeds.
    """
    if not curves or not rules:
        raise ValueError(f"replay_table needs curves and rules; got {len(curves)} curves "
                         f"and {len(rules)} rules.")
    per_rule = [[replay(curve, rule) for curve in curves.values()] for rule in rules]
    epochs = [statistics.fmean(r.epochs_used for r in runs) for runs in per_rule]
    losses = [statistics.fmean(r.test_loss for r in runs) for runs in per_rule]
    fastest = epochs.index(min(epochs))
    return [ReplayRow(rule.name, rule.family, len(runs), epochs[i], losses[i],
                      statistics.fmean(r.test_score for r in runs),
                      sum(r.fired for r in runs) / len(runs),
                      sum(r.fired and r.stop_epoch <= STRIP for r in runs),
                      rules[fastest].name, epochs[i] / epochs[fastest],
                      _percent_change(losses[i], losses[fastest]))
            for i, (rule, runs) in enumerate(zip(rules, per_rule))]


def _percent_change(value: float, reference: float) -> float:
    if reference == 0:
        return 0.0 if value == 0 else float("nan")
    return 100.0 * (value / reference - 1.0)


def format_replay(rows: Sequence[ReplayRow]) -> str:
    """A plain-text table of `replay_table`'s rows, with Prechelt's finding beside it."""
    fastest = rows[0].fastest_rule if rows else "-"
    lines = [
        f"Early-stopping rules replayed on {rows[0].seeds if rows else 0} seed(s); the fastest "
        f"rule is {fastest}. epochs: mean epochs trained; x fastest, change %: of epochs and "
        "test loss against the fastest rule (change < 0: better);",
        "test loss, score (accuracy or rmse): of the delivered (best-val) model; fired: share "
        f"stopped before the budget; <= {STRIP}: seeds stopped in the first strip (early noise).",
        f"{'rule':<14}{'epochs':>8}{'x fastest':>11}{'test loss':>11}{'change %':>10}"
        f"{'score':>9}{'fired':>8}{f'<= {STRIP}':>7}",
    ]
    lines += [f"{row.rule:<14}{row.mean_epochs:>8.1f}{row.epochs_ratio:>11.2f}"
              f"{row.mean_test_loss:>11.4f}{row.test_loss_change_pct:>+10.1f}"
              f"{row.mean_test_score:>9.4f}{row.fired_share:>8.0%}"
              f"{row.fired_in_first_strip:>7d}" for row in rows]
    lines += [PRECHELT_FINDING, WHEN_EVALUATED]
    return "\n".join(lines)


FAMILY_COLORS = {"GL": "tab:blue", "PQ": "tab:orange", "UP": "tab:green",
                 "patience": "tab:purple", "none": "tab:gray"}


def draw_replay(rows: Sequence[ReplayRow], path: str | Path) -> str | Path:
    """Save a PNG of mean test loss against mean epochs used, one labelled point per rule."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5.5))
    FigureCanvasAgg(figure)  # Agg for this figure only: the global backend stays as it is
    axes = figure.add_subplot()
    for family, color in FAMILY_COLORS.items():
        members = [row for row in rows if row.family == family]
        if members:
            axes.scatter([r.mean_epochs for r in members], [r.mean_test_loss for r in members],
                         color=color, label=family)
    names_at: dict[tuple[float, float], list[str]] = {}  # rules that fall on one point
    for row in rows:
        names_at.setdefault((row.mean_epochs, row.mean_test_loss), []).append(row.rule)
    for point, names in names_at.items():
        axes.annotate("\n".join(names), point, fontsize=7, xytext=(4, -2), va="top",
                      textcoords="offset points")
    axes.set(xlabel="mean epochs used", ylabel="mean test loss of the delivered model",
             title="Early-stopping rules replayed (lower left is better)")
    axes.margins(0.1, 0.2)  # room for the labels, which hang below their points
    axes.legend(title="family")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path
