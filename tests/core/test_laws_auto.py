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


def _reference_psi(laws, held):
    """Mean NLL per held-out sample under each law's own noise model, point by point."""
    total, count = 0.0, 0
    pos = {p: i for i, p in enumerate(laws.point_ids.tolist())}
    for pid, rows in held.groupby("point_id"):
        i = pos[pid]
        nll = gaussian_nll(rows["delta"], rows["k"], laws.c[i], laws.alpha[i], laws.sigma[i], laws.beta[i])
        total += nll * len(rows)
        count += len(rows)
    return total / count


def _reference_shapley_terms(laws, held, variance, k_range):
    """NLL of each held-out sample under N(Shapley value by brute force over k_range, variance)."""
    ks = np.arange(k_range[0], k_range[1] + 1, dtype=np.float64)
    nu = {p: float(np.mean(c * ks ** (-a))) for p, c, a in zip(laws.point_ids.tolist(), laws.c, laws.alpha)}
    d = held["delta"].to_numpy()
    m = np.array([nu[p] for p in held["point_id"].tolist()])
    return 0.5 * np.log(2 * np.pi * variance) + 0.5 * (d - m) ** 2 / variance


def test_selection_rule_reproduced_independently(few):
    laws = fit_laws(few)
    sel = laws.meta["selection"]
    assert sel["method"] == "auto" and set(sel["candidates"]) == {"mle", "shrinkage"}  # no dataset
    assert sel["target"] == "shapley" and sel["k_range"] == [int(few["k"].min()), int(few["k"].max())]
    mask = holdout_mask(few, 0.2)
    train, held = few.loc[~mask], few.loc[mask]
    assert sel["n_heldout_samples"] == len(held)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = {"shrinkage": fit_shrinkage(train), "mle": fit_mle(train)}
    variance = float(np.var(train["delta"].to_numpy()))
    terms = {name: _reference_shapley_terms(f, held, variance, sel["k_range"]) for name, f in fits.items()}
    expected = {name: float(np.mean(t)) if np.isfinite(t).all() else np.inf for name, t in terms.items()}
    psi = {name: _reference_psi(f, held) for name, f in fits.items()}
    for name in fits:
        for got, want in ((sel["heldout_nll"][name], expected[name]), (sel["heldout_nll_psi"][name], psi[name])):
            assert (got is None and not np.isfinite(want)) or got == pytest.approx(want, rel=1e-9, abs=1e-9)
    # One-standard-error rule, by hand: the first candidate (preference order) within
    # one s.e. of the paired difference to the best.
    best = min(expected, key=expected.get)
    order = ["shrinkage", "mle"]
    within = []
    for name in order:
        diff = terms[name] - terms[best]
        se = np.std(diff, ddof=1) / np.sqrt(diff.size) if name != best else 0.0
        if np.isfinite(expected[name]) and expected[name] - expected[best] <= se:
            within.append(name)
    assert sel["best"] == best and sel["chosen"] == within[0]
    # With 10 samples per point the MLE's laws explode at the small sizes; the
    # held-out likelihood sees it.
    assert sel["chosen"] == "shrinkage" and expected["mle"] > expected["shrinkage"]
    # Staggered sizes: scored by each law for psi_k under its own noise model.
    psi_sel = fit_laws(few, target="psi").meta["selection"]
    assert psi_sel["heldout_nll"] == sel["heldout_nll_psi"]
    # The chosen estimator is refitted on all samples.
    direct = fit_shrinkage(few)
    np.testing.assert_array_equal(laws.c, direct.c)
    np.testing.assert_array_equal(laws.alpha, direct.alpha)


def test_shapley_target_prefers_the_better_shapley_values_over_the_better_psi_fit():
    # Two candidate laws for the same points: "a" has the true Shapley values but a
    # wrong shape in k (flat), "b" the true shape with every value scaled by 1.6.
    # The held-out psi_k likelihood can prefer either; the Shapley target must
    # prefer "a", whose values are right.
    from pointscale.laws.auto import heldout_terms_shapley
    from pointscale.laws.result import FittedScalingLaws
    from pointscale.laws.power import power_mean

    par = draw_parameters(300, 3)
    s = simulate_samples(par, 40, 4)
    lo, hi = int(s["k"].min()), int(s["k"].max())
    ids = par["point_id"].to_numpy(dtype=object)
    c, alpha = par["c"].to_numpy(), par["alpha"].to_numpy()
    nu = c * power_mean(alpha, lo, hi)
    ones = np.ones(len(ids))
    flat = FittedScalingLaws(point_ids=ids, c=nu, alpha=0 * ones, sigma=ones, beta=0 * ones, nll=ones * np.nan,
                             n_samples=ones.astype(int), estimator="mle")
    scaled = FittedScalingLaws(point_ids=ids, c=1.6 * c, alpha=alpha, sigma=ones, beta=0 * ones, nll=ones * np.nan,
                               n_samples=ones.astype(int), estimator="mle")
    v = float(np.var(s["delta"]))
    ta, tb = (heldout_terms_shapley(L, s, v, (lo, hi)) for L in (flat, scaled))
    assert np.isfinite(ta).all() and ta.mean() < tb.mean()
    # And it is the squared error of the Shapley values that decides (up to noise).
    err_a = np.mean((flat.c * power_mean(flat.alpha, lo, hi) - nu) ** 2)
    err_b = np.mean((scaled.c * power_mean(scaled.alpha, lo, hi) - nu) ** 2)
    assert err_a < 1e-20 < err_b


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
