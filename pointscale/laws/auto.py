r"""One entry point that picks the law estimator by held-out likelihood.

:func:`fit_laws` fits per-point scaling laws with one of

* ``"mle"`` -- per-point maximum likelihood (:func:`~pointscale.laws.fit_mle`);
* ``"shrinkage"`` -- empirical Bayes with a population prior
  (:func:`~pointscale.laws.shrinkage.fit_shrinkage`);
* ``"amortized"`` -- one model from the point's features, label and
  out-of-bag evidence to its law (:class:`~pointscale.laws.AmortizedScalingLaws`);
* ``"amortized_shrinkage"`` -- empirical Bayes whose per-point prior means
  are the amortized predictions;
* ``"shrunk_mean"`` -- law-free: each point's plain mean shrunk toward the
  grand mean (:mod:`~pointscale.laws.shrunk_mean`);

or, with ``method="auto"`` (the default), chooses among them by evidence:

Selection rule
--------------
K-fold cross-validation (``folds``, 5 by default; fewer when the typical
point has fewer samples; points with fewer than 3 samples are never held
out). Ledger rows (with a ``base_id``) are held out by base subset: every
sample measured on one base is in the same fold, bases going round the folds
in keyed-hash order (:func:`~pointscale.laws.folds.base_fold_ids`). Samples
of one base share its draw, and a candidate fitted across points (the
amortized model) scored on a held-out sample whose base it saw in training
for the other points looked better than it was: in the estimator benchmark
(3 replicates, 18 cells) it was chosen in 6 of 54 replicate-cells and three
MLP cells lost to the fair shrunk mean by 0.37-0.51 explained variance; by
base, 3 of 54, and those cells within 0.03 of it or above
(``docs/estimators.md``). Rows without a
``base_id`` go round each point's own folds in the order of a keyed hash of
their ``sample_id`` (or of ``(point_id, k, delta)`` when there is no id),
so every sample is held out exactly once
(:func:`~pointscale.laws.folds.fold_ids`). Either split is independent of
row order.
Every candidate is fitted on the other folds and scored by the mean Gaussian
negative log-likelihood per held-out sample, in the units of Δ, over all
folds. What the likelihood scores (``target``):

* ``"shapley"`` (the default; the sampling protocol draws k uniformly from
  ``k_range``): a held-out Δ of point z, its size unseen, is a draw with mean
  ν(z), the distributional Shapley value over ``k_range`` -- the number
  ``values.parquet`` reports. The candidate's model for it is
  Δ ~ N(ν̂(z), s²), ν̂ its Shapley value and s² one variance shared by every
  candidate and point (the variance of the fold's training Δ). The
  expected score of a candidate is then an increasing affine function of the
  mean squared error of its Shapley values: the rule picks the estimator
  that values best, estimated from samples it did not see.
  (:func:`heldout_terms_shapley`.)
* ``"psi"`` (for staggered sizes, where k is not uniform): the candidate's
  own noise model for each held-out sample at its size,
  Δ ~ N(c·k^(−α), σ²k^(−β)) (:func:`heldout_terms`).

A candidate that gives no law for a point with held-out samples scores +inf
(it cannot value that point). A candidate whose fits did not converge on
more than :data:`MAX_NOT_CONVERGED` of the points (the mean share over the
folds, or its fit on all samples once chosen) is not chosen -- the
selection record names it and why (``excluded``) -- unless its held-out
score is lower than every other candidate's: the held-out samples then
show its values are the best as they are, and the record says it was
used anyway (``used_anyway``; the terminal and the report say it too).
The share counts points whose own fit did not converge: the shrinkage
estimators' EM often stops at its iteration cap with the prior still
creeping and every mode settled under the prior reached, which flags no
point (``meta['em_converged']`` says it; when it flagged every point, setting
shrinkage aside on simulated laws with 10 samples per point lowered the
explained variance of the values from 0.94 to 0.74). The held-out score is itself an
estimate: the chosen candidate is the first in the preference order
(:func:`pointscale.laws.estimators.candidates`) whose score is within one
standard error of the lowest (the standard error of the mean paired
difference over the same held-out samples, each point's samples one
cluster; the "one-standard-error rule" of cross-validation), so a
difference the held-out samples cannot resolve does not move the choice away
from the estimator that shrinks towards what the samples themselves support:
shrinkage (a population prior, no features) first, then the law-free shrunk
mean (the same, without a law: a law, where it holds, also predicts values
at other sizes, so it goes first), then what leans on a model from features
(shrinkage around the amortized laws, which where samples are few are the
amortized laws), the per-point MLE (no shrinkage) and the amortized laws
last. Those can be far off where the held-out samples cannot tell: in the
estimator benchmark (adult, the batched MLP, 10–20 samples per point) the
amortized laws scored within one standard error of the shrunk mean (by 9e-5,
s.e. 0.006) and ranked before it in the old order (shrinkage, amortized
shrinkage, MLE, amortized, shrunk mean), and their values' explained
variance against the ground truth was −1.02 where the shrunk mean's was
0.09. On the flipped-label pools of magic and digits (other data; ``python
-m benchmarks.estimators --part rules``) the old order and this one chose
the same candidate on all six pools. The choice's
``margin`` is the best other candidate's score minus the chosen one's
(positive: the chosen one predicted the held-out samples better), with the
standard error of that paired difference.

The same folds test the law (:mod:`pointscale.laws.diagnostic`): where the
law does not hold (its held-out likelihood is more than two standard errors
below a no-law model's), the values come from the best law-free candidate
instead (``overridden`` in the record). A chosen law whose exponent sits
within :data:`~pointscale.laws.likelihood.ALPHA_BOUND_TOL` of a bound (0 or
e²) for :data:`COLLAPSED_SHARE` of the points or more is set aside for the
law-free candidate (``excluded`` says why): its population collapsed there,
and the samples did not identify the law. The chosen estimator is refitted on
all samples, and on two independent halves of each point's samples for the
reliability of its values; ``meta['law_diagnostic']`` holds the diagnostic.
For the amortized candidates the folds and halves reuse the hyperparameters
the fit on all samples chose (given in ``fitted``), so their cost is about
one full fit rather than K of them.

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

(Those measurements used one 20 % holdout per point; K-fold cross-validation
replaced it because two held-out samples per point could rarely tell the
candidates apart.) The held-out likelihood never looks at values or at an
evaluation set.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from ..sampling.ledger import oob_evidence
from . import diagnostic as diag
from .estimators import FitContext, candidates, fit_estimator, get_estimator, registered
from .folds import fold_ids, half_ids, n_folds
from .likelihood import ALPHA_BOUND_TOL, LOG_2PI, PARAM_MAX
from .power import power_mean
from .result import FittedScalingLaws

__all__ = ["fit_laws", "select_laws", "usable_samples", "CANDIDATES", "MAX_NOT_CONVERGED"]

#: The built-in estimators ``method="auto"`` chooses among, in tie-breaking order
#: (the registry's ``auto_rank`` at import: :func:`pointscale.laws.estimators.candidates`).
CANDIDATES = candidates()
#: What the held-out likelihood scores (see the module docstring).
TARGETS = ("shapley", "psi")
#: A candidate whose fits did not converge on more than this share of points is not chosen.
MAX_NOT_CONVERGED = 0.5
#: Folds of the cross-validation (fewer when the typical point has fewer samples).
FOLDS = 5
#: A law whose exponent sits within ALPHA_BOUND_TOL of a bound (0 or e²) for at least this share of the
#: points is set aside for the law-free candidate: its population collapsed there, the samples did not
#: identify the law (shrinkage at 10-30 samples per point on the estimator benchmark's non-linear models:
#: the points' median α at 0 or e² in 55 of 96 refits; the deep ground truth's median α is 0.7-1.6).
COLLAPSED_SHARE = 0.9
#: The law-free estimator whose per-point value is the law test's no-law constant.
NO_LAW_CONSTANT = "shrunk_mean"


def usable_samples(samples: pd.DataFrame) -> pd.DataFrame:
    """The rows the estimators fit: finite Δ, not failed."""
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


def _paired_se(diff: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Standard error of the mean of ``diff`` (finite entries), clustered by ``groups`` when given."""
    ok = np.isfinite(diff)
    d = diff[ok]
    if d.size < 2:
        return float("inf")
    if groups is None:
        return float(np.std(d, ddof=1) / np.sqrt(d.size))
    codes, uniq = pd.factorize(np.asarray(groups)[ok])
    if uniq.size < 2:
        return float("inf")
    resid = np.bincount(codes, weights=d - d.mean(), minlength=uniq.size)
    return float(np.sqrt(np.sum(resid ** 2) * uniq.size / (uniq.size - 1)) / d.size)


def _one_se_choice(cands, scores, terms, groups: np.ndarray | None = None) -> tuple[str, dict[str, float]]:
    """The first candidate (in preference order) within one standard error of the best.

    The standard error is that of the mean paired difference of held-out
    sample NLLs between the candidate and the best one (the same samples;
    clustered by ``groups``, the samples' points, when given).
    """
    best = best_of(scores, cands)
    se: dict[str, float] = {}
    for c in cands:
        if not np.isfinite(scores[c]):
            se[c] = float("inf")
            continue
        se[c] = 0.0 if c == best else _paired_se(terms[c] - terms[best], groups)
    return first_within_se(cands, scores, se), se


def first_within_se(cands, scores: Mapping[str, float], se: Mapping[str, float]) -> str:
    """The first of ``cands`` whose score is within its standard error ``se`` of the lowest (else the lowest)."""
    best = best_of(scores, cands)
    for c in cands:
        if np.isfinite(scores[c]) and scores[c] - scores[best] <= se[c]:
            return c
    return best


def _margin(chosen: str, cands, scores, terms, groups) -> dict[str, Any]:
    """The best other candidate's score minus the chosen one's, and its paired standard error."""
    others = [c for c in cands if c != chosen and np.isfinite(scores.get(c, float("inf")))]
    if not others or chosen not in terms:
        return {"to": None, "value": None, "se": None}
    rival = best_of(scores, others)
    se = _paired_se(terms[rival] - terms[chosen], groups)
    return {"to": rival, "value": float(scores[rival] - scores[chosen]),
            "se": se if np.isfinite(se) else None}


def _not_converged_share(laws: FittedScalingLaws) -> float:
    flag = laws.flags.get("not_converged")
    return float(np.mean(flag)) if flag is not None and flag.size else 0.0


def _exponent_at_bound_share(laws: FittedScalingLaws) -> float:
    """Share of the points whose α lies within :data:`ALPHA_BOUND_TOL` of 0 or of e²."""
    a = np.asarray(laws.alpha, dtype=np.float64)
    a = a[np.isfinite(a)]
    if not a.size:
        return 0.0
    return float(np.mean((a <= ALPHA_BOUND_TOL) | (a >= PARAM_MAX - ALPHA_BOUND_TOL)))


def _is_law_free(name: str) -> bool:
    return get_estimator(name).law_free


@dataclasses.dataclass
class _Scores:
    """The cross-validated scores of the candidates, their held-out terms and what the folds found."""

    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    psi: dict[str, float] = dataclasses.field(default_factory=dict)
    shapley: dict[str, float] = dataclasses.field(default_factory=dict)
    terms: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    psi_terms: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    nolaw_terms: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    not_converged: dict[str, float] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    groups: np.ndarray | None = None
    folds: int = 0
    n_heldout: int = 0
    held_out_by: str = "sample"


def _fold_context(context: FitContext, full_cache: Mapping[str, FittedScalingLaws]) -> FitContext:
    """``context`` with the amortized hyperparameters fixed to those the fit on all samples chose."""
    full = full_cache.get("amortized")
    params = dict(context.params.get("amortized") or {})
    if full is None or "hidden_layer_sizes" in params or "alpha_prior" in params:
        return context
    chosen = {k: full.meta[k] for k in ("hidden_layer_sizes", "alpha_prior") if full.meta.get(k) is not None}
    if chosen.get("hidden_layer_sizes") == []:  # the tree learner has no layers
        chosen.pop("hidden_layer_sizes")
    return dataclasses.replace(context, params={**context.params, "amortized": {**params, **chosen}})


def _cross_validate(cands, usable: pd.DataFrame, context: FitContext, target: str, folds: int,
                    seed: int) -> _Scores:
    """Fit every candidate on K-1 folds and score it on the held-out fold, for every fold."""
    out = _Scores()
    k = n_folds(usable, folds)
    fold = fold_ids(usable, k, seed=seed, by_base=True)  # a base's samples held out together
    held_rows = fold >= 0
    out.folds, out.n_heldout = k, int(held_rows.sum())
    out.held_out_by = "base" if "base_id" in usable.columns else "sample"
    out.groups = usable["point_id"].to_numpy()[held_rows]
    if out.n_heldout == 0:
        return out
    n = len(usable)
    shap = {c: np.full(n, np.nan) for c in cands}
    psi = {c: np.full(n, np.nan) for c in cands}
    nolaw: dict[str, dict[str, np.ndarray]] = {}
    shares: dict[str, list[float]] = {c: [] for c in cands}
    for f in range(k):
        rows = fold == f
        if not rows.any():
            continue
        train, held = usable.loc[~rows], usable.loc[rows]
        variance = float(np.var(train["delta"].to_numpy(dtype=np.float64))) or 1.0
        cache: dict[str, FittedScalingLaws] = {}
        constant = None  # the no-law constant of the law test: the fair shrunk mean on this fold
        for c in cands:
            if c in out.errors:
                continue
            try:
                cand = fit_estimator(c, train, context, cache)
            except (DataError, ConfigError) as exc:  # e.g. too few points for the amortized model
                out.errors[c] = str(exc)
                continue
            shares[c].append(_not_converged_share(cand))
            psi[c][rows] = heldout_terms(cand, held)
            if target == "shapley":
                shap[c][rows] = heldout_terms_shapley(cand, held, variance, context.k_range)
            if not _is_law_free(c) and context.k_range is not None:
                if constant is None:
                    constant = fit_estimator(NO_LAW_CONSTANT, train, context, cache)
                for name, t in diag.nolaw_terms(cand, train, held, context.k_range, constant=constant).items():
                    nolaw.setdefault(c, {}).setdefault(name, np.full(n, np.nan))[rows] = t
    for c in cands:
        if c in out.errors:
            out.scores[c] = out.psi[c] = float("inf")
            if target == "shapley":
                out.shapley[c] = float("inf")
            continue
        out.psi_terms[c] = psi[c][held_rows]
        out.psi[c] = _mean_or_inf(out.psi_terms[c])
        if target == "shapley":
            out.shapley[c] = _mean_or_inf(shap[c][held_rows])
        out.terms[c] = shap[c][held_rows] if target == "shapley" else out.psi_terms[c]
        out.scores[c] = _mean_or_inf(out.terms[c])
        out.not_converged[c] = float(np.mean(shares[c])) if shares[c] else 0.0
        if c in nolaw:
            out.nolaw_terms[c] = {name: t[held_rows] for name, t in nolaw[c].items()}
    return out


def _law_diagnostic(scored: _Scores, chosen: str, eligible) -> dict[str, Any]:
    """The law test on the folds: the chosen law, or the best-scoring eligible law when the choice is law-free."""
    laws = [c for c in eligible if not _is_law_free(c) and c in scored.nolaw_terms]
    if not laws:
        return {"law_estimator": None, **diag.law_test(np.empty(0), np.empty(0), {})}
    law = chosen if chosen in laws else best_of(scored.psi, laws)  # the law's best shot at psi_k
    test = diag.law_test(scored.groups, scored.psi_terms[law], scored.nolaw_terms[law])
    return {"law_estimator": law, **test}


def _reliability(name: str, usable: pd.DataFrame, context: FitContext, seed: int) -> dict[str, Any]:
    """Split-half reliability of ``name``'s Shapley values (see :mod:`pointscale.laws.diagnostic`)."""
    counts = usable.groupby("point_id", sort=False).size()
    if int((counts >= 2).sum()) < 3:
        # No point (or too few) has a sample in each half: the two fits would share no point.
        return {"reliability": None, "samples_per_point": float(counts.mean()) if len(counts) else 0.0,
                "error": "fewer than 3 points have 2 samples or more; no halves to compare"}
    half = half_ids(usable, seed=seed)
    lo, hi = context.k_range if context.k_range is not None else (
        int(np.floor(usable["k"].min())), int(np.ceil(usable["k"].max())))
    values = []
    for h in (0, 1):
        try:
            laws = fit_estimator(name, usable.loc[half == h], context, {})
        except (DataError, ConfigError) as exc:
            return {"reliability": None, "error": str(exc)}
        with np.errstate(all="ignore"):
            v = np.where(laws.c == 0.0, 0.0, laws.c * power_mean(laws.alpha, lo, hi))
        values.append(pd.Series(v, index=laws.point_ids))
    both = values[0].index.intersection(values[1].index)
    n_per_point = float(counts.mean()) if len(counts) else 0.0
    return diag.split_half_reliability(values[0].reindex(both).to_numpy(), values[1].reindex(both).to_numpy(),
                                       n_per_point)


def _choose(cands, scored: _Scores, excluded: Mapping[str, str]) -> tuple[str | None, dict[str, float]]:
    eligible = [c for c in cands if c not in excluded and np.isfinite(scored.scores.get(c, float("inf")))]
    if not eligible:
        return None, {}
    return _one_se_choice(eligible, scored.scores, scored.terms, scored.groups)


def _better(a: str, b: str, scored: _Scores) -> bool:
    """Whether candidate ``a``'s held-out score is lower (better) than ``b``'s."""
    if a not in scored.terms or b not in scored.terms:
        return False
    return bool(scored.scores[a] < scored.scores[b])


def _choose_converged(cands, scored: _Scores, excluded: dict[str, str], max_share: float
                      ) -> tuple[str | None, dict[str, float], str | None]:
    """The one-standard-error choice among the candidates whose fits converged.

    A candidate whose fold fits did not converge on more than ``max_share``
    of the points is set aside (added to ``excluded`` with the reason),
    unless its held-out score is lower than every converged candidate's:
    then the held-out samples say its values are the best as they are, it
    is chosen, and the third value says so in words.
    """
    bad = {c: share for c, share in scored.not_converged.items() if share > max_share and c not in excluded}
    chosen, se = _choose(cands, scored, {**excluded, **dict.fromkeys(bad, "")})
    better = []
    for c in bad:
        if not np.isfinite(scored.scores.get(c, float("inf"))):
            continue
        if chosen is None:
            better.append(c)
            continue
        if all(_better(c, o, scored) for o in cands if o not in excluded and o not in bad):
            better.append(c)
    used_anyway = None
    if better:
        pick = best_of(scored.scores, better)
        used_anyway = (f"{pick}'s fits did not converge on {bad[pick]:.0%} of the points, but its values predicted "
                       "the held-out samples better than any converged estimator's, so they are used")
        chosen = pick
        se = {c: (0.0 if c == pick else _paired_se(scored.terms[c] - scored.terms[pick], scored.groups))
              for c in cands if c in scored.terms}
    for c, share in bad.items():
        if c != chosen:
            excluded[c] = (f"its fits did not converge on {share:.0%} of the points (more than {max_share:.0%}) "
                           "and its held-out score did not beat every converged estimator's")
    return chosen, se, used_anyway


def _law_free_where_it_wins(chosen: str | None, diagnostic, cands, scored: _Scores, excluded
                            ) -> tuple[str | None, str | None]:
    """The best law-free candidate instead of the chosen law where the law fails or scores worse (and why).

    Where the law does not hold, the law-free candidate replaces it.
    Otherwise, where the one-standard-error preference (the first candidate
    in order within noise of the best) chose a law, the lower held-out score
    of it and the law-free candidate wins: the law-free candidate is the
    simplest model of all. (Letting a law win within one
    standard error of a better law-free score cost 1.0 to 1.8 of explained
    variance on non-linear models, ``python -m benchmarks.estimators --part
    models``; on planted laws the law still wins where it predicts better.)
    """
    if chosen is None or diagnostic is None or _is_law_free(chosen):
        return chosen, None
    free = [c for c in cands if c not in excluded and _is_law_free(c) and np.isfinite(scored.scores[c])]
    if not free:
        return chosen, None
    replacement = best_of(scored.scores, free)
    gain = ("too few samples per point to test it" if diagnostic["loglik_gain_per_sample"] is None else
            f"held-out log-likelihood gain {diagnostic['loglik_gain_per_sample']:+.3g} ± "
            f"{diagnostic['loglik_gain_se']:.2g} per sample over a no-law model")
    if diagnostic["verdict"] == "does not hold":
        return replacement, (f"the law does not hold ({gain}), so the values come from the law-free {replacement} "
                             f"instead of {chosen}")
    if not scored.scores[replacement] < scored.scores[chosen]:
        return chosen, None
    held = "holds" if diagnostic["verdict"] == "holds" else "is not shown to hold"
    return replacement, (f"the law {held} ({gain}), but the law-free {replacement} predicted the held-out samples "
                         f"better than {chosen}, so the values come from {replacement}")


def _choose_and_fit(cands, scored: _Scores, excluded: dict[str, str], usable: pd.DataFrame, context: FitContext,
                    full_cache: dict, max_not_converged: float, diagnose: bool):
    """Choose by the rule (module docstring) and fit the choice on all samples, setting aside a choice
    whose fit on all samples did not converge or whose exponent collapsed to a bound, and choosing again.

    Returns ``(chosen, laws, se, diagnostic, overridden, used_anyway)``; ``excluded`` gains the reasons.
    """
    while True:
        chosen, se, used_anyway = _choose_converged(cands, scored, excluded, max_not_converged)
        # The law's best shot: every candidate that could be fitted, converged or not.
        diagnostic = _law_diagnostic(scored, chosen, [c for c in cands if c not in scored.errors]) \
            if diagnose else None
        chosen, overridden = _law_free_where_it_wins(chosen, diagnostic, cands, scored, excluded)
        if chosen is None:  # nothing held out, or every candidate excluded: the first that fits
            chosen = next((c for c in cands if c not in excluded), cands[0])
        laws = fit_estimator(chosen, usable, context, full_cache)
        stuck = _exponent_at_bound_share(laws) if not _is_law_free(chosen) else 0.0
        if stuck >= COLLAPSED_SHARE and any(_is_law_free(c) and c not in excluded and c in scored.terms for c in cands):
            # The population's exponent collapsed to a bound: these samples do not identify the law.
            excluded[chosen] = (f"its exponent sat at a bound (0 or e²) for {stuck:.0%} of the points: these samples "
                                "do not identify the law")
            continue
        share = _not_converged_share(laws)
        if share <= max_not_converged or used_anyway is not None:
            break
        rest = [c for c in cands if c not in excluded and c != chosen and np.isfinite(scored.scores.get(c, np.inf))]
        if not rest:
            used_anyway = (f"the {chosen} fit on all samples did not converge on {share:.0%} of the points and no "
                           "other estimator was left; its values are reported anyway")
            break
        if all(_better(chosen, c, scored) for c in rest):
            used_anyway = (f"the {chosen} fit on all samples did not converge on {share:.0%} of the points, but "
                           "its values predicted the held-out samples better than any other estimator's, so they "
                           "are used")
            break
        # Its folds converged but its fit on all samples did not: set it aside and choose again.
        excluded[chosen] = (f"its fit on all samples did not converge on {share:.0%} of the points "
                            f"(more than {max_not_converged:.0%})")
        scored.not_converged[chosen] = max(scored.not_converged.get(chosen, 0.0), share)
    return chosen, laws, se, diagnostic, overridden, used_anyway


def select_laws(samples: pd.DataFrame, dataset: Any = None, *, method: str = "auto", oob=None,
                folds: int = FOLDS, candidates=None, random_state: int = 0,
                amortized_params: Mapping[str, Any] | None = None,
                fitted: Mapping[str, FittedScalingLaws] | None = None,
                target: str = "shapley", k_range: tuple[int, int] | None = None,
                diagnose: bool = True, max_not_converged: float = MAX_NOT_CONVERGED,
                ) -> tuple[FittedScalingLaws, dict[str, FittedScalingLaws]]:
    """:func:`fit_laws`, also returning every candidate fitted on all samples along the way.

    ``oob`` is the out-of-bag evidence table (:func:`pointscale.sampling.oob_evidence`);
    ``fitted`` maps methods to laws already fitted on *all* these samples
    (e.g. by earlier pipeline stages), reused instead of refitting.
    ``diagnose`` adds ``meta['law_diagnostic']`` (for a method given by
    name, its folds are fitted for the test: the method itself, or shrinkage
    when the method is law-free).

    Returns
    -------
    laws : FittedScalingLaws
        The chosen estimator's laws (``meta['selection']`` records the choice,
        ``meta['law_diagnostic']`` the law test and the reliability).
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
    if target not in TARGETS:
        raise ConfigError(f"target={target!r} must be one of {TARGETS}")
    if not 0.0 <= float(max_not_converged) <= 1.0:
        raise ConfigError(f"max_not_converged={max_not_converged} must lie in [0, 1]")
    usable = usable_samples(samples)
    full_cache: dict[str, FittedScalingLaws] = {k: v for k, v in dict(fitted or {}).items() if v is not None}
    if k_range is None and len(usable):
        k_range = (int(np.floor(usable["k"].min())), int(np.ceil(usable["k"].max())))
    context = _context(dataset, oob, random_state, k_range, amortized_params)
    seed = int(random_state)
    if method != "auto":
        laws = fit_estimator(method, usable, context, full_cache)
        meta = {**laws.meta, "selection": {"method": method, "chosen": method}}
        if diagnose:
            law = "shrinkage" if get_estimator(method).law_free else method
            scored = _cross_validate([law], usable, _fold_context(context, full_cache), target, folds, seed)
            meta["law_diagnostic"] = _diagnostic(_law_diagnostic(scored, law, [law]), method, usable,
                                                 _fold_context(context, full_cache), seed)
        return dataclasses.replace(laws, meta=meta), full_cache

    cands = _candidates(candidates, dataset)
    fold_context = _fold_context(context, full_cache)
    scored = _cross_validate(cands, usable, fold_context, target, folds, seed)
    excluded = {c: f"it could not be fitted: {err}" for c, err in scored.errors.items()}
    chosen, laws, se, diagnostic, overridden, used_anyway = _choose_and_fit(
        cands, scored, excluded, usable, context, full_cache, max_not_converged, diagnose)
    margin = _margin(chosen, [c for c in cands if c not in excluded], scored.scores, scored.terms, scored.groups) \
        if scored.scores else {"to": None, "value": None, "se": None}
    selection = {
        "method": "auto",
        "chosen": chosen,
        "rule": ("mean Gaussian NLL per held-out sample over K-fold cross-validation of each point's samples, "
                 "target " + (
                     "'shapley': Delta ~ N(candidate's Shapley value over k_range, one shared variance)"
                     if target == "shapley" else "'psi': Delta ~ N(c k^-alpha, sigma^2 k^-beta), the candidate's "
                                                 "own law")
                 + f"; candidates not converging on more than {max_not_converged:.0%} of points excluded; the first "
                   "candidate in preference order within one standard error (paired, clustered by point) of the "
                   f"lowest; the law-free candidate where the law does not hold, or where the chosen law's exponent "
                   f"sits at a bound for {COLLAPSED_SHARE:.0%} of the points or more"),
        "target": target,
        "k_range": None if k_range is None else [int(k_range[0]), int(k_range[1])],
        "folds": int(scored.folds),
        "held_out_by": scored.held_out_by,
        "heldout_nll": _finite_or_none(scored.scores),
        "heldout_nll_shapley": _finite_or_none(scored.shapley),
        "heldout_nll_psi": _finite_or_none(scored.psi),
        "best": best_of(scored.scores, cands) if scored.scores else None,
        "se_of_difference_to_best": _finite_or_none(se),
        "margin": margin,
        "not_converged_share": {c: round(v, 4) for c, v in scored.not_converged.items()},
        "excluded": excluded,
        "overridden": overridden,
        "used_anyway": used_anyway,
        "errors": scored.errors,
        "n_heldout_samples": int(scored.n_heldout),
        "n_samples": int(len(usable)),
        "candidates": list(cands),
    }
    meta = {**laws.meta, "selection": selection}
    if diagnose:
        meta["law_diagnostic"] = _diagnostic(diagnostic, chosen, usable, fold_context, seed)
    selection["seconds"] = round(time.perf_counter() - t0, 3)
    return dataclasses.replace(laws, meta=meta), full_cache


def _diagnostic(test: Mapping[str, Any], estimator: str, usable: pd.DataFrame, context: FitContext,
                seed: int) -> dict[str, Any]:
    """The law test, the reliability of ``estimator``'s values and the control-variate slot, as one record."""
    rel = _reliability(estimator, usable, context, seed)
    return {
        "verdict": test["verdict"],
        "loglik_gain_per_sample": test["loglik_gain_per_sample"],
        "loglik_gain_se": test["loglik_gain_se"],
        "share_good_fit": test["share_good_fit"],
        "reliability": rel.get("reliability"),
        "samples_for_reliability_0.8": rel.get("samples_for_reliability_0.8"),
        "samples_for_reliability_0.9": rel.get("samples_for_reliability_0.9"),
        "estimator": estimator,
        "law_free": bool(get_estimator(estimator).law_free),
        "law_estimator": test.get("law_estimator"),
        "no_law_model": test.get("no_law_model"),
        "loglik_law_per_sample": test.get("loglik_law_per_sample"),
        "loglik_no_law_per_sample": test.get("loglik_no_law_per_sample"),
        "n_samples_scored": test.get("n_samples_scored"),
        "n_points_scored": test.get("n_points_scored"),
        "split_half_correlation": rel.get("split_half_correlation"),
        "constant": bool(rel.get("constant", False)),
        "samples_per_point": rel.get("samples_per_point"),
        "reliability_error": rel.get("error"),
        "control_variate": "none",
        "rule": (f"verdict: held-out log-likelihood gain of the law over a no-law model (constant in k or a free "
                 f"mean per size bucket, the law's noise model) > {diag.GAIN_SE:g} se: holds, < -{diag.GAIN_SE:g} "
                 "se: does not hold, else undecided; reliability: split-half correlation of the values, "
                 "Spearman-Brown corrected"),
    }


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


def fit_laws(samples: pd.DataFrame, dataset: Any = None, *, method: str = "auto", ledger: Any = None,
             folds: int = FOLDS, candidates=None, random_state: int = 0,
             amortized_params: Mapping[str, Any] | None = None, target: str = "shapley",
             k_range: tuple[int, int] | None = None, diagnose: bool = True) -> FittedScalingLaws:
    """Scaling laws of every point in ``samples``, by the estimator the data support best.

    Parameters
    ----------
    samples : DataFrame
        Columns ``point_id``, ``k``, ``delta`` and optionally ``failed`` and
        ``sample_id`` (the ledger's rows).
    dataset : Dataset, optional
        Features and labels of the points; needed by the amortized
        candidates (without it "auto" chooses between mle and shrinkage).
    method : {"auto", "shrinkage", "amortized_shrinkage", "mle", "amortized", "shrunk_mean"}, default="auto"
        "auto" applies the selection rule of the module docstring.
    ledger : Ledger, optional
        The sample ledger; its out-of-bag evidence
        (:func:`pointscale.sampling.oob_evidence`) becomes an input of the
        amortized candidates and covariates of the shrinkage prior.
    folds : int, default=5
        Folds of the cross-validation over each point's samples that scores
        the candidates (fewer when the typical point has fewer samples).
    candidates : sequence of str, optional
        Restrict "auto" to these estimators.
    random_state : int, default=0
        Seeds the folds, the halves and the amortized model.
    amortized_params : mapping, optional
        Extra parameters of :class:`~pointscale.laws.AmortizedScalingLaws`.
    target : {"shapley", "psi"}, default="shapley"
        What the held-out likelihood scores (module docstring): the Shapley
        value over ``k_range`` (k drawn uniformly, the default protocol) or
        ψ_k at each sample's size (staggered sizes).
    k_range : (int, int), optional
        The sampled size range [k_min, k_max]; default the smallest and
        largest k of the samples.

    diagnose : bool, default=True
        Add the law diagnostic (``meta['law_diagnostic']``,
        :mod:`pointscale.laws.diagnostic`).

    Returns
    -------
    FittedScalingLaws
        ``meta['selection']``: the method, the choice, the held-out scores;
        ``meta['law_diagnostic']``: does the law hold, how reliable the values are.
    """
    oob = None
    if ledger is not None:
        oob = oob_evidence(ledger)
        if oob.empty:
            oob = None
    laws, _ = select_laws(samples, dataset, method=method, oob=oob, folds=folds,
                          candidates=candidates, random_state=random_state, amortized_params=amortized_params,
                          target=target, k_range=k_range, diagnose=diagnose)
    return laws
