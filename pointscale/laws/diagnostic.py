r"""Does the scaling law hold here, and how reliable are the values: from the run's own samples.

Two numbers a user needs before trusting a values table, computed from the
samples the run already has (no extra model fits; the law fits are those of
the automatic selection's cross-validation, :mod:`pointscale.laws.auto`).

Does the law hold
-----------------
Each sample is held out once (K-fold over each point's samples). Its
Gaussian log-likelihood under the law fitted without it,
Δ ~ N(c·k^(−α), σ²·k^(−β)), is compared with a **no-law** model with the
same noise model (the law's own σ, β of that point) whose mean does not follow
a power law: the better (higher held-out likelihood over all samples) of

* ``constant`` -- a constant in k per point: the fair shrunk mean of its
  training samples (:mod:`pointscale.laws.shrunk_mean`; shrunk toward the
  grand mean as the law's estimators shrink toward their population, so
  the comparison is between shapes in k, not between amounts of pooling;
  the inverse-variance weighted mean where none is given), and
* ``buckets`` -- a free mean per size bucket per point (:data:`N_BUCKETS`
  log-spaced buckets of the sampled range, inverse-variance weighted; the
  point's constant where a bucket has no training sample), which follows
  any shape in k, flat or not.

Only a point with at least :data:`MIN_TRAIN_SAMPLES` training samples is
scored: with fewer, the law's four parameters (c, α, σ, β) come close to
passing through them, its fitted noise collapses towards zero, and a
held-out log-likelihood measures that collapse, not the law (at 3 and 5
samples per point, gains of 1e8-1e9 nats per sample on adult).

``loglik_gain_per_sample`` is the mean over held-out samples of
log p(Δ | law) − log p(Δ | no law); its standard error
(``loglik_gain_se``) treats each point's samples as one cluster (a point's
law error is shared by its samples). ``share_good_fit`` is the share of
points whose held-out samples are at least as likely under the law.

Verdict rule::

    gain >  GAIN_SE * se  ->  "holds"
    gain < -GAIN_SE * se  ->  "does not hold"
    otherwise             ->  "undecided"

with :data:`GAIN_SE` = 2. Where the law does not hold, the automatic
selection takes its values from the best law-free estimator
(:mod:`pointscale.laws.shrunk_mean`).

How reliable are the values
---------------------------
Each point's samples are split into two independent halves
(:func:`~pointscale.laws.folds.half_ids`); the chosen estimator, fitted on
each half, gives two Shapley values per point. Their correlation r over the
points is the split-half reliability of a value from half the samples; the
Spearman–Brown formula gives that of a value from all of them,
ρ = 2r / (1 + r): the share of the between-point variance of the values that
is signal. The Spearman–Brown prophecy gives the samples per point that
would reach a target reliability ρ*: n·ρ*(1 − ρ) / (ρ(1 − ρ*)) (n the mean
samples per point now; none when ρ ≤ 0).

The diagnostic also names the estimator the values come from and, in the
slot ``control_variate``, the control variate in use ("none" by default).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from .likelihood import LOG_2PI
from .result import FittedScalingLaws

__all__ = ["VERDICTS", "GAIN_SE", "MIN_TRAIN_SAMPLES", "ESTIMATOR_WORDS", "N_BUCKETS", "RELIABILITY_TARGETS",
           "nolaw_terms", "law_test", "split_half_reliability", "samples_for_reliability", "verdict", "diagnostic_sentence"]

VERDICTS = ("holds", "does not hold", "undecided")
#: Standard errors the held-out gain must clear for a verdict other than "undecided".
GAIN_SE = 2.0
#: Training samples a point needs before its held-out samples are scored: more than the law's four
#: parameters (c, α, σ, β), so that its noise is estimated from a residual.
MIN_TRAIN_SAMPLES = 5
#: Size buckets of the free-mean no-law model (log-spaced over the sampled range).
N_BUCKETS = 3
#: Reliabilities whose samples per point the diagnostic reports.
RELIABILITY_TARGETS = (0.8, 0.9)

#: Plain words for the estimators (``values["estimator"]``), in the sentence and the summary.
ESTIMATOR_WORDS = {
    "shrinkage": "empirical-Bayes shrinkage",
    "amortized_shrinkage": "empirical-Bayes shrinkage with amortized prior means",
    "mle": "per-point maximum likelihood",
    "amortized": "the amortized estimator",
    "shrunk_mean": "the law-free shrunk mean",
    "log_ols": "log-space least squares",
}


def _buckets(k: np.ndarray, k_range: tuple[int, int], n_buckets: int) -> np.ndarray:
    lo, hi = float(k_range[0]), float(k_range[1])
    if hi <= lo:
        return np.zeros(k.size, dtype=np.int64)
    edges = np.exp(np.linspace(np.log(lo), np.log(hi), n_buckets + 1))[1:-1]
    return np.searchsorted(edges, k, side="right").astype(np.int64)


def nolaw_terms(laws: FittedScalingLaws, train: pd.DataFrame, held: pd.DataFrame,
                k_range: tuple[int, int], n_buckets: int = N_BUCKETS,
                constant: FittedScalingLaws | None = None) -> dict[str, np.ndarray]:
    """Held-out Gaussian NLL of each ``held`` sample under the two no-law means (module docstring).

    The noise model is the law's own: Var Δ = σ²·k^(−β) of the sample's
    point in ``laws`` (fitted on ``train``). ``constant`` (law-free laws
    fitted on ``train``, e.g. the fair shrunk mean) gives each point's
    constant; without it, the inverse-variance weighted mean. NaN where the
    point has no law or fewer than :data:`MIN_TRAIN_SAMPLES` training samples.
    """
    ids = pd.Index(laws.point_ids)
    sigma, beta = laws.sigma, laws.beta
    tp = ids.get_indexer(train["point_id"].to_numpy())
    hp = ids.get_indexer(held["point_id"].to_numpy())
    tk, td = train["k"].to_numpy(dtype=np.float64), train["delta"].to_numpy(dtype=np.float64)
    hk, hd = held["k"].to_numpy(dtype=np.float64), held["delta"].to_numpy(dtype=np.float64)
    n = ids.size
    with np.errstate(all="ignore"):
        ok = (tp >= 0) & np.isfinite(beta[np.maximum(tp, 0)])
        w = np.where(ok, tk ** beta[np.maximum(tp, 0)], 0.0)  # inverse variance up to σ²
        tpos = np.where(ok, tp, 0)
        sw = np.bincount(tpos, weights=w, minlength=n)
        enough = np.bincount(tpos, weights=ok.astype(np.float64), minlength=n) >= MIN_TRAIN_SAMPLES
        const = np.bincount(tpos, weights=w * td, minlength=n) / sw
        if constant is not None:
            at = pd.Index(constant.point_ids).get_indexer(laws.point_ids)
            const = np.where((at >= 0) & np.isfinite(sw) & (sw > 0), constant.c[np.maximum(at, 0)], np.nan)
        tb, hb = _buckets(tk, k_range, n_buckets), _buckets(hk, k_range, n_buckets)
        cell = tpos * n_buckets + tb
        bw = np.bincount(cell, weights=w, minlength=n * n_buckets)
        bmean = np.bincount(cell, weights=w * td, minlength=n * n_buckets) / bw
        p = np.maximum(hp, 0)
        mean_const = const[p]
        mean_bucket = bmean[p * n_buckets + hb]
        mean_bucket = np.where(np.isfinite(mean_bucket), mean_bucket, mean_const)
        log_var = 2.0 * np.log(sigma[p]) - beta[p] * np.log(hk)
        out = {}
        for name, mean in (("constant", mean_const), ("buckets", mean_bucket)):
            t = 0.5 * LOG_2PI + 0.5 * log_var + 0.5 * (hd - mean) ** 2 * np.exp(-log_var)
            out[name] = np.where((hp >= 0) & enough[p] & np.isfinite(t), t, np.nan)
    return out


def verdict(gain: float | None, se: float | None) -> str:
    """The rule of the module docstring."""
    if gain is None or se is None or not np.isfinite(gain) or not np.isfinite(se):
        return "undecided"
    if gain > GAIN_SE * se:
        return "holds"
    if gain < -GAIN_SE * se:
        return "does not hold"
    return "undecided"


def law_test(point_ids: np.ndarray, law: np.ndarray, nolaw: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Held-out log-likelihood gain of the law over the better no-law model (module docstring).

    ``law`` and each ``nolaw`` array hold the held-out NLL of the same samples
    (NaN: not scored); ``point_ids`` the sample's point.
    """
    ok = np.isfinite(law)
    for t in nolaw.values():
        ok &= np.isfinite(t)
    n = int(ok.sum())
    out: dict[str, Any] = {"n_samples_scored": n, "no_law_model": None, "loglik_gain_per_sample": None,
                           "loglik_gain_se": None, "share_good_fit": None, "n_points_scored": 0,
                           "verdict": "undecided"}
    if n < 2:
        return out
    totals = {name: float(np.sum(t[ok])) for name, t in nolaw.items()}
    best = min(totals, key=totals.get)  # the no-law model with the higher held-out likelihood
    diff = nolaw[best][ok] - law[ok]  # log p(law) - log p(no law) per sample
    pid = np.asarray(point_ids)[ok]
    codes, uniq = pd.factorize(pid)
    per_point = np.bincount(codes, weights=diff, minlength=uniq.size)
    size = np.bincount(codes, minlength=uniq.size)
    gain = float(diff.mean())
    # Cluster-robust (by point) standard error of the mean gain per sample.
    resid = per_point - size * gain
    se = float(np.sqrt(np.sum(resid ** 2) * uniq.size / max(uniq.size - 1, 1)) / n)
    out.update({"no_law_model": best, "loglik_gain_per_sample": gain, "loglik_gain_se": se,
                "loglik_no_law_per_sample": {k: -v / n for k, v in totals.items()},
                "loglik_law_per_sample": float(-np.mean(law[ok])),
                "share_good_fit": float(np.mean(per_point >= 0.0)), "n_points_scored": int(uniq.size),
                "verdict": verdict(gain, se)})
    return out


def samples_for_reliability(rho: float | None, target: float, n_now: float) -> float | None:
    """Spearman–Brown prophecy: samples per point for reliability ``target`` (None when ρ ≤ 0)."""
    if rho is None or not np.isfinite(rho) or rho <= 0.0:
        return None
    if rho >= 1.0:
        return float(n_now)
    return float(n_now * target * (1.0 - rho) / (rho * (1.0 - target)))


def split_half_reliability(values_a: np.ndarray, values_b: np.ndarray, n_per_point: float) -> dict[str, Any]:
    """Spearman–Brown corrected correlation of two independent halves' values (module docstring)."""
    a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    out: dict[str, Any] = {"reliability": None, "split_half_correlation": None, "n_points": int(ok.sum()),
                           "samples_per_point": float(n_per_point)}
    for t in RELIABILITY_TARGETS:
        out[f"samples_for_reliability_{t}"] = None
    if ok.sum() < 3:
        return out
    if np.ptp(a[ok]) == 0.0 or np.ptp(b[ok]) == 0.0:
        # A half whose values are all equal (a shrunk mean whose between-point variance came out zero):
        # the samples do not tell the points apart, and how many would cannot be sized from them.
        out.update({"reliability": 0.0, "constant": True})
        return out
    r = float(np.corrcoef(a[ok], b[ok])[0, 1])
    rho = 2.0 * r / (1.0 + r) if r > -1.0 else float("-inf")
    out.update({"split_half_correlation": r, "reliability": rho})
    for t in RELIABILITY_TARGETS:
        need = samples_for_reliability(rho, t, n_per_point)
        out[f"samples_for_reliability_{t}"] = None if need is None else float(np.ceil(need))
    return out


def _num(x: float | None, fmt: str) -> str:
    return "n/a" if x is None or not np.isfinite(x) else format(x, fmt)


def diagnostic_sentence(diagnostic: Mapping[str, Any], model: str | None = None) -> str:
    """One plain sentence: whether the law holds, where the values come from, how reliable they are."""
    who = f" for {model}" if model else ""
    v = diagnostic.get("verdict", "undecided")
    gain, se = diagnostic.get("loglik_gain_per_sample"), diagnostic.get("loglik_gain_se")
    evidence = (f" ({_num(gain, '+.3g')} ± {_num(se, '.2g')} held-out log-likelihood per sample)"
                if gain is not None else " (too few samples per point to test it)")
    head = {"holds": f"The scaling law holds{who} on this data",
            "does not hold": f"The scaling law does not hold{who} on this data",
            "undecided": f"Whether the scaling law holds{who} on this data is undecided"}[v] + evidence
    estimator = diagnostic.get("estimator")
    words = ESTIMATOR_WORDS.get(estimator, str(estimator))
    source = f"values from {words}"
    if v == "does not hold" and diagnostic.get("law_free"):
        source = f"so the values come from {words}, which assumes no law"
    elif v == "does not hold":
        source = f"values from {words} nonetheless (no law-free estimator was chosen)"
    elif diagnostic.get("law_free"):
        source = f"values from {words}, which assumes no law (it predicted held-out samples best)"
    cv = diagnostic.get("control_variate") or "none"
    if cv != "none":
        source += f" with the {cv} control variate"
    rho = diagnostic.get("reliability")
    need = diagnostic.get("samples_for_reliability_0.9")
    if rho is None:
        rel = "reliability unknown (too few samples)"
    elif diagnostic.get("constant"):
        rel = ("reliability 0 — the samples do not yet tell the points apart (every value is the same), and "
               "how many more would cannot be sized from this run")
    elif need is None:
        rel = f"reliability {_num(rho, '.2f')} — more samples per point would not make the values reliable"
    elif rho >= 0.9:
        rel = f"reliability {_num(rho, '.2f')}"
    else:
        rel = f"reliability {_num(rho, '.2f')} — about {int(need)} samples per point would reach 0.9"
    return f"{head}; {source}; {rel}."
