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

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from ..seeding import mix64
from ..errors import ConfigError

__all__ = ["adjust", "block_controls", "base_totals", "merge_totals", "control_table", "apply_control", "cross_fitted", "CONTROL_SETTINGS", "MAX_DISCRETE_SIZES", "DEFAULT_FOLDS"]

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


@dataclasses.dataclass(frozen=True)
class _Layout:
    """The usable samples as integer codes: computed once, shared by every fold."""

    d: np.ndarray          # Δ per row
    base: np.ndarray       # base code per row (0 .. n_bases − 1)
    point: np.ndarray      # point code per row
    n_points: int
    base_k: np.ndarray     # size of each base
    base_ids: np.ndarray   # base_id of each base code
    n_b: np.ndarray        # usable samples on each base (all of the run's, see ``of``)
    s_b: np.ndarray        # their summed Δ

    @classmethod
    def of(cls, frame: pd.DataFrame, bases: pd.DataFrame | None = None) -> "_Layout":
        """The rows of ``frame``; each base's totals from ``bases`` (:func:`base_totals`) or from the rows.

        ``bases`` holds every base of the run when ``frame`` is the rows of some
        of its points only (a block's other points are then still counted).
        """
        point, points = pd.factorize(frame["point_id"], sort=False)
        d = frame["delta"].to_numpy(np.float64)
        if bases is None:
            base, base_ids = pd.factorize(frame["base_id"].to_numpy(np.int64), sort=False)
            k = frame["k"].to_numpy(np.float64)
            base_k = np.empty(len(base_ids))
            base_k[base] = k  # one size per base
            n_b = np.bincount(base, minlength=len(base_ids))
            s_b = np.bincount(base, weights=d, minlength=len(base_ids))
        else:
            base_ids = bases["base_id"].to_numpy(np.int64)
            base = pd.Index(base_ids).get_indexer(frame["base_id"].to_numpy(np.int64))
            if (base < 0).any():
                raise ValueError("bases lacks some bases of the samples (base_totals of every row of the run)")
            base_k = bases["k"].to_numpy(np.float64)
            n_b, s_b = bases["n"].to_numpy(np.int64), bases["sum"].to_numpy(np.float64)
        return cls(d, base, point, len(points), base_k, np.asarray(base_ids, np.int64), n_b, s_b)

    @property
    def n_bases(self) -> int:
        return self.base_ids.size


def _curve(k: np.ndarray, w: np.ndarray, m: np.ndarray):
    """WLS fit of bases' mean Δ ``m`` (weights ``w``) on the size design at sizes ``k``.

    Returns ``(predict, loo)``: the fitted curve as a function of k, and the
    leave-one-base-out prediction at each fitted base (NaN where undefined).
    """
    X = _design(k, k)
    XtW = X.T * w
    inv = np.linalg.pinv(XtW @ X)
    beta = inv @ (XtW @ m)

    def predict(kk: np.ndarray) -> np.ndarray:
        return _design(np.asarray(kk, np.float64), k) @ beta

    fit = X @ beta
    h = w * np.einsum("ij,jk,ik->i", X, inv, X)
    with np.errstate(all="ignore"):
        loo = np.where(h < 1.0 - 1e-9, m - (m - fit) / (1.0 - h), np.nan)
    return predict, loo


def _base_means(base_k: np.ndarray, n_b: np.ndarray, s_b: np.ndarray) -> np.ndarray:
    """The size curve μ̂_{−D}(k) at each base: leave-one-base-out where the base is in the fit (n_b > 0)."""
    inside = n_b > 0
    predict, loo = _curve(base_k[inside], n_b[inside].astype(np.float64), s_b[inside] / n_b[inside])
    mu = predict(base_k)
    mu[inside] = loo
    return mu


def _others(n_b: np.ndarray, s_b: np.ndarray, base: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The mean Δ of the other samples on each row's base (NaN where it is alone)."""
    with np.errstate(all="ignore"):
        return np.where(n_b[base] >= 2, (s_b[base] - d) / (n_b[base] - 1), np.nan)


def _controls(lay: _Layout, fit_bases: np.ndarray | None = None) -> np.ndarray:
    """Every row's control; the size curve fitted on the bases ``fit_bases`` marks (None: all)."""
    others = _others(lay.n_b, lay.s_b, lay.base, lay.d)
    if fit_bases is None:
        nf, sf = lay.n_b, lay.s_b
    else:
        nf, sf = np.where(fit_bases, lay.n_b, 0), np.where(fit_bases, lay.s_b, 0.0)
    return others - _base_means(lay.base_k, nf, sf)[lay.base]


def block_controls(samples: pd.DataFrame, fit_rows: np.ndarray | None = None) -> np.ndarray:
    """The control c(z, D) of every row (NaN where there is none).

    ``fit_rows`` (boolean mask) restricts the size curve to the bases of those
    rows (a base counts whole where one of its rows is in the mask); rows outside it get the curve's prediction (their
    bases are not in the fit), rows inside it the leave-one-base-out one.
    Rows must be usable (finite Δ, not failed).
    """
    lay = _Layout.of(samples)
    fit = None if fit_rows is None else np.bincount(lay.base[np.asarray(fit_rows, bool)], minlength=lay.n_bases) > 0
    return _controls(lay, fit)


def _centred(values: np.ndarray, codes: np.ndarray, n_codes: int) -> np.ndarray:
    sums = np.bincount(codes, weights=values, minlength=n_codes)
    counts = np.bincount(codes, minlength=n_codes)
    with np.errstate(all="ignore"):
        return values - (sums / counts)[codes]


def _adjusted(d: np.ndarray, c: np.ndarray, b: float) -> np.ndarray:
    """Δ̃ = Δ − b·c where a row has a control (finite c), Δ elsewhere."""
    ok = np.isfinite(c)
    return np.where(ok, d - b * np.where(ok, c, 0.0), d)


def _with_delta(samples: pd.DataFrame, keep: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    """A copy of ``samples`` whose ``delta`` is ``values`` on the rows ``keep`` marks (the usable ones)."""
    out = samples.copy()
    delta = out["delta"].to_numpy(np.float64, copy=True)
    delta[np.flatnonzero(keep)] = values
    out["delta"] = delta
    return out


def _coefficient(lay: _Layout, c: np.ndarray, rows: np.ndarray) -> tuple[float, float, float]:
    """Pooled within-point regression coefficient of Δ on c over ``rows``, its standard
    error, and the within-point correlation of Δ and c.

    The standard error is clustered by base: the controls of one base share
    its size-curve error and each other's noise.
    """
    point = lay.point[rows]
    dc, cc = _centred(lay.d[rows], point, lay.n_points), _centred(c[rows], point, lay.n_points)
    sxx, sxy, syy = float(cc @ cc), float(cc @ dc), float(dc @ dc)
    if sxx <= 0.0 or syy <= 0.0:
        return 0.0, float("inf"), 0.0
    b = sxy / sxx
    score = np.bincount(lay.base[rows], weights=cc * (dc - b * cc), minlength=lay.n_bases)
    se = float(np.sqrt(score @ score) / sxx)
    return b, se, sxy / np.sqrt(sxx * syy)


def _usable(samples: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    keep = np.isfinite(pd.to_numeric(samples["delta"], errors="coerce").to_numpy(np.float64))
    if "failed" in samples.columns:
        keep &= ~samples["failed"].fillna(False).to_numpy(bool)
    return keep, samples.loc[keep, ["point_id", "k", "delta", "base_id"]].reset_index(drop=True)


def _folds(base_ids: np.ndarray, folds: int, seed: int) -> np.ndarray:
    key = mix64(base_ids.astype(np.uint64) ^ mix64(np.array([seed + 0xC0FFEE], np.uint64))[0])
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
    return _cross_fitted(_Layout.of(_usable(samples)[1]), folds, seed)


def _cross_fitted(lay: _Layout, folds: int, seed: int):
    base_fold = _folds(lay.base_ids, folds, seed)
    fold = base_fold[lay.base]
    for f in range(folds):
        held = fold == f
        if held.all() or not held.any():
            continue
        c = _controls(lay, base_fold != f)
        ok = np.isfinite(c)
        b, _, _ = _coefficient(lay, c, ~held & ok)
        yield held, _adjusted(lay.d, c, b)


def _heldout(lay: _Layout, folds: int, seed: int) -> dict[str, Any]:
    """Cross-fitted squared errors of each point's plain and adjusted training mean (module docstring)."""
    d, codes, n_codes = lay.d, lay.point, lay.n_points
    gain, se_raw, se_adj = np.zeros(n_codes), np.zeros(n_codes), np.zeros(n_codes)
    n_held = 0
    for held, adj in _cross_fitted(lay, folds, seed):
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
           check: bool = True, bases: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
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
    bases : DataFrame, optional
        Every base's totals over all of the run's usable samples
        (:func:`base_totals`, merged with :func:`merge_totals`), when
        ``samples`` are the rows of some of the run's points only: each
        control then counts the block's other points and the size curve every
        base, as with all rows; b and the check come from ``samples``.
        None: from ``samples`` themselves.

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
    keep, frame = _usable(samples)
    if frame.empty:
        return samples, {"available": False, "helps": False, "reason": "no usable samples"}
    lay = _Layout.of(frame, bases)
    c = _controls(lay)
    ok = np.isfinite(c)
    if ok.sum() < 3:
        return samples, {"available": False, "helps": False, "n_bases": lay.n_bases,
                         "reason": "no base holds two or more usable samples (block size 1?)"}
    d, codes, n_codes = lay.d, lay.point, lay.n_points
    b, b_se, rho = _coefficient(lay, c, ok)
    adj = _adjusted(d, c, b)
    var_raw = float(np.var(_centred(d, codes, n_codes)))
    var_adj = float(np.var(_centred(adj, codes, n_codes)))
    record: dict[str, Any] = {
        "available": True,
        "kind": "block_mean",
        "b": float(b),
        "b_se": b_se,
        "correlation": float(rho),
        "variance_reduction": float(1.0 - var_adj / var_raw) if var_raw > 0 else 0.0,
        "n_adjusted": int(ok.sum()),
        "n_samples": int(len(frame)),
        "n_bases": lay.n_bases,
        "mean_block_size": float(lay.n_b.sum() / lay.n_bases),
        "size_curve": ("one mean per size" if _discrete(lay.base_k)
                       else f"polynomial of degree {_degree(lay.n_bases)} in log k"),
        "mean_shift": float(np.mean(adj) - np.mean(d)),
    }
    if check:
        record.update(_heldout(lay, int(folds), int(seed)))
    return _with_delta(samples, keep, adj), record


def controlled(samples: pd.DataFrame, setting: str = "auto", *, seed: int = 0,
               columns: tuple[str, ...] = ("point_id", "k", "delta", "failed", "base_id"),
               bases: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The samples the estimators fit under a ``setting`` of :data:`CONTROL_SETTINGS`, and the record.

    "on" adjusts wherever a control is available, "off" never, "auto" where
    :func:`adjust`'s cross-fitted check says it lowers the error of the
    per-point means. Unadjusted, the estimators see exactly ``columns`` of the
    raw rows (``base_id`` too: the selection's folds keep a base's samples
    together, :func:`pointscale.laws.folds.base_fold_ids`); the record gains ``setting`` and ``applied``. ``bases``: as in :func:`adjust`.
    """
    if setting not in CONTROL_SETTINGS:
        raise ConfigError(f"control_variate={setting!r} must be one of {CONTROL_SETTINGS}")
    adjusted, record = adjust(samples, seed=seed, bases=bases)
    applied = bool(record["available"] and (setting == "on" or (setting == "auto" and record["helps"])))
    record = {**record, "setting": setting, "applied": applied}
    return (adjusted if applied else samples[[c for c in columns if c in samples.columns]]), record


# --------------------------------------------------------------------------- by partitions of points


def base_totals(samples: pd.DataFrame) -> pd.DataFrame:
    """Per base of ``samples``' usable rows: ``base_id``, ``k``, ``n`` (samples) and ``sum`` (of Δ).

    Rows of disjoint sets of points (partitions) give totals that
    :func:`merge_totals` adds up to the run's.
    """
    frame = _usable(samples)[1]
    g = frame.groupby("base_id", sort=False)
    return pd.DataFrame({"k": g["k"].first(), "n": g.size(), "sum": g["delta"].sum()}).reset_index()


def merge_totals(tables) -> pd.DataFrame:
    """The run's per-base totals from the totals of disjoint sets of its points (sorted by ``base_id``)."""
    frame = pd.concat(list(tables), ignore_index=True)
    g = frame.groupby("base_id", sort=True)
    return pd.DataFrame({"k": g["k"].first(), "n": g["n"].sum(), "sum": g["sum"].sum()}).reset_index()


def control_table(bases: pd.DataFrame) -> pd.DataFrame:
    """``bases`` (the run's totals) with ``mu``: the size curve at each base, leaving the base out."""
    return bases.assign(mu=_base_means(bases["k"].to_numpy(np.float64), bases["n"].to_numpy(np.int64),
                                       bases["sum"].to_numpy(np.float64)))


def apply_control(samples: pd.DataFrame, table: pd.DataFrame, b: float) -> pd.DataFrame:
    """``samples`` with Δ̃ = Δ − b·c, c from the run's :func:`control_table` (as :func:`adjust` applies it).

    For the rows of some of the run's points, with ``b`` the coefficient
    :func:`adjust` estimated; rows without a control are left as they are.
    """
    keep, frame = _usable(samples)
    base = pd.Index(table["base_id"].to_numpy(np.int64)).get_indexer(frame["base_id"].to_numpy(np.int64))
    if (base < 0).any():
        raise ValueError("the control table lacks some bases of the samples")
    d = frame["delta"].to_numpy(np.float64)
    c = _others(table["n"].to_numpy(np.int64), table["sum"].to_numpy(np.float64), base, d) \
        - table["mu"].to_numpy(np.float64)[base]
    return _with_delta(samples, keep, _adjusted(d, c, b))
