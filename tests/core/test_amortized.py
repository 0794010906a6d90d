"""AmortizedScalingLaws: likelihood gradients, recovery of planted laws, the sign
of c, regression, points without samples, determinism, held-out selection,
save/load."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from pointscale.errors import ConfigError, DataError
from pointscale.laws import AmortizedScalingLaws, FittedScalingLaws, fit_mle
from pointscale.laws import _amortized_core as core

KS = np.array([100, 359, 1000])


# ----------------------------------------------------------------- simulation
def simulate(n_points=1200, n_samples=10, seed=0, flip_rate=0.1):
    """Laws smooth in x (3 features), a flipped-label group with c < 0.

    Written here independently of the package and of the benchmark: σ is set
    so the per-sample signal-to-noise ratio is ~1 at k = 316 (SPEC §1).
    """
    g = np.random.default_rng(seed)
    X = g.normal(size=(n_points, 3))
    flipped = g.random(n_points) < flip_rate
    y = np.where((X[:, 0] > 0) ^ flipped, "pos", "neg").astype(object)
    c = np.where(flipped, -1.0, 1.0) * 0.5 * np.exp(0.4 * X[:, 1])
    alpha = 1.2 + 0.3 * np.tanh(X[:, 0]) + 0.1 * np.tanh(X[:, 2])
    beta = 2.6 + 0.3 * np.tanh(X[:, 2])
    sigma = np.abs(c) * 316.0 ** (beta / 2 - alpha)
    ids = np.array([f"p{i}" for i in range(n_points)], dtype=object)
    point = np.repeat(np.arange(n_points), n_samples)
    k = g.integers(100, 1001, size=point.size)
    delta = c[point] * k ** -alpha[point] + sigma[point] * k ** (-beta[point] / 2) * g.normal(size=point.size)
    samples = pd.DataFrame({"point_id": ids[point], "k": k, "delta": delta})
    return dict(X=X, y=y, ids=ids, c=c, alpha=alpha, sigma=sigma, beta=beta, flipped=flipped,
                samples=samples)


def psi(sim, ks=KS):
    return sim["c"][:, None] * ks[None, :] ** -sim["alpha"][:, None]


def samples_of(sim, mask):
    return sim["samples"][sim["samples"]["point_id"].isin(sim["ids"][mask])]


@pytest.fixture(scope="module")
def sim():
    return simulate()


@pytest.fixture(scope="module")
def new_mask(sim):
    m = np.zeros(len(sim["ids"]), dtype=bool)
    m[::10] = True  # 10 % of the points get no samples at all
    return m


@pytest.fixture(scope="module")
def fitted(sim, new_mask):
    old = ~new_mask
    model = AmortizedScalingLaws(random_state=3)
    return model.fit(sim["X"][old], sim["y"][old], samples_of(sim, old), sim["ids"][old])


@pytest.fixture(scope="module")
def laws(fitted, sim):
    return fitted.predict_laws(sim["X"], sim["y"], sim["ids"])


# -------------------------------------------------------------- the likelihood
@pytest.mark.parametrize("sign", core.SIGN_MODELS)
def test_point_gradient_matches_finite_differences(sign):
    g = np.random.default_rng(1)
    point, k, d = g.integers(0, 4, 60), g.integers(100, 1001, 60), g.normal(size=60)
    k0, scale = core.normalisation(k, d)
    packed = core.pack(point, k, d, 4, k0, scale)
    link = core.Link((0.0, 7.0), (0.0, 7.0), sign)
    u = g.normal(size=(4, link.n_outputs))
    _, G, H = core.point_terms(u, packed, link, need_hess=True)
    num = np.zeros_like(u)
    for i in range(u.shape[0]):
        for j in range(u.shape[1]):
            e = np.zeros_like(u)
            e[i, j] = 1e-6
            f = lambda v: core.point_terms(v, packed, link, need_grad=False)[0].sum()  # noqa: E731
            num[i, j] = (f(u + e) - f(u - e)) / 2e-6
    np.testing.assert_allclose(G, num, rtol=1e-5, atol=1e-6 * np.abs(num).max())
    assert np.all(H >= 0)


def test_curvature_is_the_expected_hessian():
    # Fisher information = E[observed Hessian] at the true parameters: draw many
    # samples from the model, take the numerical Hessian's diagonal, compare.
    g = np.random.default_rng(2)
    link = core.Link((0.0, 7.0), (0.0, 7.0), "signed")
    u = np.array([[0.8, 0.3, -0.2, 0.1]])
    n = 40_000
    L = np.log(g.integers(100, 1001, n) / 316.0)
    alpha, beta, _, _ = link.exponents(u)
    mean = u[0, 0] * np.exp(-alpha[0] * L)
    sd = np.exp(u[0, 2] - beta[0] * L / 2)
    packed = core.Packed(point=np.zeros(n, dtype=np.int64), L=L, d=mean + sd * g.normal(size=n),
                         ptr=np.array([0, n]))
    _, _, H = core.point_terms(u, packed, link, need_hess=True)
    for j in range(4):
        e = np.zeros_like(u)
        e[0, j] = 1e-4
        num = (core.point_terms(u + e, packed, link)[1][0, j]
               - core.point_terms(u - e, packed, link)[1][0, j]) / 2e-4
        # Monte Carlo error of the observed Hessian with 40k samples is < 2 %.
        assert num == pytest.approx(H[0, j], rel=0.05), j


# ------------------------------------------------------------------- recovery
def test_recovers_planted_laws_better_than_per_point_mle(sim, new_mask, laws):
    old = ~new_mask
    truth = psi(sim)[old]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mle = fit_mle(samples_of(sim, old)).subset(sim["ids"][old]).predict(KS)
    amortized = laws.subset(sim["ids"][old]).predict(KS)
    ratio = np.mean((amortized - truth) ** 2, 0) / np.mean((mle - truth) ** 2, 0)
    # Measured 0.03-0.11 at k = 359 and 1000 over model seeds 0-3 (the MLE's
    # squared error at k = 100 is dominated by a few blow-ups, ratio ~0); the
    # issue's target is 0.5; 0.3 leaves room for seed-to-seed spread.
    assert np.all(ratio < 0.3), ratio
    ev = 1 - np.mean((amortized - truth) ** 2, 0) / np.var(truth, 0)
    assert np.all(ev > 0.9), ev  # measured 0.93-0.99
    # alpha itself is recovered where it is identified (|c| well away from 0).
    assert np.corrcoef(laws.alpha[old], sim["alpha"][old])[0, 1] > 0.75  # measured 0.84-0.92


def test_sign_of_c_and_the_negative_group(sim, laws):
    assert np.mean(np.sign(laws.c) == np.sign(sim["c"])) >= 0.97  # measured >= 0.996
    # The flipped group (10 %) is found (measured 0.96-0.99; issue target 0.7).
    assert np.mean(laws.c[sim["flipped"]] < 0) >= 0.9
    p = laws.extra["prob_negative_c"]
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_array_equal(laws.c < 0, p > 0.5)
    assert laws.flags["sign_uncertain"].mean() < 0.1


def test_points_without_samples(sim, new_mask, laws):
    assert laws.estimator == "amortized"
    assert not laws.has_intervals and "none" in laws.meta["intervals"]
    np.testing.assert_array_equal(laws.n_samples, np.where(new_mask, 0, 10))
    np.testing.assert_array_equal(laws.flags["no_samples"], new_mask)
    assert np.all(np.isnan(laws.nll))
    truth = psi(sim)[new_mask]
    pred = laws.subset(sim["ids"][new_mask]).predict(KS)
    ev = 1 - np.mean((pred - truth) ** 2, 0) / np.var(truth, 0)
    assert np.all(ev >= 0.75), ev  # issue target 0.5; measured 0.90-0.99
    assert laws.k_range == (int(sim["samples"]["k"].min()), int(sim["samples"]["k"].max()))


def test_nll_from_given_samples(fitted, sim, new_mask):
    ids = sim["ids"][:50]
    s = samples_of(sim, np.arange(len(sim["ids"])) < 50)
    got = fitted.predict_laws(sim["X"][:50], sim["y"][:50], ids, samples=s)
    row = pd.Index(ids).get_indexer(s["point_id"])
    k, d = s["k"].to_numpy(float), s["delta"].to_numpy()
    var = got.sigma[row] ** 2 * k ** -got.beta[row]
    terms = 0.5 * np.log(2 * np.pi * var) + (d - got.c[row] * k ** -got.alpha[row]) ** 2 / (2 * var)
    expected = np.bincount(row, terms) / np.bincount(row)
    np.testing.assert_allclose(got.nll, expected, rtol=1e-10)
    np.testing.assert_array_equal(got.n_samples, 10)


# ---------------------------------------------------------------- regression
def test_regression_uses_the_target():
    # Targets t = x0 + noise; 10 % are corrupted by +-3 and those points are harmful.
    g = np.random.default_rng(5)
    n = 1200
    X = g.normal(size=(n, 2))
    bad = g.random(n) < 0.1
    t = X[:, 0] + 0.3 * g.normal(size=n) + np.where(bad, 3.0 * np.sign(g.normal(size=n)), 0.0)
    c = np.where(bad, -1.0, 1.0) * 0.4 * np.exp(0.3 * X[:, 1])
    alpha = 1.3 + 0.2 * np.tanh(X[:, 1])
    beta = np.full(n, 2.8)
    sigma = np.abs(c) * 316.0 ** (beta / 2 - alpha)
    point = np.repeat(np.arange(n), 10)
    k = g.integers(100, 1001, point.size)
    delta = c[point] * k ** -alpha[point] + sigma[point] * k ** (-beta[point] / 2) * g.normal(size=point.size)
    samples = pd.DataFrame({"point_id": point, "k": k, "delta": delta})
    model = AmortizedScalingLaws(random_state=0).fit(X, t, samples)
    assert model.task_ == "regression" and model.classes_ is None
    laws = model.predict_laws(X, t)
    assert np.mean(np.sign(laws.c) == np.sign(c)) >= 0.9
    assert np.mean(laws.c[bad] < 0) >= 0.6
    # Counterfactual: the same features with a clean target are predicted helpful.
    clean = model.predict_laws(X[bad], X[bad, 0])
    assert np.mean(clean.c > 0) >= 0.8


# ------------------------------------------------------- determinism, selection
def _small_fit(sim, **kw):
    mask = np.arange(len(sim["ids"])) < 600
    params = dict(random_state=11, max_iter=40)
    params.update(kw)
    return AmortizedScalingLaws(**params).fit(sim["X"][mask], sim["y"][mask], samples_of(sim, mask),
                                              sim["ids"][mask])


def test_deterministic_for_a_seed_and_independent_of_row_order(sim):
    a = _small_fit(sim).predict_laws(sim["X"], sim["y"], sim["ids"])
    b = _small_fit(sim).predict_laws(sim["X"], sim["y"], sim["ids"])
    np.testing.assert_array_equal(a.c, b.c)
    np.testing.assert_array_equal(a.alpha, b.alpha)
    np.testing.assert_array_equal(a.sigma, b.sigma)
    other = _small_fit(sim, random_state=12).predict_laws(sim["X"], sim["y"], sim["ids"])
    assert not np.allclose(a.c, other.c)
    # Rows and samples shuffled: same held-out points, same model (up to
    # floating-point summation order in the feature scaling).
    mask = np.arange(len(sim["ids"])) < 600
    perm = np.random.default_rng(0).permutation(600)
    s = samples_of(sim, mask).sample(frac=1.0, random_state=1)
    m1 = _small_fit(sim)
    m2 = AmortizedScalingLaws(random_state=11, max_iter=40).fit(
        sim["X"][:600][perm], sim["y"][:600][perm], s, sim["ids"][:600][perm])
    assert set(m1.validation_point_ids_) == set(m2.validation_point_ids_)
    c2 = m2.predict_laws(sim["X"], sim["y"], sim["ids"]).c
    np.testing.assert_allclose(a.c, c2, rtol=1e-6, atol=1e-9)


def test_model_selection_on_held_out_points(sim):
    model = _small_fit(sim, sign_model="signed", max_iter=500)
    val = set(model.validation_point_ids_)
    have = set(model.train_point_ids_)
    assert val < have
    assert abs(len(val) - 0.2 * len(have)) <= 1
    assert model.fit_meta_["n_samples_held_out"] == 10 * len(val)  # all samples of a held-out point
    curve = np.asarray(model.validation_curve_)
    assert model.best_iteration_ == int(np.argmin(curve)) + 1
    assert len(curve) < 500  # stopped early
    # The selection metric is exactly the NLL of the held-out points' samples
    # under the model's laws: in original units it differs by log(scale).
    ids = np.asarray(sorted(val, key=str), dtype=object)
    rows = pd.Index(sim["ids"]).get_indexer(ids)
    s = sim["samples"][sim["samples"]["point_id"].isin(val)]
    laws = model.predict_laws(sim["X"][rows], sim["y"][rows], ids, samples=s)
    pooled = float(np.sum(laws.nll * laws.n_samples) / laws.n_samples.sum())
    assert pooled == pytest.approx(model.validation_nll_ + np.log(model.delta_scale_), abs=1e-9)


def test_held_out_samples_never_reach_training(sim):
    # Scramble the deltas of the held-out points: if they (or their scale)
    # reached training, the training loss would change; only the held-out
    # curve may. (The held-out curve does steer the learning-rate halvings and
    # the choice of settings, so patience is set beyond max_iter and the
    # settings are fixed here.)
    fixed = dict(alpha_prior=1.0, hidden_layer_sizes=(128, 128))
    a = _small_fit(sim, max_iter=30, n_iter_no_change=100, **fixed)
    mask = np.arange(len(sim["ids"])) < 600
    s = samples_of(sim, mask).copy()
    held = s["point_id"].isin(a.validation_point_ids_)
    s.loc[held, "delta"] = -3.0 * s.loc[held, "delta"].to_numpy()[::-1]
    b = AmortizedScalingLaws(random_state=11, max_iter=30, n_iter_no_change=100, **fixed).fit(
        sim["X"][mask], sim["y"][mask], s, sim["ids"][mask])
    assert set(b.validation_point_ids_) == set(a.validation_point_ids_)
    assert len(a.loss_curve_) == len(b.loss_curve_) == 30
    np.testing.assert_array_equal(a.loss_curve_, b.loss_curve_)
    assert not np.allclose(a.validation_curve_, b.validation_curve_)


def test_auto_settings_are_chosen_by_held_out_point_likelihood(sim):
    # Issue 12 item 5: the alpha prior (and width) are chosen by the held-out
    # points' likelihood on the data being fitted. Every grid setting is
    # recorded with its held-out NLL; the model kept is the best of them, and
    # refitting with that setting fixed reproduces it exactly.
    a = _small_fit(sim, max_iter=15)
    grid = a.selection_
    assert len(grid) == 6
    best = min(grid, key=lambda g: g["heldout_nll"])
    assert a.alpha_prior_ == best["alpha_prior"]
    assert list(a.hidden_layer_sizes_) == best["hidden_layer_sizes"]
    assert a.validation_nll_ == pytest.approx(best["heldout_nll"], abs=0)
    b = _small_fit(sim, max_iter=15, alpha_prior=a.alpha_prior_, hidden_layer_sizes=a.hidden_layer_sizes_)
    assert b.validation_nll_ == a.validation_nll_


# --------------------------------------------------------------------- files
@pytest.mark.parametrize("learner", ["mlp", "xgboost"])
def test_save_load_round_trip(tmp_path, sim, fitted, learner):
    if learner == "mlp":
        model = fitted
    else:
        model = _small_fit(sim, learner="xgboost", max_iter=60)
    path = model.save(tmp_path / "model")
    names = {p.name for p in path.iterdir()}
    assert names == {"amortized.json", "mlp.npz" if learner == "mlp" else "xgboost.json"}
    json.loads((path / "amortized.json").read_text())  # plain JSON
    if learner == "mlp":
        np.load(path / "mlp.npz", allow_pickle=False).close()  # no pickled objects
    loaded = AmortizedScalingLaws.load(path)
    assert loaded.get_params() == model.get_params()
    a = model.predict_laws(sim["X"], sim["y"], sim["ids"])
    b = loaded.predict_laws(sim["X"], sim["y"], sim["ids"])
    for name in ("c", "alpha", "sigma", "beta", "n_samples"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert list(loaded.validation_point_ids_) == list(model.validation_point_ids_)
    # The laws table itself round-trips through FittedScalingLaws.save/load.
    table = FittedScalingLaws.load(a.save(tmp_path / "laws.parquet"))
    np.testing.assert_array_equal(table.c, a.c)


def test_xgboost_learner_learns_the_sign(sim):
    model = _small_fit(sim, learner="xgboost", max_iter=300)
    laws = model.predict_laws(sim["X"][:600], sim["y"][:600], sim["ids"][:600])
    assert np.mean(np.sign(laws.c) == np.sign(sim["c"][:600])) >= 0.85
    assert model.best_iteration_ == int(np.argmin(model.validation_curve_)) + 1


def test_alpha_prior_is_applied(sim):
    # An overwhelming prior pins alpha at 1; none lets it follow the data.
    pinned = _small_fit(sim, alpha_prior=1e4, max_iter=20).predict_laws(sim["X"], sim["y"])
    free = _small_fit(sim, alpha_prior=0.0, max_iter=20).predict_laws(sim["X"], sim["y"])
    assert np.max(np.abs(pinned.alpha - 1.0)) < 0.05
    assert np.std(free.alpha) > 0.1


# ---------------------------------------------------------------- validation
def test_sklearn_contract():
    model = AmortizedScalingLaws(hidden_layer_sizes=(8,), random_state=4)
    assert not [k for k in vars(model) if k.endswith("_")]
    assert clone(model).get_params() == model.get_params()
    with pytest.raises(NotFittedError):
        model.predict_laws(np.zeros((2, 3)), np.array([0, 1]))


def test_failed_rows_are_dropped_and_counted(sim):
    mask = np.arange(len(sim["ids"])) < 200
    s = samples_of(sim, mask).copy()
    s["failed"] = False
    s.iloc[:7, s.columns.get_loc("failed")] = True
    s.iloc[7:10, s.columns.get_loc("delta")] = np.nan
    model = AmortizedScalingLaws(max_iter=3).fit(sim["X"][mask], sim["y"][mask], s, sim["ids"][mask])
    assert model.fit_meta_["n_dropped_failed"] == 7
    assert model.fit_meta_["n_dropped_nonfinite"] == 3
    assert model.fit_meta_["n_samples_used"] == len(s) - 10


def test_errors_name_the_problem(sim):
    mask = np.arange(len(sim["ids"])) < 200
    X, y, ids, s = sim["X"][mask], sim["y"][mask], sim["ids"][mask], samples_of(sim, mask)
    with pytest.raises(DataError, match="not in point_ids"):
        AmortizedScalingLaws().fit(X[:100], y[:100], s, ids[:100])
    with pytest.raises(DataError, match="at least 10"):
        AmortizedScalingLaws().fit(X, y, s[s["point_id"].isin(ids[:5])], ids)
    with pytest.raises(ConfigError, match="learner"):
        AmortizedScalingLaws(learner="svm").fit(X, y, s, ids)
    with pytest.raises(ConfigError, match="validation_fraction"):
        AmortizedScalingLaws(validation_fraction=0.0).fit(X, y, s, ids)
    with pytest.raises(DataError, match="not unique"):
        AmortizedScalingLaws().fit(X, y, s, np.r_[ids[:-1], ids[:1]])
    model = AmortizedScalingLaws(max_iter=2).fit(X, y, s, ids)
    with pytest.raises(DataError, match="not seen in fit"):
        model.predict_laws(X[:3], np.array(["pos", "maybe", "neg"], dtype=object))
    with pytest.raises(DataError, match="features"):
        model.predict_laws(X[:3, :2], y[:3])
