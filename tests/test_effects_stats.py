"""The trick-effect statistics against independent references: a bootstrap written out by
hand, Holm's procedure on a worked example, the exact Wilcoxon distribution, and the verdict
rule on constructed differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trickopt.effects.stats import (
    effect,
    holm,
    iqm,
    paired_bootstrap,
    seeds_needed,
    verdict,
    wilcoxon_p,
    win_rate,
)

# Test accuracies of two arms on 8 paired seeds (made up, realistic for MNIST-1D).
BEST = np.array([0.968, 0.972, 0.961, 0.975, 0.966, 0.970, 0.964, 0.973])
ARM = np.array([0.960, 0.969, 0.962, 0.966, 0.958, 0.967, 0.955, 0.969])


def test_paired_bootstrap_matches_a_bootstrap_written_out_by_hand():
    d = BEST - ARM
    rng = np.random.default_rng(42)
    # Resample seeds with replacement; the mean of each resample; the 2.5% and 97.5% points.
    means = d[rng.integers(0, len(d), size=(200_000, len(d)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    mean, got_low, got_high = paired_bootstrap(d, resamples=20_000)
    assert mean == pytest.approx(d.mean(), abs=1e-12)
    # Two Monte Carlo estimates of the same interval: equal to within their noise.
    assert got_low == pytest.approx(low, abs=4e-4)
    assert got_high == pytest.approx(high, abs=4e-4)


def test_paired_bootstrap_of_equal_differences_is_a_point():
    assert paired_bootstrap([0.01] * 6) == (0.01, 0.01, 0.01)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired_bootstrap([0.01])


def test_holm_on_a_worked_example():
    # m = 4: sorted p 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04;
    # made monotone: 0.02, 0.03, 0.06, 0.06. Reported in the input order.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_wilcoxon_matches_the_exact_signed_rank_distribution():
    # Six differences, all positive: W- = 0, the most extreme of 2^6 equally likely sign
    # patterns; two-sided exact p = 2 / 64.
    assert wilcoxon_p([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == pytest.approx(2 / 64)
    # One negative of rank 1 (W- = 1): patterns with W- <= 1 are 2 of 64, each side.
    assert wilcoxon_p([-0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == pytest.approx(4 / 64)
    assert wilcoxon_p([0.0, 0.0, 0.0]) == 1.0


def test_win_rate_counts_ties_as_half():
    assert win_rate([1, 2, 3, 4], [0, 2, 4, 1]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm([100, 1, 2, 3, 4, 5, 6, -100]) == pytest.approx((2 + 3 + 4 + 5) / 4)


def test_seeds_needed_by_hand():
    # Half-width 1.96 * sd / sqrt(n) <= margin  <=>  n >= (1.96 * 0.01 / 0.002)^2 = 96.04.
    assert seeds_needed(0.01, 0.002) == 97
    assert seeds_needed(0.001, 0.01) == 2  # never fewer than a pair


def constructed(mean: float, noise: float, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    arm = 0.9 + 0.01 * rng.normal(size=n)  # seed noise shared by both arms
    return arm + mean + noise * rng.normal(size=n), arm


@pytest.mark.parametrize("mean, noise, expected", [
    (0.02, 0.003, "helps"),  # a clear effect
    (-0.02, 0.003, "hurts"),  # a harmful one
    (0.0, 0.0005, "negligible"),  # none: the CI sits inside +/- delta
    (0.003, 0.02, "inconclusive"),  # a noisy one
])
def test_the_verdict_rule_on_constructed_differences(mean, noise, expected):
    best, arm = constructed(mean, noise)
    e = effect(best, arm)
    assert verdict(e, delta=0.002).startswith(expected)


def test_an_inconclusive_verdict_says_how_many_seeds_it_would_take():
    best, arm = constructed(0.003, 0.02)
    e = effect(best, arm)
    n = int(verdict(e, delta=0.002).split("about ")[1].split()[0])
    assert n == math.ceil((1.959964 * e.sd / max(abs(e.mean), 0.002)) ** 2)
    assert n > e.seeds


def test_skewed_differences_do_not_ask_for_fewer_seeds_than_were_run():
    # 10 seeds: zero difference on 7, a loss of about 0.011 on 3 (an early stopper firing too
    # soon on a few seeds): mean -0.0033, SD 0.0053. The normal approximation says
    # (1.96 * 0.0053 / 0.005)^2 = 4.4, so 5 seeds would do, yet the bootstrap interval of the
    # 10 still reaches below -delta: the verdict must not ask for 5.
    best = [0.0] * 7 + [-0.0120, -0.0110, -0.0100]
    arm = [0.0] * 10
    e = effect(best, arm)
    assert e.low < -0.005 and e.high >= 0  # not inside +/- delta, not clear of 0
    assert math.ceil((1.959964 * e.sd / 0.005) ** 2) == 5
    assert verdict(e, delta=0.005) == ("inconclusive at 10 seeds, the differences too skewed "
                                       "to estimate how many more it would take")


def test_a_clear_interval_with_too_few_wins_is_inconclusive_and_says_why():
    # the best is ahead by a lot on 5 seeds of 8 and a hair behind on the other 3: a resample
    # without any of the 5 has probability (3/8)^8 < 0.0004, so the interval is above 0, yet
    # the best wins on 5 of 8 seeds only (62.5% < 75%)
    best = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    arm = [0.0, 0.0, 0.0, 0.0, 0.0, 0.001, 0.001, 0.001]
    e = effect(best, arm)
    assert e.low > 0 and e.win_rate == 5 / 8
    assert verdict(e, delta=0.01) == ("inconclusive: CI above 0 but the best wins on 62% of "
                                      "seeds")
