"""The law diagnostic, the fair shrunk mean and auto's choice on planted data (known truth)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest

from pointscale.laws import estimators
from pointscale.laws.auto import select_laws
from pointscale.laws.diagnostic import (diagnostic_sentence, law_test, samples_for_reliability,
                                        split_half_reliability, verdict)
from pointscale.laws.estimators import FitContext, LawEstimator, fit_estimator
from pointscale.laws.folds import half_ids
from pointscale.laws.power import power_mean
from pointscale.laws.result import FittedScalingLaws
from pointscale.laws.shrunk_mean import fit_shrunk_mean, shrink_means
from pointscale.laws.simulate import draw_parameters, simulate_samples
from pointscale.report.markdown import report_summary

K_RANGE = (100, 1000)


def planted(shape: str, n_points: int = 200, spp: int = 30, seed: int = 0, noise: float = 1.0) -> pd.DataFrame:
    """Samples whose ψ_k(z) = c(z)·f(k): f flat, a wave (down then up: non-monotone) or a power law."""
    g = np.random.default_rng(seed)
    c = g.lognormal(0.0, 0.5, n_points) * np.where(g.random(n_points) < 0.2, -1.0, 1.0)
    pid = np.repeat([f"p{i:04d}" for i in range(n_points)], spp)
    k = g.integers(K_RANGE[0], K_RANGE[1] + 1, n_points * spp).astype(np.float64)
    u = (np.log(k) - np.log(K_RANGE[0])) / (np.log(K_RANGE[1]) - np.log(K_RANGE[0]))
    f = {"flat": np.ones_like(u), "wave": np.cos(2 * np.pi * u), "law": (k / 100.0) ** -1.0}[shape]
    d = np.repeat(c, spp) * f + g.normal(0.0, noise, k.size) * np.repeat(np.abs(c), spp)
    return pd.DataFrame({"point_id": pid, "k": k, "delta": d, "sample_id": np.arange(k.size) * 7919 + 13})


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_where_the_law_cannot_hold_the_verdict_says_so_and_the_values_are_law_free():
    s = planted("wave")
    laws, _ = _quiet(select_laws, s, k_range=K_RANGE)
    d = laws.meta["law_diagnostic"]
    assert d["verdict"] == "does not hold"
    assert d["loglik_gain_per_sample"] < -2 * d["loglik_gain_se"]
    assert d["no_law_model"] == "buckets"  # the free mean per size bucket follows the wave
    assert d["estimator"] == "shrunk_mean" and d["law_free"]
    # The values are the law-free estimator's, fitted on the same samples.
    direct = fit_shrunk_mean(s, k_range=K_RANGE)
    np.testing.assert_array_equal(laws.point_ids, direct.point_ids)
    np.testing.assert_array_equal(laws.c, direct.c)
    assert (laws.alpha == 0).all() and laws.meta["law_free"]
    sentence = diagnostic_sentence(d, "xgboost")
    assert sentence.startswith("The scaling law does not hold for xgboost on this data")
    assert "law-free shrunk mean, which assumes no law" in sentence


def test_a_flat_psi_is_not_called_a_law_and_a_planted_law_is():
    flat, _ = _quiet(select_laws, planted("flat"), k_range=K_RANGE)
    assert flat.meta["law_diagnostic"]["verdict"] != "holds"
    law, _ = _quiet(select_laws, planted("law"), k_range=K_RANGE)
    d = law.meta["law_diagnostic"]
    assert d["verdict"] == "holds" and d["loglik_gain_per_sample"] > 2 * d["loglik_gain_se"] > 0
    assert 0.5 < d["share_good_fit"] <= 1.0
    assert diagnostic_sentence(d, "logreg").startswith("The scaling law holds for logreg on this data (+")


def test_too_few_samples_per_point_leave_the_law_untested_instead_of_scoring_a_collapsed_noise():
    # At 3 and 5 samples per point the law (c, α, σ, β) passes through a point's training samples and its
    # fitted noise collapses: on adult a run reported "+7.43e+09 held-out log-likelihood per sample".
    for spp in (3, 5):
        laws, _ = _quiet(select_laws, planted("law", n_points=120, spp=spp), k_range=K_RANGE)
        d = laws.meta["law_diagnostic"]
        assert d["n_samples_scored"] == 0 and d["loglik_gain_per_sample"] is None, (spp, d)
        assert d["verdict"] == "undecided"
        assert "(too few samples per point to test it)" in diagnostic_sentence(d, "logreg")
    laws, _ = _quiet(select_laws, planted("law", n_points=120, spp=8), k_range=K_RANGE)
    d = laws.meta["law_diagnostic"]
    assert d["n_points_scored"] == 120 and abs(d["loglik_gain_per_sample"]) < 5.0, d


def test_one_sample_per_point_has_no_halves_and_fits_none(monkeypatch):
    # Split halves of one sample per point share no point: no reliability, and no fits spent on it
    # (100,000 points: 30 s of the run's 52 s law choice went to those two fits).
    import pointscale.laws.auto as auto

    calls = []
    real = auto.fit_estimator
    monkeypatch.setattr(auto, "fit_estimator", lambda name, s, *a, **k: calls.append(len(s)) or real(name, s, *a, **k))
    s = planted("law", n_points=60, spp=1)
    laws, _ = _quiet(select_laws, s, k_range=K_RANGE)
    d = laws.meta["law_diagnostic"]
    assert d["reliability"] is None and "no halves" in d["reliability_error"] and d["samples_per_point"] == 1.0
    assert all(n == len(s) for n in calls), calls  # only fits on all the samples
    assert "reliability unknown" in diagnostic_sentence(d)


def test_a_law_whose_exponents_collapsed_to_a_bound_is_set_aside_for_the_law_free_estimator(monkeypatch):
    # Shrinkage's population can collapse so that every point's α sits at e² (or 0): the law is then not
    # identified (estimator benchmark, magic SVM at 10 per point: explained variance -1.02 where the shrunk
    # mean had -0.12). Planted here on the fit on all samples of a planted law, where shrinkage is chosen.
    import pointscale.laws.auto as auto
    from pointscale.laws.likelihood import PARAM_MAX

    s = simulate_samples(draw_parameters(150, 7), 10, 8)  # shrinkage's win in tests/core/test_laws_auto.py
    s["sample_id"] = np.arange(len(s)) * 7919 + 13
    chosen, _ = _quiet(select_laws, s)
    assert chosen.meta["selection"]["chosen"] == "shrinkage"
    real = auto.fit_estimator

    def collapsed(name, samples, *args, **kwargs):
        laws = real(name, samples, *args, **kwargs)
        if name == "shrinkage" and len(samples) == len(s):
            return dataclasses.replace(laws, alpha=np.where(np.arange(laws.n_points) < 138, PARAM_MAX - 0.004, 1.0))
        return laws

    monkeypatch.setattr(auto, "fit_estimator", collapsed)
    laws, _ = _quiet(select_laws, s)
    sel = laws.meta["selection"]
    assert sel["chosen"] == "shrunk_mean" and laws.meta["law_free"]
    assert "exponent sat at a bound (0 or e²) for 92% of the points" in sel["excluded"]["shrinkage"]


def test_the_law_is_overridden_by_the_law_free_estimator_where_it_does_not_hold(monkeypatch):
    # A law candidate whose Shapley values are the truth (so it wins the selection's
    # score) but whose shape in k is a power law on wave-shaped data: auto must
    # still take the values from the law-free estimator, and say why.
    s = planted("wave", seed=4)
    truth = s.groupby("point_id")["delta"].mean()

    def oracle(samples, context, inputs):
        ids = np.array(sorted(samples["point_id"].unique()), dtype=object)
        alpha = np.full(ids.size, 0.5)
        sd = samples.groupby("point_id")["delta"].std().reindex(ids).to_numpy()
        return FittedScalingLaws(point_ids=ids, c=truth.reindex(ids).to_numpy() / power_mean(alpha, *K_RANGE),
                                 alpha=alpha, sigma=sd, beta=np.zeros(ids.size), nll=np.full(ids.size, np.nan),
                                 n_samples=np.full(ids.size, 30), estimator="mle")

    monkeypatch.setitem(estimators._REGISTRY, "mle", LawEstimator("mle", oracle, auto_rank=-1))
    laws, _ = _quiet(select_laws, s, k_range=K_RANGE, candidates=("mle", "shrunk_mean"))
    sel, d = laws.meta["selection"], laws.meta["law_diagnostic"]
    assert sel["best"] == "mle"  # its values predict the held-out samples best ...
    assert d["verdict"] == "does not hold" and d["law_estimator"] == "mle"  # ... but its law does not hold
    assert sel["chosen"] == "shrunk_mean" and "does not hold" in sel["overridden"]
    np.testing.assert_array_equal(laws.c, fit_shrunk_mean(s, k_range=K_RANGE).c)


@pytest.mark.parametrize("case", [("law", 10, 300), ("wave", 20, 300), ("sim", 10, 300), ("sim", 30, 300)])
def test_auto_values_as_well_as_the_best_candidate_on_planted_data(case):
    shape, spp, n = case
    if shape == "sim":
        par = draw_parameters(n, 11)
        s = simulate_samples(par, spp, 12)
        s["sample_id"] = np.arange(len(s)) * 7919 + 13
        truth = pd.Series(par["c"].to_numpy() * power_mean(par["alpha"].to_numpy(), *K_RANGE),
                          index=par["point_id"].to_numpy())
    else:
        s = planted(shape, n_points=n, spp=spp, seed=2)
        # The truth: the same points with 2,000 samples each (same seed: same c).
        big = planted(shape, n_points=n, spp=2000, seed=2)
        truth = big.groupby("point_id")["delta"].mean()
    laws, _ = _quiet(select_laws, s, k_range=K_RANGE)

    def ev(fitted):
        v = pd.Series(fitted.c * power_mean(fitted.alpha, *K_RANGE), index=fitted.point_ids).reindex(truth.index)
        return 1.0 - float(np.mean((v - truth) ** 2) / np.var(truth))

    ctx = FitContext(k_range=K_RANGE)
    scores = {m: ev(_quiet(fit_estimator, m, s, ctx, {})) for m in laws.meta["selection"]["candidates"]}
    assert ev(laws) >= max(scores.values()) - 0.02, (laws.meta["selection"]["chosen"], scores)


def test_split_half_reliability_matches_the_signal_share_and_the_prophecy():
    # Values ν ~ N(0, τ²), samples ν + N(0, σ²): a mean of n samples has reliability
    # τ² / (τ² + σ²/n); 0.9 needs n = 9 σ²/τ².
    g = np.random.default_rng(5)
    tau, sigma, n, points = 1.0, 4.0, 20, 4000
    nu = g.normal(0.0, tau, points)
    s = pd.DataFrame({"point_id": np.repeat(np.arange(points), n), "k": 100.0,
                      "delta": np.repeat(nu, n) + g.normal(0.0, sigma, points * n)})
    s["sample_id"] = np.arange(len(s)) * 31 + 7
    half = half_ids(s)
    means = [s.loc[half == h].groupby("point_id")["delta"].mean() for h in (0, 1)]
    out = split_half_reliability(means[0].to_numpy(), means[1].to_numpy(), n)
    expected = tau ** 2 / (tau ** 2 + sigma ** 2 / n)
    assert out["reliability"] == pytest.approx(expected, abs=0.03)
    assert out["samples_for_reliability_0.9"] == pytest.approx(9 * sigma ** 2 / tau ** 2, rel=0.15)
    assert out["samples_for_reliability_0.8"] == pytest.approx(4 * sigma ** 2 / tau ** 2, rel=0.15)
    # The prophecy by itself, and its edges.
    assert samples_for_reliability(0.5, 0.9, 10) == pytest.approx(90.0)
    assert samples_for_reliability(0.0, 0.9, 10) is None and samples_for_reliability(None, 0.9, 10) is None
    # Through the selection, on the law-free estimator: the same reliability (equal n:
    # shrinkage multiplies every value by one weight, so the correlation is unchanged).
    laws, _ = _quiet(select_laws, s, method="shrunk_mean", k_range=(100, 100))
    assert laws.meta["law_diagnostic"]["reliability"] == pytest.approx(out["reliability"], abs=1e-9)


def test_verdict_rule_and_law_test_by_hand():
    assert verdict(0.3, 0.1) == "holds" and verdict(-0.3, 0.1) == "does not hold"
    assert verdict(0.1, 0.1) == "undecided" and verdict(None, None) == "undecided"
    # Two points, two samples each: law NLLs and no-law NLLs; gain = mean(no law - law).
    pid = np.array(["a", "a", "b", "b"])
    law = np.array([1.0, 1.0, 2.0, 2.0])
    nolaw = {"constant": np.array([1.5, 1.5, 2.5, 1.5]), "buckets": np.array([3.0, 3.0, 3.0, 3.0])}
    out = law_test(pid, law, nolaw)
    assert out["no_law_model"] == "constant"
    assert out["loglik_gain_per_sample"] == pytest.approx(0.25)
    # clustered s.e.: per-point sums (1.0, 0.0) minus 2 x 0.25 -> (0.5, -0.5); sqrt(0.5 * 2 / 1) / 4
    assert out["loglik_gain_se"] == pytest.approx(np.sqrt(0.5 * 2) / 4)
    assert out["share_good_fit"] == pytest.approx(1.0)


def test_shrunk_mean_is_normal_normal_empirical_bayes_and_picks_its_noise_model():
    # The shrinkage formula, by hand, at the marginal-likelihood optimum.
    g = np.random.default_rng(1)
    m = g.normal(2.0, 1.0, 500)
    v = np.full(500, 0.5)
    shrunk, mu, tau2, w = shrink_means(m, v)
    # Equal noise: the ML estimates are closed form.
    assert mu == pytest.approx(m.mean(), rel=1e-6)
    assert tau2 == pytest.approx(max(np.var(m) - 0.5, 0.0), rel=1e-3)
    np.testing.assert_allclose(shrunk, mu + tau2 / (tau2 + 0.5) * (m - mu), rtol=1e-6)
    # Spread below the noise: τ² = 0 and every value is the grand mean.
    flat = g.normal(0.0, 1.0, 400)
    flat = 1.0 + flat / np.std(flat) * np.sqrt(0.45)
    shrunk, mu, tau2, _ = shrink_means(flat, np.full(400, 0.5))
    assert tau2 == 0.0 and np.allclose(shrunk, flat.mean())
    # Per-point noise that really differs by point (x100 in variance) is found by the held-out
    # error; equal noise picks the pooled variance.
    points, n = 300, 12
    nu = g.normal(0.0, 1.0, points)
    scale = np.where(np.arange(points) % 2 == 0, 0.3, 3.0)
    het = pd.DataFrame({"point_id": np.repeat(np.arange(points), n), "k": 100.0,
                        "delta": np.repeat(nu, n) + g.normal(0.0, 1.0, points * n) * np.repeat(scale, n)})
    assert fit_shrunk_mean(het).meta["variant"] == "per_point"
    hom = het.assign(delta=np.repeat(nu, n) + g.normal(0.0, 1.0, points * n))
    assert fit_shrunk_mean(hom).meta["variant"] == "pooled"
    laws = fit_shrunk_mean(hom, k_range=(100, 100))
    assert laws.estimator == "shrunk_mean" and (laws.alpha == 0).all() and (laws.beta == 0).all()
    np.testing.assert_allclose(laws.extra["plain_mean"], hom.groupby("point_id")["delta"].mean().to_numpy())


def test_an_estimator_that_did_not_converge_is_set_aside_and_the_run_says_so(monkeypatch):
    s = planted("law", seed=3)

    def unconverged(samples, context, inputs):
        laws = inputs["mle"]
        return dataclasses.replace(laws, flags={**laws.flags, "not_converged": np.ones(laws.n_points, bool)})

    monkeypatch.setitem(estimators._REGISTRY, "amortized", LawEstimator(
        "amortized", unconverged, requires=("mle",), auto_rank=-1))
    laws, _ = _quiet(select_laws, s, k_range=K_RANGE, candidates=("amortized", "mle", "shrunk_mean"))
    sel = laws.meta["selection"]
    # The same laws as the MLE: it scores the same, so it is not better by 2 s.e.: set aside.
    assert sel["not_converged_share"]["amortized"] == 1.0
    assert "amortized" in sel["excluded"] and "did not converge on 100%" in sel["excluded"]["amortized"]
    assert sel["chosen"] != "amortized"
    text = report_summary(law_diagnostic=laws.meta["law_diagnostic"] | {"sentence": "S."}, estimator_choice=sel)
    assert "S." in text and "estimator amortized was not used: its fits did not converge on 100%" in text


def test_an_unconverged_estimator_that_predicts_best_is_used_anyway_and_the_run_says_so(monkeypatch):
    s = planted("law", seed=3)
    g = np.random.default_rng(3)  # planted's draws: the true laws c·(k/100)^-1
    c = g.lognormal(0.0, 0.5, 200) * np.where(g.random(200) < 0.2, -1.0, 1.0)
    true_c = pd.Series(c * 100.0, index=[f"p{i:04d}" for i in range(200)])

    def oracle(samples, context, inputs):
        laws = inputs["mle"]
        return dataclasses.replace(laws, c=true_c.reindex(laws.point_ids).to_numpy(),
                                   alpha=np.ones(laws.n_points),
                                   flags={**laws.flags, "not_converged": np.ones(laws.n_points, bool)})

    monkeypatch.setitem(estimators._REGISTRY, "amortized", LawEstimator(
        "amortized", oracle, requires=("mle",), auto_rank=-1))
    laws, _ = _quiet(select_laws, s, k_range=K_RANGE, candidates=("amortized", "mle", "shrunk_mean"))
    sel = laws.meta["selection"]
    # Flagged on every point, but its values predict the held-out samples better than any other's.
    assert sel["not_converged_share"]["amortized"] == 1.0 and sel["chosen"] == "amortized"
    assert all(sel["heldout_nll"]["amortized"] < sel["heldout_nll"][c] for c in ("mle", "shrunk_mean"))
    assert "did not converge" in sel["used_anyway"] and "better than any converged" in sel["used_anyway"]
    np.testing.assert_allclose(laws.c, true_c.reindex(laws.point_ids).to_numpy())


def test_values_that_do_not_tell_points_apart_are_called_so():
    from pointscale.laws.diagnostic import diagnostic_sentence, split_half_reliability

    rel = split_half_reliability(np.full(20, 0.3), np.linspace(0, 1, 20), 10)
    assert rel["reliability"] == 0.0 and rel["constant"] and rel["samples_for_reliability_0.9"] is None
    d = {"verdict": "undecided", "loglik_gain_per_sample": 0.001, "loglik_gain_se": 0.004,
         "estimator": "shrunk_mean", "law_free": True, "reliability": 0.0, "constant": True,
         "samples_for_reliability_0.9": None}
    sentence = diagnostic_sentence(d, "xgboost")
    assert "do not yet tell the points apart" in sentence and "assumes no law" in sentence
