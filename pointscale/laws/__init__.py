"""Fitting individualized scaling laws psi_k(z) ~ c(z) * k**(-alpha(z)).

* :func:`fit_laws` -- the entry point: picks the estimator by held-out likelihood.
* :func:`fit_mle` -- vectorised maximum likelihood of the Gaussian noise model.
* :func:`fit_shrinkage` -- empirical Bayes: per-point laws under a learned population prior.
* :func:`fit_log_ols` -- the log-space baseline for staggered (many-per-size) data.
* :class:`AmortizedScalingLaws` -- one model predicting every point's law from
  its features, trained on all samples' likelihood at once.
* :class:`FittedScalingLaws` -- the result object every estimator returns.
* :mod:`.estimators` -- the one interface (:class:`LawEstimator`, :class:`FitContext`)
  and the registry by name (:func:`register`, :func:`fit_estimator`) that ``auto`` iterates.
* :func:`power_mean` -- S(α), the mean of k^(−α) over a size range (Shapley value = c·S(α)).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FittedScalingLaws": ".result",
    "fit_laws": ".auto",
    "fit_shrinkage": ".shrinkage",
    "fit_mle": ".mle",
    "fit_log_ols": ".logols",
    "AmortizedScalingLaws": ".amortized",
    "FitContext": ".estimators",
    "LawEstimator": ".estimators",
    "register": ".estimators",
    "fit_estimator": ".estimators",
    "power_mean": ".power",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # Lazy so that importing one estimator does not import all of them.
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
