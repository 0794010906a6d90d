"""Values from laws, the Monte Carlo baseline, evaluation metrics and selection."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import zeta

from pointscale.errors import ConfigError, DataError
from pointscale.io import atomic_write_parquet
from pointscale.laws.power import power_mean
from pointscale.laws.result import FittedScalingLaws
from pointscale.valuation import (
    distributional_shapley,
    empirical_psi,
    evaluate_estimates,
    grid_shapley,
    monte_carlo_values,
    select_points,
    value_at,
    values_table,
)


def make_laws(c, alpha, *, ids=None, estimator="mle", k_range=(100, 1000), cov=None, **kw):
    c = np.asarray(c, dtype=float)
    n = c.size
    ids = np.array([f"p{i}" for i in range(n)], dtype=object) if ids is None else np.asarray(ids, dtype=object)
    extra = {}
    if cov is not None:
        extra = {"var_c": np.full(n, cov[0]), "var_alpha": np.full(n, cov[1]), "cov_c_alpha": np.full(n, cov[2])}
    return FittedScalingLaws(
        point_ids=ids, c=c, alpha=np.asarray(alpha, dtype=float), sigma=np.ones(n), beta=np.full(n, 2.0),
        nll=np.zeros(n), n_samples=np.full(n, 50), estimator=estimator, k_range=k_range, extra=extra, **kw,
    )


# --------------------------------------------------------------------------- formulas

ALPHAS = np.array([-0.5, 0.0, 0.5, 1.0, 1.0 + 1e-9, 1.33, 2.0, 7.3])


def brute_mean(alpha: float, lo: int, hi: int) -> float:
    return math.fsum(k ** (-alpha) for k in range(lo, hi + 1)) / (hi - lo + 1)


@pytest.mark.parametrize("lo,hi", [(1, 1), (7, 7), (100, 1000), (1, 2047), (3, 6000), (1500, 40000)])
def test_power_mean_matches_brute_force_loop(lo, hi):
    # (3, 6000) and (1500, 40000) exercise the Euler–Maclaurin tail; the loop is exact.
    got = power_mean(ALPHAS, lo, hi)
    want = np.array([brute_mean(a, lo, hi) for a in ALPHAS])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_power_mean_matches_hurwitz_zeta_closed_form_on_huge_range():
    # Far beyond any loop: ν needs ζ(α, k_min) − ζ(α, k_max + 1) for α > 1.
    a = np.array([1.2, 1.5, 2.0, 3.0, 7.0])
    lo, hi = 10, 10**9
    want = (zeta(a, lo) - zeta(a, hi + 1)) / (hi - lo + 1)
    np.testing.assert_allclose(power_mean(a, lo, hi), want, rtol=1e-11)


def test_shapley_is_c_times_power_mean_and_handles_zero_and_nan():
    laws = make_laws([0.5, -2.0, 0.0, np.nan, 1.0], [1.3, 0.8, np.nan, 1.0, np.nan])
    v = distributional_shapley(laws, 100, 1000)
    assert v.value[0] == pytest.approx(0.5 * brute_mean(1.3, 100, 1000), rel=1e-12)
    assert v.value[1] == pytest.approx(-2.0 * brute_mean(0.8, 100, 1000), rel=1e-12)
    assert v.value[2] == 0.0  # c = 0: worthless whatever α
    assert np.isnan(v.value[3]) and np.isnan(v.value[4])
    assert not v.has_intervals and "covariance" in v.note
    s = v.to_series()
    assert list(s.index) == list(laws.point_ids)


@pytest.mark.parametrize("lo,hi", [(0, 10), (10, 9), (2.5, 10)])
def test_shapley_rejects_bad_ranges(lo, hi):
    with pytest.raises(ConfigError):
        distributional_shapley(make_laws([1.0], [1.0]), lo, hi)


def test_shapley_interval_matches_monte_carlo_propagation_of_the_covariance():
    # Independent check of the delta method: draw (c, α) from the covariance,
    # compute ν exactly for each draw, compare the spread with the interval.
    c0, a0 = 0.4, 1.3
    cov = (0.004, 0.0009, 0.0015)  # corr ≈ 0.79, small enough for the delta method
    laws = make_laws([c0], [a0], cov=cov)
    v = distributional_shapley(laws, 100, 1000)
    g = np.random.default_rng(1)
    draws = g.multivariate_normal([c0, a0], [[cov[0], cov[2]], [cov[2], cov[1]]], size=20000)
    nu = draws[:, 0] * power_mean(draws[:, 1], 100, 1000)
    half = (v.high[0] - v.low[0]) / 2
    assert half / 1.959964 == pytest.approx(nu.std(), rel=0.05)
    # and the interval of the mean is narrower than the mean of ψ_k interval widths
    lo_k, hi_k = laws.predict_interval(np.arange(100, 1001))
    assert half < np.mean((hi_k - lo_k) / 2)


def test_shapley_intervals_cover_the_truth_on_simulated_data():
    from pointscale.laws import fit_mle
    from pointscale.laws.simulate import draw_parameters, simulate_samples

    params = draw_parameters(500, seed=11, snr=1.0)
    samples = simulate_samples(params, 80, seed=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        laws = fit_mle(samples)
    v = distributional_shapley(laws, 100, 1000)
    assert v.has_intervals
    truth = params["c"].to_numpy() * power_mean(params["alpha"].to_numpy(), 100, 1000)
    ok = np.isfinite(v.low)
    covered = np.mean((v.low[ok] <= truth[ok]) & (truth[ok] <= v.high[ok]))
    # 95 % nominal; asymptotic intervals at 80 samples: accept 90–99 % (STYLE).
    assert 0.90 <= covered <= 0.99, covered
    assert ok.mean() > 0.95


def test_value_at_flags_extrapolation_and_matches_law():
    laws = make_laws([0.5, -1.0], [1.2, 0.7], k_range=(100, 1000), cov=(1e-3, 1e-3, 0.0))
    sv = value_at(laws, [50, 100, 500, 1000, 1001, 10_000])
    np.testing.assert_array_equal(sv.extrapolated, [True, False, False, False, True, True])
    ks = np.array([50, 100, 500, 1000, 1001, 10_000], dtype=float)
    np.testing.assert_allclose(sv.value, np.array([[0.5], [-1.0]]) * ks ** -np.array([[1.2], [0.7]]))
    assert sv.has_intervals and np.all(sv.low <= sv.value) and np.all(sv.value <= sv.high)
    frame = sv.to_frame()
    assert {"value_at_50", "extrapolated_50", "value_at_10000_low", "extrapolated_1000"} <= set(frame.columns)
    assert frame["extrapolated_10000"].all() and not frame["extrapolated_1000"].any()
    # an explicit range overrides the laws', and no range means nothing is flagged
    assert value_at(laws, 50, k_range=(10, 60)).extrapolated.tolist() == [False]
    no_range = make_laws([1.0], [1.0], k_range=None)
    assert not value_at(no_range, [1, 10**6]).extrapolated.any()
    with pytest.raises(ConfigError):
        value_at(laws, [0, 10])


# --------------------------------------------------------------------------- Monte Carlo, ground truth


def test_monte_carlo_values_drop_failed_rows():
    s = pd.DataFrame({
        "point_id": ["a", "a", "a", "a", "b", "b"],
        "k": [10, 20, 30, 40, 10, 20],
        "delta": [1.0, 3.0, 100.0, np.nan, -2.0, 5.0],
        "failed": [False, False, True, False, False, False],
    })
    mc = monte_carlo_values(s)
    assert mc.loc["a", "mc_mean"] == 2.0 and mc.loc["a", "mc_n"] == 2
    assert mc.loc["a", "mc_se"] == pytest.approx(np.std([1, 3], ddof=1) / np.sqrt(2))
    assert mc.loc["b", "mc_mean"] == 1.5
    assert monte_carlo_values(s, k_max=10).loc["b", "mc_mean"] == -2.0
    with pytest.raises(DataError):
        monte_carlo_values(s.drop(columns="delta"))


def test_empirical_psi_and_grid_shapley():
    s = pd.DataFrame({"point_id": ["a"] * 4 + ["b"] * 2, "k": [10, 10, 20, 30, 10, 30],
                      "delta": [1.0, 3.0, 4.0, 6.0, 1.0, 1.0]})
    psi = empirical_psi(s)
    assert list(psi.columns) == [10, 20, 30]
    assert psi.loc["a"].tolist() == [2.0, 4.0, 6.0] and np.isnan(psi.loc["b", 20])
    # ψ linear in k is reproduced exactly by linear interpolation: mean over 10..30 is 4.
    assert grid_shapley(psi.loc[["a"]], 10, 30).iloc[0] == pytest.approx(4.0)
    # on the grid 1..5, the mean of the integers is the plain mean
    dense = pd.DataFrame([[1.0, 4.0, 9.0, 16.0, 25.0]], columns=[1, 2, 3, 4, 5])
    assert grid_shapley(dense, 2, 4).iloc[0] == pytest.approx(29 / 3)
    with pytest.raises(ConfigError):
        grid_shapley(psi, 5, 30)  # outside the grid


# --------------------------------------------------------------------------- values table


class _Data:
    def __init__(self, n):
        self.point_ids = np.array([f"p{i}" for i in range(n)], dtype=object)
        self.y_train = np.arange(n) % 2
        self.classes = np.array(["benign", "malignant"], dtype=object)
        self.n_pool = n
        self.name = "toy"


def test_values_table_combines_mle_and_amortized(tmp_path):
    data = _Data(6)
    mle = make_laws([0.5, np.nan, -0.2], [1.1, np.nan, 0.9], ids=["p4", "p1", "p2"],
                    cov=(1e-3, 1e-3, 0.0), k_range=(10, 100),
                    flags={"poor_fit": np.array([True, False, False])})
    amort = make_laws([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [1.0] * 6, ids=data.point_ids, estimator="amortized",
                      k_range=(10, 100))
    samples = pd.DataFrame({"point_id": ["p4", "p4", "p2"], "k": [10, 50, 20], "delta": [0.1, 0.3, -0.1]})
    t = values_table(mle, data, k_min=10, k_max=100, samples=samples, amortized=amort)
    assert t["point_id"].tolist() == list(data.point_ids)  # pool order
    est = dict(zip(t["point_id"], t["estimator"]))
    assert est == {"p0": "amortized", "p1": "amortized", "p2": "mle", "p3": "amortized",
                   "p4": "mle", "p5": "amortized"}
    row = t.set_index("point_id")
    assert row.loc["p4", "shapley"] == pytest.approx(0.5 * brute_mean(1.1, 10, 100))
    assert row.loc["p1", "shapley"] == pytest.approx(0.2 * brute_mean(1.0, 10, 100))
    assert row.loc["p2", "negative_c"] and not row.loc["p4", "negative_c"]
    # default target sizes: pool size (6, below the sampled range) and 10× (60, inside)
    assert row.loc["p4", "value_at_6"] == pytest.approx(0.5 * 6 ** -1.1)
    assert row["extrapolated_6"].all() and not row["extrapolated_60"].any()
    # intervals only where the source has them
    assert np.isfinite(row.loc["p4", "shapley_low"]) and np.isnan(row.loc["p0", "shapley_low"])
    assert row.loc["p4", "label"] == "benign" and row.loc["p4", "label_code"] == 0
    assert row.loc["p3", "label"] == "malignant" and row.loc["p0", "label"] == "benign"
    # the MLE flag applies to MLE rows only (NA elsewhere)
    assert bool(row.loc["p4", "flag_poor_fit"]) and row["flag_poor_fit"].isna().sum() == 4
    assert row.loc["p4", "mc_mean"] == pytest.approx(0.2) and row.loc["p0", "mc_n"] == 0
    assert row.loc["p4", "rank"] == t["shapley"].rank(ascending=False).loc[4]
    atomic_write_parquet(tmp_path / "values.parquet", t)
    back = pd.read_parquet(tmp_path / "values.parquet")
    assert back.shape == t.shape


def test_values_table_without_amortized_keeps_failed_fits_as_nan():
    data = _Data(3)
    mle = make_laws([0.5, np.nan], [1.1, np.nan], ids=["p0", "p2"])
    t = values_table(mle, data, k_min=100, k_max=1000, target_sizes=[1000])
    assert t["estimator"].tolist() == ["mle", "none"]
    assert np.isnan(t["shapley"].iloc[1]) and "value_at_1000" in t.columns
    with pytest.raises(DataError):
        values_table(make_laws([1.0], [1.0], ids=["zz"]), data, k_min=1, k_max=2)


# --------------------------------------------------------------------------- evaluation


def test_evaluation_metrics_against_hand_computed_cases():
    truth = pd.Series([1.0, 2.0, 3.0, 4.0], index=list("abcd"))
    est = pd.Series([1.0, 2.0, 3.0, 5.0], index=list("abcd"))
    r = evaluate_estimates(est, truth).iloc[0]
    # MSE = 1/4, Var(truth) = 1.25 (ddof 0): EV = 1 − 0.25/1.25
    assert r["explained_variance"] == pytest.approx(0.8)
    assert r["mse"] == pytest.approx(0.25)
    assert r["spearman"] == pytest.approx(1.0)
    # Pearson by hand: deviations t=(-1.5,-.5,.5,1.5), e=(-1.75,-.75,.25,2.25)
    te, ee = np.array([-1.5, -0.5, 0.5, 1.5]), np.array([-1.75, -0.75, 0.25, 2.25])
    assert r["pearson"] == pytest.approx((te @ ee) / np.sqrt((te @ te) * (ee @ ee)))
    assert r["sign_agreement"] == 1.0
    # the constant mean explains nothing; ties use average ranks
    assert evaluate_estimates(pd.Series(2.5, index=list("abcd")), truth)["explained_variance"].iloc[0] == 0.0
    tie = evaluate_estimates(pd.Series([1.0, 1.0, 2.0]), pd.Series([1.0, 2.0, 3.0])).iloc[0]
    assert tie["spearman"] == pytest.approx(1.5 / np.sqrt(3.0))
    signs = evaluate_estimates(pd.Series([1.0, 2.0, 3.0, -4.0]), pd.Series([-1.0, 2.0, 3.0, -4.0])).iloc[0]
    assert signs["sign_agreement"] == 0.75


def test_evaluation_per_size_and_methods_drop_nan_pairs():
    truth = pd.DataFrame({100: [1.0, 2.0, 3.0], 200: [0.5, 1.0, 1.5], "shapley": [1.0, 2.0, 4.0]},
                         index=["a", "b", "c"])
    good = truth.copy()
    bad = truth.copy()
    bad.loc["a", 100] = np.nan
    bad[200] = [1.5, 1.0, 0.5]
    out = evaluate_estimates({"perfect": good, "worse": bad.rename(columns={100: 100.0})}, truth)
    assert out["target"].tolist() == ["100", "200", "shapley"] * 2
    p = out[out["method"] == "perfect"]
    assert (p["explained_variance"] == 1.0).all()
    w = out[out["method"] == "worse"].set_index("target")
    assert w.loc["100", "n_points"] == 2 and w.loc["100", "n_dropped"] == 1
    assert w.loc["200", "pearson"] == pytest.approx(-1.0)
    # EV of the reversed line: MSE = (1 + 0 + 1)/3, Var = 1/6
    assert w.loc["200", "explained_variance"] == pytest.approx(1 - (2 / 3) / (1 / 6))
    with pytest.raises(DataError):
        evaluate_estimates(good[[100]], truth[[200]])


# --------------------------------------------------------------------------- selection


def test_selection_ranks_by_value_at_the_current_size():
    # A: large c, steep decay (valuable in small datasets); B: small c, slow decay.
    laws = make_laws([2.0, 0.1], [2.0, 0.5], ids=["A", "B"])
    small, large = 5, 10_000
    psi = laws.predict(small, warn_extrapolation=False)[:, 0]
    assert psi[0] > psi[1]
    assert select_points(laws, small, 1)["point_id"].tolist() == ["A"]
    assert select_points(laws, large, 1)["point_id"].tolist() == ["B"]


def test_selection_balance_exclusion_and_nan():
    n = 20
    # class 0 holds the ten most valuable points
    labels = np.array([0] * 10 + [1] * 10)
    c = np.concatenate([np.linspace(2, 1.1, 10), np.linspace(1, 0.1, 10)])
    c[3] = np.nan
    laws = make_laws(c, np.ones(n))
    sel = select_points(laws, 100, 10, labels=labels)
    assert sel["label"].tolist().count(0) == 5 and sel["label"].tolist().count(1) == 5
    assert sel["rank"].tolist() == list(range(1, 11))
    assert np.all(np.diff(sel["predicted_value"].to_numpy()) <= 0)
    assert "p3" not in set(sel["point_id"])  # NaN never chosen
    assert set(sel[sel["label"] == 1]["point_id"]) == {f"p{i}" for i in range(10, 15)}
    # odd m: 3 + 3, the 7th slot goes to the best remaining point (class 0)
    assert select_points(laws, 100, 7, labels=labels)["label"].tolist().count(0) == 4
    # unbalanced: the plain top m
    top = select_points(laws, 100, 10, labels=labels, balanced=False)
    assert set(top["point_id"]) == {f"p{i}" for i in list(range(10)) + [10] if i != 3}
    # exclusion, and a class too small for its quota (only 2 of class 1 left)
    excl = [f"p{i}" for i in range(10, 18)] + ["p0"]
    sel = select_points(laws, 100, 10, labels=labels, exclude=excl)
    assert not set(sel["point_id"]) & set(excl)
    assert sel["label"].tolist().count(1) == 2 and len(sel) == 10
    # labels by mapping
    sel = select_points(laws, 100, 2, labels=dict(zip(laws.point_ids, labels)))
    assert sorted(sel["label"]) == [0, 1]
    with pytest.raises(ConfigError):
        select_points(laws, 100, 20, labels=labels)  # only 19 finite
    with pytest.raises(ConfigError):
        select_points(laws, 100, 2, labels=labels[:5])
