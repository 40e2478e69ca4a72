"""Data sets as in-memory tensors, split stratified and seeded into train / val / test.

Everything here fits in memory, so the trainer moves it to the device once and batches by
index (no DataLoader). Named sets: `digits` (1x8x8 images), `breast_cancer`, `wine` (all
shipped with scikit-learn, no download), `mnist1d` (sequences of length 40, generated offline
by the `mnist1d` package; its own test split kept), `synthetic` (make_classification, for
scale), a user `file` (CSV or .npz), and `mnist`, `fashion_mnist`, `cifar10` through
torchvision (the `vision` extra; downloaded to `root`). `splits_from_arrays` gives your own
arrays the same splits.
"""

from __future__ import annotations

import csv
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trickopt.factories import resolve_factory
from trickopt.tricks.scaling import scale_splits

DATASETS = ("digits", "mnist1d", "breast_cancer", "wine", "synthetic", "file",
            "mnist", "fashion_mnist", "cifar10")


TASKS = ("classification", "regression")


@dataclass(frozen=True)
class Splits:
    """Train / val / test tensors on the CPU: float32 inputs; int64 class labels for
    classification, float32 targets of shape (rows, n_outputs) for regression."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int  # classes, or the number of regression outputs: the model's output width
    input_shape: tuple[int, ...]  # one sample's shape: (64,) flat or (1, 8, 8) image
    task: str = "classification"

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3

    def train_val(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Train and val merged: the seed's "merge the splits" trick for the final fit."""
        return torch.cat([self.x_train, self.x_val]), torch.cat([self.y_train, self.y_val])


class DataError(ValueError):
    """A data file that cannot be used; the message names the file and what is wrong."""


def load_data(config) -> Splits:
    """Load the data set named by a `DataConfig`, split it and scale it (fit on train only).

    Example:
        >>> from trickopt.config import DataConfig
        >>> splits = load_data(DataConfig(name="digits"))
        >>> splits.input_shape, splits.n_classes
        ((1, 8, 8), 10)
    """
    if config.factory is not None:
        return _from_factory(config)
    if config.name == "mnist1d":
        (x, y), test = _load_mnist1d(Path(config.root).expanduser())
        return splits_from_arrays(x, y, config, test=test, shape=(1, x.shape[1]))
    x, y, shape = _load_arrays(config)
    if config.name == "file":
        _check_arrays(Path(config.path), x, y, config)
    return splits_from_arrays(x, y, config, shape=shape)


def splits_from_arrays(x, y, config, *, task: str = "classification", test=None,
                       shape: tuple[int, ...] | None = None) -> Splits:
    """trickopt's splits of numpy arrays, as the built-in data sets get them.

    Seeded by `config.split_seed` (a `DataConfig`), stratified by class for classification,
    into `config.val_fraction` and `config.test_fraction` of the rows; the scaling
    (`config.scaling`) is fitted on the training split only. With `test=(x_test, y_test)` that
    test split is kept as it is (a data set's canonical test split) and val is carved from
    (x, y). `shape` is one sample's shape (default: `x.shape[1:]`).

    Example:
        >>> import numpy as np
        >>> from trickopt.config import DataConfig
        >>> rng = np.random.default_rng(0)
        >>> s = splits_from_arrays(rng.normal(size=(100, 3)), rng.normal(size=100),
        ...                        DataConfig(), task="regression")
        >>> len(s.y_train), len(s.y_val), len(s.y_test), s.n_classes
        (60, 20, 20, 1)
    """
    from sklearn.model_selection import train_test_split  # 2 s; a spawned worker never splits

    if task not in TASKS:
        raise DataError(f"task: must be one of {TASKS}; got {task!r}")
    x, y = np.asarray(x), np.asarray(y)
    shape = tuple(shape) if shape is not None else tuple(x.shape[1:])
    classify = task == "classification"
    seed = config.split_seed
    if classify:  # the same codes for every split, whatever classes each one holds
        labels = np.concatenate([y, np.asarray(test[1])]) if test is not None else y
        classes = np.unique(labels)
        encode = lambda v: np.searchsorted(classes, np.asarray(v)).astype(np.int64)  # noqa: E731
    else:
        encode = lambda v: np.asarray(v, dtype=np.float32).reshape(len(v), -1)  # noqa: E731
    if test is None:
        x_rest, x_test, y_rest, y_test = train_test_split(
            x, y, test_size=config.test_fraction, stratify=y if classify else None,
            random_state=seed)
        val_share = config.val_fraction / (1.0 - config.test_fraction)
    else:
        (x_rest, y_rest), (x_test, y_test) = (x, y), (np.asarray(test[0]), np.asarray(test[1]))
        val_share = config.val_fraction
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_share, stratify=y_rest if classify else None,
        random_state=seed)
    flat = [a.reshape(len(a), -1) for a in (x_train, x_val, x_test)]
    x_train, x_val, x_test = scale_splits(config.scaling, *flat)

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(-1, *shape)

    ys = [torch.from_numpy(encode(v)) for v in (y_train, y_val, y_test)]
    width = len(classes) if classify else ys[0].shape[1]
    return Splits(tensor(x_train), ys[0], tensor(x_val), ys[1], tensor(x_test), ys[2],
                  n_classes=int(width), input_shape=shape, task=task)


def _from_factory(config) -> Splits:
    """Call the user's data factory with the data section and check what it returns."""
    load = resolve_factory(config.factory, "data.factory")
    where = f"data.factory {config.factory}"
    try:
        result = load(config)
    except Exception as exc:  # noqa: BLE001 - the user's code: its error, in one line
        raise DataError(f"{where} raised {type(exc).__name__}: {exc}") from None
    if isinstance(result, tuple) and len(result) == 2:
        x, y = (np.asarray(a.cpu() if isinstance(a, torch.Tensor) else a) for a in result)
        task = config.task or ("classification" if y.dtype.kind in "biuUSO" else "regression")
        if x.dtype.kind not in "biuf" or len(x) != len(y) or len(x) < 10:
            raise DataError(f"{where}: returned x of {x.dtype} {x.shape} and y of {y.shape}; "
                            "expected numeric x and y with the same number of rows (>= 10)")
        return splits_from_arrays(x, y, config, task=task)
    if not isinstance(result, Splits):
        raise DataError(f"{where}: returned {type(result).__name__}; expected "
                        "trickopt.data.Splits (build it with trickopt.data.splits_from_arrays) "
                        "or a tuple (x, y) of arrays")
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        value = getattr(result, name)
        if not isinstance(value, torch.Tensor) or len(value) == 0:
            what = "empty" if isinstance(value, torch.Tensor) else type(value).__name__
            raise DataError(f"{where}: Splits.{name} is {what}; every split needs a tensor "
                            "with at least one row")
    if config.task is not None and result.task != config.task:
        raise DataError(f"data.task: is {config.task!r}, but {where} returned {result.task!r} "
                        "splits")
    return result


def _load_mnist1d(root: Path) -> tuple[tuple[np.ndarray, np.ndarray],
                                        tuple[np.ndarray, np.ndarray]]:
    """MNIST-1D (Greydanus 2020) generated offline by the `mnist1d` package with its default
    arguments: 4,000 train and 1,000 test sequences of length 40, 10 classes. Generating it
    takes seconds (and importing scipy): it is kept in `root` after the first time."""
    from importlib.metadata import version

    cache = root / f"mnist1d-{version('mnist1d')}.npz"
    try:
        with np.load(cache, allow_pickle=False) as saved:
            return (saved["x"], saved["y"]), (saved["x_test"], saved["y_test"])
    except (OSError, ValueError, KeyError, EOFError):
        pass  # not made yet, or unreadable: make it again
    data = _make_mnist1d()
    arrays = {key: data[key] for key in ("x", "y", "x_test", "y_test")}
    try:  # written whole or not at all: a half-written cache would be read next time
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, suffix=".npz", delete=False) as handle:
            np.savez(handle, **arrays)
        os.replace(handle.name, cache)
    except OSError:
        pass  # a read-only home: generate it each time
    return (arrays["x"], arrays["y"]), (arrays["x_test"], arrays["y_test"])


def _make_mnist1d() -> dict:
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset seeds numpy's and Python's global generators (with its own fixed seed, 42,
    # so the data set is always the same); nobody else's random state should change with it.
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        return make_dataset(get_dataset_args())
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def _check_arrays(path: Path, x: np.ndarray, y: np.ndarray, config) -> None:
    """Refuse, before any trial, data that every trial would fail on (or silently misuse)."""
    if x.ndim < 2 or x.shape[1] == 0 or x[0].size == 0:
        raise DataError(f"{path}: no feature columns besides the target {config.target!r}; "
                        "the features need at least one column")
    if not np.isfinite(x).all():
        row, column = np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0]
        raise DataError(f"{path}: {int((~np.isfinite(x)).sum())} feature values are NaN or "
                        f"infinite (the first in row {row + 1}, feature {column + 1}); fill or "
                        "drop them first")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise DataError(f"{path}: the target {config.target!r} has a single class; a "
                        "classifier needs at least 2")
    # Each class must reach train, val and test in the stratified split.
    smallest = int(counts.min())
    if smallest < 3 or len(y) * min(config.val_fraction, config.test_fraction) < len(classes):
        rare = classes[counts.argmin()].item()  # a plain value: np.str_('7') reads badly
        raise DataError(f"{path}: too few rows to split: {len(y)} rows, class {rare!r} has "
                        f"{smallest}; every class needs at least 3 rows, and val and test at "
                        "least one row per class")


def _load_arrays(config) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    from sklearn import datasets

    name = config.name
    if name == "digits":
        bunch = datasets.load_digits()
        return bunch.images.astype(np.float32), bunch.target, (1, 8, 8)
    if name in ("breast_cancer", "wine"):
        bunch = getattr(datasets, f"load_{name}")()
        return bunch.data.astype(np.float32), bunch.target, (bunch.data.shape[1],)
    if name == "synthetic":
        x, y = datasets.make_classification(
            n_samples=config.n_samples, n_features=config.n_features,
            n_informative=max(2, config.n_features // 2), n_classes=config.n_classes,
            random_state=config.split_seed)
        return x.astype(np.float32), y, (config.n_features,)
    if name == "file":
        return _load_file(Path(config.path).expanduser(), config.target)
    if name in ("mnist", "fashion_mnist", "cifar10"):
        return _load_vision(name, Path(config.root).expanduser())
    raise ValueError(f"unknown data set {name!r}; expected one of: {', '.join(DATASETS)}")


def _load_file(path: Path, target: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    if path.suffix == ".npz":
        return _load_npz(path, target)
    if path.suffix in (".csv", ".txt"):
        return _load_csv(path, target)
    raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .npz")


def _load_npz(path: Path, target: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = dict(archive)
    except ValueError as exc:  # object arrays: loading them would need pickle, never allowed
        raise DataError(f"{path}: holds an array numpy can only load with pickle ({exc}); "
                        "save plain numeric arrays") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if target not in arrays:
        raise DataError(f"{path}: no array named {target!r} (the target); "
                        f"found: {', '.join(arrays)}")
    y = arrays.pop(target)
    if len(arrays) != 1:
        raise DataError(f"{path}: besides the target {target!r} the file must hold exactly one "
                        f"feature array; found: {', '.join(arrays) or 'none'}")
    (x,) = arrays.values()
    if x.dtype.kind not in "biuf" or x.ndim < 2:
        raise DataError(f"{path}: the features must be a numeric array of shape (rows, "
                        f"features...); got {x.dtype} of shape {x.shape}")
    if len(x) != len(y):
        raise DataError(f"{path}: features have {len(x)} rows but the target has {len(y)}")
    return x.astype(np.float32), y, tuple(x.shape[1:])


def _load_csv(path: Path, target: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            rows = [(reader.line_num, row) for row in reader if row]  # blank lines skipped
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: is not UTF-8 text (byte {exc.start}); save it as UTF-8"
                        ) from None
    if not rows:
        raise DataError(f"{path}: the file is empty")
    header, body = rows[0][1], rows[1:]
    if not body:
        raise DataError(f"{path}: a header and no rows")
    if target not in header:
        raise DataError(f"{path}: no column named {target!r} (the target); "
                        f"columns: {', '.join(header)}")
    column = header.index(target)
    features = [i for i in range(len(header)) if i != column]
    x = np.empty((len(body), len(features)), dtype=np.float32)
    for r, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise DataError(f"{path}: line {line} has {len(row)} fields; the header has "
                            f"{len(header)}")
        for c, i in enumerate(features):
            try:
                x[r, c] = float(row[i])
            except ValueError:
                raise DataError(f"{path}: column {header[i]!r} must be numeric (only the "
                                f"target may hold text); got {row[i]!r} on line {line}") from None
    labels = np.array([row[column] for _, row in body])
    return x, labels, (x.shape[1],)


def _load_vision(name: str, root: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    try:
        import torchvision
    except ImportError:
        raise DataError(f"data set {name!r} needs torchvision: pip install 'trickopt[vision]'"
                        ) from None
    cls = {"mnist": torchvision.datasets.MNIST,
           "fashion_mnist": torchvision.datasets.FashionMNIST,
           "cifar10": torchvision.datasets.CIFAR10}[name]
    parts = [cls(str(root), train=train, download=True) for train in (True, False)]
    # Train and test are pooled and re-split so every data set follows the same 60/20/20 rule.
    x = np.concatenate([np.asarray(p.data) for p in parts]).astype(np.float32) / 255.0
    y = np.concatenate([np.asarray(p.targets) for p in parts])
    if x.ndim == 3:  # (N, H, W) grey images
        x = x[:, None]
    else:  # CIFAR: (N, H, W, C)
        x = x.transpose(0, 3, 1, 2)
    return x, y, tuple(x.shape[1:])
