"""fit_laws: the held-out split and the selection rule, checked independently."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from pointscale.errors import ConfigError
from pointscale.laws import fit_laws, fit_mle
from pointscale.laws.auto import holdout_mask, select_laws
from pointscale.laws.likelihood import gaussian_nll
from pointscale.laws.shrinkage import fit_shrinkage
from pointscale.laws.simulate import draw_parameters, simulate_samples


@pytest.fixture(scope="module")
def few():
    par = draw_parameters(150, 7)
    s = simulate_samples(par, 10, 8)
    s["sample_id"] = np.arange(len(s)) * 7919 + 13
    return s


def test_holdout_takes_a_fifth_of_each_point_by_identity(few):
    mask = holdout_mask(few, 0.2)
    per_point = pd.Series(mask).groupby(few["point_id"].to_numpy()).sum()
    assert (per_point == 2).all()  # round(0.2 * 10)
    shuffled = few.sample(frac=1.0, random_state=3)
    again = pd.Series(holdout_mask(shuffled, 0.2), index=shuffled.index).sort_index().to_numpy()
    np.testing.assert_array_equal(mask, again)
    tiny = pd.DataFrame({"point_id": ["a", "a", "b", "b", "b"], "k": [100, 200, 100, 200, 300],
                         "delta": [1.0, 2.0, 3.0, 4.0, 5.0]})
    assert holdout_mask(tiny, 0.2).tolist()[:2] == [False, False]  # fewer than 3 samples: all kept
    assert holdout_mask(tiny, 0.2)[2:].sum() == 1  # at least one held out


def _reference_score(laws, held, noise=None):
    """Mean NLL per held-out sample, point by point with the reference implementation."""
    noise = laws if noise is None else noise
    total, count = 0.0, 0
    pos = {p: i for i, p in enumerate(laws.point_ids.tolist())}
    npos = {p: i for i, p in enumerate(noise.point_ids.tolist())}
    for pid, rows in held.groupby("point_id"):
        i, j = pos[pid], npos[pid]
        nll = gaussian_nll(rows["delta"], rows["k"], laws.c[i], laws.alpha[i], noise.sigma[j], noise.beta[j])
        total += nll * len(rows)
        count += len(rows)
    return total / count


def test_selection_rule_reproduced_independently(few):
    laws = fit_laws(few)
    sel = laws.meta["selection"]
    assert sel["method"] == "auto" and set(sel["candidates"]) == {"mle", "shrinkage"}  # no dataset
    mask = holdout_mask(few, 0.2)
    train, held = few.loc[~mask], few.loc[mask]
    assert sel["n_heldout_samples"] == len(held)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = {"mle": fit_mle(train), "shrinkage": fit_shrinkage(train)}
    # Scored under the shrinkage fit's noise model (shared), and under their own.
    expected = {name: _reference_score(f, held, fits["shrinkage"]) for name, f in fits.items()}
    own = {name: _reference_score(f, held) for name, f in fits.items()}
    for name, value in expected.items():
        got = sel["heldout_nll"][name]
        assert (got is None and not np.isfinite(value)) or got == pytest.approx(value, rel=1e-9, abs=1e-9)
        got = sel["heldout_nll_own_noise"][name]
        assert (got is None and not np.isfinite(own[name])) or got == pytest.approx(own[name], rel=1e-9, abs=1e-9)
    finite = {k: v for k, v in expected.items() if np.isfinite(v)}
    assert sel["chosen"] == min(finite, key=finite.get)
    # With 10 samples per point the MLE's laws explode at the small sizes; the
    # held-out likelihood sees it.
    assert sel["chosen"] == "shrinkage"
    own_choice = fit_laws(few, shared_noise=False).meta["selection"]
    assert own_choice["chosen"] == min((v, k) for k, v in own.items() if np.isfinite(v))[1]
    # The chosen estimator is refitted on all samples.
    direct = fit_shrinkage(few)
    np.testing.assert_array_equal(laws.c, direct.c)
    np.testing.assert_array_equal(laws.alpha, direct.alpha)


def test_a_fixed_method_and_reuse_of_fitted_laws(few):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mle = fit_laws(few, method="mle")
        direct = fit_mle(few)
    np.testing.assert_array_equal(mle.c, direct.c)
    assert mle.meta["selection"] == {"method": "mle", "chosen": "mle"}
    # Laws already fitted on all samples are reused, not refitted.
    marker = fit_shrinkage(few, prior_scale="absolute")
    laws, fitted = select_laws(few, method="shrinkage", fitted={"shrinkage": marker})
    np.testing.assert_array_equal(laws.c, marker.c)


def test_bad_requests_are_config_errors(few):
    with pytest.raises(ConfigError, match="method"):
        fit_laws(few, method="bogus")
    with pytest.raises(ConfigError, match="needs the dataset"):
        fit_laws(few, method="amortized")
    with pytest.raises(ConfigError, match="holdout_fraction"):
        fit_laws(few, holdout_fraction=1.5)


def test_one_standard_error_rule():
    # Paired held-out NLL terms: "b" is best on average, but by less than one
    # standard error of the paired difference to "a", which comes first in the
    # preference order -> "a". Made clearly better (by 10 s.e.) -> "b".
    from pointscale.laws.auto import _one_se_choice

    g = np.random.default_rng(0)
    a = g.normal(0.0, 1.0, 400)
    noise = g.normal(0.0, 1.0, 400)
    b = a - 0.01 + noise  # mean difference -0.01, s.e. ~0.05
    scores = {"a": a.mean(), "b": b.mean()}
    chosen, se = _one_se_choice(["a", "b"], scores, {"a": a, "b": b})
    assert scores["b"] < scores["a"] and scores["a"] - scores["b"] <= se["a"] and chosen == "a"
    b2 = a - 0.5 + noise
    chosen, se = _one_se_choice(["a", "b"], {"a": a.mean(), "b": b2.mean()}, {"a": a, "b": b2})
    assert chosen == "b" and se["b"] == 0.0
