"""fit_mle: recovery of planted laws, interval coverage, optimality, edge cases."""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from pointscale.errors import ConfigError, ConvergenceWarning, DataError
from pointscale.laws import fit_mle
from pointscale.laws.likelihood import gaussian_nll, mean_nll_by_point
from pointscale.laws.simulate import draw_parameters, simulate_samples

ROOT = Path(__file__).resolve().parents[2]
E2 = math.exp(2.0)


def expected_se(c, alpha, sigma, beta, k):
    """Asymptotic standard errors of (c, alpha, log sigma^2, beta) at the truth.

    Written out here from the Gaussian model, independently of the package:
    m = k^-alpha, w = k^beta / sigma^2; mean and variance parameters are
    orthogonal in the expected information.
    """
    k = np.asarray(k, dtype=float)
    lk = np.log(k)
    wmm = k ** (beta - 2 * alpha) / sigma**2
    mean_block = np.array(
        [[wmm.sum(), -c * (wmm * lk).sum()], [-c * (wmm * lk).sum(), c * c * (wmm * lk * lk).sum()]]
    )
    var_block = np.array([[0.5 * k.size, -0.5 * lk.sum()], [-0.5 * lk.sum(), 0.5 * (lk * lk).sum()]])
    return np.sqrt(np.concatenate([np.diag(np.linalg.inv(mean_block)), np.diag(np.linalg.inv(var_block))]))


def one_point(c, alpha, sigma, beta, n, seed, pid="z"):
    params = pd.DataFrame({"point_id": [pid], "c": [c], "alpha": [alpha], "sigma": [sigma], "beta": [beta]})
    return simulate_samples(params, n, seed)


# ---------------------------------------------------------------- recovery
def test_recovers_the_papers_example_within_four_standard_errors():
    # The published example (SPEC §1). With 20,000 samples the MLE is close to
    # normal with the expected-information SEs; 4 SE is a 6e-5 two-sided
    # false-alarm rate per parameter, and errors of a wrong estimator (e.g. a
    # fixed beta, a wrong sign of c) are dozens of SEs.
    truth = dict(c=0.39, alpha=1.33, sigma=0.75, beta=2.83)
    s = one_point(**truth, n=20_000, seed=1)
    fit = fit_mle(s)
    se = expected_se(truth["c"], truth["alpha"], truth["sigma"], truth["beta"], s["k"])
    assert abs(fit.c[0] - truth["c"]) < 4 * se[0]
    assert abs(fit.alpha[0] - truth["alpha"]) < 4 * se[1]
    assert abs(2 * math.log(fit.sigma[0] / truth["sigma"])) < 4 * se[2]
    assert abs(fit.beta[0] - truth["beta"]) < 4 * se[3]


def test_errors_are_unbiased_and_of_the_predicted_size_over_many_points():
    # 300 points with 200 samples: z = (estimate - truth) / SE_true should be
    # roughly standard normal. The mean of 300 such z has SD 0.058, so |mean|
    # < 0.25 is a > 4 SD margin; the SD of z within [0.8, 1.25] leaves room for
    # the finite-sample non-normality of alpha-hat at SNR ~ 1 while catching
    # an estimator that is off by a factor 1.3 in spread.
    params = draw_parameters(300, seed=21)
    s = simulate_samples(params, 200, seed=22)
    fit = fit_mle(s)
    assert list(fit.point_ids) == list(params["point_id"])
    z_alpha, z_c = [], []
    for i, row in enumerate(params.itertuples()):
        ks = s["k"].to_numpy()[i * 200 : (i + 1) * 200]
        se = expected_se(row.c, row.alpha, row.sigma, row.beta, ks)
        z_alpha.append((fit.alpha[i] - row.alpha) / se[1])
        z_c.append((fit.c[i] - row.c) / se[0])
    z_alpha, z_c = np.array(z_alpha), np.array(z_c)
    assert abs(z_alpha.mean()) < 0.25 and 0.8 < z_alpha.std() < 1.25
    assert abs(np.median(z_c)) < 0.25
    # Signs of c: 15 % of points are negative; every sign with |z| at the
    # sampled sizes this large must come out right.
    assert np.all(np.sign(fit.c) == np.sign(params["c"].to_numpy()))


def test_interval_coverage_at_200_samples():
    # 400 points: the binomial SD of a 95 % coverage is 1.1 %, so [90 %, 99 %]
    # is about +-4 SD around the nominal level.
    params = draw_parameters(400, seed=31)
    s = simulate_samples(params, 200, seed=32)
    fit = fit_mle(s)
    a, c = params["alpha"].to_numpy(), params["c"].to_numpy()
    cover_alpha = np.mean((fit.alpha_low <= a) & (a <= fit.alpha_high))
    cover_c = np.mean((fit.c_low <= c) & (c <= fit.c_high))
    assert 0.90 <= cover_alpha <= 0.99, cover_alpha
    assert 0.90 <= cover_c <= 0.99, cover_c
    ks = np.array([100.0, 359.0, 1000.0])
    lo, hi = fit.predict_interval(ks)
    truth = c[:, None] * ks[None, :] ** (-a[:, None])
    cover_psi = ((lo <= truth) & (truth <= hi)).mean(axis=0)
    assert np.all((cover_psi >= 0.90) & (cover_psi <= 0.99)), cover_psi
    # Intervals must also be informative: a trivially wide interval covers always.
    assert np.median(fit.alpha_high - fit.alpha_low) < 1.0


# ---------------------------------------------------------------- optimality
def _load_benchmark():
    spec = importlib.util.spec_from_file_location("_bench_fit", ROOT / "benchmarks" / "fit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "n_points, n_samples, seeds", [(500, 10, (1, 2)), (1000, 8, (1, 2)), (300, 30, (71, 42))]
)
def test_nll_never_worse_than_the_papers_adam(n_points, n_samples, seeds):
    # The issue asks for >= 99 % of points; on these sets we reach 100 %.
    # On the first two, Newton from the best lattice cell alone loses to Adam
    # on one or two points (multimodal profiles; a valley bending in from
    # the box's edge), so this also guards the extra starts.
    bench = _load_benchmark()
    params = draw_parameters(n_points, seed=seeds[0])
    s = simulate_samples(params, n_samples, seed=seeds[1])
    fit = fit_mle(s)
    codes, _ = pd.factorize(s["point_id"], sort=True)
    k, d = s["k"].to_numpy(dtype=float), s["delta"].to_numpy()
    best_params, _ = bench.paper_fit_all(codes, k, d, n_points)
    ours = mean_nll_by_point(codes, k, d, fit.c, fit.alpha, fit.sigma, fit.beta)
    paper = mean_nll_by_point(codes, k, d, *best_params.T)
    assert np.mean(ours <= paper + 1e-6) >= 0.99
    assert np.all(ours <= paper + 1e-6), np.flatnonzero(ours > paper + 1e-6)


def test_nll_at_least_as_low_as_multistart_lbfgsb():
    # An independent optimiser: L-BFGS-B on the profile over [0, e^2]^2 from
    # the best of a 10 x 10 grid, with c and sigma in closed form (SPEC §3).
    params = draw_parameters(15, seed=51)
    s = simulate_samples(params, 12, seed=52)
    fit = fit_mle(s)
    for i, pid in enumerate(fit.point_ids):
        rows = s[s["point_id"] == pid]
        k, d = rows["k"].to_numpy(float), rows["delta"].to_numpy()

        def profile(t):
            a, b = t
            c = np.mean(d * k ** (b - a)) / np.mean(k ** (b - 2 * a))
            sig = math.sqrt(np.mean((d - c * k**-a) ** 2 * k**b))
            return gaussian_nll(d, k, c, a, sig, b)

        grid = [(a, b) for a in np.linspace(0, E2, 10) for b in np.linspace(0, E2, 10)]
        start = min(grid, key=profile)
        best = minimize(profile, start, method="L-BFGS-B", bounds=[(0, E2), (0, E2)]).fun
        assert fit.nll[i] <= best + 1e-7, (pid, fit.nll[i], best)


# ---------------------------------------------------------------- edge cases
def test_scale_of_delta_does_not_change_the_fit():
    params = draw_parameters(20, seed=61)
    s = simulate_samples(params, 40, seed=62)
    base = fit_mle(s)
    for scale in (1e-7, 1e-3, 1.0 / 3.0):
        scaled = s.assign(delta=s["delta"] * scale)
        fit = fit_mle(scaled)
        np.testing.assert_allclose(fit.alpha, base.alpha, atol=1e-6)
        np.testing.assert_allclose(fit.beta, base.beta, atol=1e-6)
        np.testing.assert_allclose(fit.c, base.c * scale, rtol=1e-5)
        np.testing.assert_allclose(fit.sigma, base.sigma * scale, rtol=1e-5)
        np.testing.assert_allclose(fit.nll, base.nll + math.log(scale), atol=1e-8)
        np.testing.assert_array_equal(fit.flags["sign_uncertain"], base.flags["sign_uncertain"])


def test_negative_c_is_recovered_with_a_negative_interval():
    s = one_point(-0.39, 1.33, 0.75, 2.83, n=2000, seed=71)
    fit = fit_mle(s)
    assert fit.c[0] < 0
    assert fit.c_low[0] < fit.c[0] < fit.c_high[0] < 0
    assert not fit.flags["sign_uncertain"][0]
    assert np.all(fit.predict([100, 1000], warn_extrapolation=False) < 0)


def test_degenerate_points_are_flagged_not_exploded():
    rng = np.random.default_rng(0)
    good = one_point(0.39, 1.33, 0.75, 2.83, n=60, seed=81, pid="good")
    frames = [
        good,
        pd.DataFrame({"point_id": "zeros", "k": np.arange(100, 120), "delta": 0.0}),
        pd.DataFrame({"point_id": "const", "k": np.arange(100, 120), "delta": 0.01}),
        pd.DataFrame({"point_id": "one_k", "k": 300, "delta": rng.normal(size=15)}),
        pd.DataFrame({"point_id": "two", "k": [100, 200], "delta": [1.0, 2.0]}),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from numpy either
        fit = fit_mle(pd.concat(frames, ignore_index=True))
    f = fit.to_frame().set_index("point_id")
    assert f.loc["good", "c"] > 0 and np.isfinite(f.loc["good", ["alpha", "nll", "alpha_low"]].astype(float)).all()
    # All deltas zero: the law is exactly psi = 0; predict gives 0, not NaN.
    assert f.loc["zeros", "c"] == 0.0 and f.loc["zeros", "sigma"] == 0.0
    assert f.loc["zeros", "zero_variance"] and f.loc["zeros", "sign_uncertain"]
    assert np.all(fit.subset(["zeros"]).predict([100, 500]) == 0.0)
    # Constant non-zero deltas: an exact fit at alpha = 0 (a bound).
    assert f.loc["const", "c"] == pytest.approx(0.01)
    assert f.loc["const", "alpha"] == pytest.approx(0.0, abs=1e-9)
    assert f.loc["const", "zero_variance"] and f.loc["const", "alpha_at_bound"]
    # One distinct k: alpha unidentifiable.
    assert f.loc["one_k", "alpha_unidentifiable"] and np.isnan(f.loc["one_k", "alpha"])
    # Two samples: too few.
    assert f.loc["two", "too_few_samples"] and np.isnan(f.loc["two", "c"])
    assert not f.loc["good", ["too_few_samples", "zero_variance", "alpha_unidentifiable"]].any()


def test_duplicate_sizes_are_fine():
    # Every sample drawn at one of three sizes, many repeats: still identified.
    params = pd.DataFrame({"point_id": ["d"], "c": [0.39], "alpha": [1.33], "sigma": [0.75], "beta": [2.83]})
    s = simulate_samples(params, 300, seed=91, sizes=[100, 300, 1000])
    fit = fit_mle(s)
    se = expected_se(0.39, 1.33, 0.75, 2.83, s["k"])
    assert abs(fit.alpha[0] - 1.33) < 4 * se[1]
    assert fit.alpha_low[0] < 1.33 < fit.alpha_high[0] or abs(fit.alpha[0] - 1.33) > 2 * se[1]


def test_failed_and_nonfinite_rows_are_dropped_and_counted():
    s = one_point(0.39, 1.33, 0.75, 2.83, n=50, seed=101).assign(failed=False)
    s.loc[[0, 1, 2], "failed"] = True
    s.loc[[3], "delta"] = np.nan
    s.loc[[4], "delta"] = np.inf
    fit = fit_mle(s)
    assert fit.n_samples[0] == 45
    assert fit.meta["n_dropped_failed"] == 3 and fit.meta["n_dropped_nonfinite"] == 2
    clean = fit_mle(s.iloc[5:].drop(columns="failed"))
    assert fit.alpha[0] == pytest.approx(clean.alpha[0], abs=1e-12)


def test_flags_sign_uncertain_and_poor_fit_on_pure_noise():
    # c = 0: no signal. The c interval must contain 0 whenever the flag is set
    # and exclude it otherwise; most such points must be flagged.
    params = draw_parameters(60, seed=111).assign(c=0.0, sigma=0.05)
    s = simulate_samples(params, 50, seed=112)
    fit = fit_mle(s)
    contains_zero = (fit.c_low <= 0) & (fit.c_high >= 0)
    np.testing.assert_array_equal(fit.flags["sign_uncertain"], contains_zero)
    assert fit.flags["sign_uncertain"].mean() > 0.8
    assert fit.flags["poor_fit"].mean() > 0.7
    # Strong signal: neither flag.
    strong = simulate_samples(draw_parameters(30, seed=113, snr=3.0), 200, seed=114)
    fit_s = fit_mle(strong)
    assert not fit_s.flags["sign_uncertain"].any()
    assert fit_s.flags["poor_fit"].mean() < 0.1


def test_alpha_at_bound_for_values_that_grow_with_k():
    s = one_point(0.001, -0.8, 0.0005, 0.0, n=300, seed=121)
    fit = fit_mle(s)
    assert fit.alpha[0] == pytest.approx(0.0, abs=1e-6)
    assert fit.flags["alpha_at_bound"][0]


def test_not_converged_is_flagged_with_a_warning():
    s = simulate_samples(draw_parameters(20, seed=131), 30, seed=132)
    with pytest.warns(ConvergenceWarning):
        fit = fit_mle(s, max_iter=1)
    assert fit.flags["not_converged"].any()


def test_bad_input_is_rejected_with_the_value_named():
    s = one_point(0.39, 1.33, 0.75, 2.83, n=10, seed=141)
    with pytest.raises(DataError, match="delta"):
        fit_mle(s.drop(columns="delta"))
    with pytest.raises(DataError, match="positive"):
        fit_mle(s.assign(k=0))
    with pytest.raises(ConfigError, match="min_samples=2"):
        fit_mle(s, min_samples=2)


def test_predict_shape_and_values():
    s = simulate_samples(draw_parameters(5, seed=151), 40, seed=152)
    fit = fit_mle(s)
    pred = fit.predict([150, 200, 900])
    assert pred.shape == (5, 3)
    np.testing.assert_allclose(pred[:, 1], fit.c * 200.0 ** (-fit.alpha))
    lo, hi = fit.predict_interval([150, 200, 900])
    assert lo.shape == hi.shape == (5, 3) and np.all(lo <= pred) and np.all(pred <= hi)

