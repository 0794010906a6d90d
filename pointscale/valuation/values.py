r"""Data values from fitted scaling laws, and the Monte Carlo baseline.

Quantities (SPEC §1, §4)
------------------------
With a fitted law ψ_k(z) = c(z)·k^(−α(z)):

* **Value at a size k** -- ψ_k itself, at any k > 0. Sizes outside the range
  the laws were sampled on (``laws.k_range``) are *extrapolations* and are
  flagged as such.
* **Distributional Shapley value** over [k_min, k_max] (both inclusive)::

      ν(z) = c · S(α),   S(α) = 1/(k_max − k_min + 1) · Σ_{k=k_min}^{k_max} k^(−α)

  S(α) is :func:`pointscale.laws.power.power_mean` (exact to rounding for
  any range and any real α; its module docstring says how).
* **Intervals** (95 % by default) use the delta method on the asymptotic
  covariance Σ of (ĉ, α̂) that the estimator stores in ``laws.extra``
  (``var_c``, ``var_alpha``, ``cov_c_alpha``)::

      Var ν̂ ≈ g' Σ g,   g = (S(α), c · S'(α)),   S'(α) = −mean_k ln k · k^(−α)

  This is the same construction as :meth:`FittedScalingLaws.predict_interval`
  for ψ_k, applied to the average over k. Averaging the ψ_k interval end
  points instead would be conservative but not exact: ν̂ is one function of
  (ĉ, α̂), so its gradient is the *mean* gradient, and
  ‖mean g_k‖_Σ ≤ mean ‖g_k‖_Σ. S'(α) is a central difference of S (step
  1e-5): its relative error (~1e-10) is far below the delta method's own
  approximation error. Without a covariance there are no intervals (we do not
  assume c and α independent: they are strongly correlated).
* **Monte Carlo** -- the per-point mean of the sampled Δ. With k drawn
  uniformly from [k_min, k_max] it is an unbiased estimate of ν(z) and the
  baseline every law-based estimate must beat at equal sample budgets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import norm

from ..errors import ConfigError, DataError
from ..laws.power import check_size_range
from ..laws.power import power_mean
from ..laws.result import COVARIANCE_KEYS, FittedScalingLaws

__all__ = [
    "ValueEstimate",
    "SizeValues",
    "distributional_shapley",
    "value_at",
    "monte_carlo_values",
    "empirical_psi",
    "grid_shapley",
    "values_table",
    "value_column",
]

_DIFF_STEP = 1e-5


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class ValueEstimate:
    """One value per point, with optional intervals.

    Attributes
    ----------
    point_ids : ndarray of shape (n,)
    value : ndarray of shape (n,)
    low, high : ndarray of shape (n,) or None
        Interval end points (``level`` coverage); None when the laws carry no
        covariance of (c, α).
    kind : str
        What the values are, e.g. ``"shapley[100,1000]"``.
    level : float
    note : str
        Why intervals are missing, if they are.
    """

    point_ids: np.ndarray
    value: np.ndarray
    low: np.ndarray | None
    high: np.ndarray | None
    kind: str
    level: float = 0.95
    note: str = ""

    @property
    def has_intervals(self) -> bool:
        return self.low is not None

    def __len__(self) -> int:
        return int(self.value.shape[0])

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.value, dtype=dtype)

    def to_series(self) -> pd.Series:
        """Values indexed by point id."""
        return pd.Series(self.value, index=pd.Index(self.point_ids, name="point_id"), name=self.kind)

    def to_frame(self, name: str = "value") -> pd.DataFrame:
        """Columns ``point_id``, ``<name>``, ``<name>_low``, ``<name>_high`` (NaN without intervals)."""
        n = len(self)
        nan = np.full(n, np.nan)
        return pd.DataFrame(
            {
                "point_id": self.point_ids,
                name: self.value,
                f"{name}_low": self.low if self.low is not None else nan,
                f"{name}_high": self.high if self.high is not None else nan,
            }
        )


@dataclass(frozen=True, eq=False)
class SizeValues:
    """ψ_k for every point at one or more sizes.

    Attributes
    ----------
    point_ids : ndarray of shape (n,)
    k : ndarray of shape (m,)
        The sizes, as given (integers where they were integers).
    value : ndarray of shape (n, m)
    low, high : ndarray of shape (n, m) or None
    extrapolated : bool ndarray of shape (m,)
        True where k lies outside ``k_range``.
    k_range : tuple or None
        The sampled range the flags refer to (None: unknown, nothing flagged).
    """

    point_ids: np.ndarray
    k: np.ndarray
    value: np.ndarray
    low: np.ndarray | None
    high: np.ndarray | None
    extrapolated: np.ndarray
    k_range: tuple[int, int] | None
    level: float = 0.95
    note: str = ""

    @property
    def has_intervals(self) -> bool:
        return self.low is not None

    def to_frame(self) -> pd.DataFrame:
        """Wide table: ``point_id``, then per size ``value_at_<k>`` (+ ``_low``/``_high``
        when available) and ``extrapolated_<k>``."""
        cols: dict[str, Any] = {"point_id": self.point_ids}
        n = self.value.shape[0]
        for j, k in enumerate(self.k):
            name = value_column(k)
            cols[name] = self.value[:, j]
            if self.low is not None:
                cols[f"{name}_low"] = self.low[:, j]
                cols[f"{name}_high"] = self.high[:, j]
            cols[f"extrapolated_{_k_label(k)}"] = np.full(n, bool(self.extrapolated[j]))
        return pd.DataFrame(cols)


def _k_label(k: Any) -> str:
    k = float(k)
    return str(int(k)) if k.is_integer() else repr(k).replace(".", "p")


def value_column(k: Any) -> str:
    """Column name of the value at size ``k`` in tables: ``value_at_<k>``."""
    return f"value_at_{_k_label(k)}"




def _has_cov(laws: FittedScalingLaws) -> bool:
    return all(k in laws.extra for k in COVARIANCE_KEYS)


def _cov(laws: FittedScalingLaws) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.asarray(laws.extra[k], dtype=np.float64) for k in COVARIANCE_KEYS)  # type: ignore[return-value]


def _check_laws(laws: Any) -> FittedScalingLaws:
    if not isinstance(laws, FittedScalingLaws):
        raise ConfigError(f"laws must be a FittedScalingLaws; got {type(laws).__name__}")
    return laws


def distributional_shapley(
    laws: FittedScalingLaws, k_min: int, k_max: int, *, level: float = 0.95
) -> ValueEstimate:
    """Distributional Shapley value ν = mean_{k=k_min..k_max} c·k^(−α), per point.

    Parameters
    ----------
    laws : FittedScalingLaws
    k_min, k_max : int
        Inclusive cardinality range (paper: 100..1000). Any range 1 ≤ k_min ≤ k_max.
    level : float, default=0.95
        Coverage of the intervals.

    Returns
    -------
    ValueEstimate
        ``value`` (NaN where the law is NaN; exactly 0 where c = 0) and, when
        the laws carry the covariance of (ĉ, α̂), delta-method intervals.
    """
    laws = _check_laws(laws)
    lo, hi = check_size_range(k_min, k_max)
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level={level} must lie in (0, 1)")
    c, alpha = laws.c, laws.alpha
    s = power_mean(alpha, lo, hi)
    with np.errstate(invalid="ignore", over="ignore"):
        value = np.where(c == 0.0, 0.0, c * s)
    low = high = None
    note = ""
    if _has_cov(laws):
        var_c, var_a, cov_ca = _cov(laws)
        h = _DIFF_STEP
        ds = (power_mean(alpha + h, lo, hi) - power_mean(alpha - h, lo, hi)) / (2.0 * h)
        with np.errstate(invalid="ignore", over="ignore"):
            g_c, g_a = s, c * ds
            var = g_c**2 * var_c + 2.0 * g_c * g_a * cov_ca + g_a**2 * var_a
            half = norm.ppf(0.5 + level / 2.0) * np.sqrt(np.maximum(var, 0.0))
        low, high = value - half, value + half
    else:
        note = (
            f"no intervals: the {laws.estimator!r} laws carry no covariance of (c, alpha) "
            f"(extra keys {COVARIANCE_KEYS})"
        )
    return ValueEstimate(
        point_ids=laws.point_ids,
        value=value,
        low=low,
        high=high,
        kind=f"shapley[{lo},{hi}]",
        level=level,
        note=note,
    )


def value_at(
    laws: FittedScalingLaws,
    k: Any,
    *,
    k_range: tuple[int, int] | None = None,
    level: float = 0.95,
) -> SizeValues:
    """ψ_k = c·k^(−α) for every point at the size(s) ``k``.

    Parameters
    ----------
    laws : FittedScalingLaws
    k : float or array-like of shape (m,)
        Sizes (> 0), inside or outside the sampled range.
    k_range : (int, int), optional
        Range that counts as sampled; default ``laws.k_range``. When both are
        None nothing is flagged.
    level : float, default=0.95

    Returns
    -------
    SizeValues
        ``value`` of shape (n, m), ``extrapolated`` of shape (m,) and, when the
        laws carry a covariance of (ĉ, α̂), delta-method intervals.
    """
    laws = _check_laws(laws)
    ks = np.atleast_1d(np.asarray(k))
    if ks.ndim != 1 or ks.size == 0:
        raise ConfigError(f"k={k!r} must be a size or a non-empty 1-D list of sizes")
    kf = ks.astype(np.float64)
    if not np.all(np.isfinite(kf)) or np.any(kf <= 0):
        raise ConfigError(f"sizes k={ks.tolist()} must be finite and > 0")
    rng_ = k_range if k_range is not None else laws.k_range
    if rng_ is not None:
        extrap = (kf < rng_[0]) | (kf > rng_[1])
    else:
        extrap = np.zeros(kf.shape, dtype=bool)
    value = laws.predict(kf, warn_extrapolation=False)
    low = high = None
    note = ""
    if _has_cov(laws):
        low, high = laws.predict_interval(kf, level=level, warn_extrapolation=False)
    else:
        note = f"no intervals: the {laws.estimator!r} laws carry no covariance of (c, alpha)"
    return SizeValues(
        point_ids=laws.point_ids,
        k=ks,
        value=value,
        low=low,
        high=high,
        extrapolated=extrap,
        k_range=None if rng_ is None else (int(rng_[0]), int(rng_[1])),
        level=level,
        note=note,
    )


# --------------------------------------------------------------------------- samples


def _usable(samples: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("point_id", "k", "delta") if c not in samples.columns]
    if missing:
        raise DataError(f"samples lack column(s) {missing}; have {list(samples.columns)}")
    keep = np.isfinite(samples["delta"].to_numpy(dtype=np.float64))
    if "failed" in samples.columns:
        keep &= ~samples["failed"].fillna(True).to_numpy(dtype=bool)
    return samples.loc[keep]


def monte_carlo_values(
    samples: pd.DataFrame,
    *,
    k_min: int | None = None,
    k_max: int | None = None,
) -> pd.DataFrame:
    """The plain per-point mean of the sampled marginal contributions.

    Parameters
    ----------
    samples : DataFrame with columns point_id, k, delta (and optionally failed)
        Failed rows and non-finite deltas are dropped, never replaced.
    k_min, k_max : int, optional
        Keep only samples with k in this inclusive range.

    Returns
    -------
    DataFrame indexed by point_id
        ``mc_mean``, ``mc_std`` (ddof=1), ``mc_se`` (= std/√n; NaN for n < 2)
        and ``mc_n`` (usable samples).
    """
    s = _usable(samples)
    if k_min is not None:
        s = s.loc[s["k"] >= k_min]
    if k_max is not None:
        s = s.loc[s["k"] <= k_max]
    g = s.groupby("point_id", sort=False)["delta"]
    out = pd.DataFrame({"mc_mean": g.mean(), "mc_std": g.std(ddof=1), "mc_n": g.size().astype(np.int64)})
    out["mc_se"] = out["mc_std"] / np.sqrt(out["mc_n"])
    out.index.name = "point_id"
    return out[["mc_mean", "mc_std", "mc_se", "mc_n"]]


def empirical_psi(samples: pd.DataFrame, *, min_count: int = 1) -> pd.DataFrame:
    """Per-point, per-size mean Δ: the empirical ψ_k of a staggered (ground-truth) run.

    Returns
    -------
    DataFrame indexed by point_id, one column per size k (sorted), NaN where
    fewer than ``min_count`` usable samples exist.
    """
    s = _usable(samples)
    g = s.groupby(["point_id", "k"], sort=True)["delta"]
    means = g.mean()
    counts = g.size()
    means[counts < min_count] = np.nan
    wide = means.unstack("k")
    wide.columns = [int(c) if float(c).is_integer() else float(c) for c in wide.columns]
    wide.index.name = "point_id"
    return wide


def empirical_psi_se(samples: pd.DataFrame) -> pd.DataFrame:
    """Standard errors of :func:`empirical_psi`'s cells: sd(Δ, ddof=1) / √n (NaN for n < 2)."""
    s = _usable(samples)
    g = s.groupby(["point_id", "k"], sort=True)["delta"]
    wide = (g.std(ddof=1) / np.sqrt(g.size())).unstack("k")
    wide.columns = [int(c) if float(c).is_integer() else float(c) for c in wide.columns]
    wide.index.name = "point_id"
    return wide


def grid_shapley(psi: pd.DataFrame, k_min: int, k_max: int) -> pd.Series:
    """ν over [k_min, k_max] from ψ known only on a grid of sizes (model-free).

    ψ is interpolated linearly in k between grid sizes and averaged over the
    integers k_min..k_max, which must lie within the grid. This needs no
    scaling-law assumption, so it can serve as ground truth for law-based
    estimates. For a convex ψ (a power law) linear interpolation slightly
    overestimates: for 1/k on the 10-point geometric grid 100..1000 the bias
    is about +1 %, the same sign for every point with c > 0.
    """
    lo, hi = check_size_range(k_min, k_max)
    grid = np.asarray(psi.columns, dtype=np.float64)
    order = np.argsort(grid)
    grid = grid[order]
    if grid.size < 2 or lo < grid[0] or hi > grid[-1]:
        raise ConfigError(f"range [{lo}, {hi}] must lie within the grid of sizes {grid.tolist()}")
    vals = psi.to_numpy(dtype=np.float64)[:, order]
    ks = np.arange(lo, hi + 1, dtype=np.float64)
    # Interpolation weights are the same for every point: one matrix product.
    idx = np.clip(np.searchsorted(grid, ks, side="right") - 1, 0, grid.size - 2)
    t = (ks - grid[idx]) / (grid[idx + 1] - grid[idx])
    w = np.zeros(grid.size)
    np.add.at(w, idx, 1.0 - t)
    np.add.at(w, idx + 1, t)
    w /= ks.size
    out = vals @ w  # NaN anywhere in a row makes that row NaN, as it should
    return pd.Series(out, index=psi.index, name=f"shapley[{lo},{hi}]")


# --------------------------------------------------------------------------- table


def _labels(dataset: Any, index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    y = np.asarray(dataset.y_train)[index]
    classes = getattr(dataset, "classes", None)
    if classes is None:
        return y.astype(np.float64), None
    codes = y.astype(np.int64)
    return np.asarray(classes)[codes], codes


def _nullable_flag(values: np.ndarray, present: np.ndarray) -> pd.arrays.BooleanArray:
    return pd.arrays.BooleanArray(np.asarray(values, dtype=bool), ~present)


def values_table(
    laws: FittedScalingLaws | None,
    dataset: Any,
    *,
    k_min: int,
    k_max: int,
    target_sizes: Sequence[Any] | None = None,
    samples: pd.DataFrame | None = None,
    amortized: FittedScalingLaws | None = None,
    level: float = 0.95,
    compare: Mapping[str, FittedScalingLaws | None] | None = None,
    oob: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The content of ``values.parquet``: one row per valued point.

    Each row's numbers come from one estimator: ``laws`` (in the pipeline the
    laws the choose-laws stage chose) when the point has a
    finite fit there, else the ``amortized`` laws (which may cover points
    that were never sampled), else none (NaNs, ``estimator="none"``).

    Parameters
    ----------
    laws : FittedScalingLaws or None
        Per-point laws (e.g. from :func:`pointscale.laws.fit_laws`).
    dataset : Dataset
        Gives labels and the pool size.
    k_min, k_max : int
        Range of the Shapley value.
    target_sizes : sequence of sizes, optional
        Sizes for ``value_at_<k>`` columns. Default: the pool size and 10× it.
    samples : DataFrame, optional
        The ledger; adds Monte Carlo columns ``mc_mean``, ``mc_se``, ``mc_n``
        (over [k_min, k_max]).
    amortized : FittedScalingLaws, optional
        Fallback laws (estimator ``"amortized"``).
    compare : mapping of str to FittedScalingLaws, optional
        Other estimators' laws, each giving a column ``shapley_<name>`` (NaN
        for points they do not cover), e.g. ``{"mle": ..., "amortized": ...}``.
    oob : DataFrame, optional
        Out-of-bag evidence (:func:`pointscale.sampling.oob_evidence`): adds
        ``oob`` (mean score of the point's own label by models trained
        without it; low = the rest of the data disagrees with its label) and
        ``n_oob``.

    Returns
    -------
    DataFrame
        ``point_id``, ``label`` (+ ``label_code``), ``estimator``, ``shapley``
        (+ ``_low``/``_high``), ``rank`` (1 = most valuable), per target size
        ``value_at_<k>`` (+ interval) and ``extrapolated_<k>``, ``c``,
        ``alpha``, ``sigma``, ``beta`` and their intervals, ``negative_c``,
        ``n_samples``, Monte Carlo columns and the estimators' flags (nullable
        booleans: NA for rows from an estimator without that flag). Rows follow
        the pool order.
    """
    if laws is None and amortized is None:
        raise ConfigError("values_table needs laws, amortized laws, or both")
    lo, hi = check_size_range(k_min, k_max)
    if target_sizes is None:
        target_sizes = (dataset.n_pool, 10 * dataset.n_pool)
    target_sizes = list(np.atleast_1d(np.asarray(target_sizes)))
    sources = [s for s in (laws, amortized) if s is not None]
    for s in sources:
        _check_laws(s)

    index, rows_of, source = _rows_and_sources(sources, dataset)
    ids = np.asarray(dataset.point_ids)[index].astype(object)
    filled = _fill_from_sources(sources, rows_of, source, ids.size, lo, hi, target_sizes, level)
    label, codes = _labels(dataset, index)
    cols: dict[str, Any] = {"point_id": ids, "label": label}
    if codes is not None:
        cols["label_code"] = codes
    cols["estimator"] = filled.est
    cols["shapley"] = filled.shap
    cols["shapley_low"] = filled.shap_lo
    cols["shapley_high"] = filled.shap_hi
    cols["rank"] = value_ranks(filled.shap)
    for k in target_sizes:
        lab = _k_label(k)
        v, vl, vh, ex = filled.tv[lab]
        name = value_column(k)
        cols[name] = v
        cols[f"{name}_low"] = vl
        cols[f"{name}_high"] = vh
        cols[f"extrapolated_{lab}"] = ex
    cols.update(filled.params)
    cols["negative_c"] = np.where(np.isfinite(filled.params["c"]), filled.params["c"] < 0, False)
    cols["n_samples"] = filled.n_samples
    cols.update(_comparison_columns(ids, samples, compare, oob, lo, hi, level))
    for key in filled.flag_val:
        cols[f"flag_{key}"] = _nullable_flag(filled.flag_val[key], filled.flag_has[key])
    frame = pd.DataFrame(cols)
    frame.attrs["k_range_shapley"] = [lo, hi]
    frame.attrs["has_intervals"] = bool(filled.any_intervals)
    return frame


def _rows_and_sources(sources: Sequence[FittedScalingLaws], dataset: Any
                      ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """The table's rows and where each row's numbers come from.

    Returns the pool positions of the covered points (pool order), each
    source's rows in the table, and per row the first source with a fitted
    law there (-1: none).
    """
    # Pool positions of every source's points (hash lookups in C; no per-point Python).
    pool_index = pd.Index(np.asarray(dataset.point_ids).astype(object))
    at_pool = []
    for s in sources:
        pos = pool_index.get_indexer(np.asarray(s.point_ids, dtype=object))
        if (pos < 0).any():
            unknown = np.asarray(s.point_ids, dtype=object)[pos < 0]
            raise DataError(
                f"{unknown.size} point id(s) of the {s.estimator!r} laws are not in the pool "
                f"of {getattr(dataset, 'name', 'the dataset')}, e.g. {unknown[:3].tolist()}"
            )
        at_pool.append(pos)
    index = np.unique(np.concatenate(at_pool))  # the covered points, in pool order
    rows_of = [np.searchsorted(index, pos) for pos in at_pool]  # each source's rows in the table
    source = np.full(index.size, -1)
    for j, s in enumerate(sources):
        rows = rows_of[j][np.isfinite(s.c) & (np.isfinite(s.alpha) | (s.c == 0.0))]
        source[rows[source[rows] == -1]] = j
    return index, rows_of, source


@dataclass
class _Filled:
    """The law-derived columns of the values table, filled source by source."""

    est: np.ndarray
    shap: np.ndarray
    shap_lo: np.ndarray
    shap_hi: np.ndarray
    params: dict[str, np.ndarray]
    n_samples: np.ndarray
    tv: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    flag_val: dict[str, np.ndarray]
    flag_has: dict[str, np.ndarray]
    any_intervals: bool = False


def _fill_from_sources(sources, rows_of, source, n: int, lo: int, hi: int, target_sizes, level: float) -> _Filled:
    """Shapley values, values at the target sizes, parameters and flags of each row, from its source."""
    nan = lambda: np.full(n, np.nan)  # noqa: E731
    flag_keys = sorted({k for s in sources for k in s.flags})
    out = _Filled(
        est=np.full(n, "none", dtype=object), shap=nan(), shap_lo=nan(), shap_hi=nan(),
        params={name: nan() for name in ("c", "alpha", "sigma", "beta", "c_low", "c_high", "alpha_low",
                                         "alpha_high")},
        n_samples=np.zeros(n, dtype=np.int64),
        tv={_k_label(k): (nan(), nan(), nan(), np.zeros(n, dtype=bool)) for k in target_sizes},
        flag_val={k: np.zeros(n, dtype=bool) for k in flag_keys},
        flag_has={k: np.zeros(n, dtype=bool) for k in flag_keys},
    )
    # n_samples: from the per-point laws where they know the point
    for j in range(len(sources) - 1, -1, -1):
        out.n_samples[rows_of[j]] = sources[j].n_samples
    for j, s in enumerate(sources):
        rows_all = rows_of[j]
        take = source[rows_all] == j
        if not take.any():
            continue
        sub = s.subset(take)
        rows = rows_all[take]
        out.est[rows] = s.estimator
        sv = distributional_shapley(sub, lo, hi, level=level)
        out.shap[rows] = sv.value
        if sv.has_intervals:
            out.any_intervals = True
            out.shap_lo[rows], out.shap_hi[rows] = sv.low, sv.high
        for name in ("c", "alpha", "sigma", "beta"):
            out.params[name][rows] = getattr(sub, name)
        if sub.has_intervals:
            for name in ("c_low", "c_high", "alpha_low", "alpha_high"):
                out.params[name][rows] = getattr(sub, name)
        for key in flag_keys:
            if key in sub.flags:
                out.flag_val[key][rows] = sub.flags[key]
                out.flag_has[key][rows] = True
        if s.meta.get("law_free"):
            # A value per point with no law (e.g. the fair shrunk mean): nothing to extrapolate.
            for k in target_sizes:
                out.tv[_k_label(k)][3][rows] = True
            continue
        va = value_at(sub, target_sizes, level=level)
        for m, k in enumerate(target_sizes):
            v, vl, vh, ex = out.tv[_k_label(k)]
            v[rows] = va.value[:, m]
            if va.has_intervals:
                vl[rows], vh[rows] = va.low[:, m], va.high[:, m]
            ex[rows] = va.extrapolated[m]
    return out


def value_ranks(shap: np.ndarray) -> pd.arrays.IntegerArray:
    """1 = the largest finite value; NA where the value is not finite."""
    n = shap.size
    order = np.argsort(-np.where(np.isfinite(shap), shap, -np.inf), kind="stable")
    rank = np.empty(n, dtype=np.float64)
    rank[order] = np.arange(1, n + 1)
    rank[~np.isfinite(shap)] = np.nan
    return pd.array(rank, dtype="Int64") if n else pd.array([], dtype="Int64")


def _comparison_columns(ids: np.ndarray, samples, compare, oob, lo: int, hi: int, level: float) -> dict[str, Any]:
    """Monte Carlo columns, other estimators' Shapley values and the out-of-bag evidence, per row."""
    n = ids.size
    cols: dict[str, Any] = {}
    if samples is not None:
        mc = monte_carlo_values(samples, k_min=lo, k_max=hi).reindex(ids)
        cols["mc_mean"] = mc["mc_mean"].to_numpy(dtype=np.float64)
        cols["mc_se"] = mc["mc_se"].to_numpy(dtype=np.float64)
        cols["mc_n"] = mc["mc_n"].fillna(0).to_numpy(dtype=np.int64)
    for name, other in dict(compare or {}).items():
        col = np.full(n, np.nan)
        if other is not None:
            sv = distributional_shapley(other, lo, hi, level=level)
            pos = pd.Index(other.point_ids).get_indexer(ids)
            col = np.where(pos >= 0, np.asarray(sv.value)[np.maximum(pos, 0)], np.nan)
        cols[f"shapley_{name}"] = col
    if oob is not None:
        ev = oob.set_index("point_id").reindex(ids)
        cols["oob"] = ev["oob_score"].to_numpy(dtype=np.float64)
        cols["n_oob"] = ev["n_oob"].fillna(0).to_numpy(dtype=np.int64)
    return cols
