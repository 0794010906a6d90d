"""fit_shrinkage: recovery of planted laws and of the population, coverage, limits."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from pointscale.errors import ConfigError, ConvergenceWarning
from pointscale.laws import FittedScalingLaws, fit_mle
from pointscale.laws.shrinkage import fit_shrinkage
from pointscale.laws.simulate import draw_parameters, simulate_samples
from pointscale.valuation import distributional_shapley

K_REF = math.sqrt(100 * 1000)


def population(P: int, seed: int) -> pd.DataFrame:
    """Laws drawn from a population of the prior's family (independent normal coordinates).

    Signal-to-noise ratio at k_ref ~ N(0.8, 0.6²), α ~ N(1.3, 0.25²), β ~ N(2.5, 0.4²),
    log noise sd at k_ref ~ N(log 0.01, 0.7²).
    """
    g = np.random.default_rng(seed)
    snr = g.normal(0.8, 0.6, P)
    a = np.clip(g.normal(1.3, 0.25, P), 0.05, 7.0)
    b = np.clip(g.normal(2.5, 0.4, P), 0.05, 7.0)
    sd = np.exp(g.normal(np.log(0.01), 0.7, P))
    v = snr * sd  # psi at k_ref
    return pd.DataFrame({"point_id": [f"p{i:05d}" for i in range(P)], "c": v * K_REF**a, "alpha": a,
                         "sigma": sd * K_REF ** (b / 2), "beta": b, "psi_ref": v})


@pytest.fixture(scope="module")
def pop30():
    par = population(1500, 1)
    s = simulate_samples(par, 30, 2)
    return par, s, fit_shrinkage(s)


def test_recovers_the_population(pop30):
    # 1,500 points x 30 samples. The population's mean alpha and beta are
    # recovered within 0.1 (the per-point information on beta is weak at 30
    # samples, and the clipped normals shift the means by < 0.01); the spread
    # of alpha (true 0.25) within a factor 1.5.
    par, _, fit = pop30
    pop = fit.meta["population"]
    assert fit.meta["prior_scale"] == "relative"  # the family the data were drawn from
    assert abs(pop["mean"]["alpha"] - 1.3) < 0.1
    assert abs(pop["mean"]["beta"] - 2.5) < 0.1
    assert 0.25 / 1.5 < pop["sd"]["alpha"] < 0.25 * 1.5
    assert abs(pop["mean"]["v"] - 0.8) < 0.15  # mean signal-to-noise ratio


def test_interval_coverage_is_near_nominal(pop30):
    # Empirical-Bayes intervals are calibrated on average over points drawn
    # from the prior. 1,500 points: the binomial s.e. of a 95 % coverage is
    # 0.006; the band 0.90-0.99 also allows the Laplace approximation's error.
    par, _, fit = pop30
    cover_a = np.mean((fit.alpha_low <= par["alpha"]) & (par["alpha"] <= fit.alpha_high))
    lo, hi = fit.predict_interval([K_REF], warn_extrapolation=False)
    cover_psi = np.mean((lo[:, 0] <= par["psi_ref"]) & (par["psi_ref"] <= hi[:, 0]))
    assert 0.90 <= cover_a <= 0.99
    assert 0.90 <= cover_psi <= 0.99


def test_beats_per_point_mle_on_every_parameter_with_few_samples(pop30):
    par, s, fit = pop30
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mle = fit_mle(s)
    psi_s = fit.predict([K_REF], warn_extrapolation=False)[:, 0]
    psi_m = mle.predict([K_REF], warn_extrapolation=False)[:, 0]
    rmse = lambda e, t: float(np.sqrt(np.nanmean((e - t) ** 2)))  # noqa: E731
    assert rmse(fit.alpha, par["alpha"]) < 0.5 * rmse(mle.alpha, par["alpha"])
    assert rmse(psi_s, par["psi_ref"]) < rmse(psi_m, par["psi_ref"])


def test_converges_to_the_per_point_mle_with_many_samples():
    # The posterior mode differs from the MLE by about (se/tau)^2 * (MLE - prior
    # mean): it shrinks like 1/n. Going from 300 to 3,000 samples per point must
    # cut the median gap by at least 3x (theory: 10x), and at 3,000 it must be a
    # small fraction of a standard error.
    par = draw_parameters(40, 3, alpha_range=(0.9, 1.6))
    s = simulate_samples(par, 3000, 4)
    gaps = {}
    for n in (300, 3000):
        sub = s.groupby("point_id", sort=False).head(n)
        fit, mle = fit_shrinkage(sub), fit_mle(sub)
        se_a = np.sqrt(mle.extra["var_alpha"])
        gaps[n] = (np.median(np.abs(fit.alpha - mle.alpha)), np.median(se_a))
        psi_s = fit.predict([K_REF], warn_extrapolation=False)[:, 0]
        psi_m = mle.predict([K_REF], warn_extrapolation=False)[:, 0]
        lo, hi = mle.predict_interval([K_REF], warn_extrapolation=False)
        assert np.median(np.abs(psi_s - psi_m) / ((hi[:, 0] - lo[:, 0]) / 3.92)) < 0.5
    assert gaps[3000][0] < gaps[300][0] / 3
    assert gaps[3000][0] < 0.25 * gaps[3000][1]


def test_never_explodes_with_few_samples():
    # The synthetic population of draw_parameters (SNR 1 at k_ref, |c| over two
    # decades) with 10 samples per point: the per-point MLE's Shapley values
    # explode (explained variance far below 0); shrinkage must beat the plain
    # mean of the same samples. Truth = the planted laws' Shapley values.
    par = draw_parameters(400, 1)
    s = simulate_samples(par, 10, 2)
    fit = fit_shrinkage(s)
    truth = par["c"].to_numpy() * np.array([np.mean(np.arange(100, 1001.0) ** -a) for a in par["alpha"]])
    est = distributional_shapley(fit, 100, 1000).value
    mc = s.groupby("point_id")["delta"].mean().reindex(par["point_id"]).to_numpy()
    ev = lambda e: 1 - np.mean((e - truth) ** 2) / np.var(truth)  # noqa: E731
    assert np.isfinite(est).all()
    assert ev(est) > ev(mc) + 0.05
    # psi at the small end of the range (where a steep, wrong alpha explodes) stays
    # on the scale of the truth.
    psi_true = np.abs(par["c"].to_numpy() * 100.0 ** -par["alpha"].to_numpy())
    assert np.abs(fit.predict([100], warn_extrapolation=False)[:, 0]).max() < 10 * psi_true.max()


def test_a_good_per_point_prior_helps():
    # With the true laws as prior means, amortized-prior shrinkage estimates psi
    # at k_ref better than the population prior does.
    par = population(400, 5)
    s = simulate_samples(par, 10, 6)
    truth_laws = FittedScalingLaws(point_ids=par["point_id"].to_numpy(), c=par["c"], alpha=par["alpha"],
                                   sigma=par["sigma"], beta=par["beta"], nll=np.full(len(par), np.nan),
                                   n_samples=np.zeros(len(par), int), estimator="amortized")
    with_prior = fit_shrinkage(s, prior=truth_laws)
    plain = fit_shrinkage(s)
    assert with_prior.estimator == "amortized_shrinkage" and "offset" in with_prior.meta["population"]
    err = lambda f: np.mean((f.predict([K_REF], warn_extrapolation=False)[:, 0] - par["psi_ref"]) ** 2)  # noqa: E731
    assert err(with_prior) < 0.8 * err(plain)


def test_edge_cases_and_errors():
    s = pd.DataFrame({"point_id": ["a"] * 5 + ["b"] * 5 + ["c"],
                      "k": [100, 200, 300, 400, 500] * 2 + [100],
                      "delta": [0.0] * 11,
                      "failed": [False] * 10 + [True]})
    fit = fit_shrinkage(s)
    # all deltas zero: psi = 0 exactly; the failed-only point has no law
    assert fit.c[0] == 0.0 and fit.c[1] == 0.0 and np.isnan(fit.c[2])
    assert fit.flags["too_few_samples"].tolist() == [False, False, True]
    with pytest.raises(ConfigError):
        fit_shrinkage(s, prior_scale="bogus")
    with pytest.raises(ConfigError):
        fit_shrinkage(s, level=1.5)


@pytest.mark.parametrize("prior_scale", ["relative", "absolute"])
def test_each_point_is_at_its_posterior_mode(prior_scale):
    # The partitions' path: a population learned on some points (10 samples each) applied to
    # others with 3 samples each (``population=``: each point's mode under that prior). Few
    # samples make the posteriors flat in the noise parameters, where Fisher scoring alone crept
    # towards the modes, stopped (steps below tol) far from them and hit max_iter. An independent
    # optimiser (scipy's L-BFGS-B on the same posterior, from the fitted modes) must find no
    # better point: the objective gains less than 1e-6 per point, and the modes move little.
    from scipy.optimize import minimize

    from pointscale.laws import shrinkage as S

    par = population(600, 5)
    learned = fit_shrinkage(simulate_samples(par.iloc[:300], 10, 6), prior_scale=prior_scale)
    st = learned.meta["population_state"]
    s = simulate_samples(par.iloc[300:], 3, 7)
    fit = fit_shrinkage(s, population=st)
    assert fit.meta["iterations"] < 300, fit.meta["iterations"]
    ids, codes, k, delta, _ = S.prepare_samples(s)
    packed = S._pack_global(codes, k, delta, np.arange(ids.size), np.log(st["k_ref"]), st["delta_scale"])
    prior = S._Prior(bool(st["relative"]), None)
    prior.pop, prior.tau2 = np.asarray(st["pop"]), np.asarray(st["tau2"])
    theta = S.prior_from_laws(fit, ids, k_ref=st["k_ref"], scale=st["delta_scale"])
    bounds = [(None, None), (0.0, S.PARAM_MAX), (None, None), (0.0, S.PARAM_MAX)]
    gains, moves = [], []
    for i in range(0, ids.size, 10):
        sub = packed.take(np.array([i]))
        f = lambda t: float(S._sub_objective(sub, t[None, :].copy(), prior, np.array([i]))[0])  # noqa: E731
        res = minimize(f, theta[i], method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-15, "gtol": 1e-10})
        gains.append(f(theta[i]) - res.fun)
        moves.append(np.abs(res.x - theta[i]).max())
    assert max(gains) < 1e-6, (max(gains), max(moves))
    assert np.median(moves) < 1e-2, np.median(moves)


def test_an_em_stopped_at_max_iter_leaves_every_point_at_its_mode_under_the_prior_reached():
    # Few samples per point: EM's prior creeps for hundreds of iterations (the modes with it). Stopped
    # early, the fit warns and says so in meta, but flags no point whose mode is settled: each value
    # is the point's posterior mode under the prior reached -- the modes found afresh under that
    # prior (the ``population=`` path, from the starting values) are the same points.
    par = population(400, 8)
    s = simulate_samples(par, 5, 9)
    with pytest.warns(ConvergenceWarning, match="still moved after max_iter=5"):
        early = fit_shrinkage(s, prior_scale="absolute", max_iter=5)
    assert early.meta["em_converged"] is False and not early.meta["converged"]
    assert not early.flags["not_converged"].any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = fit_shrinkage(s, population=early.meta["population_state"])
    assert not again.flags["not_converged"].any()
    for name in ("c", "alpha", "sigma", "beta"):
        np.testing.assert_allclose(getattr(again, name), getattr(early, name), rtol=2e-3, atol=1e-9 * np.abs(getattr(early, name)).max())
    # A mode that cannot settle in the steps allowed is flagged (one step, from the starting values).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = fit_shrinkage(s, population=early.meta["population_state"], max_iter=1)
    assert one.flags["not_converged"].any() and one.meta["em_converged"] is False


def test_backtracking_scores_the_short_steps_together_and_chooses_as_one_halving_at_a_time():
    # The line search of the Fisher-scoring fallback scores the steps below one half in one call;
    # it must choose exactly what halving one step at a time chooses (the first step size, from 1 down
    # to 2^-12, whose objective is at most the bound; the start where none is), bit for bit. Random
    # directions give points that take the full step, points that need a few or many halvings and
    # points (uphill directions) that never find one.
    from pointscale.laws import shrinkage as S

    par = population(120, 11)
    s = simulate_samples(par, 8, 12)
    ids, codes, k, delta, _ = S.prepare_samples(s)
    packed = S._pack_global(codes, k, delta, np.arange(ids.size), np.log(K_REF), float(np.sqrt(np.mean(delta ** 2))))
    prior = S._Prior(True, None)
    g = np.random.default_rng(13)
    theta = S._clip(S._initial(packed) + g.normal(0.0, 0.3, (ids.size, 4)))
    step = g.normal(0.0, 1.0, (ids.size, 4)) * np.exp(g.uniform(-6.0, 4.0, (ids.size, 1)))
    rows = np.arange(ids.size)
    bound = S._sub_objective(packed, theta, prior, rows)
    expected, todo, t = theta.copy(), np.ones(ids.size, dtype=bool), 1.0
    chosen = np.full(ids.size, -1)
    for i in range(S._LS_STEPS + 1):
        trial = S._clip(theta - t * step)
        ok = todo & (S._sub_objective(packed, trial, prior, rows) <= bound)
        expected[ok], chosen[ok] = trial[ok], i
        todo &= ~ok
        t *= 0.5
    assert (chosen == 0).any() and (chosen >= 4).any() and (chosen == -1).any(), np.bincount(chosen + 1)
    np.testing.assert_array_equal(S._backtrack(packed, prior, rows, theta, step, bound), expected)
