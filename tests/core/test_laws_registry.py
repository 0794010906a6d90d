"""The law-estimator registry: one interface, looked up by name, iterated by auto."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest

from pointscale.errors import ConfigError
from pointscale.laws import estimators, fit_log_ols, fit_mle
from pointscale.laws.auto import CANDIDATES, select_laws
from pointscale.laws.estimators import FitContext, LawEstimator, fit_estimator, register
from pointscale.laws.simulate import STAGGERED_SIZES, draw_parameters, simulate_samples


@pytest.fixture(scope="module")
def samples():
    return simulate_samples(draw_parameters(60, 3), 12, 4)


def test_every_estimator_is_registered_and_auto_prefers_as_before():
    assert set(estimators.registered()) == {"mle", "log_ols", "shrinkage", "amortized", "amortized_shrinkage",
                                            "shrunk_mean"}
    assert CANDIDATES == estimators.candidates() == ("shrinkage", "shrunk_mean", "amortized_shrinkage", "mle",
                                                     "amortized")
    assert estimators.get_estimator("shrunk_mean").law_free
    assert estimators.get_estimator("amortized").needs_dataset
    with pytest.raises(ConfigError, match="must be one of"):
        estimators.get_estimator("nope")


def test_an_estimator_fitted_by_name_is_the_function_it_wraps(samples):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = fit_mle(samples)
    cache: dict = {}
    by_name = fit_estimator("mle", samples, FitContext(), cache)
    assert cache == {"mle": by_name}
    pd.testing.assert_frame_equal(by_name.to_frame(), direct.to_frame())
    # The cache answers a second call without fitting again.
    assert fit_estimator("mle", samples, FitContext(), cache) is by_name
    staggered = simulate_samples(draw_parameters(20, 5), 30, 6, sizes=STAGGERED_SIZES)
    pd.testing.assert_frame_equal(fit_estimator("log_ols", staggered, FitContext(), {}).to_frame(),
                                  fit_log_ols(staggered).to_frame())


def test_register_checks_the_name_and_what_it_builds_on():
    fit = estimators.get_estimator("mle").fit_function
    with pytest.raises(ConfigError, match="must be one of"):
        register(LawEstimator("toy", fit))
    with pytest.raises(ConfigError, match="already registered"):
        register(LawEstimator("mle", fit))


def test_a_needed_dataset_is_asked_for_by_name(samples):
    with pytest.raises(ConfigError, match="needs the dataset"):
        estimators.get_estimator("amortized_shrinkage").fit(samples, FitContext())
    with pytest.raises(ConfigError, match="needs the dataset"):
        select_laws(samples, method="amortized")


def test_auto_scores_every_registered_candidate(samples, monkeypatch):
    seen = []

    def toy(s, context, inputs):
        # Builds on the MLE fit (shared through the cache) and records what it was given.
        seen.append((len(s), context.k_range, sorted(inputs)))
        return dataclasses.replace(inputs["mle"], meta={"toy": True})

    monkeypatch.setitem(estimators._REGISTRY, "toy", LawEstimator("toy", toy, requires=("mle",), auto_rank=-1))
    laws, _ = select_laws(samples, k_range=(100, 1000))
    sel = laws.meta["selection"]
    assert sel["candidates"] == ["toy", "shrinkage", "shrunk_mean", "mle"]  # no dataset: no amortized ones
    # Same laws as the MLE on the same training samples: the same held-out score.
    assert sel["heldout_nll"]["toy"] == sel["heldout_nll"]["mle"]
    # Fitted on each fold's training samples (all but the first fold's held-out ones).
    assert seen[0][1:] == ((100, 1000), ["mle"]) and len(samples) - seen[0][0] > 0
    # A fixed method may name it too.
    fixed, fitted = select_laws(samples, method="toy")
    assert fixed.meta["toy"] and set(fitted) == {"toy", "mle"}
    assert np.array_equal(fixed.c, fitted["mle"].c, equal_nan=True)
