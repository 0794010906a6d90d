r"""The log-space baseline for staggered data (the paper's ``LogEstimator``).

For data with many samples at each of a few sizes (SPEC §2's validation
protocol), per point:

1. the mean :math:`\bar\Delta_k` at each distinct size k;
2. ordinary least squares of :math:`\log_{10}(|\bar\Delta_k| + 10^{-12})` on
   :math:`-\log_{10} k` with an intercept: the slope is α, and the fit's R²
   is a diagnostic (the paper dropped points with R² below 0.8 or 0.9; we
   keep them and flag ``poor_fit``). The 1e-12 guard is the paper's;
3. c by least squares of Δ on :math:`k^{-\alpha}` without an intercept, over
   all samples, which recovers the sign that step 2 discards:
   :math:`c = \sum \Delta k^{-\alpha} / \sum k^{-2\alpha}`;
4. σ and β from the sample variances :math:`s_k^2` (ddof 1) at sizes with at
   least two samples: least squares of :math:`\log s_k^2 - b(n_k)` on
   :math:`\log k`, where :math:`b(n) = \psi((n-1)/2) - \log((n-1)/2)` removes
   the bias of the log of a chi-square variance estimate under normality.
   Intercept → log σ², slope → −β. Needs two such sizes with positive
   variance; otherwise σ, β and the NLL are NaN (the reason is in ``meta``).

No intervals: the log-log regression has no noise model that would make its
standard errors meaningful (log |mean| of a noisy mean is biased and
heavy-tailed near zero). Vectorised over points with ``bincount`` over
(point, size) cells.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import digamma

from ..errors import ConfigError
from .likelihood import PARAM_MAX, mean_nll_by_point
from .mle import prepare_samples
from .result import FittedScalingLaws

__all__ = ["fit_log_ols"]


def _cell_regression(point: np.ndarray, x: np.ndarray, y: np.ndarray, n_points: int):
    """Per-point OLS of y on x (with intercept) over cells: slope, intercept, R²."""
    cnt = np.bincount(point, minlength=n_points).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = np.bincount(point, x, minlength=n_points) / cnt
        my = np.bincount(point, y, minlength=n_points) / cnt
        dx = x - mx[point]
        dy = y - my[point]
        sxx = np.bincount(point, dx * dx, minlength=n_points)
        sxy = np.bincount(point, dx * dy, minlength=n_points)
        syy = np.bincount(point, dy * dy, minlength=n_points)
        slope = sxy / sxx
        intercept = my - slope * mx
        resid = dy - slope[point] * dx
        ssr = np.bincount(point, resid * resid, minlength=n_points)
        # sklearn's r2_score convention for a constant target (force_finite).
        r2 = np.where(syy > 0, 1.0 - ssr / syy, np.where(ssr <= 1e-30, 1.0, 0.0))
    return slope, intercept, r2, cnt


def _noise_model(cell_point: np.ndarray, cell_k: np.ndarray, n_cell: np.ndarray, var_cell: np.ndarray,
                 ok: np.ndarray, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """sigma, beta per point from the log-log regression of the bias-corrected cell variances.

    NaN for points with fewer than two sizes having >= 2 samples and positive variance.
    """
    usable = (n_cell >= 2) & (var_cell > 0) & ok[cell_point]
    sigma = np.full(n_points, np.nan)
    beta = np.full(n_points, np.nan)
    n_var_sizes = np.bincount(cell_point[usable], minlength=n_points)
    if usable.any():
        half = (n_cell[usable] - 1.0) / 2.0
        lv = np.log(var_cell[usable]) - (digamma(half) - np.log(half))
        slope, intercept, _, _ = _cell_regression(cell_point[usable], np.log(cell_k[usable]), lv, n_points)
        has_var = n_var_sizes >= 2
        beta = np.where(has_var, -slope, np.nan)
        sigma = np.where(has_var, np.exp(0.5 * intercept), np.nan)
    return sigma, beta


def fit_log_ols(
    samples: pd.DataFrame,
    *,
    min_sizes: int = 3,
    r2_threshold: float = 0.8,
) -> FittedScalingLaws:
    """The log-space baseline: α and R² from the log-log fit of the mean at each size.

    Parameters
    ----------
    samples : DataFrame
        Columns ``point_id``, ``k``, ``delta`` (optionally ``failed``); meant
        for staggered data (several samples at each of a few sizes).
    min_sizes : int, default=3
        Points with fewer distinct sizes get NaN and ``too_few_samples``
        (with two sizes the log-log fit is exact and R² says nothing).
    r2_threshold : float, default=0.8
        ``poor_fit`` marks R² below this (the paper's lower filter).

    Returns
    -------
    FittedScalingLaws
        ``estimator="log_ols"``, no intervals. Flags: ``too_few_samples``,
        ``poor_fit``, ``sign_changes`` (the mean Δ_k is positive at some
        sizes and negative at others, so |mean| is partly noise),
        ``alpha_out_of_range`` (α < 0 or α > e², which this estimator does
        not prevent). Extras: ``r2``, ``n_sizes``.
    """
    if min_sizes < 2:
        raise ConfigError(f"min_sizes={min_sizes} must be >= 2")
    if not 0.0 <= r2_threshold <= 1.0:
        raise ConfigError(f"r2_threshold={r2_threshold} must lie in [0, 1]")
    t_start = time.perf_counter()
    ids, codes, k, delta, counts = prepare_samples(samples)
    P = ids.shape[0]
    n = np.bincount(codes, minlength=P).astype(np.int64)

    # Cells = (point, size).
    k_values, k_index = np.unique(k, return_inverse=True)
    cell_key = codes.astype(np.int64) * k_values.size + k_index
    cell_ids, cell_of = np.unique(cell_key, return_inverse=True)
    cell_point = (cell_ids // k_values.size).astype(np.intp)
    cell_k = k_values[cell_ids % k_values.size]
    n_cell = np.bincount(cell_of).astype(np.float64)
    mean_cell = np.bincount(cell_of, delta) / n_cell
    dev = delta - mean_cell[cell_of]
    with np.errstate(invalid="ignore", divide="ignore"):
        var_cell = np.bincount(cell_of, dev * dev) / (n_cell - 1.0)

    # 2. alpha and R^2 from the log-log regression of the cell means.
    lx = -np.log10(cell_k)
    ly = np.log10(np.abs(mean_cell) + 1e-12)
    alpha, _, r2, n_sizes = _cell_regression(cell_point, lx, ly, P)
    ok = n_sizes >= min_sizes
    alpha = np.where(ok, alpha, np.nan)
    r2 = np.where(ok, r2, np.nan)

    # 3. c by least squares of delta on k^-alpha, without intercept.
    with np.errstate(invalid="ignore", over="ignore"):
        m = k ** (-alpha[codes])
        c = np.bincount(codes, delta * m, minlength=P) / np.bincount(codes, m * m, minlength=P)
    c = np.where(ok, c, np.nan)

    # 4. sigma, beta from the bias-corrected log variances.
    sigma, beta = _noise_model(cell_point, cell_k, n_cell, var_cell, ok, P)
    nll = mean_nll_by_point(codes, k, delta, c, alpha, sigma, beta, n_points=P)
    nll = np.where(np.isfinite(sigma) & np.isfinite(c), nll, np.nan)

    # Sign of the cell means: mixed signs mean |mean| is partly noise.
    pos = np.bincount(cell_point, mean_cell > 0, minlength=P) > 0
    neg = np.bincount(cell_point, mean_cell < 0, minlength=P) > 0
    flags = {
        "too_few_samples": ~ok,
        "poor_fit": ok & (r2 < r2_threshold),
        "sign_changes": ok & pos & neg,
        "alpha_out_of_range": ok & ((alpha < 0) | (alpha > PARAM_MAX)),
    }
    n_no_var = int((ok & ~np.isfinite(sigma)).sum())
    meta: dict[str, Any] = {
        **counts,
        "n_points": int(P),
        "n_fitted": int(ok.sum()),
        "min_sizes": int(min_sizes),
        "r2_threshold": float(r2_threshold),
        "n_without_noise_model": n_no_var,
        "noise_model": (
            "sigma, beta from bias-corrected log sample variances by size"
            + (
                f"; NaN for {n_no_var} point(s) with fewer than two sizes having >= 2 samples "
                "and positive variance"
                if n_no_var
                else ""
            )
        ),
        "seconds": round(time.perf_counter() - t_start, 4),
        "flag_counts": {name: int(v.sum()) for name, v in flags.items()},
    }
    return FittedScalingLaws(
        point_ids=ids,
        c=c,
        alpha=alpha,
        sigma=sigma,
        beta=beta,
        nll=nll,
        n_samples=n,
        estimator="log_ols",
        flags=flags,
        extra={"r2": r2, "n_sizes": n_sizes.astype(np.int64)},
        k_range=(int(np.floor(k.min())), int(np.ceil(k.max()))) if k.size else None,
        meta=meta,
    )
