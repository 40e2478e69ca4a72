"""Input scaling against hand computation with numpy, statistics from the training split."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from trickopt.tricks.scaling import SCALINGS, canonical_scaling, create_scaler, scale_splits


@pytest.fixture
def splits():
    rng = np.random.default_rng(0)
    train = rng.normal(3.0, 2.0, size=(50, 4))
    val = rng.normal(3.0, 4.0, size=(20, 4))  # wider: some values fall outside train's range
    test = rng.normal(0.0, 1.0, size=(10, 4))
    return train, val, test


def test_min_max_equals_hand_computation(splits):
    train, val, test = splits
    lo, hi = train.min(axis=0), train.max(axis=0)
    out = scale_splits("min-max", train, val, test)
    assert len(out) == 3
    for got, x in zip(out, splits):
        assert got.dtype == np.float32 and got.shape == x.shape
        np.testing.assert_allclose(got, (x - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    assert out[0].min() == 0.0 and out[0].max() == pytest.approx(1.0)
    assert out[1].min() < 0.0 or out[1].max() > 1.0  # val is scaled with train's min/max


def test_z_score_equals_hand_computation(splits):
    train, val, test = splits
    mean, std = train.mean(axis=0), train.std(axis=0)  # population std (ddof=0)
    out = scale_splits("z-score", train, val, test)
    for got, x in zip(out, splits):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, (x - mean) / std, rtol=1e-5, atol=1e-5)
    assert np.abs(out[1].mean(axis=0)).max() > 0.05  # val keeps its own offset


def test_float32_and_int_inputs():
    train = np.array([[0, 10], [2, 30], [4, 20]])
    (got,) = scale_splits("minmax", train)
    np.testing.assert_allclose(got, [[0, 0], [0.5, 1], [1, 0.5]])
    (got32,) = scale_splits("z_score", train.astype(np.float32))
    mean, std = train.mean(axis=0), train.std(axis=0)
    np.testing.assert_allclose(got32, (train - mean) / std, rtol=1e-6)


def test_constant_feature_is_shifted_not_nan():
    train = np.array([[5.0, 1.0], [5.0, 3.0]])
    other = np.array([[7.0, 2.0]])
    for kind in ("min-max", "z-score"):
        got_train, got_other = scale_splits(kind, train, other)
        assert np.isfinite(got_train).all() and np.isfinite(got_other).all()
        np.testing.assert_array_equal(got_train[:, 0], [0.0, 0.0])
        assert got_other[0, 0] == 2.0  # 7 - 5, divided by 1 in place of a zero spread


def test_none_returns_inputs_as_float32(splits):
    train, val, _ = splits
    out = scale_splits("none", train, val)
    for got, x in zip(out, (train, val)):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, x.astype(np.float32))


def test_inputs_are_not_modified(splits):
    train, val, _ = splits
    before = train.copy(), val.copy()
    scale_splits("z-score", train, val)
    np.testing.assert_array_equal(train, before[0])
    np.testing.assert_array_equal(val, before[1])


@pytest.mark.parametrize(
    "alias, name",
    [("minmax", "min-max"), ("min_max", "min-max"), ("Min-Max", "min-max"),
     ("zscore", "z-score"), ("z_score", "z-score"), ("standard", "z-score"), ("none", "none")],
)
def test_aliases(alias, name):
    assert canonical_scaling(alias) == name
    assert name in SCALINGS


def test_create_scaler():
    assert isinstance(create_scaler("min-max"), MinMaxScaler)
    assert isinstance(create_scaler("standard"), StandardScaler)
    assert create_scaler("none") is None


def test_unknown_scaling_names_allowed():
    with pytest.raises(ValueError, match=r"'robust'.*none, min-max, z-score"):
        create_scaler("robust")
    with pytest.raises(ValueError, match="None"):
        scale_splits(None, np.zeros((2, 2)))


def test_shape_errors():
    with pytest.raises(ValueError, match=r"2-D.*\(4, 1, 2, 2\).*[Ff]latten"):
        scale_splits("min-max", np.zeros((4, 1, 2, 2)))
    with pytest.raises(ValueError, match="others\\[1\\] has 3 features but train has 2"):
        scale_splits("z-score", np.zeros((4, 2)), np.zeros((1, 2)), np.zeros((1, 3)))
