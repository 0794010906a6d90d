"""Verdicts on the law ψ_k ≈ c·k^(−α) that work at any ground-truth depth.

Inputs are staggered ground-truth samples (``point_id``, ``k``, ``delta``,
optionally ``round`` and ``base_id``). Three statistics, then one rule.

**Cell tables.** For every point i and size k, the mean m_ik of its samples
and two standard errors:

* ``se`` — the plain standard error of m_ik (sd over rounds / √n);
* ``se_dev`` — the standard error of m_ik − M_k, the point's deviation from
  the mean over points at that size. With independent base subsets per point
  the two agree (up to 1 − 1/n). With **common random numbers** (one base D
  per (size, round) shared by every point) the shared part of the noise is
  the same for every point: it moves all points of a size together, so it
  inflates the size's mean but not the spread across points. ``se_dev`` is
  computed from d_ir = Δ_ir − Δ̄_r (the round's mean over points), which is
  the block-mean control variate with coefficient 1.

**Noise-corrected R².** The paper's statistic is the mean over sizes of
``r2_score`` across points: SSE_k = Σ_i (T_ik − P_ik)² splits into the
between-point part Σ_i ((T_ik − T̄_k) − (P_ik − P̄_k))² and the size-mean part
n (T̄_k − P̄_k)². Under common random numbers the size-mean part is mostly the
round's shared noise, the same for every point, so the verdict scores the
between-point part, whose noise is ``se_dev``: with the prediction fitted on
the other half (independent noise), E[SSE_k] = SSE_k(true) + (1 − 1/n) Σ_i
se_dev,ik², and the same holds for SST_k. So

    R²_nc = 1 − Σ_k (SSE_k − N_k) / Σ_k (SST_k − N_k),  N_k = (1 − 1/n) Σ_i se_dev,ik²

(summed over sizes before the ratio, each size centred on its own mean:
a mean of per-size ratios explodes where a size's signal is small)
estimates the between-point R² the law would have against the exact ψ; the
size-mean misfit is reported beside it (``size_mean_misfit``: the squared
gap of the average law from the average ψ, over the variance of ψ across
points, both averaged over sizes). Out of sample: the law is fitted on one half of each cell's
rounds and scored against the other half's means. The 95 % interval is a
bootstrap over points and rounds. The noise ceiling stated beside it is
``ceiling`` = mean_k (1 − mean se_dev² / var across points).

**Lack-of-fit test.** Per point, the law is fitted to the cell means by
weighted least squares (weights 1/se²; α on a fine grid, c closed form) and
χ²_i = Σ_k ((m_ik − ĉ k^(−α̂)) / se_ik)² on K − 2 degrees of freedom. Combined
over points, Σ_i χ²_i is calibrated by a bootstrap under the null: each
sample is moved onto the fitted law (Δ − m_ik + fitted_ik), whole rounds are
resampled (so the common-random-number correlation between points is kept),
and the statistic is recomputed. Deep enough, any approximate law is
rejected, so the test qualifies the verdict; it does not make it.

**Rule** (:func:`law_verdict`), written on the results page:

1. *Decidable* when the out-of-sample noise ceiling is ≥ 0.9 or the 95 %
   interval of R²_nc is at most 0.10 wide. Otherwise ``not measurable``, with
   the depth a ceiling of 0.9 needs: per size c_k = T_k/(T_k+N_k) and N_k
   falls as 1/n, so n′ solves mean_k c_k(n′) = w (w = 0.9); with one c this
   is n′ = n · (1 − c)/c · w/(1 − w) (:func:`needed_depth`).
2. On a decidable table, ``reproduced`` when R²_nc ≥ 0.9, else ``not
   reproduced``; the interval is stated beside it, and where its lower end
   is below 0.8 the reason says why it is wide (the share of the
   between-point variance held by the largest point: one dominant point
   makes the ratio swing when the points are resampled, not when the noise
   is).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import chi2 as chi2_dist

from pointscale.errors import DataError
from pointscale.seeding import STREAM_SELECTION, rng

#: R²_nc a reproduced law must reach; below this lower interval end the reason explains the interval's width.
R2_REPRODUCED = 0.9
R2_LOW_REPRODUCED = 0.8
#: A table is decidable when its ceiling reaches this, or its interval is this narrow.
CEILING_DECIDABLE = 0.9
CI_WIDTH_DECIDABLE = 0.10
#: α searched by the weighted least-squares law fit.
ALPHA_GRID = np.linspace(-1.0, 4.0, 1001)

VERDICTS = ("reproduced", "not reproduced", "not measurable")


# --------------------------------------------------------------------------- cell tables


@dataclass(frozen=True)
class CellTables:
    """Points × sizes tables of one set of samples."""

    mean: pd.DataFrame
    se: pd.DataFrame
    se_dev: pd.DataFrame
    n: pd.DataFrame


def _round_key(samples: pd.DataFrame) -> pd.Series:
    if "round" in samples.columns:
        return samples["round"]
    if "base_id" in samples.columns:
        return samples["base_id"]
    return samples.groupby(["point_id", "k"]).cumcount()


def cell_tables(samples: pd.DataFrame) -> CellTables:
    """Cell means and both standard errors (see the module docstring)."""
    s = samples[["point_id", "k", "delta"]].copy()
    s["r"] = _round_key(samples).to_numpy()
    s = s[np.isfinite(s["delta"].to_numpy(dtype=float))]
    if s.empty:
        raise DataError("no finite samples to tabulate")
    g = s.groupby(["point_id", "k"])["delta"]
    mean, sd, n = g.mean().unstack(), g.std(ddof=1).unstack(), g.count().unstack()
    se = sd / np.sqrt(n)
    # Deviation from the (size, round) mean over points: what between-point comparisons see.
    s["dev"] = s["delta"] - s.groupby(["k", "r"])["delta"].transform("mean")
    sd_dev = s.groupby(["point_id", "k"])["dev"].std(ddof=1).unstack()
    return CellTables(mean=mean, se=se, se_dev=sd_dev / np.sqrt(n), n=n)


def halves_by_round(samples: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two halves with whole rounds in each (alternating rounds per size), so CRN noise stays within a half."""
    r = _round_key(samples)
    ranks = samples.assign(_r=r.to_numpy()).groupby("k")["_r"].rank(method="dense").to_numpy()
    odd = (ranks.astype(np.int64) % 2) == 1
    return samples[odd].reset_index(drop=True), samples[~odd].reset_index(drop=True)


# --------------------------------------------------------------------------- the law by weighted least squares


def fit_wls(mean: np.ndarray, se: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row (c, α, χ²) of ψ_k = c·k^(−α) fitted to cell means with weights 1/se².

    α is searched on :data:`ALPHA_GRID` (vectorised over rows); for each α the
    optimal c is closed form. Cells with a missing mean or non-positive se are
    left out of their row.
    """
    m = np.asarray(mean, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(np.isfinite(m) & (np.asarray(se) > 0), 1.0 / np.asarray(se, dtype=np.float64) ** 2, 0.0)
    w = np.nan_to_num(w, nan=0.0, posinf=0.0)
    m = np.where(w > 0, m, 0.0)
    basis = np.asarray(sizes, dtype=np.float64)[None, :] ** (-ALPHA_GRID[:, None])  # alphas × sizes
    wm = w * m
    num = wm @ basis.T                      # rows × alphas: Σ w m b
    den = w @ (basis ** 2).T                # Σ w b²
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(den > 0, num / den, 0.0)
    chi2 = (wm * m).sum(axis=1, keepdims=True) - c * num  # Σ w (m − c b)² at the optimum c
    best = np.argmin(chi2, axis=1)
    rows = np.arange(m.shape[0])
    return c[rows, best], ALPHA_GRID[best], np.maximum(chi2[rows, best], 0.0)


def law_table(t: CellTables) -> pd.DataFrame:
    """Fitted ψ (points × sizes) of the weighted least-squares law."""
    sizes = np.asarray(t.mean.columns, dtype=np.float64)
    c, a, _ = fit_wls(t.mean.to_numpy(), t.se.to_numpy(), sizes)
    return pd.DataFrame(c[:, None] * sizes[None, :] ** (-a[:, None]), index=t.mean.index, columns=t.mean.columns)


# --------------------------------------------------------------------------- noise-corrected R²


def _nc_r2(T: np.ndarray, P: np.ndarray, D: np.ndarray) -> float:
    """1 − Σ_k (SSE_k − N_k) / Σ_k (SST_k − N_k), each size centred on its own mean over points.

    Summed over sizes before the ratio: a mean of per-size ratios explodes at
    a size whose between-point signal is small against its noise.
    """
    n = T.shape[0]
    Tc, Pc = T - T.mean(axis=0), P - P.mean(axis=0)
    noise = (D ** 2).sum(axis=0) * (1.0 - 1.0 / n)
    sse = float((((Tc - Pc) ** 2).sum(axis=0) - noise).sum())
    sst = float(((Tc ** 2).sum(axis=0) - noise).sum())
    return 1.0 - sse / sst if sst > 0 else float("nan")


def _paper_r2(T: np.ndarray, P: np.ndarray) -> float:
    sst = ((T - T.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(sst > 0, 1.0 - ((T - P) ** 2).sum(axis=0) / sst, np.nan)
    return float(np.nanmean(per))


def _ceilings(T: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Per size: 1 − mean se² / var across points."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - (S ** 2).mean(axis=0) / T.var(axis=0)


def _ceiling(T: np.ndarray, S: np.ndarray) -> float:
    """The paper's noise ceiling, mean over sizes of 1 − mean se² / var across points."""
    return float(np.nanmean(_ceilings(T, S)))


def dense_cells(samples: pd.DataFrame) -> tuple[np.ndarray, pd.Index, np.ndarray]:
    """Samples as a points × sizes × rounds array (rounds in order; each cell cut to the size's shortest cell).

    Under common random numbers, slot j of every point at a size is the same
    round (the same base subset), so resampling slots keeps the shared noise.
    """
    s = samples[["point_id", "k", "delta"]].copy()
    s["r"] = _round_key(samples).to_numpy()
    s = s[np.isfinite(s["delta"].to_numpy(dtype=float))].sort_values(["k", "r", "point_id"], kind="mergesort")
    s["j"] = s.groupby(["point_id", "k"]).cumcount()
    ids = pd.Index(sorted(s["point_id"].unique()))
    sizes = np.array(sorted(s["k"].unique()))
    depth = int(s.groupby(["point_id", "k"]).size().unstack().reindex(index=ids, columns=sizes).fillna(0).min().min())
    if depth < 2:
        raise DataError("every point needs at least 2 samples at every size")
    s = s[s["j"] < depth]
    X = np.full((len(ids), len(sizes), depth), np.nan)
    X[ids.get_indexer(s["point_id"]), np.searchsorted(sizes, s["k"].to_numpy()), s["j"].to_numpy()] = s["delta"]
    return X, ids, sizes


def _moments(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = X.shape[2]
    mean = X.mean(axis=2)
    se = X.std(axis=2, ddof=1) / np.sqrt(n)
    dev = X - X.mean(axis=0, keepdims=True)
    return mean, se, dev.std(axis=2, ddof=1) / np.sqrt(n)


def _oos_r2(XA: np.ndarray, XB: np.ndarray, sizes: np.ndarray) -> tuple[float, float, float, float]:
    mA, sA, _ = _moments(XA)
    c, a, _ = fit_wls(mA, sA, sizes)
    P = c[:, None] * sizes[None, :].astype(float) ** (-a[:, None])
    T, S, D = _moments(XB)
    tm, pm = T.mean(axis=0), P.mean(axis=0)
    spread = float(T.var(axis=0).mean())
    misfit = float(((tm - pm) ** 2).mean() / spread) if spread > 0 else float("nan")
    return _nc_r2(T, P, D), _paper_r2(T, P), _ceiling(T, S), _ceiling(T, D), misfit


def noise_corrected_r2(samples: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Out-of-sample R² of the law: paper's statistic, its ceiling, and the noise-corrected R² with a 95 % CI.

    The law is fitted by weighted least squares on one half of the rounds and
    scored against the other half's cell means. The interval is a percentile
    bootstrap that resamples points and, per size, rounds (whole rounds, so
    the noise shared by all points of a round is resampled too) in both halves.
    """
    a, b = halves_by_round(samples)
    XA, ids_a, sizes = dense_cells(a)
    XB, ids_b, sizes_b = dense_cells(b)
    if not (ids_a.equals(ids_b) and np.array_equal(sizes, sizes_b)):
        raise DataError("the two halves hold different points or sizes")
    n = XA.shape[0]
    if n < 4:
        raise DataError(f"only {n} point(s) have every size in both halves; need at least 4")
    est, paper, ceil_plain, ceil, misfit = _oos_r2(XA, XB, sizes)
    T_b, _, D_b = _moments(XB)
    g = rng(seed, STREAM_SELECTION, "nc-r2-bootstrap")
    boots = np.empty(n_boot)
    for b_ in range(n_boot):
        pts = g.integers(0, n, n)
        ja = g.integers(0, XA.shape[2], (XA.shape[1], XA.shape[2]))
        jb = g.integers(0, XB.shape[2], (XB.shape[1], XB.shape[2]))
        kk_a, kk_b = np.arange(XA.shape[1])[:, None], np.arange(XB.shape[1])[:, None]
        boots[b_] = _oos_r2(XA[pts][:, kk_a, ja], XB[pts][:, kk_b, jb], sizes)[0]
    # Resampled rounds repeat samples, so a replicate's means carry noise its own se does not count:
    # the replicates sit below the estimate. Their spread is what the interval uses, centred on the estimate.
    q_lo, q_hi = np.nanpercentile(boots, [2.5, 97.5])
    centre = float(np.nanmedian(boots))
    lo, hi = est - (centre - q_lo), est + (q_hi - centre)
    return {"r2_nc": est, "ci_low": float(lo), "ci_high": float(hi), "paper_r2": paper,
            "paper_ceiling": ceil_plain, "ceiling": ceil, "size_mean_misfit": misfit, "n_points": n,
            "samples_per_cell_half": float(min(XA.shape[2], XB.shape[2])), "top_point_share": _top_share(XB),
            "ceiling_by_size": _ceilings(T_b, D_b)}


def _top_share(X: np.ndarray) -> float:
    """The largest share of the between-point sum of squares held by one point (sizes pooled)."""
    T = X.mean(axis=2)
    ss = ((T - T.mean(axis=0)) ** 2).sum(axis=1)
    return float(ss.max() / ss.sum()) if ss.sum() > 0 else float("nan")


# --------------------------------------------------------------------------- lack of fit


def lack_of_fit(samples: pd.DataFrame, *, n_boot: int = 200, seed: int = 0) -> dict[str, Any]:
    """Per-point χ² of the weighted least-squares law, combined over points, with a bootstrap p-value."""
    t = cell_tables(samples)
    sizes = np.asarray(t.mean.columns, dtype=np.float64)
    M, S = t.mean.to_numpy(dtype=float), t.se.to_numpy(dtype=float)
    ok = np.isfinite(M).all(axis=1) & np.isfinite(S).all(axis=1) & (S > 0).all(axis=1)
    ids = t.mean.index[ok]
    c, a, chi2 = fit_wls(M[ok], S[ok], sizes)
    fitted = pd.DataFrame(c[:, None] * sizes[None, :] ** (-a[:, None]), index=ids, columns=t.mean.columns)
    # Null world: every sample moved onto the fitted law; whole rounds resampled per size.
    s = samples[samples["point_id"].isin(ids)][["point_id", "k", "delta"]].copy()
    s["r"] = _round_key(samples.loc[s.index]).to_numpy()
    shift = (fitted.stack() - t.mean.loc[ids].stack()).rename("shift")
    s = s.join(shift, on=["point_id", "k"])
    s["delta"] = s["delta"] + s["shift"]
    g = rng(seed, STREAM_SELECTION, "lack-of-fit-bootstrap")
    by_k = {k: grp for k, grp in s.groupby("k")}
    totals = np.empty(n_boot)
    for b in range(n_boot):
        parts = []
        for k, grp in by_k.items():
            rounds = grp["r"].unique()
            pick = g.choice(rounds, size=len(rounds), replace=True)
            counts = pd.Series(pick).value_counts()
            parts.append(grp.loc[grp["r"].isin(counts.index)].loc[lambda d: d.index.repeat(d["r"].map(counts))])
        bt = cell_tables(pd.concat(parts, ignore_index=False).rename(columns={"r": "round"}))
        Mb = bt.mean.reindex(index=ids, columns=t.mean.columns).to_numpy(dtype=float)
        Sb = bt.se.reindex(index=ids, columns=t.mean.columns).to_numpy(dtype=float)
        good = np.isfinite(Mb).all(axis=1) & np.isfinite(Sb).all(axis=1) & (Sb > 0).all(axis=1)
        totals[b] = fit_wls(Mb[good], Sb[good], sizes)[2].sum() * (len(ids) / max(int(good.sum()), 1))
    observed = float(chi2.sum())
    df = (len(sizes) - 2) * len(ids)
    per_point_p = _per_point_p(chi2, len(sizes) - 2)
    return {"chi2": observed, "df": int(df), "chi2_per_df": observed / df if df else float("nan"),
            "p_value": float((1 + (totals >= observed).sum()) / (n_boot + 1)),
            "share_points_fit": float((per_point_p >= 0.05).mean()), "n_points": int(len(ids)),
            "c": pd.Series(c, index=ids), "alpha": pd.Series(a, index=ids)}


def _per_point_p(chi2: np.ndarray, dof: int) -> np.ndarray:
    return chi2_dist.sf(chi2, max(dof, 1))


# --------------------------------------------------------------------------- the rule


#: A size whose noise matches or exceeds its spread between points is sized as this ceiling.
CEILING_FLOOR = 0.01


def needed_depth(n: float, ceiling: float, want: float = CEILING_DECIDABLE,
                 by_size: np.ndarray | None = None) -> int | None:
    """Samples per cell a noise ceiling of ``want`` needs.

    One ceiling c = T/(T+N), N falling as 1/n: n·(1 − c)/c · w/(1 − w). The
    ceiling is a mean over sizes, though, and the sizes differ (on adult's
    MLP from 0.09 to 0.91 at 53 samples): a low size rises slowly, so the
    single-c formula under-sizes. Given the per-size ceilings ``by_size``,
    the depth solves mean_k r_k·m/(r_k·m + 1) = w for m = n′/n, with
    r_k = c_k/(1 − c_k) (each size's signal over its noise at depth n);
    a size at or below :data:`CEILING_FLOOR` is sized as that floor.
    """
    if not math.isfinite(ceiling) or ceiling <= 0 or not math.isfinite(n):
        return None
    if ceiling >= want:
        return int(math.ceil(n))
    if by_size is None:
        return int(math.ceil(n * (1.0 - ceiling) / ceiling * want / (1.0 - want) - 1e-9))
    c = np.clip(np.asarray(by_size, dtype=float), CEILING_FLOOR, 1.0 - 1e-9)
    c = c[np.isfinite(c)]
    if c.size == 0:
        return None
    r = c / (1.0 - c)
    if float(np.mean(r / (r + 1.0))) >= want:
        return int(math.ceil(n))
    lo, hi = 1.0, 1.0
    while float(np.mean(r * hi / (r * hi + 1.0))) < want:
        hi *= 2.0
    for _ in range(100):  # bisection on m: the mean ceiling rises monotonically with depth
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if float(np.mean(r * mid / (r * mid + 1.0))) < want else (lo, mid)
    return int(math.ceil(n * hi - 1e-9))


def law_verdict(r2: dict[str, Any], lof: dict[str, Any] | None = None) -> tuple[str, str]:
    """``(verdict, reason)`` from :func:`noise_corrected_r2`'s dict (and optionally :func:`lack_of_fit`'s)."""
    est, lo, hi, ceil = r2["r2_nc"], r2["ci_low"], r2["ci_high"], r2["ceiling"]
    width = hi - lo
    if not (ceil >= CEILING_DECIDABLE or width <= CI_WIDTH_DECIDABLE):
        need = needed_depth(r2["samples_per_cell_half"], ceil, by_size=r2.get("ceiling_by_size"))
        what = (f"needs about {need} samples per size in each half" if need is not None else
                "noise exceeds the signal at this depth, so the depth cannot be sized from it: pilot 10x deeper")
        return "not measurable", (f"out-of-sample ceiling {ceil:.2f} < {CEILING_DECIDABLE} and interval width "
                                  f"{width:.2f} > {CI_WIDTH_DECIDABLE}: {what} "
                                  f"(this table: {r2['samples_per_cell_half']:.0f})")
    lof_note = ""
    if lof is not None:
        lof_note = (f"; lack of fit χ²/df {lof['chi2_per_df']:.2f} (bootstrap p {lof['p_value']:.3f}), "
                    f"{lof['share_points_fit']:.0%} of points fit at 5 %")
    spread = ""
    if lo < R2_LOW_REPRODUCED and r2.get("top_point_share") is not None:
        spread = (f"; the interval is wide because the points differ little but for a few: the largest holds "
                  f"{r2['top_point_share']:.0%} of the between-point variance, so resampling the points moves "
                  f"the ratio")
    if est >= R2_REPRODUCED:
        return "reproduced", f"noise-corrected R² {est:.3f} [{lo:.3f}, {hi:.3f}] ≥ {R2_REPRODUCED}{spread}{lof_note}"
    return "not reproduced", f"noise-corrected R² {est:.3f} [{lo:.3f}, {hi:.3f}] < {R2_REPRODUCED}{spread}{lof_note}"


# --------------------------------------------------------------------------- point addition

#: A difference is a finding when it is at least this many paired standard errors from zero.
Z_FINDING = 2.0


def _paired(trials: pd.DataFrame, regime: str, a: str, b: str) -> tuple[float, float, int]:
    """Mean and paired s.e. of gain(a) − gain(b) over the repeats of ``regime`` (same initial set per repeat)."""
    t = trials[(trials["regime"] == regime) & np.isfinite(trials["gain"].to_numpy(dtype=float))]
    w = t.pivot_table(index="repeat", columns="ranking", values="gain")
    d = (w[a] - w[b]).dropna().to_numpy()
    if d.size < 2:
        return float("nan"), float("nan"), int(d.size)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size)), int(d.size)


def addition_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per regime and law ranking: gain vs random and vs the other-size ranking, each with its paired s.e."""
    rows = []
    for regime in ("small", "large"):
        t = trials[trials["regime"] == regime]
        if t.empty:
            continue
        n0 = int(t["n_initial"].iloc[0])
        matched, other = ("size_small", "size_large") if regime == "small" else ("size_large", "size_small")
        for ranking in ("size_small", "size_large", "shapley"):
            m, se, n = _paired(trials, regime, ranking, "random")
            rows.append({"regime": regime, "n_initial": n0, "ranking": ranking, "matched": ranking == matched,
                         "gain_vs_random": m, "se_vs_random": se, "repeats": n,
                         "mean_gain": float(t.loc[t["ranking"] == ranking, "gain"].mean())})
        m, se, n = _paired(trials, regime, matched, other)
        rows.append({"regime": regime, "n_initial": n0, "ranking": f"{matched} − {other}", "matched": True,
                     "gain_vs_random": m, "se_vs_random": se, "repeats": n, "mean_gain": float("nan")})
    return pd.DataFrame(rows)


def addition_verdicts(trials: pd.DataFrame) -> list[dict[str, Any]]:
    """The two point-addition findings of the paper, each with its statistic, paired s.e. and verdict.

    * ``law rankings beat random``: in both regimes every law ranking's gain
      over random (paired by initial set) is positive by ≥ 2 s.e.; reported
      statistic: the smallest z over rankings and regimes.
    * ``size-matched ranking wins``: the interaction as a difference in
      differences, DiD = [g(small) − g(large)]_{n small} − [g(small) − g(large)]_{n large}
      (g: gain of the ranking at that size; regimes use independent initial
      sets, so the paired s.e. of the two regimes add in quadrature).
      Reproduced when DiD > 2 s.e., the matched ranking is ahead in each
      regime, and it beats random in each regime (a ranking below random
      never wins).
    """
    tab = addition_table(trials)
    if set(tab["regime"]) != {"small", "large"}:
        return [{"finding": f, "statistic": "", "value": float("nan"), "se": float("nan"),
                 "verdict": "not measurable", "reason": "a regime was refused or not run"}
                for f in ("law rankings beat random", "size-matched ranking wins")]
    laws = tab[~tab["ranking"].str.contains("−")]
    z = laws["gain_vs_random"] / laws["se_vs_random"]
    worst = laws.loc[z.idxmin()]
    beat = bool((z >= Z_FINDING).all())
    v1 = {"finding": "law rankings beat random", "statistic": "min z of gain vs random (paired)",
          "value": float(z.min()), "se": float("nan"),
          "verdict": "reproduced" if beat else "not reproduced",
          "reason": (f"every law ranking beats random by ≥ {Z_FINDING} paired s.e. in both regimes" if beat else
                     f"{worst['ranking']} at n = {worst['n_initial']}: {worst['gain_vs_random']:+.5f} ± "
                     f"{worst['se_vs_random']:.5f} vs random")}
    d_small = tab[(tab["regime"] == "small") & tab["ranking"].str.contains("−")].iloc[0]
    d_large = tab[(tab["regime"] == "large") & tab["ranking"].str.contains("−")].iloc[0]
    # d_small = g(size_small) − g(size_large) at n small; d_large = g(size_large) − g(size_small) at n large.
    did = float(d_small["gain_vs_random"] + d_large["gain_vs_random"])
    se = float(np.hypot(d_small["se_vs_random"], d_large["se_vs_random"]))
    matched_beats_random = all(
        float(laws[(laws["regime"] == r) & (laws["ranking"] == k)]["gain_vs_random"].iloc[0]) > 0
        for r, k in (("small", "size_small"), ("large", "size_large")))
    ahead = d_small["gain_vs_random"] > 0 and d_large["gain_vs_random"] > 0
    ok = did > Z_FINDING * se and ahead and matched_beats_random
    why = (f"DiD {did:+.5f} ± {se:.5f}; matched ahead at small n {d_small['gain_vs_random']:+.5f}, "
           f"at large n {d_large['gain_vs_random']:+.5f}; matched beats random in both: {matched_beats_random}")
    v2 = {"finding": "size-matched ranking wins", "statistic": "difference in differences (paired s.e.)",
          "value": did, "se": se, "verdict": "reproduced" if ok else "not reproduced", "reason": why}
    return [v1, v2]
