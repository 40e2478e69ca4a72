"""Part A of the trick-effect report, from the study's trials alone (no training): where the
good trials are. Not effects: a knob the good trials share may do nothing (a stopper that
never fired), and a knob that helps may be spread evenly over good and bad trials.

- Per knob and value: trials, complete, pruned, best and median value; values with fewer than
  2 complete trials are "not tested". A pruned trial counts with the best value it reported
  before it was stopped (marked "pruned" in the counts).
- Importance by PED-ANOVA, with a `target_quantile` that keeps at least 5 trials in the top
  set (Optuna 5's default, 0.1, keeps 2 of a 20-trial study), and fANOVA for comparison.
- Lift per categorical value: P(value | top) / P(value | all).
- Stability: how often each knob ranks in PED-ANOVA's top 3 over bootstrap resamples of the
  trials.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass, field

import numpy as np
import optuna
from optuna.trial import TrialState

MIN_TOP = 5  # trials in the "good" set, whatever the study's size
RESAMPLES = 50  # bootstrap resamples of the trials for the top-3 stability


@dataclass
class ValueRow:
    knob: str
    value: str
    trials: int
    complete: int
    pruned: int
    best: float | None
    median: float | None
    lift: float | None  # categorical values only

    @property
    def tested(self) -> bool:
        return self.complete >= 2


@dataclass
class TrialsView:
    """What the trials say, with the settings that produced it."""

    direction: str
    n_complete: int
    n_pruned: int
    target_quantile: float
    rows: list[ValueRow] = field(default_factory=list)
    ped_anova: dict[str, float] = field(default_factory=dict)
    fanova: dict[str, float] = field(default_factory=dict)
    top3_share: dict[str, float] = field(default_factory=dict)  # bootstrap stability


def scored_trials(study: optuna.Study) -> list[tuple[optuna.trial.FrozenTrial, float, bool]]:
    """(trial, value, pruned) for complete trials and for pruned ones at their best report."""
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    scored = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            scored.append((trial, trial.value, False))
        elif trial.state == TrialState.PRUNED and trial.intermediate_values:
            values = [v for v in trial.intermediate_values.values() if math.isfinite(v)]
            if values:
                scored.append((trial, max(values) if maximize else min(values), True))
    return scored


def trials_view(study: optuna.Study, *, seed: int = 0) -> TrialsView:
    scored = scored_trials(study)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    n = len(scored)
    # PED-ANOVA needs a quantile below 1: at most half the trials, however few there are.
    quantile = min(0.5, max(MIN_TOP / n, 0.1)) if n else 0.1
    view = TrialsView("maximize" if maximize else "minimize",
                      sum(not p for _, _, p in scored), sum(p for _, _, p in scored), quantile)
    if not scored:
        return view
    ranked = sorted(scored, key=lambda s: -s[1] if maximize else s[1])
    top = ranked[:max(1, math.ceil(quantile * n))]
    knobs = sorted({k for t, _, _ in scored for k in t.params}, key=_knob_order(scored))
    for knob in knobs:
        having = [s for s in scored if knob in s[0].params]
        categorical = any(isinstance(t.distributions[knob],
                                     optuna.distributions.CategoricalDistribution)
                          for t, _, _ in having)
        if not categorical:
            continue  # numbers have no "values" to count; their importance is below
        for value in sorted({t.params[knob] for t, _, _ in having}, key=str):
            rows = [s for s in having if s[0].params[knob] == value]
            values = [v for _, v, _ in rows]
            share_all = len(rows) / n
            share_top = sum(1 for t, _, _ in top if t.params.get(knob) == value) / len(top)
            view.rows.append(ValueRow(
                knob, str(value), len(rows), sum(not p for _, _, p in rows),
                sum(p for _, _, p in rows), (max(values) if maximize else min(values)),
                statistics.median(values), share_top / share_all if share_all else None))
    proxy = _as_complete(study, scored)
    view.ped_anova = _importance(proxy, optuna.importance.PedAnovaImportanceEvaluator(
        target_quantile=quantile))
    view.fanova = _importance(proxy, optuna.importance.FanovaImportanceEvaluator(seed=seed))
    view.top3_share = _stability(study, scored, quantile, seed)
    return view


def _knob_order(scored):
    first_seen = {}
    for trial, _, _ in scored:
        for knob in trial.params:
            first_seen.setdefault(knob, len(first_seen))
    return lambda knob: first_seen[knob]


def _as_complete(study: optuna.Study, scored) -> optuna.Study:
    """An in-memory study holding every scored trial as COMPLETE with its value, so Optuna's
    evaluators see the pruned trials too (at their best reported value)."""
    proxy = optuna.create_study(direction=study.direction)
    proxy.add_trials([optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                value=v) for t, v, _ in scored])
    return proxy


def _importance(study: optuna.Study, evaluator) -> dict[str, float]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}  # too few trials, or every trial shares its parameters


def _stability(study: optuna.Study, scored, quantile: float, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    done = 0
    for _ in range(RESAMPLES):
        sample = [scored[i] for i in rng.integers(0, len(scored), size=len(scored))]
        ranking = _importance(_as_complete(study, sample),
                              optuna.importance.PedAnovaImportanceEvaluator(
                                  target_quantile=quantile))
        if not ranking:
            continue
        done += 1
        for knob in list(ranking)[:3]:
            counts[knob] = counts.get(knob, 0) + 1
    return {k: c / done for k, c in sorted(counts.items(), key=lambda kv: -kv[1])} if done \
        else {}
