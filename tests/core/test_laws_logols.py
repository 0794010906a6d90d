"""fit_log_ols: the paper's log-space baseline on staggered data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pointscale.errors import PointscaleError
from pointscale.laws import fit_log_ols
from pointscale.laws.simulate import STAGGERED_SIZES, draw_parameters, simulate_samples


@pytest.fixture(scope="module")
def staggered():
    params = draw_parameters(200, seed=201)
    # 200 samples at each of the 10 validation sizes (the paper used 1000).
    samples = simulate_samples(params, 200, seed=202, sizes=STAGGERED_SIZES)
    return params, samples, fit_log_ols(samples)


def test_matches_the_papers_procedure_point_by_point(staggered):
    # The paper's LogEstimator, written out with numpy for a few points:
    # polyfit of log10(|mean|+1e-12) on -log10 k, R^2 of that fit, then
    # c = argmin sum (delta - c k^-alpha)^2.
    _, samples, fit = staggered
    for i in (0, 17, 123):
        rows = samples[samples["point_id"] == fit.point_ids[i]]
        d, k = rows["delta"].to_numpy(), rows["k"].to_numpy(float)
        ks = np.unique(k)
        ly = np.array([np.log10(abs(d[k == s].mean()) + 1e-12) for s in ks])
        slope, intercept = np.polyfit(-np.log10(ks), ly, 1)
        pred = slope * -np.log10(ks) + intercept
        r2 = 1 - ((ly - pred) ** 2).sum() / ((ly - ly.mean()) ** 2).sum()
        m = k**-slope
        c = (d * m).sum() / (m * m).sum()
        assert fit.alpha[i] == pytest.approx(slope, abs=1e-10)
        assert fit.extra["r2"][i] == pytest.approx(r2, abs=1e-10)
        assert fit.c[i] == pytest.approx(c, rel=1e-9)


def test_recovers_planted_laws(staggered):
    params, _, fit = staggered
    # With 200 samples per size and SNR 1 per sample, the mean at each size
    # has SNR ~14, so |mean| is a few percent off psi_k and the log-log slope
    # error is a few hundredths; 0.1 for the median error leaves room and a
    # wrong slope sign or a natural-log/log10 mix-up would be off by > 0.3.
    err = np.abs(fit.alpha - params["alpha"].to_numpy())
    assert np.median(err) < 0.1
    assert np.all(np.sign(fit.c) == np.sign(params["c"].to_numpy()))
    assert np.median(fit.extra["r2"]) > 0.9
    # sigma, beta from the bias-corrected log variances (199 d.o.f. per size):
    # beta's SE is ~0.05 here; 0.15 median error catches a missing sign or scale.
    assert np.median(np.abs(fit.beta - params["beta"].to_numpy())) < 0.15
    assert np.median(np.abs(np.log(fit.sigma / params["sigma"].to_numpy()))) < 0.3
    assert np.all(np.isfinite(fit.nll))
    assert fit.estimator == "log_ols" and not fit.has_intervals


def test_flags_noise_points_and_too_few_sizes():
    params = draw_parameters(40, seed=211).assign(c=0.0)
    noise = simulate_samples(params, 20, seed=212, sizes=STAGGERED_SIZES)
    few = pd.DataFrame({"point_id": "few", "k": [100, 100, 200, 200], "delta": [1.0, 1.1, 0.5, 0.6]})
    fit = fit_log_ols(pd.concat([noise, few], ignore_index=True))
    frame = fit.to_frame().set_index("point_id")
    assert frame.loc["few", "too_few_samples"] and np.isnan(frame.loc["few", "alpha"])
    pure = frame.drop(index="few")
    # Means of pure noise: log |mean| does not follow a line, signs flip.
    assert pure["poor_fit"].mean() > 0.7
    assert pure["sign_changes"].mean() > 0.7


def test_random_design_has_no_noise_model_and_says_so():
    samples = simulate_samples(draw_parameters(5, seed=221), 50, seed=222)
    # Make every size distinct so that no size has two samples.
    samples = samples.assign(k=np.arange(len(samples)) % 900 + 100)
    fit = fit_log_ols(samples)
    assert np.all(np.isnan(fit.sigma)) and np.all(np.isnan(fit.nll))
    assert fit.meta["n_without_noise_model"] == 5
    assert "NaN" in fit.meta["noise_model"]
    with pytest.raises(PointscaleError, match="log_ols"):
        fit.predict_interval([300])
