"""Choosing points to add to a dataset from their predicted value (SPEC §4).

A point's usefulness depends on the size of the dataset it joins: the law
predicts ψ_n(z) = c·n^(−α) for a dataset of n points, so candidates are
ranked by that prediction at the *current* size n. Points with a large α
lead at small n, points with a small α keep their value at large n, so the
ranking changes with n.

Class balance (the paper selects 100 points, class-balanced): each class gets
an equal share ⌊m / C⌋ of the m slots; the m mod C remaining slots, and any
slots a class cannot fill because it has too few eligible candidates, go to
the best remaining candidates of the other classes. Ties in value are broken
by pool order (then point id), so a selection is deterministic.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..laws.result import FittedScalingLaws

__all__ = ["select_points", "select_top"]


def _label_array(labels: Any, ids: np.ndarray) -> np.ndarray:
    if isinstance(labels, pd.Series):
        pos = labels.index.get_indexer(np.asarray(ids, dtype=object))
        if (pos < 0).any():
            missing = np.asarray(ids, dtype=object)[pos < 0]
            raise ConfigError(f"labels lack {missing.size} point id(s), e.g. {missing[:3].tolist()}")
        return labels.to_numpy()[pos]
    if isinstance(labels, Mapping):
        try:
            return np.array([labels[p] for p in ids.tolist()], dtype=object)
        except KeyError as exc:
            raise ConfigError(f"labels lack point id {exc.args[0]!r}") from None
    arr = np.asarray(labels)
    if arr.shape != ids.shape:
        raise ConfigError(
            f"labels has shape {arr.shape}; expected ({ids.size},), one per point of the laws"
        )
    return arr


def select_top(
    point_ids: Any,
    scores: Any,
    m: int,
    *,
    labels: Any = None,
    balanced: bool = True,
) -> np.ndarray:
    """Positions of the m best ``scores`` (NaN never chosen), class-balanced when asked.

    The generic core of :func:`select_points`: ``scores`` can be any per-point
    number (ψ at a size, a Shapley value, random numbers for a random
    balanced draw). Returns positions into ``point_ids``, best first.
    """
    ids = np.asarray(point_ids, dtype=object)
    sc = np.asarray(scores, dtype=np.float64)
    if sc.shape != ids.shape:
        raise ConfigError(f"scores has shape {sc.shape}; expected {ids.shape}")
    m = int(m)
    if m < 1:
        raise ConfigError(f"m={m} must be at least 1")
    pos = np.flatnonzero(np.isfinite(sc))
    if pos.size < m:
        raise ConfigError(
            f"m={m} exceeds the {pos.size} candidate(s) with a finite value (of {ids.size})"
        )
    order = pos[np.lexsort((pos, -sc[pos]))]
    if labels is None or not balanced:
        return order[:m]
    lab = _label_array(labels, ids)[order]
    codes, classes = pd.factorize(pd.Series(lab, dtype=object), sort=True)
    quota = m // len(classes)
    taken = np.zeros(order.size, dtype=bool)
    for j in range(len(classes)):
        taken[np.flatnonzero(codes == j)[:quota]] = True
    # remaining slots (m mod C, and shortfalls of small classes): best of the rest
    rest = np.flatnonzero(~taken)[: m - int(taken.sum())]
    taken[rest] = True
    return order[taken]


def select_points(
    laws: FittedScalingLaws,
    n_current: Any,
    m: int,
    *,
    labels: Any = None,
    balanced: bool = True,
    exclude: Iterable[Any] | None = None,
) -> pd.DataFrame:
    """The m points with the highest predicted ψ at dataset size ``n_current``.

    Parameters
    ----------
    laws : FittedScalingLaws
        Laws of the candidates.
    n_current : float
        Size of the dataset the points will join.
    m : int
        How many to choose.
    labels : array-like aligned with ``laws.point_ids``, Series or mapping by point id, optional
        Class labels; needed for balance and reported in the output.
    balanced : bool, default=True
        Equal share per class (see module docstring). Has no effect without
        ``labels`` (nothing to balance on); pass ``balanced=False`` for
        regression to make that explicit.
    exclude : iterable of point ids, optional
        Points that must not be chosen (e.g. already in the dataset).

    Returns
    -------
    DataFrame
        ``point_id``, ``predicted_value``, ``rank`` (1 = best, by value among
        the chosen), ``label`` (None without labels), ``n_current``.

    Raises
    ------
    ConfigError
        If m < 1 or fewer than m candidates have a finite prediction.
    """
    if not isinstance(laws, FittedScalingLaws):
        raise ConfigError(f"laws must be a FittedScalingLaws; got {type(laws).__name__}")
    n = float(n_current)
    if not np.isfinite(n) or n <= 0:
        raise ConfigError(f"n_current={n_current!r} must be a positive size")
    pred = laws.predict(n, warn_extrapolation=False)[:, 0]
    if exclude is not None:
        ex = pd.Index(np.asarray(list(exclude), dtype=object)).unique()
        pred = np.where(ex.get_indexer(np.asarray(laws.point_ids, dtype=object)) >= 0, np.nan, pred)
    lab_all = None if labels is None else _label_array(labels, laws.point_ids)
    try:
        chosen = select_top(laws.point_ids, pred, m, labels=lab_all, balanced=balanced)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (after exclusions)") from None
    return pd.DataFrame(
        {
            "point_id": laws.point_ids[chosen],
            "predicted_value": pred[chosen],
            "rank": np.arange(1, chosen.size + 1),
            "label": None if lab_all is None else lab_all[chosen],
            "n_current": n,
        }
    )
