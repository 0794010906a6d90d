r"""One entry point that picks the law estimator by held-out likelihood.

:func:`fit_laws` fits per-point scaling laws with one of

* ``"mle"`` -- per-point maximum likelihood (:func:`~pointscale.laws.fit_mle`);
* ``"shrinkage"`` -- empirical Bayes with a population prior
  (:func:`~pointscale.laws.shrinkage.fit_shrinkage`);
* ``"amortized"`` -- one model from the point's features, label and
  out-of-bag evidence to its law (:class:`~pointscale.laws.AmortizedScalingLaws`);
* ``"amortized_shrinkage"`` -- empirical Bayes whose per-point prior means
  are the amortized predictions;

or, with ``method="auto"`` (the default), chooses among them by evidence:

Selection rule
--------------
Of every point with at least 3 samples, a fraction ``holdout_fraction``
(20 %, at least one) of its samples is held out -- the samples with the
smallest keyed hash of their ``sample_id`` (or of ``(point_id, k, delta)``
when there is no id), so the split does not depend on row order. Every
candidate is fitted on the remaining samples and scored by the mean Gaussian
negative log-likelihood per held-out sample, in the units of Δ. What the
likelihood scores (``target``):

* ``"shapley"`` (the default; the sampling protocol draws k uniformly from
  ``k_range``): a held-out Δ of point z, its size unseen, is a draw with mean
  ν(z), the distributional Shapley value over ``k_range`` -- the number
  ``values.parquet`` reports. The candidate's model for it is
  Δ ~ N(ν̂(z), s²), ν̂ its Shapley value and s² one variance shared by every
  candidate and point (the variance of the training samples' Δ). The
  expected score of a candidate is then an increasing affine function of the
  mean squared error of its Shapley values: the rule picks the estimator
  that values best, estimated from samples it did not see.
  (:func:`heldout_terms_shapley`.)
* ``"psi"`` (for staggered sizes, where k is not uniform): the candidate's
  own noise model for each held-out sample at its size,
  Δ ~ N(c·k^(−α), σ²k^(−β)) (:func:`heldout_terms`).

A candidate that gives no law for a point with held-out samples scores +inf
(it cannot value that point). The held-out score is itself an estimate: the
chosen candidate is the first in the preference order :data:`CANDIDATES`
whose score is within one standard error of the lowest (the standard error
of the mean paired difference over the same held-out samples; the
"one-standard-error rule" of cross-validation), so a difference the held-out
samples cannot resolve does not move the choice away from the estimator that
needs the fewest assumptions about the data (shrinkage needs no features).
It is refitted on all samples. The scores of both targets, the standard
errors, the best-scoring candidate and the choice are recorded in
``meta['selection']``.

How the rule was chosen
-----------------------
On data other than the reported runs -- flipped-label pools of magic and
digits (1,000 points, 10 % flipped, seeds 100–102, 10 samples per point,
ground truth 200 independent samples per point; ``docs/estimators.md``) --
the ψ_k likelihood chose the amortized laws on 6 of 6 pools, and their
Shapley values were worse than another candidate's on 5 of them (mean
explained variance of the chosen values 0.866). The Shapley target with one
shared variance chose the candidate with the best Shapley explained variance
on 5 of 6 pools and one within 0.01 of it on the sixth (mean 0.897; the best
candidate per pool: 0.899); with a variance per point (from the shrinkage
fit) it chose as the ψ_k score did (0.871). The one-standard-error rule never
lowered the chosen explained variance there and raised it on one pool. A
ψ_k score under a noise model shared by the candidates (an earlier version)
made the same choices as each candidate's own noise model without the
one-standard-error rule, and a worse one with it (0.863), so it is gone.

The held-out likelihood never looks at values or at an evaluation set.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from ..sampling.ledger import oob_evidence
from ..seeding import mix64, combine_ids
from .estimators import FitContext, candidates, fit_estimator, get_estimator, registered
from .likelihood import LOG_2PI
from .power import power_mean
from .result import FittedScalingLaws

__all__ = ["fit_laws", "select_laws", "CANDIDATES", "holdout_mask"]

#: The built-in estimators ``method="auto"`` chooses among, in tie-breaking order
#: (the registry's ``auto_rank`` at import: :func:`pointscale.laws.estimators.candidates`).
CANDIDATES = candidates()
#: What the held-out likelihood scores (see the module docstring).
TARGETS = ("shapley", "psi")


def holdout_mask(samples: pd.DataFrame, fraction: float, *, min_samples: int = 3, seed: int = 0) -> np.ndarray:
    """Which rows to hold out: ``fraction`` of each point's samples (at least one).

    Points with fewer than ``min_samples`` samples keep all of them. Rows are
    chosen by a keyed hash of their identity, never by position.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"holdout_fraction={fraction} must lie in (0, 1)")
    n = len(samples)
    if "sample_id" in samples.columns:
        # sample ids are already hashes of identities; mix them with the seed (vectorised).
        ids = samples["sample_id"].to_numpy(dtype=np.int64).astype(np.uint64)
        keys = (mix64(ids ^ mix64(np.array([seed + 0x5EED], dtype=np.uint64))[0]) >> np.uint64(1)
                ).astype(np.int64)
    else:
        keys = np.array([combine_ids(("holdout", seed, str(p), repr(float(k)), repr(float(d))))
                         for p, k, d in zip(samples["point_id"].tolist(), samples["k"].tolist(),
                                            samples["delta"].tolist())], dtype=np.int64)
    frame = pd.DataFrame({"p": samples["point_id"].to_numpy(), "key": keys, "row": np.arange(n)})
    frame["rank"] = frame.groupby("p", sort=False)["key"].rank(method="first")
    count = frame.groupby("p", sort=False)["key"].transform("size").to_numpy()
    n_out = np.where(count >= min_samples, np.maximum(1, np.round(fraction * count)), 0)
    return frame["rank"].to_numpy() <= n_out


def _usable(samples: pd.DataFrame) -> pd.DataFrame:
    keep = np.isfinite(pd.to_numeric(samples["delta"], errors="coerce").to_numpy(dtype=np.float64))
    if "failed" in samples.columns:
        keep &= ~samples["failed"].fillna(False).to_numpy(dtype=bool)
    return samples.loc[keep]


def heldout_terms(laws: FittedScalingLaws, heldout: pd.DataFrame) -> np.ndarray:
    """Gaussian NLL of every held-out sample under the law's own noise model at its size (NaN: no law)."""
    pos = pd.Index(laws.point_ids).get_indexer(heldout["point_id"].to_numpy())
    p = np.maximum(pos, 0)
    k = heldout["k"].to_numpy(dtype=np.float64)
    d = heldout["delta"].to_numpy(dtype=np.float64)
    with np.errstate(all="ignore"):
        mean = np.where(laws.c[p] == 0.0, 0.0, laws.c[p] * k ** (-laws.alpha[p]))
        log_var = 2.0 * np.log(laws.sigma[p]) - laws.beta[p] * np.log(k)
        out = 0.5 * LOG_2PI + 0.5 * log_var + 0.5 * (d - mean) ** 2 * np.exp(-log_var)
    return np.where((pos >= 0) & np.isfinite(out), out, np.nan)


def _mean_or_inf(terms: np.ndarray) -> float:
    """Mean held-out NLL; +inf when some held-out sample has no finite term (no law for its point)."""
    return float(np.mean(terms)) if terms.size and np.isfinite(terms).all() else float("inf")


def heldout_terms_shapley(laws: FittedScalingLaws, heldout: pd.DataFrame, variance: float,
                          k_range: tuple[int, int]) -> np.ndarray:
    """Gaussian NLL of every held-out sample under the size-marginal model of ``laws``.

    Δ ~ N(ν̂(z), ``variance``) with ν̂(z) the candidate's distributional
    Shapley value over ``k_range`` (see "Selection rule"); NaN where a point
    has no law.
    """
    lo, hi = int(k_range[0]), int(k_range[1])
    pos = pd.Index(laws.point_ids).get_indexer(heldout["point_id"].to_numpy())
    d = heldout["delta"].to_numpy(dtype=np.float64)
    with np.errstate(all="ignore"):
        nu = np.where(laws.c == 0.0, 0.0, laws.c * power_mean(laws.alpha, lo, hi))[np.maximum(pos, 0)]
        out = 0.5 * LOG_2PI + 0.5 * np.log(variance) + 0.5 * (d - nu) ** 2 / variance
    return np.where((pos >= 0) & np.isfinite(out), out, np.nan)


def best_of(scores: Mapping[str, float], cands) -> str:
    """The candidate with the lowest score (ties: the earlier)."""
    return min(cands, key=lambda c: (scores[c], list(cands).index(c)))


def _one_se_choice(cands, scores, terms) -> tuple[str, dict[str, float]]:
    """The first candidate (in preference order) within one standard error of the best.

    The standard error is that of the mean paired difference of held-out
    sample NLLs between the candidate and the best one (the same samples).
    """
    best = best_of(scores, cands)
    se: dict[str, float] = {}
    for c in cands:
        if not np.isfinite(scores[c]):
            se[c] = float("inf")
            continue
        diff = terms[c] - terms[best]
        diff = diff[np.isfinite(diff)]
        se[c] = float(np.std(diff, ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("inf")
    for c in cands:
        if np.isfinite(scores[c]) and scores[c] - scores[best] <= se[c]:
            return c, se
    return best, se


def select_laws(samples: pd.DataFrame, dataset: Any = None, *, method: str = "auto", oob=None,
                holdout_fraction: float = 0.2, candidates=None, random_state: int = 0,
                amortized_params: Mapping[str, Any] | None = None,
                fitted: Mapping[str, FittedScalingLaws] | None = None,
                target: str = "shapley", k_range: tuple[int, int] | None = None,
                ) -> tuple[FittedScalingLaws, dict[str, FittedScalingLaws]]:
    """:func:`fit_laws`, also returning every candidate fitted on all samples along the way.

    ``oob`` is the out-of-bag evidence table (:func:`pointscale.sampling.oob_evidence`);
    ``fitted`` maps methods to laws already fitted on *all* these samples
    (e.g. by earlier pipeline stages), reused instead of refitting.

    Returns
    -------
    laws : FittedScalingLaws
        The chosen estimator's laws (``meta['selection']`` records the choice).
    fitted : dict of str to FittedScalingLaws
        Laws fitted on *all* samples, by method (the chosen one, and the
        amortized laws when the chosen one needed them).
    """
    t0 = time.perf_counter()
    if not isinstance(samples, pd.DataFrame):
        raise DataError(f"samples must be a pandas DataFrame, got {type(samples).__name__}")
    allowed = ("auto",) + registered()
    if method not in allowed:
        raise ConfigError(f"method={method!r} must be one of {allowed}")
    if method != "auto" and get_estimator(method).needs_dataset and dataset is None:
        raise ConfigError(f"method={method!r} needs the dataset (features and labels of the points)")
    usable = _usable(samples)
    full_cache: dict[str, FittedScalingLaws] = {k: v for k, v in dict(fitted or {}).items() if v is not None}
    if method != "auto":
        context = _context(dataset, oob, random_state, k_range, amortized_params)
        laws = fit_estimator(method, usable, context, full_cache)
        meta = {**laws.meta, "selection": {"method": method, "chosen": method}}
        return dataclasses.replace(laws, meta=meta), full_cache

    cands = _candidates(candidates, dataset)
    if target not in TARGETS:
        raise ConfigError(f"target={target!r} must be one of {TARGETS}")
    if target == "shapley" and k_range is None and len(usable):
        k_range = (int(np.floor(usable["k"].min())), int(np.ceil(usable["k"].max())))
    context = _context(dataset, oob, random_state, k_range, amortized_params)
    mask = holdout_mask(usable, holdout_fraction, seed=int(random_state))
    train, held = usable.loc[~mask], usable.loc[mask]
    scored = _score_candidates(cands, train, held, context, target)
    chosen = scored.chosen if scored.chosen is not None else cands[0]
    laws = fit_estimator(chosen, usable, context, full_cache)
    selection = {
        "method": "auto",
        "chosen": chosen,
        "rule": ("mean Gaussian NLL per held-out sample, target " + (
            "'shapley': Delta ~ N(candidate's Shapley value over k_range, one shared variance)"
            if target == "shapley" else "'psi': Delta ~ N(c k^-alpha, sigma^2 k^-beta), the candidate's own law")
            + "; each candidate fitted on the other samples; the first candidate in preference order within "
              "one standard error (paired) of the lowest"),
        "target": target,
        "k_range": None if k_range is None else [int(k_range[0]), int(k_range[1])],
        "heldout_nll": _finite_or_none(scored.scores),
        "heldout_nll_shapley": _finite_or_none(scored.shapley),
        "heldout_nll_psi": _finite_or_none(scored.psi),
        "best": best_of(scored.scores, cands) if scored.scores else None,
        "se_of_difference_to_best": _finite_or_none(scored.se),
        "errors": scored.errors,
        "holdout_fraction": float(holdout_fraction),
        "n_heldout_samples": int(len(held)),
        "n_train_samples": int(len(train)),
        "candidates": list(cands),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    meta = {**laws.meta, "selection": selection}
    return dataclasses.replace(laws, meta=meta), full_cache


def _context(dataset: Any, oob, random_state: int, k_range, amortized_params) -> FitContext:
    params = {"amortized": dict(amortized_params)} if amortized_params else {}
    return FitContext(dataset=dataset, oob=oob, random_state=int(random_state),
                      k_range=None if k_range is None else (int(k_range[0]), int(k_range[1])), params=params)


def _candidates(requested, dataset: Any) -> list[str]:
    """The registry's auto candidates (in preference order) among ``requested``, fit for the data given."""
    ranked = candidates()  # the registry now (an estimator registered after import counts)
    cands = [c for c in (requested or ranked) if c in ranked]
    if dataset is None:
        cands = [c for c in cands if not get_estimator(c).needs_dataset]
    if not cands:
        raise ConfigError(f"no candidate estimator to choose from (candidates={requested!r})")
    return cands


def _finite_or_none(values: Mapping[str, float]) -> dict[str, float | None]:
    return {c: (v if np.isfinite(v) else None) for c, v in values.items()}


@dataclasses.dataclass
class _Scores:
    """The held-out scores of the candidates, and the choice they make (None: nothing held out)."""

    chosen: str | None = None
    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    psi: dict[str, float] = dataclasses.field(default_factory=dict)
    shapley: dict[str, float] = dataclasses.field(default_factory=dict)
    se: dict[str, float] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)


def _score_candidates(cands, train: pd.DataFrame, held: pd.DataFrame, context: FitContext,
                      target: str) -> _Scores:
    """Fit every candidate on ``train`` and score it on ``held`` (see "Selection rule")."""
    out = _Scores()
    if held.empty:
        return out
    cache: dict[str, FittedScalingLaws] = {}
    terms: dict[str, np.ndarray] = {}
    variance = float(np.var(train["delta"].to_numpy(dtype=np.float64))) or 1.0
    for c in cands:
        try:
            cand = fit_estimator(c, train, context, cache)
        except (DataError, ConfigError) as exc:  # e.g. too few points for the amortized model
            out.scores[c] = out.psi[c] = float("inf")
            out.errors[c] = str(exc)
            continue
        t_psi = heldout_terms(cand, held)
        t_shap = heldout_terms_shapley(cand, held, variance, context.k_range) if target == "shapley" else None
        out.psi[c] = _mean_or_inf(t_psi)
        if t_shap is not None:
            out.shapley[c] = _mean_or_inf(t_shap)
        terms[c] = t_shap if target == "shapley" else t_psi
        out.scores[c] = _mean_or_inf(terms[c])
    out.chosen, out.se = _one_se_choice(cands, out.scores, terms)
    return out


def fit_laws(samples: pd.DataFrame, dataset: Any = None, *, method: str = "auto", ledger: Any = None,
             holdout_fraction: float = 0.2, candidates=None, random_state: int = 0,
             amortized_params: Mapping[str, Any] | None = None, target: str = "shapley",
             k_range: tuple[int, int] | None = None) -> FittedScalingLaws:
    """Scaling laws of every point in ``samples``, by the estimator the data support best.

    Parameters
    ----------
    samples : DataFrame
        Columns ``point_id``, ``k``, ``delta`` and optionally ``failed`` and
        ``sample_id`` (the ledger's rows).
    dataset : Dataset, optional
        Features and labels of the points; needed by the amortized
        candidates (without it "auto" chooses between mle and shrinkage).
    method : {"auto", "shrinkage", "amortized_shrinkage", "mle", "amortized"}, default="auto"
        "auto" applies the selection rule of the module docstring.
    ledger : Ledger, optional
        The sample ledger; its out-of-bag evidence
        (:func:`pointscale.sampling.oob_evidence`) becomes an input of the
        amortized candidates and covariates of the shrinkage prior.
    holdout_fraction : float, default=0.2
        Share of each point's samples held out to score the candidates.
    candidates : sequence of str, optional
        Restrict "auto" to these estimators.
    random_state : int, default=0
        Seeds the held-out split and the amortized model.
    amortized_params : mapping, optional
        Extra parameters of :class:`~pointscale.laws.AmortizedScalingLaws`.
    target : {"shapley", "psi"}, default="shapley"
        What the held-out likelihood scores (module docstring): the Shapley
        value over ``k_range`` (k drawn uniformly, the default protocol) or
        ψ_k at each sample's size (staggered sizes).
    k_range : (int, int), optional
        The sampled size range [k_min, k_max]; default the smallest and
        largest k of the samples.

    Returns
    -------
    FittedScalingLaws
        ``meta['selection']``: the method, the choice, the held-out scores.
    """
    oob = None
    if ledger is not None:
        oob = oob_evidence(ledger)
        if oob.empty:
            oob = None
    laws, _ = select_laws(samples, dataset, method=method, oob=oob, holdout_fraction=holdout_fraction,
                          candidates=candidates, random_state=random_state, amortized_params=amortized_params,
                          target=target, k_range=k_range)
    return laws
