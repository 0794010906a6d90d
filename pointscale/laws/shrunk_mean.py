r"""The fair shrunk mean: a law-free value by normal–normal empirical Bayes on the per-point means.

With k drawn uniformly from the sampled range, a point's plain mean m_i of
its n_i samples is an unbiased estimate of its Shapley value ν_i, with noise
variance v_i = σ_i²/n_i. The fair shrunk mean treats the values as draws
ν_i ~ N(μ, τ²) and shrinks each plain mean toward the grand mean:

    ν̂_i = μ̂ + B_i (m_i − μ̂),   B_i = τ̂² / (τ̂² + v_i),

μ̂ and τ̂² (the between-point variance) maximising the marginal likelihood
m_i ~ N(μ, τ² + v_i). Two noise models are fitted:

* ``pooled`` -- one within-point variance σ² for every point (the pooled
  within-point variance of Δ), so v_i = σ²/n_i;
* ``per_point`` -- each point's own sample variance (the pooled one where a
  point has fewer than 2 samples).

The better of the two is the one whose values predict held-out samples best:
K-fold cross-validation over each point's samples (:func:`~pointscale.laws.folds.fold_ids`),
the summed squared error of the held-out Δ around the value fitted without
them (the Gaussian likelihood with one shared variance, the score the
automatic selection uses). Per-point variances from 10 samples are noisy and
over-shrink the tails, so the choice is made by evidence, not fixed.

The result is a :class:`~pointscale.laws.FittedScalingLaws` with α = 0 and
β = 0: ψ_k = c = ν̂_i at every k, so its Shapley value over any range is the
shrunk mean; ``meta['law_free']`` is True (the values table reports no value
at sizes outside the sampled range for it), ``extra`` holds the plain mean,
the shrinkage weight B_i and the posterior variance of c (``var_c``; α is
fixed, so ``var_alpha`` and ``cov_c_alpha`` are 0 and the intervals are
those of c).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.stats import norm

from ..errors import ConfigError
from .folds import fold_ids, n_folds
from .likelihood import LOG_2PI
from .result import FittedScalingLaws

__all__ = ["fit_shrunk_mean", "shrink_means", "VARIANTS"]

VARIANTS = ("pooled", "per_point")
_TINY = 1e-300


def _point_stats(samples: pd.DataFrame) -> pd.DataFrame:
    g = samples.groupby("point_id", sort=True)["delta"]
    return pd.DataFrame({"n": g.size(), "mean": g.mean(), "var": g.var(ddof=1)})


def _noise_variances(stats: pd.DataFrame, variant: str, pooled: float | None = None) -> tuple[np.ndarray, float]:
    """Within-point variance of Δ per point under ``variant``, and the pooled one (given, or from ``stats``)."""
    n = stats["n"].to_numpy(dtype=np.float64)
    var = stats["var"].to_numpy(dtype=np.float64)
    if pooled is None:
        dof = np.where(n >= 2, n - 1.0, 0.0)
        pooled = float(np.nansum(np.where(dof > 0, var, 0.0) * dof) / dof.sum()) if dof.sum() > 0 else 0.0
        pooled = max(pooled, _TINY)
    if variant == "pooled":
        return np.full(n.size, pooled), pooled
    own = np.where((n >= 2) & np.isfinite(var), var, pooled)
    return np.maximum(own, pooled * 1e-6), pooled


def shrink_means(means: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, float, float, np.ndarray]:
    """Normal–normal empirical Bayes: ``(shrunk, grand_mean, between_variance, weights)``.

    ``means`` are the plain means, ``noise`` their variances v_i; μ and τ²
    maximise the marginal likelihood of m_i ~ N(μ, τ² + v_i) (μ profiled out).
    """
    m = np.asarray(means, dtype=np.float64)
    v = np.asarray(noise, dtype=np.float64)
    if m.size == 0:
        return m.copy(), float("nan"), float("nan"), m.copy()
    if m.size == 1:
        return m.copy(), float(m[0]), 0.0, np.zeros(1)
    spread = float(np.var(m))
    if spread <= 0.0:
        return np.full(m.size, float(m[0])), float(m[0]), 0.0, np.zeros(m.size)

    def profile(tau2: float) -> tuple[float, float]:
        w = 1.0 / (tau2 + v)
        mu = float(np.sum(w * m) / np.sum(w))
        return mu, 0.5 * float(np.sum(np.log(tau2 + v) + w * (m - mu) ** 2))

    res = minimize_scalar(lambda u: profile(spread * np.exp(u))[1], bounds=(-30.0, 3.0), method="bounded",
                          options={"xatol": 1e-6})
    tau2 = spread * float(np.exp(res.x))
    if profile(spread * np.exp(-30.0))[1] <= profile(tau2)[1]:
        tau2 = 0.0
    mu = profile(tau2)[0] if tau2 > 0 else float(np.sum(m / v) / np.sum(1.0 / v))
    shrunk, weight = _posterior(m, v, mu, tau2)
    return shrunk, mu, tau2, weight


def _posterior(means: np.ndarray, noise: np.ndarray, mu: float, tau2: float) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means of ν_i ~ N(``mu``, ``tau2``) given m_i ~ N(ν_i, v_i), and the weights τ²/(τ² + v_i)."""
    weight = tau2 / (tau2 + noise)
    return mu + weight * (means - mu), weight


def _fit_variant(samples: pd.DataFrame, variant: str, population: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """The variant's shrunk means; its grand mean, between-point and pooled variance learned (or ``population``'s)."""
    stats = _point_stats(samples)
    sigma2, pooled = _noise_variances(stats, variant, None if population is None
                                      else float(population["noise_variance_pooled"]))
    n = stats["n"].to_numpy(dtype=np.float64)
    if population is None:
        shrunk, mu, tau2, weight = shrink_means(stats["mean"].to_numpy(dtype=np.float64), sigma2 / n)
    else:
        mu, tau2 = float(population["grand_mean"]), float(population["between_variance"])
        shrunk, weight = _posterior(stats["mean"].to_numpy(dtype=np.float64), sigma2 / n, mu, tau2)
    out = stats.assign(value=shrunk, weight=weight, sigma2=sigma2, post_var=weight * sigma2 / n)
    return out, {"grand_mean": mu, "between_variance": tau2, "noise_variance_pooled": pooled}


def _heldout_sse(samples: pd.DataFrame, folds: int, seed: int) -> dict[str, float]:
    """Summed squared error of held-out Δ around each variant's value fitted on the other folds."""
    k = n_folds(samples, folds)
    fold = fold_ids(samples, k, seed=seed)
    sse = {v: 0.0 for v in VARIANTS}
    for f in range(k):
        held = samples.loc[fold == f]
        if held.empty:
            continue
        train = samples.loc[fold != f]
        for variant in VARIANTS:
            fitted, _ = _fit_variant(train, variant)
            pred = fitted["value"].reindex(held["point_id"].to_numpy()).to_numpy(dtype=np.float64)
            d = held["delta"].to_numpy(dtype=np.float64)
            ok = np.isfinite(pred)
            sse[variant] += float(np.sum((d[ok] - pred[ok]) ** 2))
    return sse


def fit_shrunk_mean(samples: pd.DataFrame, *, variant: str = "auto", folds: int = 5, random_state: int = 0,
                    k_range: tuple[int, int] | None = None, population: dict | None = None) -> FittedScalingLaws:
    """Fair shrunk means of every point in ``samples`` (see the module docstring).

    Parameters
    ----------
    samples : DataFrame
        ``point_id``, ``delta`` (``k`` and ``sample_id`` when present;
        ``failed`` rows and non-finite Δ are dropped).
    variant : {"auto", "pooled", "per_point"}, default="auto"
        The noise model; "auto" picks the one with the lower held-out error.
    folds : int, default=5
        Folds of the cross-validation behind "auto".
    random_state : int, default=0
        Seeds the folds.
    k_range : (int, int), optional
        The sampled size range (recorded on the result).
    population : dict, optional
        An earlier fit's ``meta`` (its ``variant``, ``grand_mean``,
        ``between_variance`` and ``noise_variance_pooled``): each point's
        mean is shrunk with those, as in that fit, instead of learning them
        from these points (the law choice learns them on a sample of the
        points and applies them to the others partition by partition).
    """
    if variant not in ("auto",) + VARIANTS:
        raise ConfigError(f"variant={variant!r} must be one of {('auto',) + VARIANTS}")
    keep = np.isfinite(pd.to_numeric(samples["delta"], errors="coerce").to_numpy(dtype=np.float64))
    if "failed" in samples.columns:
        keep &= ~samples["failed"].fillna(False).to_numpy(dtype=bool)
    usable = samples.loc[keep]
    if population is not None:
        variant = str(population["variant"])
    sse = _heldout_sse(usable, folds, random_state) if variant == "auto" and len(usable) else {}
    chosen = variant if variant != "auto" else (min(VARIANTS, key=lambda v: (sse.get(v, 0.0), VARIANTS.index(v))))
    fitted, facts = _fit_variant(usable, chosen, population)
    ids = fitted.index.to_numpy()
    value = fitted["value"].to_numpy(dtype=np.float64)
    sigma2 = fitted["sigma2"].to_numpy(dtype=np.float64)
    post = fitted["post_var"].to_numpy(dtype=np.float64)
    n = fitted["n"].to_numpy(dtype=np.int64)
    # Mean Gaussian NLL per sample of Δ ~ N(value, σ_i²) at the fit.
    d = usable["delta"].to_numpy(dtype=np.float64)
    pos = pd.Index(ids).get_indexer(usable["point_id"].to_numpy())
    terms = 0.5 * LOG_2PI + 0.5 * np.log(sigma2[pos]) + 0.5 * (d - value[pos]) ** 2 / sigma2[pos]
    nll = np.bincount(pos, weights=terms, minlength=ids.size) / np.maximum(n, 1)
    half = norm.ppf(0.975) * np.sqrt(post)
    zeros = np.zeros(ids.size)
    return FittedScalingLaws(
        point_ids=ids, c=value, alpha=zeros, sigma=np.sqrt(sigma2), beta=zeros, nll=nll, n_samples=n,
        estimator="shrunk_mean", alpha_low=zeros, alpha_high=zeros, c_low=value - half, c_high=value + half,
        flags={"too_few_samples": n < 2},
        extra={"plain_mean": fitted["mean"].to_numpy(dtype=np.float64),
               "shrink_weight": fitted["weight"].to_numpy(dtype=np.float64),
               "var_c": post, "var_alpha": zeros, "cov_c_alpha": zeros},
        k_range=k_range,
        meta={"law_free": True, "variant": chosen, "variant_rule": "lower held-out squared error (K-fold)"
              if variant == "auto" else "given", "heldout_sse": sse, **facts,
              **({} if population is None else {"population_given": True})},
    )
