r"""The block-mean control variate: the base subset's shared effect, removed at no extra fit.

The sampling plan values a *block* of points against each base subset D
(:mod:`pointscale.sampling.plans`): every point z of the block gets
Δ(z, D) = U(D ∪ {z}) − U(D) on the same D, and blocks are reshuffled every
round. A base that happens to be poor (or good) moves the Δ of every point of
its block the same way, so within a point, Δ correlates with the other points'
mean Δ on the same base. That mean is free -- it is in the ledger already --
and its expectation at size k is known precisely from all bases of the run.

The adjustment
--------------
For a sample (z, D) with |D| = k in a block of n ≥ 2 usable samples,

* the control c(z, D) = Δ̄_{−z}(D) − μ̂_{−D}(k): the mean Δ of the *other*
  points of the block on D, minus the expected block mean at size k;
* μ(k) = E[Δ̄(D) | k]: a weighted least-squares fit of the bases' mean Δ
  (weights: their usable samples) on a smooth function of k -- one mean per
  size where the run has at most :data:`MAX_DISCRETE_SIZES` distinct sizes,
  each on two bases or more (staggered designs), else a polynomial in log k of degree 0, 1 or 2 by the
  number of bases (:func:`_degree`). μ̂_{−D} is that fit *without base D*
  (the exact leave-one-out prediction from the hat matrix), so a sample's
  control never contains its own base's deviation from the curve;
* the adjusted sample Δ̃ = Δ − b·c, with b the pooled within-point regression
  coefficient of Δ on c (both centred per point): the variance-minimising b
  for each point's mean, estimated from every point of the run.

Samples in a block of one (no other point) and failed samples are left as
they are. E[c | z] ≈ 0, so Δ̃ has (nearly) the mean of Δ at every k and the
laws fitted to Δ̃ estimate the same ψ_k(z), with less noise where ρ, the
within-point correlation of Δ and c, is large: the within-point variance
falls by a factor ≈ 1 − ρ².

Why the adjusted samples can be fitted as the raw ones
------------------------------------------------------
* **Within a point the samples stay independent**: z's samples lie on
  different bases (one per round), each drawn independently, and the
  control of (z, D) uses only the block's Δ on D and the size curve.
* **Estimating μ and b from the same run** couples the samples only through
  averages over the whole run: μ̂_{−D} leaves base D out, and the other
  bases enter it with weight ~1/(number of bases), so a point's own samples
  on other bases move its control by O(1/(B·n_bases)) of their deviation
  (B the block size); b̂ is one number fitted on all N points, so the
  covariance between b̂ and one point's mean control is O(1/N) -- a bias of
  O(σ²/(N·n)) in a value whose noise is σ/√n. Both are negligible next to
  the noise they remove (and the held-out check below is fully cross-fitted).
* **Block composition**: E[Δ̄_{−z}(D)] is the mean ψ_k of the points that
  shared z's block, not the run's mean μ(k). Blocks are reshuffled every
  round, so over z's n rounds this difference averages over n independent
  draws of its block mates: zero mean, variance Var(ψ)/((B−1)·n) -- noise
  on a scale B−1 times smaller than the spread of the values, not a bias.
* **The mean over all points is unchanged beyond noise**: Σ_z c sums each
  base's deviation from the fitted curve, which is zero on average.

Does it help here?
------------------
:func:`adjust` also answers this from the run's own samples, fully
cross-fitted: the bases are split into ``folds`` folds (by a keyed hash of
the base id); for each fold, μ̂ and b̂ are fitted on the other folds, each
point's mean Δ and mean Δ̃ over its training samples are the two estimates,
and both are scored by their squared error against the fold's adjusted
samples (unbiased for the point's expected Δ whatever b̂ is, and less noisy
than the raw ones; the same target for both estimates, so the difference of
the two squared errors estimates the difference of their mean squared
errors). ``helps`` is true when the mean gain exceeds :data:`HELPS_Z` standard errors
(over points, each point's held-out samples summed: they share its
estimates). The choose-laws stage (:func:`pointscale.pipeline.choose_laws`)
applies the adjustment where ``helps`` says so (or always/never when asked).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..seeding import mix64

__all__ = ["adjust", "block_controls", "cross_fitted", "CONTROL_SETTINGS", "MAX_DISCRETE_SIZES", "DEFAULT_FOLDS"]

#: ``control_variate`` settings of the choose-laws stage: "auto" applies it where it helps.
CONTROL_SETTINGS = ("auto", "on", "off")
#: At most this many distinct sizes: μ(k) is one mean per size (staggered designs).
MAX_DISCRETE_SIZES = 12
#: The cross-fitted gain must exceed this many standard errors to count as help: with no
#: shared effect the estimated b is noise and the gain a coin flip (z > 1 on 2 of 8 planted
#: null runs in tests/core/test_control_variates.py; z > 2 on none).
HELPS_Z = 2.0
#: Folds of the cross-fitted check (by base).
DEFAULT_FOLDS = 5


def _degree(n_bases: int) -> int:
    """Degree of the polynomial in log k: enough bases per coefficient (~15) for a stable curve."""
    return 2 if n_bases >= 45 else 1 if n_bases >= 15 else 0


def _discrete(ref: np.ndarray) -> bool:
    """One mean per size: few distinct sizes, each shared by several bases (staggered designs)."""
    sizes, counts = np.unique(ref, return_counts=True)
    return sizes.size <= MAX_DISCRETE_SIZES and counts.min() >= 2


def _design(k: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Columns of the size curve at sizes ``k`` (``ref``: the sizes of the bases it is fitted on)."""
    sizes = np.unique(ref)
    if _discrete(ref):
        onehot = (k[:, None] == sizes[None, :]).astype(np.float64)
        onehot[~onehot.any(axis=1)] = np.nan  # a size the curve was not fitted on: no control
        return onehot
    lo, hi = np.log(sizes[0]), np.log(sizes[-1])
    u = (np.log(k) - 0.5 * (lo + hi)) / max(0.5 * (hi - lo), 1e-12)
    return np.vander(u, _degree(ref.size) + 1, increasing=True)


def _base_table(base: np.ndarray, k: np.ndarray, delta: np.ndarray) -> pd.DataFrame:
    """Per base: its size, number of usable samples and their sum."""
    frame = pd.DataFrame({"base": base, "k": k, "d": delta})
    return frame.groupby("base", sort=True).agg(k=("k", "first"), n=("d", "size"), s=("d", "sum"))


def _curve(table: pd.DataFrame, leave_out: bool):
    """WLS fit of the bases' mean Δ on the size design; returns (predict, loo) where ``loo``
    is the leave-one-base-out prediction at each base of ``table`` (NaN where undefined)."""
    k = table["k"].to_numpy(np.float64)
    w = table["n"].to_numpy(np.float64)
    m = table["s"].to_numpy(np.float64) / w
    X = _design(k, k)
    XtW = X.T * w
    gram = XtW @ X
    inv = np.linalg.pinv(gram)
    beta = inv @ (XtW @ m)

    def predict(kk: np.ndarray) -> np.ndarray:
        return _design(np.asarray(kk, np.float64), k) @ beta

    loo = None
    if leave_out:
        fit = X @ beta
        h = w * np.einsum("ij,jk,ik->i", X, inv, X)
        with np.errstate(all="ignore"):
            loo = np.where(h < 1.0 - 1e-9, m - (m - fit) / (1.0 - h), np.nan)
    return predict, loo


def block_controls(samples: pd.DataFrame, fit_rows: np.ndarray | None = None) -> np.ndarray:
    """The control c(z, D) of every row (NaN where there is none).

    ``fit_rows`` (boolean mask) restricts the size curve to the bases of those
    rows; rows outside it get the curve's prediction (no leave-one-out: their
    bases are not in the fit), rows inside it the leave-one-base-out one.
    Rows must be usable (finite Δ, not failed).
    """
    base = samples["base_id"].to_numpy(np.int64)
    k = samples["k"].to_numpy(np.float64)
    d = samples["delta"].to_numpy(np.float64)
    table = _base_table(base, k, d)
    pos = table.index.get_indexer(base)
    n_b, s_b = table["n"].to_numpy()[pos], table["s"].to_numpy()[pos]
    with np.errstate(all="ignore"):
        others = np.where(n_b >= 2, (s_b - d) / (n_b - 1), np.nan)
    fit = np.ones(len(samples), bool) if fit_rows is None else np.asarray(fit_rows, bool)
    fit_table = _base_table(base[fit], k[fit], d[fit])
    predict, loo = _curve(fit_table, leave_out=True)
    mu = predict(k)
    inside = fit_table.index.get_indexer(base)
    mu = np.where(inside >= 0, loo[np.maximum(inside, 0)], mu)
    return others - mu


def _centred(values: np.ndarray, codes: np.ndarray, n_codes: int) -> np.ndarray:
    sums = np.bincount(codes, weights=values, minlength=n_codes)
    counts = np.bincount(codes, minlength=n_codes)
    with np.errstate(all="ignore"):
        return values - (sums / counts)[codes]


def _coefficient(d: np.ndarray, c: np.ndarray, codes: np.ndarray, n_codes: int,
                 base: np.ndarray) -> tuple[float, float, float]:
    """Pooled within-point regression coefficient of Δ on c, its standard error, and the
    within-point correlation of Δ and c.

    The standard error is clustered by base: the controls of one base share
    its size-curve error and each other's noise.
    """
    dc, cc = _centred(d, codes, n_codes), _centred(c, codes, n_codes)
    sxx, sxy, syy = float(cc @ cc), float(cc @ dc), float(dc @ dc)
    if sxx <= 0.0 or syy <= 0.0:
        return 0.0, float("inf"), 0.0
    b = sxy / sxx
    _, cluster = np.unique(base, return_inverse=True)
    score = np.bincount(cluster, weights=cc * (dc - b * cc))
    se = float(np.sqrt(score @ score) / sxx)
    return b, se, sxy / np.sqrt(sxx * syy)


def _usable_mask(samples: pd.DataFrame) -> np.ndarray:
    keep = np.isfinite(pd.to_numeric(samples["delta"], errors="coerce").to_numpy(np.float64))
    if "failed" in samples.columns:
        keep &= ~samples["failed"].fillna(False).to_numpy(bool)
    return keep


def _folds(base: np.ndarray, folds: int, seed: int) -> np.ndarray:
    key = mix64(base.astype(np.uint64) ^ mix64(np.array([seed + 0xC0FFEE], np.uint64))[0])
    return (key % np.uint64(folds)).astype(np.int64)


def cross_fitted(samples: pd.DataFrame, *, folds: int = DEFAULT_FOLDS, seed: int = 0):
    """Folds of bases, each with Δ̃ computed from the other folds alone.

    Yields ``(held, adjusted)`` per fold: ``held`` marks the rows of the
    usable samples (finite Δ, not failed; in order) on the fold's bases, and
    ``adjusted`` is Δ̃ of every usable row with the size curve and b fitted on
    the rows outside the fold (the training rows' controls leave their own
    base out of the curve, as in :func:`adjust`). Any estimator fitted to
    the training rows' Δ or Δ̃ can then be scored against the held-out rows'
    Δ̃, which is unbiased for the point's expected Δ whatever b is.
    """
    keep = _usable_mask(samples)
    frame = samples.loc[keep, ["point_id", "k", "delta", "base_id"]].reset_index(drop=True)
    d = frame["delta"].to_numpy(np.float64)
    base = frame["base_id"].to_numpy(np.int64)
    codes, uniques = pd.factorize(frame["point_id"], sort=False)
    fold = _folds(base, folds, seed)
    for f in range(folds):
        held, train = fold == f, fold != f
        if not held.any() or not train.any():
            continue
        c = block_controls(frame, fit_rows=train)
        ok = np.isfinite(c)
        b, _, _ = _coefficient(d[train & ok], c[train & ok], codes[train & ok], len(uniques), base[train & ok])
        yield held, np.where(ok, d - b * np.where(ok, c, 0.0), d)


def _heldout(samples: pd.DataFrame, folds: int, seed: int) -> dict[str, Any]:
    """Cross-fitted squared errors of each point's plain and adjusted training mean (module docstring)."""
    keep = _usable_mask(samples)
    d = samples["delta"].to_numpy(np.float64)[keep]
    codes, uniques = pd.factorize(samples["point_id"].to_numpy()[keep], sort=False)
    n_codes = len(uniques)
    gain, se_raw, se_adj = np.zeros(n_codes), np.zeros(n_codes), np.zeros(n_codes)
    n_held = 0
    for held, adj in cross_fitted(samples, folds=folds, seed=seed):
        train = ~held
        cnt = np.bincount(codes[train], minlength=n_codes)
        with np.errstate(all="ignore"):
            m_raw = np.bincount(codes[train], weights=d[train], minlength=n_codes) / cnt
            m_adj = np.bincount(codes[train], weights=adj[train], minlength=n_codes) / cnt
        h = held & (cnt[codes] > 0)
        target = adj[h]
        e_raw = (target - m_raw[codes[h]]) ** 2
        e_adj = (target - m_adj[codes[h]]) ** 2
        gain += np.bincount(codes[h], weights=e_raw - e_adj, minlength=n_codes)
        se_raw += np.bincount(codes[h], weights=e_raw, minlength=n_codes)
        se_adj += np.bincount(codes[h], weights=e_adj, minlength=n_codes)
        n_held += int(h.sum())
    if n_held == 0:
        return {"n_heldout": 0, "helps": False}
    # Per point sums (its held-out samples share its estimates), scaled to per-sample means.
    per_point = gain * n_codes / n_held
    g = float(gain.sum() / n_held)
    g_se = float(np.std(per_point, ddof=1) / np.sqrt(n_codes)) if n_codes > 1 else float("inf")
    return {"n_heldout": n_held, "folds": int(folds),
            "heldout_mse_plain": float(se_raw.sum() / n_held), "heldout_mse_adjusted": float(se_adj.sum() / n_held),
            "heldout_gain": g, "heldout_gain_se": g_se, "helps": bool(g > HELPS_Z * g_se)}


def adjust(samples: pd.DataFrame, *, folds: int = DEFAULT_FOLDS, seed: int = 0,
           check: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Samples with the block-mean control variate applied, and a record of what it did.

    Parameters
    ----------
    samples : DataFrame
        Ledger rows: ``point_id``, ``k``, ``delta``, ``base_id`` and
        optionally ``failed``.
    folds : int, default=5
        Folds of bases of the cross-fitted check.
    seed : int, default=0
        Keys the fold of each base.
    check : bool, default=True
        Run the cross-fitted check (``helps``); False: only the adjustment.

    Returns
    -------
    adjusted : DataFrame
        ``samples`` with ``delta`` replaced by Δ̃ = Δ − b·c (unchanged where
        a sample has no control: failed, or alone on its base).
    record : dict
        ``available`` (False with a ``reason`` when there is nothing to
        adjust), ``b``, ``correlation`` (within-point, of Δ and c),
        ``variance_reduction`` (1 − within-point variance of Δ̃ over that of
        Δ), ``n_adjusted``, ``n_bases``, ``size_curve`` and, with ``check``,
        the held-out scores and ``helps`` (module docstring).
    """
    if "base_id" not in samples.columns:
        return samples, {"available": False, "helps": False,
                         "reason": "the samples have no base_id (not ledger rows)"}
    keep = _usable_mask(samples)
    frame = samples.loc[keep, ["point_id", "k", "delta", "base_id"]].reset_index(drop=True)
    if frame.empty:
        return samples, {"available": False, "helps": False, "reason": "no usable samples"}
    d = frame["delta"].to_numpy(np.float64)
    base = frame["base_id"].to_numpy(np.int64)
    k = frame["k"].to_numpy(np.float64)
    codes, uniques = pd.factorize(frame["point_id"], sort=False)
    n_codes = len(uniques)
    c = block_controls(frame)
    ok = np.isfinite(c)
    n_bases = int(pd.unique(base).size)
    if ok.sum() < 3:
        return samples, {"available": False, "helps": False, "n_bases": n_bases,
                         "reason": "no base holds two or more usable samples (block size 1?)"}
    b, b_se, rho = _coefficient(d[ok], c[ok], codes[ok], n_codes, base[ok])
    adj = np.where(ok, d - b * np.where(ok, c, 0.0), d)
    var_raw = float(np.var(_centred(d, codes, n_codes)))
    var_adj = float(np.var(_centred(adj, codes, n_codes)))
    base_sizes = _base_table(base, k, d)["k"].to_numpy(np.float64)
    record: dict[str, Any] = {
        "available": True,
        "kind": "block_mean",
        "b": float(b),
        "b_se": b_se,
        "correlation": float(rho),
        "variance_reduction": float(1.0 - var_adj / var_raw) if var_raw > 0 else 0.0,
        "n_adjusted": int(ok.sum()),
        "n_samples": int(len(frame)),
        "n_bases": n_bases,
        "mean_block_size": float(len(frame) / n_bases),
        "size_curve": ("one mean per size" if _discrete(base_sizes)
                       else f"polynomial of degree {_degree(n_bases)} in log k"),
        "mean_shift": float(np.mean(adj) - np.mean(d)),
    }
    if check:
        record.update(_heldout(samples, int(folds), int(seed)))
    out = samples.copy()
    delta = out["delta"].to_numpy(np.float64, copy=True)
    delta[np.flatnonzero(keep)] = adj
    out["delta"] = delta
    return out, record
