"""How close value estimates are to ground truth (SPEC §4, the paper's Sec. 4.3).

For estimates ê and ground truth t over the same points (pairs with a NaN on
either side are dropped, and counted):

* explained variance  1 − mean((ê − t)²) / var(t), with var the population
  variance (ddof = 0) so that ê = mean(t) scores exactly 0 and a perfect
  estimate 1; it is negative for estimates worse than the constant mean;
* Pearson correlation; Spearman rank correlation (average ranks for ties);
* sign agreement: the fraction of points with sign(ê) = sign(t).

Correlations are NaN when either side is constant (undefined, not 0).

R² of a scaling law against an empirical ψ (SPEC §6)
----------------------------------------------------
For a points × sizes array of empirical means T (ground truth) and law
predictions P:

* **mean per-size R²** (the paper's "overall R²"):
  ``mean_j [1 − Σ_i (T_ij − P_ij)² / Σ_i (T_ij − mean_i T_ij)²]``, exactly
  ``sklearn.metrics.r2_score(T, P)`` (multi-output, uniform average). Each
  size is judged against the spread of ψ *at that size*;
* **pooled R²**: ``1 − Σ_ij (T − P)² / Σ_ij (T − mean(T))²`` over all cells.
  ψ shrinks ~k^(−α) across sizes, so the between-size spread inflates the
  denominator: pooled R² is higher than the mean per-size R² whenever sizes
  differ in scale, and the two must not be compared with each other;
* **noise ceilings**: T_ij is a mean of n_ij noisy samples with standard
  error se_ij. Even the exact ψ scores only ``1 − mean_i se_ij² / var_i T_ij``
  at size j (in expectation); the mean-per-size ceiling is the mean of these,
  the pooled ceiling ``1 − mean se² / var T``. A law fitted to T itself can
  exceed the ceiling (it fits part of the noise); an out-of-sample check --
  fit on one half of the samples, score against the means of the other half
  (whose ceiling uses that half's se) -- cannot, in expectation.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ..errors import DataError

__all__ = ["evaluate_estimates", "score_pair", "law_r2", "split_halves", "METRICS"]

METRICS = ("explained_variance", "pearson", "spearman", "sign_agreement")


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    if den == 0.0:
        return float("nan")
    return float(np.clip((a * b).sum() / den, -1.0, 1.0))


def score_pair(estimate: Any, truth: Any) -> dict[str, float]:
    """The metrics of the module docstring for two aligned 1-D arrays."""
    e = np.asarray(estimate, dtype=np.float64).ravel()
    t = np.asarray(truth, dtype=np.float64).ravel()
    if e.shape != t.shape:
        raise DataError(f"estimate has {e.size} values, truth {t.size}; they must align")
    ok = np.isfinite(e) & np.isfinite(t)
    e, t = e[ok], t[ok]
    n = int(e.size)
    out: dict[str, float] = {"n_points": n, "n_dropped": int((~ok).sum())}
    if n == 0:
        out.update({m: float("nan") for m in METRICS}, mse=float("nan"))
        return out
    mse = float(np.mean((e - t) ** 2))
    var = float(np.var(t))
    out["explained_variance"] = 1.0 - mse / var if var > 0 else float("nan")
    out["pearson"] = _corr(e, t)
    out["spearman"] = _corr(rankdata(e), rankdata(t))
    out["sign_agreement"] = float(np.mean(np.sign(e) == np.sign(t)))
    out["mse"] = mse
    return out


def _as_frame(x: Any, what: str) -> pd.DataFrame:
    if isinstance(x, pd.Series):
        return x.to_frame(name=x.name if x.name is not None else "value")
    if isinstance(x, pd.DataFrame):
        return x
    if hasattr(x, "to_series"):  # ValueEstimate
        s = x.to_series()
        return s.to_frame(name="shapley")
    raise DataError(f"{what} must be a Series or DataFrame indexed by point_id; got {type(x).__name__}")


def _key(c: Any) -> Any:
    # size columns may be ints in one table and floats or strings in another
    try:
        f = float(c)
    except (TypeError, ValueError):
        return str(c)
    return int(f) if f.is_integer() else f


def evaluate_estimates(estimates: Any, truth: Any) -> pd.DataFrame:
    """Compare estimates with ground truth, per target (size k or ``"shapley"``).

    Parameters
    ----------
    estimates : Series, DataFrame, ValueEstimate, or mapping of name to one of those
        Indexed by point id. DataFrame columns name the targets: sizes k (for
        ψ_k) and/or ``"shapley"``. A Series is a single target named by its
        name. A mapping compares several methods (e.g. ``{"mle": ..., "monte_carlo": ...}``).
    truth : Series or DataFrame
        Same layout as one estimate. Only targets present on both sides and
        points present on both sides are compared.

    Returns
    -------
    DataFrame
        Long format: ``method`` (when a mapping was given), ``target``,
        ``n_points``, ``n_dropped``, ``explained_variance``, ``pearson``,
        ``spearman``, ``sign_agreement``, ``mse``. Targets sorted with sizes
        first (ascending), then named ones.

    Raises
    ------
    DataError
        If no target or no point is shared.
    """
    if isinstance(estimates, Mapping):
        parts = []
        for name, est in estimates.items():
            part = evaluate_estimates(est, truth)
            part.insert(0, "method", name)
            parts.append(part)
        if not parts:
            raise DataError("estimates is an empty mapping")
        return pd.concat(parts, ignore_index=True)

    est = _as_frame(estimates, "estimates")
    tru = _as_frame(truth, "truth")
    if isinstance(truth, pd.Series) and isinstance(estimates, pd.Series):
        # two bare Series: compare them whatever their names
        est = est.set_axis(["value"], axis=1)
        tru = tru.set_axis(["value"], axis=1)
    est = est.set_axis([_key(c) for c in est.columns], axis=1)
    tru = tru.set_axis([_key(c) for c in tru.columns], axis=1)
    targets = [c for c in tru.columns if c in set(est.columns)]
    if not targets:
        raise DataError(
            f"estimates (targets {list(est.columns)}) and truth (targets {list(tru.columns)}) "
            "share no target"
        )
    common = est.index.intersection(tru.index)
    if common.size == 0:
        raise DataError("estimates and truth share no point id")
    numeric = sorted([t for t in targets if not isinstance(t, str)])
    named = [t for t in targets if isinstance(t, str)]
    rows = []
    for t in numeric + named:
        e = est.loc[common, t].to_numpy(dtype=np.float64)
        g = tru.loc[common, t].to_numpy(dtype=np.float64)
        rows.append({"target": str(t), **score_pair(e, g)})
    cols = ["target", "n_points", "n_dropped", *METRICS, "mse"]
    return pd.DataFrame(rows)[cols]


def _aligned(truth: pd.DataFrame, other: pd.DataFrame, what: str) -> pd.DataFrame:
    other = other.set_axis([_key(c) for c in other.columns], axis=1)
    missing = [c for c in truth.columns if c not in set(other.columns)]
    if missing:
        raise DataError(f"{what} lacks sizes {missing[:5]}; it must cover every size of the truth")
    return other.reindex(index=truth.index, columns=list(truth.columns))


def law_r2(truth: pd.DataFrame, predicted: pd.DataFrame, se: pd.DataFrame | None = None) -> pd.DataFrame:
    """R² of law predictions against an empirical ψ: per size, mean per size (paper), pooled.

    Parameters
    ----------
    truth : DataFrame
        Points × sizes (e.g. :func:`~pointscale.valuation.empirical_psi`).
    predicted : DataFrame
        Same points and sizes (extra columns ignored).
    se : DataFrame, optional
        Standard errors of ``truth``'s cells; gives the noise ceilings.

    Returns
    -------
    DataFrame
        One row per size (``target`` = the size), then ``mean_per_size``
        (the paper's statistic, = ``sklearn.metrics.r2_score(truth, predicted)``)
        and ``pooled``; columns ``r2``, ``noise_ceiling`` (NaN without ``se``
        or when a cell has no standard error), ``n_points`` (points with every
        truth and prediction finite; the others are dropped from every row, so
        all rows use the same points).
    """
    tru = truth.set_axis([_key(c) for c in truth.columns], axis=1)
    pred = _aligned(tru, predicted, "predicted")
    T_all, P_all = tru.to_numpy(dtype=np.float64), pred.to_numpy(dtype=np.float64)
    ok = np.isfinite(T_all).all(axis=1) & np.isfinite(P_all).all(axis=1)
    T, P = T_all[ok], P_all[ok]
    n = int(ok.sum())
    if n < 2:
        raise DataError(f"only {n} point(s) have every size finite; need at least 2 for an R²")
    sst = ((T - T.mean(axis=0)) ** 2).sum(axis=0)
    sse = ((T - P) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_size = np.where(sst > 0, 1.0 - sse / sst, np.nan)
    ceil_size = np.full(T.shape[1], np.nan)
    pooled_ceil = float("nan")
    if se is not None:
        # A cell with one sample has no standard error: the ceiling is then undefined (NaN), not guessed.
        S = _aligned(tru, se, "se").to_numpy(dtype=np.float64)[ok]
        if np.isfinite(S).all():
            ceil_size = 1.0 - (S ** 2).mean(axis=0) / T.var(axis=0)
            pooled_ceil = 1.0 - float((S ** 2).mean()) / float(T.var())
    sst_all = float(((T - T.mean()) ** 2).sum())
    pooled = 1.0 - float(sse.sum()) / sst_all if sst_all > 0 else float("nan")
    rows = [{"target": str(c), "r2": float(r), "noise_ceiling": float(cl), "n_points": n}
            for c, r, cl in zip(tru.columns, per_size, ceil_size)]
    rows.append({"target": "mean_per_size", "r2": float(np.mean(per_size)),
                 "noise_ceiling": float(np.mean(ceil_size)), "n_points": n})
    rows.append({"target": "pooled", "r2": pooled, "noise_ceiling": pooled_ceil, "n_points": n})
    return pd.DataFrame(rows)


def split_halves(samples: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two disjoint halves of a staggered run's samples, split within each (point, size) cell.

    Alternate samples (in ``round`` order, else row order) of every cell go to
    each half, so both halves hold every point at every size and the samples
    of one half never enter the other's means. Rounds are independent draws,
    so alternating is as good as a random split and needs no seed.
    """
    order = ["point_id", "k", "round"] if "round" in samples.columns else ["point_id", "k"]
    s = samples.sort_values(order, kind="mergesort")
    half = s.groupby(["point_id", "k"], sort=False).cumcount().to_numpy() % 2
    return s[half == 0].reset_index(drop=True), s[half == 1].reset_index(drop=True)
