"""Vectorised maximum-likelihood fit of every point's scaling law at once.

The math (profile likelihood, reparametrisation, information, failure modes)
is in :mod:`pointscale.laws.likelihood`. This module does the search:

1. **Lattice start.** ½·log S(α, β) on the lattice α, β ∈ {0, 0.5, …, 7}
   for every point (one multiplication and three segment sums per lattice
   exponent), and start from each point's best cell. This avoids most local
   minima that a single start (the paper's α = 1, β = 2) falls into with few
   samples. Where the lattice has more than one local minimum or its best
   cell is on the box's edge (about half the points with 10 samples, 3 % with
   100), Newton also runs from the second-best lattice minimum and from the
   paper's start, and the best optimum wins.
2. **Projected Levenberg–Marquardt Newton** in (α, β) on the box [0, e²]²,
   all points together, with the exact Hessian. A variable on a bound whose
   gradient points outwards is held there (active set); a step is accepted
   only if it lowers the objective, otherwise the damping grows. Points that
   have converged leave the working set, which is re-packed when it has
   shrunk enough, so late iterations touch only the slow points.
3. The same search with α = 0 fixed gives the constant-mean model for the
   likelihood-ratio test behind ``poor_fit``.
4. Closed-form c and σ, the exact mean NLL, the observed information and the
   intervals and flags (see :func:`fit_mle`).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import ConfigError, ConvergenceWarning, DataError
from .likelihood import (
    PARAM_MAX,
    PackedSamples,
    closed_form,
    expected_information,
    observed_information,
    pack_samples,
    profile_grid,
    profile_objective,
)
from .result import FittedScalingLaws

__all__ = ["fit_mle", "prepare_samples"]

_GRID_STEP = 0.5
_GRID_N = 15  # lattice 0, 0.5, ..., 7.0 in both alpha and beta
#: A parameter closer than this to a bound counts as on it.
_BOUND_TOL = 1e-6


def prepare_samples(samples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Validate a samples table and return the usable rows.

    Rows with ``failed`` true or a non-finite delta are dropped and counted.

    Returns
    -------
    point_ids : ndarray of shape (P,)
        Sorted unique point ids (including points all of whose rows were dropped).
    codes : ndarray of int, shape (N,)
        Index into ``point_ids`` of each usable row.
    k, delta : ndarray of shape (N,)
    counts : dict
        ``n_rows``, ``n_dropped_failed``, ``n_dropped_nonfinite``.

    Raises
    ------
    DataError
        If a column is missing or a size k is not a positive finite number.
    """
    if not isinstance(samples, pd.DataFrame):
        raise DataError(f"samples must be a pandas DataFrame, got {type(samples).__name__}")
    missing = [c for c in ("point_id", "k", "delta") if c not in samples.columns]
    if missing:
        raise DataError(f"samples lacks column(s) {missing}; need point_id, k, delta")
    k = pd.to_numeric(samples["k"], errors="coerce").to_numpy(dtype=np.float64)
    bad_k = ~(np.isfinite(k) & (k > 0))
    if bad_k.any():
        raise DataError(
            f"{int(bad_k.sum())} sample(s) have a size k that is not a positive number, "
            f"e.g. {samples['k'].to_numpy()[bad_k][:3].tolist()}"
        )
    delta = pd.to_numeric(samples["delta"], errors="coerce").to_numpy(dtype=np.float64)
    codes, uniques = pd.factorize(samples["point_id"], sort=True)
    if (codes < 0).any():
        raise DataError(f"{int((codes < 0).sum())} sample(s) have a missing point_id")
    keep = np.ones(len(samples), dtype=bool)
    n_failed = 0
    if "failed" in samples.columns:
        failed = samples["failed"].fillna(False).to_numpy(dtype=bool)
        n_failed = int(failed.sum())
        keep &= ~failed
    nonfinite = ~np.isfinite(delta) & keep
    keep &= ~nonfinite
    counts = {
        "n_rows": int(len(samples)),
        "n_dropped_failed": n_failed,
        "n_dropped_nonfinite": int(nonfinite.sum()),
    }
    ids = np.asarray(uniques)
    if ids.dtype.kind in "US":
        ids = ids.astype(object)
    return ids, codes[keep].astype(np.intp), k[keep], delta[keep], counts


def _minimize_profile(
    packed: PackedSamples,
    alpha0: np.ndarray,
    beta0: np.ndarray,
    *,
    fix_alpha: bool,
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Projected damped Newton on ½·log S over [0, e²]², all points at once.

    Returns alpha, beta, converged (bool per point) and the iterations used.
    """
    P = packed.n_points
    theta = np.stack([alpha0, beta0], axis=1).astype(np.float64)
    lam = np.full(P, 1e-3)
    active = np.ones(P, dtype=bool)
    converged = np.zeros(P, dtype=bool)
    work, wmap = packed, np.arange(P)
    val = profile_objective(work, theta[:, 0], theta[:, 1])
    f, g, H = val.f.copy(), val.grad.copy(), val.hess.copy()
    lo, hi = 0.0, PARAM_MAX
    it = 0
    for it in range(1, max_iter + 1):
        if not active.any():
            it -= 1
            break
        if active.sum() < 0.6 * work.n_points:
            # Re-pack only the unfinished points so late iterations stay cheap.
            keep = np.flatnonzero(active[wmap])
            work, wmap = work.take(keep), wmap[keep]
        act = active[wmap]
        th, gw, Hw, fw = theta[wmap], g[wmap], H[wmap], f[wmap]
        at_lo = (th <= lo + _BOUND_TOL) & (gw > 0)
        at_hi = (th >= hi - _BOUND_TOL) & (gw < 0)
        free = ~(at_lo | at_hi)
        if fix_alpha:
            free[:, 0] = False
        # Reduced Newton system on the free variables; fixed ones get an
        # identity row so the 2x2 solve stays uniform across points.
        gf = np.where(free, gw, 0.0)
        a = np.where(free[:, 0], Hw[:, 0, 0], 1.0)
        d_ = np.where(free[:, 1], Hw[:, 1, 1], 1.0)
        b = np.where(free[:, 0] & free[:, 1], Hw[:, 0, 1], 0.0)
        min_eig = 0.5 * (a + d_) - np.sqrt(0.25 * (a - d_) ** 2 + b * b)
        shift = lam[wmap] + np.maximum(0.0, -min_eig) * 1.01
        a_s, d_s = a + shift, d_ + shift
        det = a_s * d_s - b * b
        step = np.empty_like(gf)
        step[:, 0] = -(d_s * gf[:, 0] - b * gf[:, 1]) / det
        step[:, 1] = -(a_s * gf[:, 1] - b * gf[:, 0]) / det
        step = np.where(free, step, 0.0)
        # Trust region of one unit in (alpha, beta): the lattice spacing is 0.5.
        norm = np.sqrt((step**2).sum(axis=1))
        step *= np.minimum(1.0, 1.0 / np.maximum(norm, 1e-300))[:, None]
        trial = np.clip(th + step, lo, hi)
        trial = np.where(act[:, None], trial, th)
        new = profile_objective(work, trial[:, 0], trial[:, 1])
        moved = np.abs(trial - th).max(axis=1)
        accept = act & (new.f <= fw)
        gain = fw - new.f
        # Converged: an accepted step that barely moved or barely helped, with
        # a small projected gradient at the new point; or a step too small to
        # change anything.
        g_new = new.grad
        free_new = ~(((trial <= lo + _BOUND_TOL) & (g_new > 0)) | ((trial >= hi - _BOUND_TOL) & (g_new < 0)))
        if fix_alpha:
            free_new[:, 0] = False
        pg = np.abs(np.where(free_new, g_new, 0.0)).max(axis=1)
        # Newton decrement at the new point: the decrease the next full Newton
        # step would bring if the quadratic model holds. Below tol there is
        # nothing left to gain, so the point stops one evaluation earlier.
        remaining = _newton_decrement(g_new, new.hess, free_new)
        done = accept & (((gain < tol) & (pg < 1e-6)) | (moved < 1e-10) | (remaining < tol))
        stuck = act & ~accept & ((moved < 1e-12) | (lam[wmap] > 1e10))
        idx = wmap[accept]
        theta[idx] = trial[accept]
        f[idx] = new.f[accept]
        g[idx] = new.grad[accept]
        H[idx] = new.hess[accept]
        lam[idx] = np.maximum(lam[idx] * 0.2, 1e-12)
        rej = wmap[act & ~accept]
        lam[rej] *= 10.0
        fin = wmap[done | stuck]
        converged[fin] = True
        active[fin] = False
    return theta[:, 0], theta[:, 1], converged, it


def _lattice_starts(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starting points from the lattice values of the profile.

    Returns
    -------
    starts : ndarray of shape (3, P, 2)
        (alpha, beta) of the best lattice cell, of the second-best local
        minimum of the lattice (the best cell again if there is none) and the
        paper's start (1, 2).
    multi : ndarray of bool, shape (P,)
        Whether the lattice has more than one local minimum (cells no higher
        than their eight neighbours) or its best cell lies on the box's edge.
    """
    P, na, nb = grid.shape
    g = np.where(np.isfinite(grid), grid, np.inf)
    padded = np.pad(g, ((0, 0), (1, 1), (1, 1)), constant_values=np.inf)
    neighbours = np.full_like(g, np.inf)
    for i in (-1, 0, 1):
        for j in (-1, 0, 1):
            if i or j:
                np.minimum(neighbours, padded[:, 1 + i : 1 + i + na, 1 + j : 1 + j + nb], out=neighbours)
    local = (g <= neighbours) & np.isfinite(g)
    flat = np.where(local, g, np.inf).reshape(P, -1)
    order = np.argsort(flat, axis=1)[:, :2]
    best = np.argmin(g.reshape(P, -1), axis=1)
    n_local = local.reshape(P, -1).sum(axis=1)
    second = np.where(n_local > 1, order[:, 1], best)
    to_ab = lambda idx: np.stack([(idx // nb) * _GRID_STEP, (idx % nb) * _GRID_STEP], axis=1)  # noqa: E731
    paper = np.tile([1.0, 2.0], (P, 1))
    # A best cell on the edge of the box often hides a valley that bends
    # inwards between lattice cells (seen with < 10 samples): treat it as
    # possibly multimodal too.
    ia, ib = best // nb, best % nb
    edge = (ia == 0) | (ib == 0) | (ia == na - 1) | (ib == nb - 1)
    return np.stack([to_ab(best), to_ab(second), paper]).astype(np.float64), (n_local > 1) | edge


def _newton_decrement(g: np.ndarray, H: np.ndarray, free: np.ndarray) -> np.ndarray:
    """½ gᵀH⁻¹g on the free variables; +inf where that Hessian is not positive definite."""
    gf = np.where(free, g, 0.0)
    a = np.where(free[:, 0], H[:, 0, 0], 1.0)
    d = np.where(free[:, 1], H[:, 1, 1], 1.0)
    b = np.where(free[:, 0] & free[:, 1], H[:, 0, 1], 0.0)
    det = a * d - b * b
    pd_ok = (a > 0) & (det > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        dec = 0.5 * (d * gf[:, 0] ** 2 - 2.0 * b * gf[:, 0] * gf[:, 1] + a * gf[:, 1] ** 2) / det
    return np.where(pd_ok, dec, np.inf)


def fit_mle(
    samples: pd.DataFrame,
    *,
    min_samples: int = 3,
    level: float = 0.95,
    poor_fit_pvalue: float = 0.05,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> FittedScalingLaws:
    """Maximum-likelihood scaling laws for every point in a samples table.

    Parameters
    ----------
    samples : DataFrame
        Columns ``point_id``, ``k``, ``delta`` and optionally ``failed``.
        Rows with ``failed`` true or a non-finite delta are dropped and counted
        in ``meta``.
    min_samples : int, default=3
        Points with fewer usable samples get NaN parameters and the flag
        ``too_few_samples``.
    level : float, default=0.95
        Coverage of the intervals for α and c.
    poor_fit_pvalue : float, default=0.05
        ``poor_fit`` marks points where the likelihood-ratio test of the power
        law against a constant mean (α = 0) has a p-value at or above this.
    max_iter : int, default=100
        Newton iterations at most; unconverged points are flagged
        ``not_converged`` and a :class:`~pointscale.errors.ConvergenceWarning`
        is issued.
    tol : float, default=1e-10
        A point has converged when the mean NLL per sample can decrease by
        less than this (by the Newton decrement, or by the last step).

    Returns
    -------
    FittedScalingLaws
        ``estimator="mle"``. Flags: ``too_few_samples``,
        ``alpha_unidentifiable`` (fewer than two distinct k), ``zero_variance``
        (all Δ = 0 or an exact fit), ``alpha_at_bound`` (α at 0 or e²),
        ``beta_at_bound``, ``sign_uncertain`` (the c interval contains 0),
        ``poor_fit``, ``not_converged``, ``fisher_fallback`` (observed
        information not positive definite; expected information used).
        Extras: ``var_c``, ``var_alpha``, ``cov_c_alpha`` (for ψ_k intervals),
        ``lrt_pvalue``, ``sign_z``.

    Raises
    ------
    DataError
        If the table lacks a column or has an invalid size k.
    ConfigError
        If an option is out of range.
    """
    _check_options(min_samples, level, poor_fit_pvalue, max_iter)
    t_start = time.perf_counter()
    ids, codes, k, delta, counts = prepare_samples(samples)
    P = ids.shape[0]
    order = np.argsort(codes, kind="stable")
    codes, k, delta = codes[order], k[order], delta[order]
    n = np.bincount(codes, minlength=P).astype(np.int64)
    est = {name: np.full(P, np.nan) for name in _ESTIMATES}
    flag = {name: np.zeros(P, dtype=bool) for name in _FLAGS}
    fit_idx = _screen_points(codes, k, delta, n, min_samples, est, flag)

    n_iter = n_iter0 = 0
    if fit_idx.size:
        packed = pack_samples(codes, k, delta, fit_idx)
        # Degenerate points (exact fits, c' = 0) produce inf/NaN intermediates
        # that are dealt with explicitly below; keep numpy quiet about them.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            res = _fit_packed(packed, level=level, max_iter=max_iter, tol=tol)
        _store_fits(packed.point_index, res, est, flag, poor_fit_pvalue)
        n_iter, n_iter0 = res["iterations"], res["iterations_null"]
        if not res["converged"].all():
            warnings.warn(
                f"{int((~res['converged']).sum())} of {fit_idx.size} points did not converge "
                f"in max_iter={max_iter} Newton iterations (flag 'not_converged')",
                ConvergenceWarning,
                stacklevel=2,
            )

    meta: dict[str, Any] = {
        **counts,
        "n_points": int(P),
        "n_fitted": int(fit_idx.size),
        "min_samples": int(min_samples),
        "level": float(level),
        "poor_fit_pvalue": float(poor_fit_pvalue),
        "bounds": [0.0, PARAM_MAX],
        "optimizer": "lattice start (step 0.5) + projected Levenberg-Marquardt Newton in (alpha, beta)",
        "intervals": "observed Fisher information (c, alpha, log sigma^2, beta), delta method; "
        "alpha on log scale; c on log|c| scale when its sign is established",
        "iterations": int(n_iter),
        "iterations_null": int(n_iter0),
        "seconds": round(time.perf_counter() - t_start, 4),
        "flag_counts": {name: int(v.sum()) for name, v in flag.items()},
    }
    k_range = (int(np.floor(k.min())), int(np.ceil(k.max()))) if k.size else None
    return FittedScalingLaws(
        point_ids=ids,
        n_samples=n,
        estimator="mle",
        flags=flag,
        extra={name: est[name] for name in _EXTRAS},
        k_range=k_range,
        meta=meta,
        **{name: est[name] for name in _ESTIMATES if name not in _EXTRAS},
    )


#: Per-point estimates: the law, its intervals and the extras (NaN where not fitted).
_EXTRAS = ("var_c", "var_alpha", "cov_c_alpha", "lrt_pvalue", "sign_z")
_ESTIMATES = ("c", "alpha", "sigma", "beta", "nll", "alpha_low", "alpha_high", "c_low", "c_high") + _EXTRAS
_FLAGS = ("too_few_samples", "alpha_unidentifiable", "zero_variance", "alpha_at_bound", "beta_at_bound",
          "sign_uncertain", "poor_fit", "not_converged", "fisher_fallback")


def _check_options(min_samples: int, level: float, poor_fit_pvalue: float, max_iter: int) -> None:
    if min_samples < 3:
        raise ConfigError(f"min_samples={min_samples} must be >= 3 (four parameters, two profiled out)")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level={level} must lie in (0, 1)")
    if not 0.0 < poor_fit_pvalue < 1.0:
        raise ConfigError(f"poor_fit_pvalue={poor_fit_pvalue} must lie in (0, 1)")
    if max_iter < 1:
        raise ConfigError(f"max_iter={max_iter} must be >= 1")


def _screen_points(codes: np.ndarray, k: np.ndarray, delta: np.ndarray, n: np.ndarray, min_samples: int,
                   est: dict[str, np.ndarray], flag: dict[str, np.ndarray]) -> np.ndarray:
    """Flag the points that cannot be fitted and set the all-zero ones; the indices of the rest.

    ``codes``, ``k``, ``delta`` sorted by point; ``n`` samples per point.
    """
    P = n.shape[0]
    sumsq = np.bincount(codes, delta * delta, minlength=P)
    # alpha is identified only with at least two distinct sizes.
    has = np.flatnonzero(n > 0)
    starts = np.concatenate([[0], np.cumsum(n[has])[:-1]]).astype(np.intp)
    two_sizes = np.zeros(P, dtype=bool)
    if has.size:
        two_sizes[has] = np.minimum.reduceat(k, starts) < np.maximum.reduceat(k, starts)

    too_few = n < min_samples
    zero = ~too_few & (sumsq == 0.0)
    single_k = ~too_few & ~two_sizes
    flag["too_few_samples"][too_few] = True
    flag["alpha_unidentifiable"][single_k | (zero & ~two_sizes)] = True
    # All-zero deltas: the law is psi = 0 exactly; alpha and beta are undefined.
    flag["zero_variance"][zero] = True
    est["c"][zero], est["sigma"][zero] = 0.0, 0.0
    est["c_low"][zero], est["c_high"][zero] = 0.0, 0.0
    est["var_c"][zero] = 0.0
    flag["sign_uncertain"][zero] = True
    return np.flatnonzero(~too_few & ~zero & ~single_k)


def _store_fits(i: np.ndarray, res: dict[str, Any], est: dict[str, np.ndarray], flag: dict[str, np.ndarray],
                poor_fit_pvalue: float) -> None:
    """Copy the fits of points ``i`` (:func:`_fit_packed`'s result) into the estimates and flags."""
    for name in _ESTIMATES:
        est[name][i] = res[name]
    a_fit, b_fit = res["alpha"], res["beta"]
    flag["alpha_at_bound"][i] = (a_fit <= _BOUND_TOL) | (a_fit >= PARAM_MAX - _BOUND_TOL)
    flag["beta_at_bound"][i] = (b_fit <= _BOUND_TOL) | (b_fit >= PARAM_MAX - _BOUND_TOL)
    flag["sign_uncertain"][i] = res["sign_uncertain"]
    flag["poor_fit"][i] = res["lrt_pvalue"] >= poor_fit_pvalue
    flag["not_converged"][i] = ~res["converged"]
    flag["fisher_fallback"][i] = res["fisher_fallback"]
    flag["zero_variance"][i] = res["exact"]


def _fit_packed(packed: PackedSamples, *, level: float, max_iter: int, tol: float) -> dict[str, Any]:
    """Fit every packed point: search, closed forms, LRT, covariance, intervals."""
    grid = profile_grid(packed, _GRID_STEP, _GRID_N, _GRID_N)
    starts, multi = _lattice_starts(grid)
    a_fit, b_fit, conv, n_iter = _minimize_profile(
        packed, starts[0, :, 0], starts[0, :, 1], fix_alpha=False, max_iter=max_iter, tol=tol
    )
    # Where the lattice shows more than one basin, also start from the
    # second-best lattice minimum and from the paper's (alpha, beta) =
    # (1, 2), and keep the best optimum. With many samples the profile is
    # almost always unimodal and this costs nothing.
    other = np.flatnonzero(multi)
    if other.size:
        sub = packed.take(other)
        f_best = profile_objective(sub, a_fit[other], b_fit[other], derivatives=False).f
        for extra_start in starts[1:]:
            a2, b2, conv2, it2 = _minimize_profile(
                sub, extra_start[other, 0], extra_start[other, 1],
                fix_alpha=False, max_iter=max_iter, tol=tol,
            )
            n_iter = max(n_iter, it2)
            f2 = profile_objective(sub, a2, b2, derivatives=False).f
            better = f2 < f_best
            a_fit[other[better]], b_fit[other[better]] = a2[better], b2[better]
            conv[other[better]] = conv2[better]
            f_best = np.where(better, f2, f_best)
    # Constant-mean model (alpha = 0), for the likelihood-ratio test.
    b00 = np.argmin(grid[:, 0, :], axis=1) * _GRID_STEP
    _, b_null, conv0, n_iter0 = _minimize_profile(
        packed, np.zeros(packed.n_points), b00.astype(float), fix_alpha=True, max_iter=max_iter, tol=tol
    )
    f1 = profile_objective(packed, a_fit, b_fit, derivatives=False)
    f0 = profile_objective(packed, np.zeros(packed.n_points), b_null, derivatives=False)
    c_f, s_f, nll_f, cn, s2n = closed_form(packed, a_fit, b_fit)

    # Likelihood-ratio test of alpha = 0 on the boundary of alpha >= 0:
    # the null distribution is the 50:50 mixture of chi2_0 and chi2_1.
    stat = np.maximum(2.0 * packed.counts * (f0.f - f1.f), 0.0)
    p = np.where(stat > 0, 0.5 * stats.chi2.sf(stat, 1), 1.0)

    cov, fallback = _covariance(packed, cn, a_fit, s2n, b_fit)
    # (c', alpha) block in normalised units -> original c = s c' k0^alpha.
    s_cc, s_ca, s_aa = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    L = packed.log_k0
    j0 = packed.scale * np.exp(a_fit * L)
    j1 = c_f * L
    v_c = j0 * j0 * s_cc + 2.0 * j0 * j1 * s_ca + j1 * j1 * s_aa
    cv = j0 * s_ca + j1 * s_aa
    z = stats.norm.ppf(0.5 + level / 2.0)
    al, ah = _alpha_interval(a_fit, s_aa, z)
    zs = _sign_z(cn, s_cc, s_ca, s_aa, packed.x_min, packed.x_max)
    cl, ch, uncertain = _c_interval(c_f, v_c, zs, z)

    # Exact fits (S at its floor): no noise, so the likelihood is unbounded
    # (nll undefined) and the parameters carry no sampling uncertainty.
    exact = f1.floored | (s2n <= 1e-12)
    s_f = np.where(exact, 0.0, s_f)
    nll_f = np.where(exact, np.nan, nll_f)
    for arr in (v_c, cv, s_aa):
        arr[exact] = 0.0
    al, ah = np.where(exact, a_fit, al), np.where(exact, a_fit, ah)
    cl, ch = np.where(exact, c_f, cl), np.where(exact, c_f, ch)
    zs = np.where(exact, np.where(c_f != 0, np.inf, 0.0), zs)
    uncertain = np.where(exact, c_f == 0, uncertain)
    return {
        "c": c_f, "alpha": a_fit, "sigma": s_f, "beta": b_fit, "nll": nll_f,
        "var_c": v_c, "var_alpha": s_aa, "cov_c_alpha": cv, "lrt_pvalue": p, "sign_z": zs,
        "alpha_low": al, "alpha_high": ah, "c_low": cl, "c_high": ch,
        "sign_uncertain": uncertain, "converged": conv & conv0, "fisher_fallback": fallback,
        "exact": exact, "iterations": int(n_iter), "iterations_null": int(n_iter0),
    }


def _covariance(packed, c_norm, alpha, s2_norm, beta) -> tuple[np.ndarray, np.ndarray]:
    """Inverse observed information per point; expected information where it is not PD."""
    info = observed_information(packed, c_norm, alpha, s2_norm, beta)
    with np.errstate(invalid="ignore", over="ignore"):
        eig = np.linalg.eigvalsh(np.where(np.isfinite(info), info, 0.0))
    scale = np.maximum(np.abs(eig).max(axis=1), 1e-300)
    pd_ok = np.isfinite(info).all(axis=(1, 2)) & (eig[:, 0] > 1e-10 * scale)
    cov = np.full_like(info, np.nan)
    if pd_ok.any():
        cov[pd_ok] = np.linalg.inv(info[pd_ok])
    bad = ~pd_ok
    if bad.any():
        sub = packed.take(np.flatnonzero(bad))
        exp_info = expected_information(sub, c_norm[bad], alpha[bad], s2_norm[bad], beta[bad])
        # Only the (c', alpha) block is used; invert it directly (it is
        # singular when c' = 0: alpha is then not identified -> infinite variance).
        icc, ica, iaa = exp_info[:, 0, 0], exp_info[:, 0, 1], exp_info[:, 1, 1]
        det = icc * iaa - ica * ica
        ok = det > 1e-12 * np.maximum(icc * iaa, 1e-300)
        block = np.full((bad.sum(), 2, 2), np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            block[:, 0, 0] = np.where(ok, iaa / det, 1.0 / icc)
            block[:, 1, 1] = np.where(ok, icc / det, np.inf)
            block[:, 0, 1] = block[:, 1, 0] = np.where(ok, -ica / det, 0.0)
        tmp = cov[bad]
        tmp[:, :2, :2] = block
        cov[bad] = tmp
    return cov, bad


def _alpha_interval(alpha: np.ndarray, var_alpha: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Wald interval on log α, clipped to the parameter box [0, e²]."""
    sd = np.sqrt(np.maximum(var_alpha, 0.0))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rel = sd / alpha
        lo = alpha * np.exp(-z * rel)
        hi = alpha * np.exp(z * rel)
    # alpha on its lower bound: log scale is undefined; use the linear interval.
    at_zero = alpha <= _BOUND_TOL
    lo = np.where(at_zero, 0.0, lo)
    hi = np.where(at_zero, alpha + z * sd, hi)
    unknown = ~np.isfinite(sd)
    lo = np.where(unknown, 0.0, lo)
    hi = np.where(unknown, PARAM_MAX, hi)
    return np.clip(lo, 0.0, PARAM_MAX), np.clip(hi, 0.0, PARAM_MAX)


def _sign_z(c_norm, s_cc, s_ca, s_aa, x_min, x_max) -> np.ndarray:
    """|z| of ψ at the sampled size where ψ̂ and α̂ are uncorrelated (see likelihood.py).

    ψ at centred log size x is c'·e^{−αx}; its z statistic does not depend on
    the factor e^{−αx}, and is largest at x* = Σ_cα / (c' Σ_αα).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        x_star = np.where(
            (s_aa > 0) & np.isfinite(s_aa) & (c_norm != 0), s_ca / (c_norm * s_aa), 0.0
        )
        x_star = np.clip(np.nan_to_num(x_star), x_min, x_max)
        var = s_cc - 2.0 * c_norm * x_star * s_ca + c_norm**2 * x_star**2 * s_aa
        var = np.where(np.isfinite(s_aa), var, s_cc)
        return np.abs(c_norm) / np.sqrt(np.maximum(var, 1e-300))


def _c_interval(c, var_c, sign_z, z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interval for c: on log|c| when the sign is established, else widened to contain 0."""
    sd = np.sqrt(np.maximum(var_c, 0.0))
    certain = (sign_z >= z) & (c != 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rel = sd / np.abs(c)
        f_lo, f_hi = np.exp(-z * rel), np.exp(z * rel)
        lo_cert = np.where(c > 0, c * f_lo, c * f_hi)
        hi_cert = np.where(c > 0, c * f_hi, c * f_lo)
    lo = np.where(certain, lo_cert, np.minimum(c - z * sd, 0.0))
    hi = np.where(certain, hi_cert, np.maximum(c + z * sd, 0.0))
    # The flag is defined by the interval itself; this also catches a
    # log-scale interval whose lower end underflowed to 0 (se(log|c|) huge).
    return lo, hi, (lo <= 0.0) & (hi >= 0.0)


#: Points per chunk of the MLE fit: its lattice and Newton state take ~15 kB per
#: point, so a chunk holds ~1.5 GB whatever the number of points.
MLE_CHUNK_POINTS = 100_000


def fit_mle_chunked(samples: pd.DataFrame, chunk_points: int = MLE_CHUNK_POINTS, **kwargs):
    """:func:`~pointscale.laws.fit_mle` over chunks of points, joined.

    Each point's law depends only on its own samples, so fitting chunk by
    chunk gives the same laws with memory bounded by the chunk.
    """
    codes, uniques = pd.factorize(samples["point_id"], sort=True)
    if len(uniques) <= chunk_points:
        return fit_mle(samples, **kwargs)
    order = np.argsort(codes, kind="stable")
    cuts = np.searchsorted(codes[order], np.arange(0, len(uniques), chunk_points)[1:])
    parts = [fit_mle(samples.iloc[rows], **kwargs) for rows in np.split(order, cuts)]
    return FittedScalingLaws.concat(parts)
