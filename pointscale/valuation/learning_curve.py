r"""The dataset-level learning curve, from the base fits the sampling already made.

Every base subset D of the sampling plan was fitted once and scored: the
ledger stores U(D) (``u_base``) and |D| = k on each of its rows. Those
(k, U) pairs trace the learning curve of the model on this data at no extra
cost. We fit the aggregate law of the paper's code

.. math::  U(k) \approx \varepsilon - c\,k^{-\alpha}

(ε the score with unlimited data, c > 0 when more data helps) and answer
"how much would more data help?" with the predicted score at 2× and 10× the
current pool.

Estimation
----------
For fixed α the model is linear in (ε, c), so α is profiled on a grid
(0.01 … 3, step 0.01) with (ε, c) by
weighted least squares. The spread of U(D) shrinks with k (a model trained
on more data varies less), so the weights are the inverse of a fitted
variance law: log r² ≈ a − γ log k on the unweighted residuals (one
iteration). Intervals (95 %) are percentile intervals of a bootstrap over
bases (``n_boot`` replicates, seeded by identity: ``rng(seed,
STREAM_BOOTSTRAP, "learning-curve")``), refitting the whole profile each
time -- they include the uncertainty of α, which dominates extrapolation.

Caveats: predictions beyond the sampled sizes are extrapolations of the
law, and at 10× the pool they can be far from the data (the interval says
how far); subsets drawn from a finite pool are less random near its size.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import DataError
from ..seeding import STREAM_BOOTSTRAP, rng

__all__ = ["fit_learning_curve", "base_utilities"]

_ALPHA_GRID = np.round(np.arange(0.01, 3.0001, 0.01), 2)


def base_utilities(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per base fit: ``base_id``, ``k``, ``u_base`` (failed bases dropped)."""
    missing = [c for c in ("base_id", "k", "u_base") if c not in samples.columns]
    if missing:
        raise DataError(f"samples lack column(s) {missing}; the learning curve needs ledger rows")
    bases = samples.drop_duplicates("base_id")[["base_id", "k", "u_base"]]
    bases = bases[np.isfinite(bases["u_base"].to_numpy(dtype=np.float64))]
    return bases.sort_values("base_id", kind="mergesort").reset_index(drop=True)


def _wls_profile(logk: np.ndarray, u: np.ndarray, W: np.ndarray, alphas: np.ndarray):
    """Best (ε, c, α) on the α grid for each weight vector (rows of W)."""
    # For each alpha: features f = -k^-alpha; weighted sums per replicate.
    F = -np.exp(-np.outer(alphas, logk))                       # (A, n)
    s1 = W.sum(axis=1)[:, None]                                # (R, 1)
    sf = W @ F.T                                               # (R, A)
    sff = W @ (F * F).T
    su = (W @ u)[:, None]
    sfu = W @ (F * u).T
    suu = (W @ (u * u))[:, None]
    det = s1 * sff - sf * sf
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (s1 * sfu - sf * su) / det
        eps = (su - c * sf) / s1
        sse = suu - 2 * eps * su - 2 * c * sfu + eps * eps * s1 + 2 * eps * c * sf + c * c * sff
    sse = np.where(np.isfinite(sse), sse, np.inf)
    j = np.argmin(sse, axis=1)
    r = np.arange(W.shape[0])
    return eps[r, j], c[r, j], alphas[j]


def fit_learning_curve(samples: pd.DataFrame, *, n_pool: int | None = None,
                       targets: Sequence[float] | None = None, n_boot: int = 200, seed: int = 0,
                       level: float = 0.95) -> dict[str, Any]:
    """Fit U(k) ≈ ε − c·k^(−α) to the base fits of a ledger.

    Parameters
    ----------
    samples : DataFrame
        Ledger rows (need ``base_id``, ``k``, ``u_base``).
    n_pool : int, optional
        Current pool size; predictions at ``n_pool``, 2× and 10× it.
    targets : sequence of float, optional
        Other sizes to predict at.
    n_boot : int, default=200
        Bootstrap replicates over bases for the intervals.
    seed : int, default=0
    level : float, default=0.95

    Returns
    -------
    dict
        ``epsilon``, ``c``, ``alpha`` (each with ``_low``/``_high``), ``gamma``
        (variance exponent), ``n_bases``, ``k_range``, ``predictions`` (list of
        {k, u, low, high, extrapolated}), ``rmse``, ``method``. JSON-able.
    """
    bases = base_utilities(samples)
    if len(bases) < 5 or bases["k"].nunique() < 3:
        raise DataError(f"the learning curve needs at least 5 base fits at 3 or more sizes; "
                        f"have {len(bases)} at {bases['k'].nunique()}")
    k = bases["k"].to_numpy(dtype=np.float64)
    u = bases["u_base"].to_numpy(dtype=np.float64)
    logk = np.log(k)
    ones = np.ones((1, k.size))
    e0, c0, a0 = (v[0] for v in _wls_profile(logk, u, ones, _ALPHA_GRID))
    resid = u - (e0 - c0 * np.exp(-a0 * logk))
    # Variance law log r^2 = a - gamma log k (least squares), then weights 1/var.
    A = np.column_stack([np.ones_like(logk), -logk])
    coef, *_ = np.linalg.lstsq(A, np.log(resid * resid + 1e-300), rcond=None)
    gamma = float(np.clip(coef[1], -5.0, 5.0))
    w = np.exp(gamma * (logk - logk.mean()))
    w = w / w.mean()
    eps, c, alpha = (float(v[0]) for v in _wls_profile(logk, u, w[None, :], _ALPHA_GRID))
    g = rng(seed, STREAM_BOOTSTRAP, "learning-curve")
    counts = g.multinomial(k.size, np.full(k.size, 1.0 / k.size), size=n_boot).astype(np.float64)
    be, bc, ba = _wls_profile(logk, u, counts * w[None, :], _ALPHA_GRID)
    q = ((1.0 - level) / 2.0, (1.0 + level) / 2.0)
    sizes = [] if n_pool is None else [float(n_pool), 2.0 * n_pool, 10.0 * n_pool]
    sizes += [float(t) for t in (targets or [])]
    k_lo, k_hi = float(k.min()), float(k.max())
    preds = []
    for s in sizes:
        boot = be - bc * s ** (-ba)
        preds.append({"k": s, "u": eps - c * s ** (-alpha), "low": float(np.quantile(boot, q[0])),
                      "high": float(np.quantile(boot, q[1])), "extrapolated": bool(s < k_lo or s > k_hi)})
    fitted = eps - c * np.exp(-alpha * logk)
    out = {
        "law": "U(k) = epsilon - c * k^(-alpha)",
        "epsilon": eps, "epsilon_low": float(np.quantile(be, q[0])), "epsilon_high": float(np.quantile(be, q[1])),
        "c": c, "c_low": float(np.quantile(bc, q[0])), "c_high": float(np.quantile(bc, q[1])),
        "alpha": alpha, "alpha_low": float(np.quantile(ba, q[0])), "alpha_high": float(np.quantile(ba, q[1])),
        "gamma": gamma, "n_bases": int(k.size), "k_range": [int(k_lo), int(k_hi)],
        "rmse": float(np.sqrt(np.mean((u - fitted) ** 2))),
        "level": level, "n_boot": int(n_boot),
        "predictions": preds,
        "method": "weighted least squares, alpha profiled on a 0.01 grid in [0.01, 3]; weights from a "
                  "fitted variance law k^-gamma; percentile bootstrap over bases",
    }
    return out
