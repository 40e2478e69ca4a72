"""Input scaling: min-max and z-score, fitted on the training split only.

Unlike the other trick modules this one uses scikit-learn: its `MinMaxScaler` and
`StandardScaler` are the well-kept implementation, so we only choose and apply them.
Inputs are 2-D, (n_samples, n_features); image-shaped data is flattened by the caller
before scaling and reshaped after. A constant feature has no spread to divide by: as in
sklearn, it is only shifted (0 on the training split), never turned into nan.

scikit-learn is imported when a scaler is made, not with this module: it costs 2 s (scipy's
statistics come with it), and a study's spawned workers, handed the coordinator's scaled
splits, never scale anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

SCALINGS = ("none", "min-max", "z-score")
_ALIASES = {
    "none": "none",
    "min-max": "min-max", "minmax": "min-max", "min_max": "min-max",
    "z-score": "z-score", "zscore": "z-score", "z_score": "z-score", "standard": "z-score",
}


def canonical_scaling(kind: str) -> str:
    """Map an accepted spelling ("minmax", "standard", ...) to its name in `SCALINGS`.

    Example:
        >>> canonical_scaling("standard")
        'z-score'
    """
    name = kind.strip().lower() if isinstance(kind, str) else None
    if name not in _ALIASES:
        raise ValueError(
            f"Unknown scaling {kind!r}; allowed: {', '.join(SCALINGS)} "
            f"(aliases: {', '.join(a for a in _ALIASES if a not in SCALINGS)})."
        )
    return _ALIASES[name]


def create_scaler(kind: str) -> MinMaxScaler | StandardScaler | None:
    """Return an unfitted sklearn scaler for `kind`, or None for "none".

    "min-max" maps each training feature to [0, 1]: (x - min) / (max - min).
    "z-score" standardises with the training mean and population std: (x - mean) / std.

    Example:
        >>> create_scaler("min-max")
        MinMaxScaler()
    """
    name = canonical_scaling(kind)
    if name == "none":
        return None
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    return MinMaxScaler() if name == "min-max" else StandardScaler()


def _as_2d_float(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(
            f"{what} must be 2-D (n_samples, n_features); got shape {array.shape}. "
            "Flatten image-shaped data before scaling and reshape it after."
        )
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    return array


def scale_splits(kind: str, train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Fit a scaler on `train` only and apply it to `train` and every array in `others`.

    Statistics come from the training split alone, so validation and test values may fall
    outside [0, 1] (min-max) or have mean != 0 (z-score).

    Args:
        kind: One of `SCALINGS` or an alias ("minmax", "zscore", "standard", ...).
        train: Training inputs, shape (n_samples, n_features).
        *others: Further splits (validation, test) with the same n_features.

    Returns:
        The scaled `(train, *others)` as float32 arrays; for "none", the inputs as float32.

    Example:
        >>> train, test = scale_splits("min-max", np.array([[0.0], [4.0]]), np.array([[6.0]]))
        >>> train.ravel().tolist(), test.ravel().tolist()
        ([0.0, 1.0], [1.5])
    """
    scaler = create_scaler(kind)
    train = _as_2d_float(train, "train")
    splits = [_as_2d_float(other, f"others[{i}]") for i, other in enumerate(others)]
    for i, split in enumerate(splits):
        if split.shape[1] != train.shape[1]:
            raise ValueError(
                f"others[{i}] has {split.shape[1]} features but train has {train.shape[1]}."
            )
    arrays = [train, *splits]
    if scaler is not None:
        scaler.fit(train)
        arrays = [scaler.transform(a) for a in arrays]
    return tuple(a.astype(np.float32, copy=False) for a in arrays)
