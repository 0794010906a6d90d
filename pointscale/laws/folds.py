"""Which samples are held out: K folds and two halves of each point's samples, by a keyed hash.

Every split is made within each point and is independent of row order: a
point's samples are ranked by a keyed hash of their ``sample_id`` (or of
``(point_id, k, delta)`` when there is no id) mixed with the seed, and the
rank decides the fold. Used by the automatic selection (K-fold
cross-validation, :mod:`pointscale.laws.auto`), the law diagnostic (split
halves, :mod:`pointscale.laws.diagnostic`) and the fair shrunk mean's choice
of its noise variance (:mod:`pointscale.laws.shrunk_mean`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..seeding import combine_ids, mix64

__all__ = ["base_fold_ids", "fold_ids", "half_ids", "holdout_mask", "n_folds"]


def _keyed(ids: np.ndarray, seed: int, purpose: str) -> np.ndarray:
    """A keyed 63-bit hash of integer ids (already hashes of identities) mixed with the seed, vectorised."""
    salt = np.uint64(combine_ids((purpose, int(seed))) & 0x7FFFFFFFFFFFFFFF)
    ids = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    return (mix64(ids ^ mix64(np.array([salt], dtype=np.uint64))[0]) >> np.uint64(1)).astype(np.int64)


def _keys(samples: pd.DataFrame, seed: int, purpose: str) -> np.ndarray:
    """A keyed 63-bit hash of every row's identity (row order never matters)."""
    if "sample_id" in samples.columns:
        return _keyed(samples["sample_id"].to_numpy(dtype=np.int64), seed, purpose)
    return np.array([combine_ids((purpose, seed, str(p), repr(float(k)), repr(float(d))))
                     for p, k, d in zip(samples["point_id"].tolist(), samples["k"].tolist(),
                                        samples["delta"].tolist())], dtype=np.int64)


def _ranks(samples: pd.DataFrame, seed: int, purpose: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: its rank (0-based) among its point's samples by keyed hash, the point's sample
    count, and a per-point offset in [0, 2^31) (so small points do not all start at fold 0)."""
    keys = _keys(samples, seed, purpose)
    frame = pd.DataFrame({"p": samples["point_id"].to_numpy(), "key": keys})
    rank = frame.groupby("p", sort=False)["key"].rank(method="first").to_numpy(dtype=np.int64) - 1
    count = frame.groupby("p", sort=False)["key"].transform("size").to_numpy(dtype=np.int64)
    first = frame.groupby("p", sort=False)["key"].transform("min").to_numpy(dtype=np.int64)
    return rank, count, (first >> np.int64(32)) & np.int64(0x7FFFFFFF)


def n_folds(samples: pd.DataFrame, folds: int = 5, *, min_samples: int = 3) -> int:
    """The number of folds used: ``folds``, fewer when the typical point has fewer samples (at least 2)."""
    if int(folds) < 2:
        raise ConfigError(f"folds={folds} must be at least 2")
    if samples.empty:
        return int(folds)
    counts = samples.groupby("point_id", sort=False).size().to_numpy()
    counts = counts[counts >= min_samples]
    typical = int(np.median(counts)) if counts.size else int(folds)
    return int(max(2, min(int(folds), typical)))


def fold_ids(samples: pd.DataFrame, folds: int, *, min_samples: int = 3, seed: int = 0,
             by_base: bool = False) -> np.ndarray:
    """Fold of every row (0..folds-1), -1 for points with fewer than ``min_samples`` samples.

    A point's samples go round the folds in keyed-hash order from a per-point
    starting fold, so each of its samples is held out exactly once and its
    folds differ in size by at most one.

    ``by_base`` (and the rows have a ``base_id``): the samples measured on
    one base subset share a fold (:func:`base_fold_ids`).
    """
    if by_base and "base_id" in samples.columns:
        return base_fold_ids(samples, folds, min_samples=min_samples, seed=seed)
    rank, count, offset = _ranks(samples, seed, "fold")
    fold = (rank + offset) % int(folds)
    return np.where(count >= min_samples, fold, -1).astype(np.int64)


def base_fold_ids(samples: pd.DataFrame, folds: int, *, min_samples: int = 3, seed: int = 0) -> np.ndarray:
    """Fold of every row with all the samples of one base subset (``base_id``) in one fold.

    The points sampled on one base share it: their Δ move together (the
    control variate's lever), and an estimator fitted across points (the
    amortized model) scored on one of them while trained on the others has
    seen that base's draw. Held out together, no base is on both sides.

    Bases go round the folds in keyed-hash order (fold sizes in bases differ
    by at most one); a point's samples then fall in its folds unevenly. A
    point's rows in a fold are held out only if the other folds keep at least
    ``min_samples - 1`` of its samples (what the per-point folds keep at the
    least), else they stay in training (-1), so every candidate is fitted
    for every point it is scored on; points with fewer than ``min_samples``
    samples get -1 throughout.
    """
    base = samples["base_id"].to_numpy(dtype=np.int64)
    unique, inverse = np.unique(base, return_inverse=True)
    keys = _keyed(unique, seed, "fold-base")
    rank = np.empty(unique.size, dtype=np.int64)
    rank[np.argsort(keys, kind="stable")] = np.arange(unique.size, dtype=np.int64)
    fold = (rank % int(folds))[inverse]
    frame = pd.DataFrame({"p": samples["point_id"].to_numpy(), "f": fold})
    count = frame.groupby("p", sort=False)["f"].transform("size").to_numpy(dtype=np.int64)
    in_fold = frame.groupby(["p", "f"], sort=False)["f"].transform("size").to_numpy(dtype=np.int64)
    keep = (count >= min_samples) & (count - in_fold >= min_samples - 1)
    return np.where(keep, fold, -1).astype(np.int64)


def half_ids(samples: pd.DataFrame, *, seed: int = 0) -> np.ndarray:
    """0 or 1 for every row: two independent halves of each point's samples (sizes differ by at most one)."""
    rank, _, offset = _ranks(samples, seed, "half")
    return ((rank + offset) % 2).astype(np.int64)


def holdout_mask(samples: pd.DataFrame, fraction: float, *, min_samples: int = 3, seed: int = 0) -> np.ndarray:
    """Which rows to hold out: ``fraction`` of each point's samples (at least one).

    The single 20 % split the selection used before K-fold cross-validation
    (kept for the rule study in ``benchmarks/estimators.py``). Points with
    fewer than ``min_samples`` samples keep all of them.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"holdout_fraction={fraction} must lie in (0, 1)")
    rank, count, _ = _ranks(samples, seed, "holdout")
    n_out = np.where(count >= min_samples, np.maximum(1, np.round(fraction * count)), 0)
    return rank + 1 <= n_out
