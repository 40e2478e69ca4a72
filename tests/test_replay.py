"""Prechelt's replay against hand computations, and against live training with the stopper on.

The made-up curve below is short and its stopping epochs are worked out by hand, following
the definitions of Prechelt (1998) and Keras' patience, in the comment of each case.
"""

from __future__ import annotations

import copy
import doctest

import pytest

from trickopt.config import RunConfig
from trickopt.data import load_data
from trickopt.effects import replay as replay_module
from trickopt.effects.replay import (
    DEFAULT_RULES,
    PRECHELT_RULES,
    TRICKOPT_RULES,
    Rule,
    draw_replay,
    format_replay,
    replay,
    replay_table,
    train_curve,
)
from trickopt.models import seeded_model
from trickopt.train import evaluate, fit


def make_curve(rows: list[tuple[float, float, float, float]]) -> list[dict]:
    """(train_loss, val_loss, test_loss, test_score) per epoch -> a train_curve curve."""
    return [{"epoch": epoch, "train_loss": train, "val_loss": val, "test_loss": test_loss,
             "test_score": test_score}
            for epoch, (train, val, test_loss, test_score) in enumerate(rows, start=1)]


# 22 epochs. Val falls to 0.70 (epoch 3), bumps, reaches its lowest 0.66 at epoch 6, then
# rises slowly. Strip ends (every 5th epoch): 0.72, 0.71, 0.76, 0.80. Test scores differ at
# the epochs a rule may deliver (3: 0.75, 4: 0.74, 6: 0.80, 10: 0.81).
CURVE = make_curve([
    # train, val,  test loss, test score          epoch
    (1.20, 1.00, 1.10, 0.60),  # 1
    (0.90, 0.80, 0.90, 0.70),  # 2
    (0.80, 0.70, 0.80, 0.75),  # 3
    (0.72, 0.75, 0.82, 0.74),  # 4
    (0.70, 0.72, 0.81, 0.76),  # 5  strip end
    (0.66, 0.66, 0.74, 0.80),  # 6  lowest val
    (0.65, 0.68, 0.76, 0.79),  # 7
    (0.64, 0.69, 0.77, 0.78),  # 8
    (0.63, 0.70, 0.78, 0.79),  # 9
    (0.62, 0.71, 0.79, 0.81),  # 10 strip end
    (0.61, 0.70, 0.78, 0.77),  # 11
    (0.60, 0.73, 0.81, 0.76),  # 12
    (0.60, 0.74, 0.82, 0.75),  # 13
    (0.60, 0.75, 0.83, 0.74),  # 14
    (0.60, 0.76, 0.84, 0.73),  # 15 strip end
    (0.59, 0.74, 0.82, 0.75),  # 16
    (0.59, 0.75, 0.83, 0.74),  # 17
    (0.59, 0.77, 0.85, 0.72),  # 18
    (0.59, 0.78, 0.86, 0.71),  # 19
    (0.59, 0.80, 0.88, 0.70),  # 20 strip end
    (0.58, 0.79, 0.87, 0.71),  # 21
    (0.58, 0.81, 0.89, 0.69),  # 22
])
RULES = {rule.name: rule for rule in DEFAULT_RULES}

# name -> (rule, stop epoch, fired, best epoch, test score at the best epoch)
HAND_COMPUTED = {
    # Never stops; the lowest val is 0.66 at epoch 6.
    "none": (RULES["none"], 22, False, 6, 0.80),
    # Best 0.70 at 3; epoch 4 (0.75) and 5 (0.72) do not improve: wait 2 -> stop at 5.
    "patience 2": (RULES["patience 2"], 5, True, 3, 0.75),
    # Best 0.66 at 6; epochs 7..11 (0.68 0.69 0.70 0.71 0.70) do not improve -> stop at 11.
    "patience 5": (RULES["patience 5"], 11, True, 6, 0.80),
    # Improvement needs val < best - 0.15: 1.00, then 0.80 (< 0.85) at epoch 2; 0.70 and 0.75
    # are not < 0.65 -> stop at 4, best 2 (not 3, though 0.70 is lower: Keras' min_delta).
    "patience 2 delta": (Rule("p", "patience", {"patience": 2, "min_delta": 0.15}),
                         4, True, 2, 0.70),
    # Every epoch: GL(4) = 100 * (0.75 / 0.70 - 1) = 7.1 > 5 -> stop at 4, best 3.
    "GL5": (RULES["GL5"], 4, True, 3, 0.75),
    # Every epoch: GL = 7.1 (4), 2.9 (5), 0 (6), 3.0, 4.5, 6.1, 7.6, 6.1 (7..11),
    # GL(12) = 100 * (0.73 / 0.66 - 1) = 10.6 > 10 -> stop at 12, best 6.
    "GL10": (Rule("GL10", "gl", {"alpha": 10.0}), 12, True, 6, 0.80),
    # Strip ends only: 0.72 (5) best, 0.71 (10) best, GL(15) = 100 * (0.76 / 0.71 - 1) = 7.0
    # > 5 -> stop at 15; the best of the epochs looked at is 10.
    "GL5/strip": (RULES["GL5/strip"], 15, True, 10, 0.81),
    # PQ = GL / P_5 at strip ends, E_opt over every epoch:
    # t=5:  GL = 100 * (0.72 / 0.70 - 1) = 2.86, P = 1000 * (4.32 / (5 * 0.70) - 1) = 234 -> 0.01
    # t=10: GL = 100 * (0.71 / 0.66 - 1) = 7.58, P = 1000 * (3.20 / (5 * 0.62) - 1) = 32.3 -> 0.23
    # t=15: GL = 100 * (0.76 / 0.66 - 1) = 15.2, P = 1000 * (3.01 / (5 * 0.60) - 1) = 3.33 -> 4.5
    "PQ0.5": (RULES["PQ0.5"], 15, True, 6, 0.80),  # 0.23 <= 0.5 < 4.5
    "PQ0.2": (Rule("PQ0.2", "pq", {"alpha": 0.2, "strip": 5}), 10, True, 6, 0.80),  # 0.2 < 0.23
    # Strip ends 0.72, 0.71 (fall), 0.76 (rise 1), 0.80 (rise 2) -> stop at 20.
    "UP2": (RULES["UP2"], 20, True, 6, 0.80),  # delivers the best of every epoch
    "UP2/strip": (RULES["UP2/strip"], 20, True, 10, 0.81),  # the best strip end: 0.71 at 10
    # A third rise would be at epoch 25, past the budget of 22.
    "UP3": (RULES["UP3"], 22, False, 6, 0.80),
    "UP3/strip": (RULES["UP3/strip"], 22, False, 10, 0.81),  # epochs 21, 22 are not looked at
}


@pytest.mark.parametrize("case", HAND_COMPUTED)
def test_replay_stops_where_computed_by_hand(case):
    rule, stop_epoch, fired, best_epoch, test_score = HAND_COMPUTED[case]
    replayed = replay(CURVE, rule)
    assert (replayed.stop_epoch, replayed.fired, replayed.best_epoch) == (
        stop_epoch, fired, best_epoch)
    assert replayed.epochs_used == stop_epoch
    assert replayed.test_score == test_score
    assert replayed.val_loss == CURVE[best_epoch - 1]["val_loss"]


def test_a_rule_first_met_on_the_last_epoch_has_not_fired():
    replayed = replay(CURVE[:20], RULES["UP2"])  # UP2 stops at 20 (above), here the budget
    assert (replayed.stop_epoch, replayed.fired) == (20, False)


def test_rule_sets_are_prechelts_fourteen_and_trickopts():
    # Prechelt 1998, section 3: the criteria of his experiments.
    prechelt = ["GL1", "GL2", "GL3", "GL5", "PQ0.5", "PQ0.75", "PQ1", "PQ2", "PQ3",
                "UP2", "UP3", "UP4", "UP6", "UP8"]
    assert [r.name.removesuffix("/strip") for r in PRECHELT_RULES] == prechelt
    assert {r.every for r in PRECHELT_RULES if r.kind in ("gl", "up")} == {5}
    assert {r.params["strip"] for r in PRECHELT_RULES if r.kind == "pq"} == {5}
    assert all(r.every == 1 for r in TRICKOPT_RULES)
    assert len(DEFAULT_RULES) == 18 + 9  # trickopt's 18, plus GL and UP at strip ends
    keys = [(r.kind, sorted(r.params.items()), r.every) for r in DEFAULT_RULES]
    assert len(set(map(str, keys))) == len(keys)


def test_a_bad_rule_is_refused_when_made():
    with pytest.raises(ValueError, match="every"):
        Rule("x", "gl", {"alpha": 1.0}, every=0)
    with pytest.raises(ValueError, match="alpha"):
        Rule("x", "gl", {"alpha": -1.0})


# ---------------------------------------------------------------------------------------------
# Replay equals live training.


@pytest.fixture(scope="module")
def digits_run():
    """A small digits MLP whose val loss is lowest at epoch 6 of 12 (lr 0.01)."""
    cfg = RunConfig()
    cfg.data.name = "digits"
    cfg.model.depth, cfg.model.width = 1, 32
    train = cfg.train
    train.max_epochs, train.batch_size, train.lr = 12, 64, 0.01
    train.device, train.threads, train.seed = "cpu", 1, 0
    train.stopper, train.stopper_params = "none", {}
    data = load_data(cfg.data)
    model = seeded_model(cfg.model, data.input_shape, data.n_classes, seed=0)
    history, curve = train_curve(model, data, train)
    return cfg, data, history, curve


def test_scoring_the_test_split_each_epoch_does_not_change_training(digits_run):
    cfg, data, history, curve = digits_run
    model = seeded_model(cfg.model, data.input_shape, data.n_classes, seed=0)
    plain = fit(model, data, cfg.train)
    assert [row["val_loss"] for row in curve] == plain.metric("val_loss")
    assert [row["train_loss"] for row in curve] == plain.metric("train_loss")
    assert history.metric("val_loss") == plain.metric("val_loss")


@pytest.mark.parametrize("kind, params", [
    ("patience", {"patience": 2}),
    ("patience", {"patience": 2, "min_delta": 0.01}),
    ("gl", {"alpha": 1.0}),
    ("pq", {"alpha": 0.02, "strip": 2}),
])
def test_replay_equals_live_training_with_the_stopper(digits_run, kind, params):
    cfg, data, _, curve = digits_run
    replayed = replay(curve, Rule(kind, kind, params))
    assert replayed.fired  # else this test would compare nothing but the full run
    train = copy.deepcopy(cfg.train)
    train.stopper, train.stopper_params = kind, params
    model = seeded_model(cfg.model, data.input_shape, data.n_classes, seed=0)
    live = fit(model, data, train)
    test_loss, test_score = evaluate(model, data.x_test, data.y_test, data.task)
    assert (live.epochs_trained, live.best_epoch) == (replayed.stop_epoch, replayed.best_epoch)
    assert (test_loss, test_score) == (replayed.test_loss, replayed.test_score)
    assert live.best["val_loss"] == replayed.val_loss


# ---------------------------------------------------------------------------------------------
# The table and the plot.


def two_seed_curves() -> dict[int, list[dict]]:
    """Test loss and score are 9.0 and 0.0 except where a rule below delivers."""
    def curve(val: list[float], delivered: dict[int, tuple[float, float]]) -> list[dict]:
        return make_curve([(0.5, v, *delivered.get(epoch, (9.0, 0.0)))
                           for epoch, v in enumerate(val, start=1)])

    return {
        1: curve([1.0, 0.8, 0.9, 0.95, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95],
                 {2: (0.9, 0.80), 5: (0.8, 0.85)}),
        2: curve([1.0, 0.9, 0.8, 0.7, 0.6, 0.65, 0.7, 0.5, 0.55, 0.6],
                 {5: (0.7, 0.82), 8: (0.6, 0.90)}),
    }


TABLE_RULES = (RULES["patience 2"], RULES["none"], RULES["GL5/strip"])


def test_replay_table_averages_over_seeds_by_hand():
    rows = {row.rule: row for row in replay_table(two_seed_curves(), TABLE_RULES)}
    # patience 2: seed 1 best 0.8 at 2, stops at 4; seed 2 best 0.6 at 5, stops at 7.
    patience = rows["patience 2"]
    assert patience.mean_epochs == (4 + 7) / 2
    assert patience.mean_test_loss == pytest.approx((0.9 + 0.7) / 2)
    assert patience.mean_test_score == pytest.approx((0.80 + 0.82) / 2)
    assert (patience.fired_share, patience.fired_in_first_strip) == (1.0, 1)  # 4 <= 5 < 7
    assert {row.fastest_rule for row in rows.values()} == {"patience 2"}
    assert (patience.epochs_ratio, patience.test_loss_change_pct) == (1.0, 0.0)
    # none: 10 epochs; the lowest val is at 5 (seed 1) and 8 (seed 2).
    none = rows["none"]
    assert none.mean_epochs == 10
    assert none.mean_test_loss == pytest.approx((0.8 + 0.6) / 2)
    assert (none.fired_share, none.fired_in_first_strip) == (0.0, 0)
    assert none.epochs_ratio == pytest.approx(10 / 5.5)
    assert none.test_loss_change_pct == pytest.approx(100 * (0.7 / 0.8 - 1))  # -12.5
    # GL5/strip looks at epochs 5 and 10: seed 1: GL(10) = 100 * (0.95 / 0.7 - 1) = 36 > 5, at
    # the budget: not fired; seed 2: 0.6 ties 0.6, GL 0. Both deliver epoch 5.
    strip = rows["GL5/strip"]
    assert (strip.mean_epochs, strip.fired_share) == (10, 0.0)
    assert strip.mean_test_loss == pytest.approx((0.8 + 0.7) / 2)
    assert strip.test_loss_change_pct == pytest.approx(100 * (0.75 / 0.8 - 1))  # -6.25


def test_format_replay_sets_the_rows_beside_prechelt():
    text = format_replay(replay_table(two_seed_curves(), TABLE_RULES))
    lines = text.splitlines()
    assert len(lines) == 3 + len(TABLE_RULES) + 2
    assert lines[3].split() == ["patience", "2", "5.5", "1.00", "0.8000", "+0.0", "0.8100",
                                "100%", "1"]
    assert lines[4].split() == ["none", "10.0", "1.82", "0.7000", "-12.5", "0.8750", "0%", "0"]
    assert "the fastest rule is patience 2." in lines[0]
    assert "4% better generalization" in text and "4x the training time" in text


def test_draw_replay_writes_a_png_matplotlib_reads_back(tmp_path):
    from matplotlib.image import imread

    path = draw_replay(replay_table(two_seed_curves(), TABLE_RULES), tmp_path / "replay.png")
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_docstring_examples():
    assert doctest.testmod(replay_module).failed == 0
