"""Paired-seed statistics of a trick's effect, and the verdict rule fixed in advance.

Every arm (a configuration with one trick switched off, say) is trained on the same seeds as
the best configuration; seed i fixes the model's initial weights, the batch order, the dropout
masks and the data split in both. So the effect of the trick is read from the per-seed
differences d_i = score(best, i) - score(arm, i), signed so that d > 0 means the best
configuration (the trick on) is better. Pairing removes the seed noise the two arms share,
which on small tasks is as large as the effects (Bouthillier et al. 2021).

- `paired_bootstrap`: the mean difference with a percentile bootstrap CI (resampling seeds,
  which resamples the pairs together), scipy.stats.bootstrap.
- `win_rate`: P(best > arm) over seeds (a tie counts one half), the probability of
  improvement of Agarwal et al. 2021 ("rliable") for paired runs.
- `wilcoxon_p` and `holm`: a signed-rank test per arm, Holm-corrected across arms.
- `iqm`: the interquartile mean of the differences, robust to one wild seed (rliable).
- `verdict`: helps / hurts / negligible / inconclusive (with the seeds it would take).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 10_000
WIN_RATE = 0.75  # "helps" needs the best to win on at least 3 seeds of 4


@dataclass(frozen=True)
class Effect:
    """What the seeds say about one arm against the best configuration."""

    seeds: int
    mean: float  # mean of d = best - arm, signed so that > 0 means the trick helps
    low: float  # the CONFIDENCE bootstrap interval of the mean
    high: float
    win_rate: float  # P(best better than arm) over seeds
    p_value: float  # Wilcoxon signed-rank, two-sided, before Holm
    iqm: float | None  # interquartile mean of d, from 8 seeds on
    sd: float  # of the differences


def paired_bootstrap(differences, *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                     seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the paired differences and its percentile bootstrap
    interval. All differences equal give a zero-width interval."""
    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        raise ValueError(f"a bootstrap needs at least 2 seeds; got {len(d)}")
    if np.all(d == d[0]):
        return float(d[0]), float(d[0]), float(d[0])
    result = stats.bootstrap((d,), np.mean, n_resamples=resamples, confidence_level=confidence,
                             method="percentile", random_state=np.random.default_rng(seed))
    interval = result.confidence_interval
    return float(d.mean()), float(interval.low), float(interval.high)


def win_rate(best, arm) -> float:
    """P(best > arm) over paired seeds, ties counting one half ("higher is better" scores)."""
    best, arm = np.asarray(best, dtype=float), np.asarray(arm, dtype=float)
    return float(np.mean((best > arm) + 0.5 * (best == arm)))


def wilcoxon_p(differences) -> float:
    """Two-sided Wilcoxon signed-rank p of the paired differences (1.0 if all are zero)."""
    d = np.asarray(differences, dtype=float)
    if np.all(d == 0):
        return 1.0
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (Holm 1979): the i-th smallest
    of m is multiplied by (m - i), made monotone, and capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def iqm(values) -> float:
    """Interquartile mean: the mean of the middle 50% (scipy's trim_mean at 25%)."""
    return float(stats.trim_mean(np.asarray(values, dtype=float), 0.25))


def effect(best, arm, *, seed: int = 0) -> Effect:
    """The paired statistics of `best` against `arm`: per-seed scores, higher is better."""
    best, arm = np.asarray(best, dtype=float), np.asarray(arm, dtype=float)
    if best.shape != arm.shape:
        raise ValueError(f"paired scores need one value per seed in both arms; got "
                         f"{len(best)} and {len(arm)}")
    d = best - arm
    mean, low, high = paired_bootstrap(d, seed=seed)
    return Effect(len(d), mean, low, high, win_rate(best, arm), wilcoxon_p(d),
                  iqm(d) if len(d) >= 8 else None, float(d.std(ddof=1)))


def verdict(e: Effect, delta: float, *, winner: str = "the best") -> str:
    """The rule, fixed before any data: "helps" (CI above 0 and win rate >= WIN_RATE),
    "hurts" (CI below 0 and win rate <= 1 - WIN_RATE), "negligible" (CI inside +/- delta),
    else "inconclusive, about N seeds needed", N the seeds that would shrink the CI's
    half-width below the larger of |mean| and delta at the observed SD (where that is no more
    than the seeds run, the differences are too skewed for it and it says so). `winner` names the
    side that the effect's first scores belong to."""
    if e.low > 0 and e.win_rate >= WIN_RATE:
        return "helps"
    if e.high < 0 and e.win_rate <= 1 - WIN_RATE:
        return "hurts"
    if -delta <= e.low and e.high <= delta:
        return "negligible"
    if e.low > 0 or e.high < 0:  # the interval is clear; the seeds disagree too often
        side = "above" if e.low > 0 else "below"
        return (f"inconclusive: CI {side} 0 but {winner} wins on {100 * e.win_rate:.0f}% of "
                "seeds")
    needed = seeds_needed(e.sd, max(abs(e.mean), delta))
    if needed <= e.seeds:  # the normal approximation misreads skewed differences (a few
        # large ones among zeros): their bootstrap interval is wider than it predicts
        return (f"inconclusive at {e.seeds} seeds, the differences too skewed to estimate how "
                "many more it would take")
    return f"inconclusive, about {needed} seeds needed"


def seeds_needed(sd: float, margin: float) -> int:
    """Seeds for a 95% interval of half-width `margin` at standard deviation `sd`."""
    if margin <= 0 or not math.isfinite(sd):
        return 0
    z = stats.norm.ppf(0.5 + CONFIDENCE / 2)
    return max(2, math.ceil((z * sd / margin) ** 2))
