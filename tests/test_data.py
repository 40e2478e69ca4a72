"""Data sets and splits against scikit-learn's own loaders and numpy statistics."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from sklearn import datasets

from trickopt.config import DataConfig
from trickopt.data import DataError, load_data


def all_labels(splits) -> np.ndarray:
    return np.concatenate([splits.y_train.numpy(), splits.y_val.numpy(), splits.y_test.numpy()])


def all_rows(splits) -> np.ndarray:
    parts = (splits.x_train, splits.x_val, splits.x_test)
    return np.concatenate([p.reshape(len(p), -1).numpy() for p in parts])


def sorted_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])]


@pytest.mark.parametrize("name, loader, shape", [
    ("digits", datasets.load_digits, (1, 8, 8)),
    ("breast_cancer", datasets.load_breast_cancer, (30,)),
    ("wine", datasets.load_wine, (13,)),
])
def test_named_sets_match_sklearn(name, loader, shape):
    bunch = loader()
    splits = load_data(DataConfig(name=name, scaling="none"))
    assert splits.input_shape == shape
    assert splits.x_train.shape[1:] == shape
    assert splits.n_classes == len(np.unique(bunch.target))
    assert splits.x_train.dtype == torch.float32 and splits.y_train.dtype == torch.int64
    # Unscaled, the three splits together are sklearn's rows, each with its own label.
    rows = all_rows(splits)
    expected = bunch.data.astype(np.float32)
    assert rows.shape == expected.shape
    np.testing.assert_array_equal(sorted_rows(rows), sorted_rows(expected))
    if name != "digits":  # digits has repeated images; these sets have unique rows
        label_of = {r.tobytes(): t for r, t in zip(expected, bunch.target)}
        labels = all_labels(splits)
        assert all(label_of[r.tobytes()] == t for r, t in zip(rows, labels))


def test_synthetic_matches_make_classification():
    config = DataConfig(name="synthetic", n_samples=400, n_features=12, n_classes=4,
                        scaling="none", split_seed=5)
    x, y = datasets.make_classification(n_samples=400, n_features=12, n_informative=6,
                                        n_classes=4, random_state=5)
    splits = load_data(config)
    assert splits.input_shape == (12,) and splits.n_classes == 4
    np.testing.assert_array_equal(sorted_rows(all_rows(splits)),
                                  sorted_rows(x.astype(np.float32)))
    np.testing.assert_array_equal(np.bincount(all_labels(splits)), np.bincount(y))


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "wine"])
def test_split_is_60_20_20_and_stratified(name):
    splits = load_data(DataConfig(name=name))
    labels = all_labels(splits)
    n = len(labels)
    # sklearn rounds a float test_size up: test first, then val out of the rest; train keeps
    # what is left, so it can be short of 60% by up to 2 (digits: 1077 / 360 / 360 of 1797).
    n_test = math.ceil(0.2 * n)
    n_val = math.ceil(0.25 * (n - n_test))
    sizes = (n - n_test - n_val, n_val, n_test)
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == sizes
    assert abs(n_val - 0.2 * n) <= 1 and abs(n_test - 0.2 * n) <= 1
    assert abs(sizes[0] - 0.6 * n) <= 2
    overall = np.bincount(labels) / n
    for y in (splits.y_train, splits.y_val, splits.y_test):
        y = y.numpy()
        counts = np.bincount(y, minlength=len(overall))
        # Stratified: every class within one sample of its overall share of this split.
        assert np.abs(counts - overall * len(y)).max() <= 1.0


def test_split_is_fixed_by_split_seed_and_changes_with_it():
    first = load_data(DataConfig(name="wine", split_seed=1))
    again = load_data(DataConfig(name="wine", split_seed=1))
    other = load_data(DataConfig(name="wine", split_seed=2))
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(first, field), getattr(again, field))
    unscaled = [load_data(DataConfig(name="wine", split_seed=s, scaling="none"))
                for s in (1, 2)]
    assert not torch.equal(unscaled[0].x_test, unscaled[1].x_test)
    assert not torch.equal(first.x_train, other.x_train)


def test_z_score_standardises_the_train_split_only():
    splits = load_data(DataConfig(name="breast_cancer", scaling="z-score"))
    train = splits.x_train.double().numpy()
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0, ddof=0), 1.0, atol=1e-5)
    val = splits.x_val.double().numpy()
    assert np.abs(val.mean(axis=0)).max() > 1e-2  # fitted on train, not refitted on val
    # The same affine map: compare with numpy's z-score from the unscaled train split.
    raw = load_data(DataConfig(name="breast_cancer", scaling="none"))
    raw_train = raw.x_train.double().numpy()
    mean, std = raw_train.mean(axis=0), raw_train.std(axis=0)
    np.testing.assert_allclose(val, (raw.x_val.double().numpy() - mean) / std, atol=1e-4)


def test_min_max_maps_the_train_split_onto_0_1():
    splits = load_data(DataConfig(name="wine", scaling="min-max"))
    train = splits.x_train.numpy()
    np.testing.assert_allclose(train.min(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(train.max(axis=0), 1.0, atol=1e-6)
    assert train.min() >= 0.0 and train.max() <= 1.0 + 1e-6


# ---------------------------------------------------------------------------------------------
# User files


def write_csv(path, header, rows):
    path.write_text("\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n")


def test_csv_file_with_a_string_target(tmp_path):
    rng = np.random.default_rng(0)
    names = np.array(["dog", "cat", "eel"])
    labels = names[np.arange(60) % 3]
    x = rng.normal(size=(60, 2)).round(3).astype(np.float32)
    path = tmp_path / "animals.csv"
    write_csv(path, ["a", "species", "b"], [[r[0], s, r[1]] for r, s in zip(x, labels)])
    splits = load_data(DataConfig(name="file", path=str(path), target="species",
                                  scaling="none"))
    assert splits.input_shape == (2,) and splits.n_classes == 3
    assert len(all_labels(splits)) == 60
    # Codes follow the sorted label names (cat 0, dog 1, eel 2), row by row.
    code = {name: i for i, name in enumerate(sorted(set(labels)))}
    label_of = {r.tobytes(): code[s] for r, s in zip(x, labels)}
    rows, labels_out = all_rows(splits), all_labels(splits)
    assert all(label_of[r.tobytes()] == t for r, t in zip(rows, labels_out))


def test_npz_file(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3, 4, 4)).astype(np.float32)
    y = np.arange(50) % 2
    path = tmp_path / "images.npz"
    np.savez(path, features=x, label=y)
    splits = load_data(DataConfig(name="file", path=str(path), target="label", scaling="none"))
    assert splits.input_shape == (3, 4, 4) and splits.is_image
    assert splits.n_classes == 2
    np.testing.assert_array_equal(sorted_rows(all_rows(splits)),
                                  sorted_rows(x.reshape(50, -1)))


def test_csv_without_the_target_column_names_file_and_column(tmp_path):
    path = tmp_path / "data.csv"
    write_csv(path, ["a", "b"], [[1, 2], [3, 4]])
    with pytest.raises(DataError) as info:
        load_data(DataConfig(name="file", path=str(path), target="label"))
    assert str(path) in str(info.value) and "'label'" in str(info.value)


def test_npz_without_the_target_array_names_file_and_array(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((4, 2)), y=np.zeros(4))
    with pytest.raises(DataError) as info:
        load_data(DataConfig(name="file", path=str(path), target="label"))
    assert str(path) in str(info.value) and "'label'" in str(info.value)


def test_csv_with_a_non_numeric_feature_names_file_and_column(tmp_path):
    path = tmp_path / "data.csv"
    write_csv(path, ["height", "colour", "label"],
              [[1.0, 0.5, "x"], [2.0, "red", "y"], [3.0, 0.1, "x"]])
    with pytest.raises(DataError) as info:
        load_data(DataConfig(name="file", path=str(path), target="label"))
    message = str(info.value)
    assert str(path) in message and "colour" in message and "red" in message


def test_csv_with_a_short_line_names_file_and_line(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b,label\n1,2,x\n\n3,y\n")  # a blank line is skipped; line 4 is short
    with pytest.raises(DataError) as info:
        load_data(DataConfig(name="file", path=str(path), target="label"))
    assert str(path) in str(info.value) and "line 4" in str(info.value)


# ---------------------------------------------------------------------------------------------
# torchvision sets: never downloaded in tests


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None,
                    reason="torchvision is installed")
def test_vision_set_without_torchvision_says_how_to_install_it():
    with pytest.raises(DataError, match=r"trickopt\[vision\]"):
        load_data(DataConfig(name="mnist"))


def test_vision_set_pools_train_and_test_and_resplits(monkeypatch, tmp_path):
    torchvision = pytest.importorskip("torchvision")

    class FakeMNIST:  # torchvision's attributes, no download
        def __init__(self, root, train, download):
            n = 60 if train else 40
            self.data = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8)
            self.targets = torch.arange(n) % 10

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    splits = load_data(DataConfig(name="mnist", root=str(tmp_path), scaling="none"))
    assert splits.input_shape == (1, 28, 28) and splits.n_classes == 10
    assert len(all_labels(splits)) == 100
    assert float(splits.x_train.max()) <= 1.0  # pixels divided by 255
