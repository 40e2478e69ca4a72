"""Data sets as in-memory tensors, split stratified and seeded into train / val / test.

Everything here fits in memory, so the trainer moves it to the device once and batches by
index (no DataLoader). Named sets: `digits` (default, 1x8x8 images), `breast_cancer`, `wine`
(all shipped with scikit-learn, no download), `synthetic` (make_classification, for scale), a
user `file` (CSV or .npz), and `mnist`, `fashion_mnist`, `cifar10` through torchvision (the
`vision` extra; downloaded to `root`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from trickopt.tricks.scaling import scale_splits

DATASETS = ("digits", "breast_cancer", "wine", "synthetic", "file",
            "mnist", "fashion_mnist", "cifar10")


@dataclass(frozen=True)
class Splits:
    """Train / val / test tensors on the CPU (float32 inputs, int64 labels)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    input_shape: tuple[int, ...]  # one sample's shape: (64,) flat or (1, 8, 8) image

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
    x, y, shape = _load_arrays(config)
    if config.name == "file":
        _check_arrays(Path(config.path), x, y, config)
    y = _encode_labels(y)
    seed = config.split_seed
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=config.test_fraction, stratify=y, random_state=seed)
    val_share = config.val_fraction / (1.0 - config.test_fraction)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_share, stratify=y_rest, random_state=seed)
    flat = [a.reshape(len(a), -1) for a in (x_train, x_val, x_test)]
    x_train, x_val, x_test = scale_splits(config.scaling, *flat)

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(-1, *shape)

    return Splits(tensor(x_train), torch.from_numpy(y_train), tensor(x_val),
                  torch.from_numpy(y_val), tensor(x_test), torch.from_numpy(y_test),
                  n_classes=int(y.max()) + 1, input_shape=shape)


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


def _encode_labels(y: np.ndarray) -> np.ndarray:
    _, codes = np.unique(y, return_inverse=True)
    return codes.astype(np.int64).reshape(-1)


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
