"""One interface for every law estimator, and the registry that names them.

Every estimator is fitted the same way: :meth:`LawEstimator.fit` takes the
samples (the ledger's rows: ``point_id``, ``k``, ``delta``, optionally
``failed`` and ``sample_id``) and a :class:`FitContext` (what some estimators
need beyond the samples: the dataset, the out-of-bag evidence, a seed, the
laws of the estimators it builds on) and returns a
:class:`~pointscale.laws.FittedScalingLaws`. Estimators are registered by
name (:func:`register`); the automatic selection
(:func:`pointscale.laws.fit_laws`) scores every registered estimator that has
an ``auto_rank`` (its place in the preference order that breaks ties) and
fits any of them by name (:func:`fit_estimator`).

Adding an estimator is one :class:`LawEstimator` and one :func:`register`
call (its name must be one of :data:`~pointscale.laws.result.ESTIMATORS`, the
names a result may carry). A law-free estimator -- e.g. a shrunk per-point
mean -- returns its values as laws with α = 0 (ψ_k = c at every k, so its
Shapley value is c); ``context.k_range`` tells it the sampled size range.

The registered estimators, in the selection's preference order:

==========================  ==========  ============================================
name                        auto rank   what
==========================  ==========  ============================================
``shrinkage``               0           empirical Bayes, population prior on the
                                        out-of-bag covariates (:func:`fit_shrinkage`)
``shrunk_mean``             1           law-free: normal–normal empirical Bayes on
                                        the plain means (:func:`fit_shrunk_mean`);
                                        what auto falls back to where the law does
                                        not hold
``amortized_shrinkage``     2           empirical Bayes around the amortized laws
``mle``                     3           per-point maximum likelihood (:func:`fit_mle`)
``amortized``               4           one model from features to laws
                                        (:class:`AmortizedScalingLaws`)
``log_ols``                 --          log-space baseline for staggered sizes
                                        (:func:`fit_log_ols`); never chosen by auto
==========================  ==========  ============================================
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Mapping, MutableMapping

import numpy as np
import pandas as pd

from ..errors import ConfigError, ConvergenceWarning
from .amortized import AmortizedScalingLaws, training_points
from .logols import fit_log_ols
from .mle import fit_mle
from .result import ESTIMATORS, FittedScalingLaws
from .shrinkage import fit_shrinkage
from .shrunk_mean import fit_shrunk_mean

__all__ = ["FitContext", "LawEstimator", "register", "registered", "get_estimator", "candidates",
           "fit_estimator", "oob_covariates", "population_of", "amortized_model"]


@dataclasses.dataclass(frozen=True)
class FitContext:
    """What an estimator may need beyond the samples (each may ignore any of it).

    Attributes
    ----------
    dataset : Dataset, optional
        Features and labels of the points (estimators with ``needs_dataset``).
    oob : DataFrame, optional
        Out-of-bag evidence per point (:func:`pointscale.sampling.oob_evidence`).
    random_state : int
        Seeds anything random in the fit.
    k_range : (int, int), optional
        The sampled size range [k_min, k_max].
    params : mapping of str to mapping
        Extra parameters by estimator name (e.g. ``{"amortized": {...}}``).
    populations : mapping of str to mapping
        Population-level hyperparameters to use instead of learning them, by
        estimator name (an earlier fit's record, :func:`population_of`): the
        law choice learns them on a sample of the points and applies them to
        every other point, partition by partition. Estimators without such
        hyperparameters ignore it.
    """

    dataset: Any = None
    oob: pd.DataFrame | None = None
    random_state: int = 0
    k_range: tuple[int, int] | None = None
    params: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    populations: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)


def population_of(laws: FittedScalingLaws) -> dict[str, Any] | None:
    """What ``FitContext.populations`` takes to fit other points as ``laws`` were fitted (None: nothing to fix).

    The shrinkage estimators' learned prior (``meta['population_state']``)
    or the shrunk mean's grand mean and variances.
    """
    if "population_state" in laws.meta:
        return dict(laws.meta["population_state"])
    if laws.estimator == "shrunk_mean":
        return {k: laws.meta[k] for k in ("variant", "grand_mean", "between_variance", "noise_variance_pooled")}
    return None


#: ``fit(samples, context, inputs)``: ``inputs`` maps each name in ``requires`` to its laws.
FitFunction = Callable[[pd.DataFrame, FitContext, Mapping[str, FittedScalingLaws]], FittedScalingLaws]


@dataclasses.dataclass(frozen=True)
class LawEstimator:
    """A named way to fit per-point laws from samples.

    Attributes
    ----------
    name : str
        The registry key and the ``estimator`` of the laws it returns.
    fit_function : callable
        ``fit(samples, context, inputs) -> FittedScalingLaws``.
    needs_dataset : bool
        True when it cannot fit without ``context.dataset``.
    requires : tuple of str
        Registered estimators whose laws on the *same* samples it builds on
        (fitted first, once, and shared: e.g. the amortized prior).
    auto_rank : int or None
        Place in the automatic selection's preference order (lower first);
        None: never a candidate of ``method="auto"``.
    law_free : bool
        True when its laws are no laws (α = 0: a value per point, constant in
        k); the law diagnostic tests the law against such estimators.
    """

    name: str
    fit_function: FitFunction
    needs_dataset: bool = False
    requires: tuple[str, ...] = ()
    auto_rank: int | None = None
    law_free: bool = False

    def fit(self, samples: pd.DataFrame, context: FitContext = FitContext(),
            inputs: Mapping[str, FittedScalingLaws] | None = None) -> FittedScalingLaws:
        """Laws of every point in ``samples``; ``inputs`` holds the laws of ``requires``."""
        if self.needs_dataset and context.dataset is None:
            raise ConfigError(f"method={self.name!r} needs the dataset (features and labels of the points)")
        return self.fit_function(samples, context, dict(inputs or {}))


_REGISTRY: dict[str, LawEstimator] = {}


def register(estimator: LawEstimator) -> LawEstimator:
    """Add ``estimator`` to the registry (its name must be a result's estimator name, not yet taken)."""
    if estimator.name not in ESTIMATORS:
        raise ConfigError(f"estimator name {estimator.name!r} must be one of {ESTIMATORS} "
                          "(pointscale.laws.result.ESTIMATORS: the names a FittedScalingLaws may carry)")
    if estimator.name in _REGISTRY:
        raise ConfigError(f"an estimator named {estimator.name!r} is already registered")
    missing = [r for r in estimator.requires if r not in _REGISTRY]
    if missing:
        raise ConfigError(f"estimator {estimator.name!r} requires {missing}, which are not registered")
    _REGISTRY[estimator.name] = estimator
    return estimator


def registered() -> tuple[str, ...]:
    """Names of every registered estimator, in registration order."""
    return tuple(_REGISTRY)


def get_estimator(name: str) -> LawEstimator:
    """The registered estimator called ``name`` (a ConfigError naming the choices otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"method={name!r} must be one of {registered()}") from None


def candidates() -> tuple[str, ...]:
    """The estimators ``method="auto"`` chooses among, in preference order."""
    ranked = [e for e in _REGISTRY.values() if e.auto_rank is not None]
    return tuple(e.name for e in sorted(ranked, key=lambda e: e.auto_rank))


def fit_estimator(name: str, samples: pd.DataFrame, context: FitContext,
                  cache: MutableMapping[str, FittedScalingLaws]) -> FittedScalingLaws:
    """Laws of estimator ``name`` on ``samples``, reusing and filling ``cache`` (laws on these samples).

    The estimators it requires are fitted first (through the same cache), so
    a prior shared by two candidates is fitted once. Convergence warnings are
    silenced: each law's flags record them.
    """
    if name in cache:
        return cache[name]
    estimator = get_estimator(name)
    inputs = {r: fit_estimator(r, samples, context, cache) for r in estimator.requires}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        laws = estimator.fit(samples, context, inputs)
    cache[name] = laws
    return laws


# --------------------------------------------------------------------------- the estimators


def oob_covariates(oob: pd.DataFrame | None) -> pd.DataFrame | None:
    """Covariates of the shrinkage prior from out-of-bag evidence (None without evidence).

    The mean score of the point's own label and the share predicted correctly
    by models trained without it, and the mean score in the smallest and the
    largest size bucket (the overall mean where a bucket is empty).
    """
    if oob is None or len(oob) == 0:
        return None
    frame = oob.set_index("point_id")
    buckets = sorted(c for c in frame.columns if c.startswith("oob_score_b"))
    cols = {"oob_score": frame["oob_score"], "oob_correct": frame["oob_correct"]}
    for b in (buckets[:1] + buckets[-1:]) if buckets else []:
        cols[b] = frame[b].fillna(frame["oob_score"])
    return pd.DataFrame(cols)


def _fit_mle(samples: pd.DataFrame, context: FitContext, inputs) -> FittedScalingLaws:
    return fit_mle(samples, **dict(context.params.get("mle") or {}))


def _fit_log_ols(samples: pd.DataFrame, context: FitContext, inputs) -> FittedScalingLaws:
    return fit_log_ols(samples, **dict(context.params.get("log_ols") or {}))


def _fit_shrinkage(samples: pd.DataFrame, context: FitContext, inputs) -> FittedScalingLaws:
    return fit_shrinkage(samples, covariates=oob_covariates(context.oob),
                         population=context.populations.get("shrinkage"))


def _fit_shrunk_mean(samples: pd.DataFrame, context: FitContext, inputs) -> FittedScalingLaws:
    return fit_shrunk_mean(samples, random_state=int(context.random_state), k_range=context.k_range,
                           population=context.populations.get("shrunk_mean"),
                           **dict(context.params.get("shrunk_mean") or {}))


def _fit_amortized_shrinkage(samples: pd.DataFrame, context: FitContext, inputs) -> FittedScalingLaws:
    return fit_shrinkage(samples, prior=inputs["amortized"], population=context.populations.get("amortized_shrinkage"))


def amortized_model(samples: pd.DataFrame, context: FitContext
                    ) -> tuple[AmortizedScalingLaws, np.ndarray, np.ndarray, np.ndarray]:
    """The amortized model trained on these samples, and the sampled points' ids, features and labels."""
    dataset, seed = context.dataset, int(context.random_state)
    # Trained on the same budget of points as the amortized stage (a seeded
    # subsample beyond it), so its cost stops growing with the points; it
    # still predicts every sampled point.
    ids, train, train_samples = training_points(samples, seed)
    idx = dataset.index_of(ids)
    X = np.asarray(dataset.X_train)[idx]
    y = np.asarray(dataset.y_train)[idx]
    tpos = pd.Index(ids).get_indexer(train) if train.size < ids.size else np.arange(ids.size)
    # The dataset knows its task; inferring it from y would call integer targets classes.
    task = getattr(dataset, "task", "auto")
    params = dict(context.params.get("amortized") or {})
    model = AmortizedScalingLaws(random_state=seed, **{"task": task, **params})
    model.fit(X[tpos], y[tpos], train_samples, train, oob=context.oob)
    return model, ids, X, y


def _fit_amortized(samples: pd.DataFrame, context: FitContext, inputs) -> FittedScalingLaws:
    """The amortized model trained on these samples; laws of every sampled point."""
    model, ids, X, y = amortized_model(samples, context)
    return model.predict_laws(X, y, ids, samples=samples, oob=context.oob)


register(LawEstimator("shrinkage", _fit_shrinkage, auto_rank=0))
register(LawEstimator("mle", _fit_mle, auto_rank=3))
register(LawEstimator("amortized", _fit_amortized, needs_dataset=True, auto_rank=4))
register(LawEstimator("amortized_shrinkage", _fit_amortized_shrinkage, needs_dataset=True,
                      requires=("amortized",), auto_rank=2))
register(LawEstimator("shrunk_mean", _fit_shrunk_mean, auto_rank=1, law_free=True))
register(LawEstimator("log_ols", _fit_log_ols))
