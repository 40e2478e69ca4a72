"""Early stopping against independent references: Keras' algorithm and Prechelt's formulas.

Loss values are multiples of 1/64 where a comparison sits on a boundary, so that the
floating-point arithmetic is exact and ties really are ties.
"""

from __future__ import annotations

import json
import math
import operator
import random

import pytest

from trickopt.tricks.early_stopping import (
    GL,
    PQ,
    STOPPER_PARAMS,
    STOPPERS,
    UP,
    EarlyStopping,
    NoStopping,
    create_stopper,
)


class KerasEarlyStopping:
    """Literal re-statement of keras/src/callbacks/early_stopping.py (Keras 3).

    Kept: __init__/_set_monitor_op (abs and sign flip of min_delta), on_epoch_end and
    _is_improvement with baseline=None, start_from_epoch=0. Epochs are 0-based as in Keras.
    """

    def __init__(self, patience, min_delta=0, mode="min"):
        self.patience = patience
        self.min_delta = abs(min_delta)
        self.wait = 0
        self.stopped_epoch = 0
        self.best_epoch = 0
        self.stop_training = False
        self.monitor_op = operator.lt if mode == "min" else operator.gt
        if self.monitor_op == operator.lt:
            self.min_delta *= -1
        self.best = float("inf") if self.monitor_op == operator.lt else -float("inf")

    def on_epoch_end(self, epoch, current):
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            self.wait = 0  # baseline is None
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.stop_training = True

    def _is_improvement(self, monitor_value, reference_value):
        return self.monitor_op(monitor_value - self.min_delta, reference_value)


def keras_run(values, patience, min_delta=0.0, mode="min"):
    """(stop epoch or None, best epoch, best), epochs 1-based like ours."""
    cb = KerasEarlyStopping(patience, min_delta, mode)
    for epoch, value in enumerate(values):
        cb.on_epoch_end(epoch, value)
        if cb.stop_training:
            return epoch + 1, cb.best_epoch + 1, cb.best
    return None, cb.best_epoch + 1, cb.best


def run(stopper, values, trains=None):
    """Step through the sequence until a stop; return the stop epoch or None."""
    trains = trains if trains is not None else [None] * len(values)
    for val, train in zip(values, trains):
        if stopper.step(val, train):
            return stopper.epoch
    return None


# ---------------------------------------------------------------- EarlyStopping (Keras)


@pytest.mark.parametrize(
    "values, kwargs, stop, best_epoch",
    [
        # best at epoch 2 (0.5); ties at 3 and 4 are no improvement: wait 1, 2 -> stop at 2+2.
        ([1.0, 0.5, 0.5, 0.5, 0.125], dict(patience=2), 4, 2),
        # min_delta 0.25: 0.875 < 1.0-0.25? no (wait 1); 0.75 < 0.75? no, strict (wait 2) -> 3.
        ([1.0, 0.875, 0.75, 0.5, 0.5], dict(patience=2, min_delta=0.25), 3, 1),
        # patience 3: epoch 4 improves (0.5 < 0.75), best 0.5; 0.5 wait 1; 0.25 < 0.25? no
        # wait 2; 0.3 wait 3 -> stop at 4+3 = 7.
        ([1.0, 0.875, 0.75, 0.5, 0.5, 0.25, 0.3], dict(patience=3, min_delta=0.25), 7, 4),
        # max: 0.75 > 0.5+0.0625 yes (best 2); 0.8 > 0.8125? no; 0.8125 > 0.8125? no -> 2+2.
        ([0.5, 0.75, 0.8, 0.8125, 0.9], dict(patience=2, min_delta=0.0625, mode="max"), 4, 2),
        # patience 1: the first non-improving epoch stops.
        ([1.0, 2.0, 0.5], dict(patience=1), 2, 1),
        # strictly decreasing: never stops, best is the last epoch.
        ([4.0, 3.0, 2.0, 1.0], dict(patience=1), None, 4),
    ],
)
def test_early_stopping_hand_derived_and_keras(values, kwargs, stop, best_epoch):
    stopper = EarlyStopping(**kwargs)
    assert run(stopper, values) == stop
    assert stopper.best_epoch == best_epoch
    assert stopper.stopped_epoch == (stop or 0)
    assert stopper.reason == ("patience" if stop else None)
    assert keras_run(values, **kwargs)[:2] == (stop, best_epoch)


def test_early_stopping_matches_keras_on_random_sequences():
    rng = random.Random(0)
    for _ in range(300):
        values = [rng.randint(0, 16) / 8 for _ in range(rng.randint(1, 20))]
        kwargs = dict(
            patience=rng.randint(1, 4),
            min_delta=rng.choice([0.0, 0.125, 0.25]),
            mode=rng.choice(["min", "max"]),
        )
        stopper = EarlyStopping(**kwargs)
        stop = run(stopper, values)
        assert (stop, stopper.best_epoch, stopper.best) == keras_run(values, **kwargs), kwargs


def test_best_is_inf_before_any_step():
    assert EarlyStopping(2).best == math.inf
    assert EarlyStopping(2, mode="max").best == -math.inf
    assert (EarlyStopping(2).best_epoch, EarlyStopping(2).epoch) == (0, 0)


# ---------------------------------------------------------------- Prechelt's GL, PQ, UP


def test_gl_hand_computed():
    # E_opt:   2.0  1.0  1.0     0.75  0.75                    0.75
    # GL(t):   0    0    6.25    0     100*(51/48-1) = 6.25    100*(52/48-1) = 8.33
    # alpha 6.25: GL == alpha is not > alpha, so the first stop is epoch 6.
    stopper = GL(6.25)
    assert run(stopper, [2.0, 1.0, 1.0625, 0.75, 0.796875, 0.8125, 0.1]) == 6
    assert (stopper.reason, stopper.best, stopper.best_epoch) == ("gl", 0.75, 4)


def test_pq_only_at_strip_ends():
    # strip k = 2: strip ends are epochs 2, 4, 6, 8.
    val = [1.0, 0.5, 0.75, 0.5, 0.5625, 0.5625, 0.625, 0.625]
    train = [2.0, 1.0, 1.0, 1.0, 0.75, 0.625, 0.625, 0.6]
    # t=2: E_opt 0.5, GL 0                                   -> quotient 0, go on
    # t=3: GL = 100*(0.75/0.5 - 1) = 50 and P_2 over [1.0, 1.0] is 0 (quotient +inf > 0.5),
    #      but t=3 is not a strip end -> go on
    # t=4: GL = 0                                            -> go on
    # t=6: GL = 100*(0.5625/0.5 - 1) = 12.5; P_2 = 1000*((0.75+0.625)/(2*0.625) - 1) = 100
    #      quotient 0.125 <= 0.5                             -> go on
    # t=7: GL = 25, P_2 over [0.625, 0.625] = 0, not a strip end -> go on
    # t=8: GL = 25; P_2 = 1000*((0.625+0.6)/(2*0.6) - 1) = 20.83; quotient 1.2 > 0.5 -> stop
    stopper = PQ(0.5, strip=2)
    assert run(stopper, val, train) == 8
    assert (stopper.reason, stopper.best, stopper.best_epoch) == ("pq", 0.5, 2)


def test_pq_quotient_equal_to_alpha_does_not_stop():
    # strip 2. t=2: GL = 100*(1.3125/1.0 - 1) = 31.25; P_2 = 1000*((1.0+0.5)/(2*0.5) - 1) = 500
    #      quotient 0.0625 == alpha, not > alpha -> go on
    # t=4: GL = 100*(1.375/1.0 - 1) = 37.5; P_2 = 1000*((0.5+0.25)/(2*0.25) - 1) = 500
    #      quotient 0.075 > 0.0625 -> stop
    stopper = PQ(0.0625, strip=2)
    assert run(stopper, [1.0, 1.3125, 1.3125, 1.375], [1.0, 0.5, 0.5, 0.25]) == 4


def test_pq_flat_training_progress():
    # strip 2, flat training: P_2 = 1000*(2/(2*1) - 1) = 0 at every strip end.
    # t=2: GL 0 -> quotient defined as 0, go on; t=4: GL = 6.25 > 0 -> quotient +inf, stop.
    stopper = PQ(100.0, strip=2)
    assert run(stopper, [1.0, 1.0, 1.0, 1.0625], [1.0] * 4) == 4
    assert stopper.reason == "pq"


def test_pq_needs_train_loss():
    stopper = PQ(1.0)
    with pytest.raises(ValueError, match="train_loss"):
        stopper.step(1.0)
    assert stopper.epoch == 0


def test_up_1_and_up_2_differ():
    # strip k = 2; val at strip ends: t2 0.5, t4 0.625 (rise), t6 0.5 (no rise),
    # t8 0.75 (rise), t10 1.0 (rise, the second in succession).
    val = [1.0, 0.5, 0.375, 0.625, 0.5, 0.5, 0.5, 0.75, 0.8, 1.0]
    up1 = UP(1, strip=2)
    assert run(up1, val) == 4  # E_va(4) = 0.625 > E_va(2) = 0.5
    up2 = UP(2, strip=2)
    assert run(up2, val) == 10  # UP_1 held at t8, and E_va(10) = 1.0 > E_va(8) = 0.75
    for stopper in (up1, up2):
        assert (stopper.reason, stopper.best, stopper.best_epoch) == ("up", 0.375, 3)


def test_up_ignores_rises_inside_strips_and_ties():
    # strip 2: the loss rises at t3 and t5, but the strip ends t2, t4, t6 are all 0.5.
    assert run(UP(1, strip=2), [1.0, 0.5, 0.9, 0.5, 0.9, 0.5]) is None


def up_holds(s, t, k, val):
    """Prechelt's UP_s at strip end t (1-based), by his recursive definition."""
    if t - k < k:  # no earlier strip end to compare with
        return False
    rose = val[t - 1] > val[t - k - 1]
    return rose and (s == 1 or up_holds(s - 1, t - k, k, val))


def prechelt_reference(kind, param, k, val, train):
    """Stop epoch from the paper's formulas evaluated on the whole history (1-based t)."""
    for t in range(1, len(val) + 1):
        e_opt = min(val[:t])
        gl = 100 * (val[t - 1] / e_opt - 1)
        if kind == "gl" and gl > param:
            return t
        if t % k or kind == "gl":
            continue
        window = train[t - k : t]
        progress = 1000 * (sum(window) / (k * min(window)) - 1)
        if kind == "pq" and (gl / progress if progress else (math.inf if gl else 0)) > param:
            return t
        if kind == "up" and up_holds(param, t, k, val):
            return t
    return None


def test_prechelt_matches_paper_formulas_on_random_sequences():
    rng = random.Random(1)
    for _ in range(300):
        n, k = rng.randint(1, 25), rng.randint(1, 5)
        val = [rng.uniform(0.1, 2.0) for _ in range(n)]
        train = [rng.uniform(0.1, 2.0) for _ in range(n)]
        for kind, param in (("gl", rng.uniform(1, 20)), ("pq", rng.uniform(0.01, 1)),
                            ("up", rng.randint(1, 3))):
            params = {"gl": dict(alpha=param), "pq": dict(alpha=param, strip=k),
                      "up": dict(s=param, strip=k)}[kind]
            stopper = create_stopper(kind, **params)
            expected = prechelt_reference(kind, param, k, val, train)
            assert run(stopper, val, train) == expected, (kind, params)
            assert stopper.best == min(val[: stopper.epoch])


# ---------------------------------------------------------------- shared protocol


ALL = [
    lambda: NoStopping(),
    lambda: EarlyStopping(3, min_delta=0.01),
    lambda: GL(5.0),
    lambda: PQ(0.5, strip=3),
    lambda: UP(2, strip=2),
]


@pytest.mark.parametrize("make", ALL)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_stops_at_once(make, bad):
    stopper = make()
    assert not stopper.step(1.0, 1.0)
    assert stopper.step(bad, 1.0)
    assert (stopper.reason, stopper.stopped_epoch, stopper.best, stopper.best_epoch) == (
        "non_finite", 2, 1.0, 1)
    assert stopper.step(0.5, 1.0) and stopper.epoch == 2  # stays stopped, nothing changes
    other = make()
    assert other.step(1.0, bad) and other.reason == "non_finite"
    assert other.best == math.inf and other.best_epoch == 0


def make_sequence(seed=2, n=30):
    rng = random.Random(seed)
    return [(rng.uniform(0.5, 1.5), rng.uniform(0.1, 1.0)) for _ in range(n)]


def decisions(stopper, pairs):
    return [stopper.step(v, t) for v, t in pairs]


@pytest.mark.parametrize("make", ALL)
def test_reset_forgets_everything(make):
    stopper, fresh = make(), make()
    pairs = make_sequence()
    first = decisions(stopper, pairs)
    stopper.reset()
    assert stopper.state_dict() == fresh.state_dict()
    assert decisions(stopper, pairs) == first


@pytest.mark.parametrize("make", ALL)
@pytest.mark.parametrize("split", [1, 4, 5, 7])
def test_state_dict_round_trip_mid_sequence(make, split):
    pairs = make_sequence(seed=3)
    uninterrupted = make()
    expected = decisions(uninterrupted, pairs)
    first = make()
    head = decisions(first, pairs[:split])
    resumed = make()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert head + decisions(resumed, pairs[split:]) == expected
    assert resumed.state_dict() == uninterrupted.state_dict()


def test_load_state_dict_rejects_wrong_keys():
    with pytest.raises(ValueError, match="wait"):
        EarlyStopping(2).load_state_dict(GL(1.0).state_dict())


def test_negative_loss_rejected_by_ratio_criteria():
    with pytest.raises(ValueError, match="val_loss"):
        GL(1.0).step(-0.5)
    with pytest.raises(ValueError, match="train_loss"):
        PQ(1.0).step(0.5, -0.5)
    assert not UP(1).step(-0.5)  # UP only compares, so any sign is fine


# ---------------------------------------------------------------- construction


def test_create_stopper_kinds():
    assert set(STOPPER_PARAMS) == set(STOPPERS)
    assert type(create_stopper("none")) is NoStopping
    made = create_stopper("patience", patience=2, min_delta=0.5, mode="max")
    assert (type(made), made.patience, made.min_delta, made.best) == (
        EarlyStopping, 2, 0.5, -math.inf)
    assert type(create_stopper("gl", alpha=2.0)) is GL
    assert create_stopper("pq", alpha=0.5, strip=3).strip == 3
    assert create_stopper("up", s=2).strip == 5


@pytest.mark.parametrize(
    "kind, params, match",
    [
        ("keras", {}, r"'keras'.*none, patience, gl, pq, up"),
        ("patience", {"patience": 2, "baseline": 1.0}, r"baseline.*min_delta"),
        ("gl", {"alpha": 1.0, "strip": 5}, r"strip.*'gl'"),
        ("up", {}, r"needs.*'s'"),
        ("patience", {"patience": 0}, r"'patience' must be an int >= 1; got patience=0"),
    ],
)
def test_create_stopper_errors(kind, params, match):
    with pytest.raises(ValueError, match=match):
        create_stopper(kind, **params)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: EarlyStopping(0), "patience"),
        (lambda: EarlyStopping(1.5), "patience"),
        (lambda: EarlyStopping(True), "patience"),
        (lambda: EarlyStopping(2, min_delta=-0.1), "min_delta"),
        (lambda: EarlyStopping(2, mode="auto"), "mode"),
        (lambda: GL(0.0), "alpha"),
        (lambda: GL(math.nan), "alpha"),
        (lambda: PQ(-1.0), "alpha"),
        (lambda: PQ(1.0, strip=0), "strip"),
        (lambda: UP(0), "'s'"),
        (lambda: UP(1, strip=0), "strip"),
    ],
)
def test_constructor_validation(make, name):
    with pytest.raises(ValueError, match=name):
        make()
