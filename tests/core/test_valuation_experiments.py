"""Point addition, removal curves and the noisy-label check on bundled data."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from pointscale.data import load_dataset
from pointscale.errors import ConfigError, DegenerateExperimentError
from pointscale.laws.result import FittedScalingLaws
from pointscale.valuation import (
    flip_labels,
    noisy_label_check,
    point_addition_experiment,
    removal_curve,
)


@pytest.fixture(scope="module")
def wide():
    """A synthetic binary task with a 600-row test split (breast_cancer's 113 rows are refused)."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=2400, n_features=8, n_informative=5, flip_y=0.05, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)]).assign(y=y)
    return load_dataset("synthetic", frame=frame, target="y", val_size=300, test_size=600)


def planted_laws(ids, c, alpha=1.0, k_range=(20, 150)):
    n = len(ids)
    return FittedScalingLaws(
        point_ids=np.asarray(ids, dtype=object), c=np.asarray(c, dtype=float),
        alpha=np.broadcast_to(np.asarray(alpha, dtype=float), (n,)).copy(), sigma=np.ones(n),
        beta=np.full(n, 2.0), nll=np.zeros(n), n_samples=np.full(n, 30), estimator="mle", k_range=k_range,
    )


def test_flip_labels(cancer):
    ids = cancer.point_ids[:100]
    noisy, flipped = flip_labels(cancer, ids, 0.2, seed=3)
    assert len(flipped) == 20 and set(flipped) <= set(ids)
    changed = cancer.point_ids[np.asarray(noisy.y_train) != np.asarray(cancer.y_train)]
    assert set(changed) == set(flipped)
    assert noisy.fingerprint != cancer.fingerprint and noisy.path is None
    again, flipped2 = flip_labels(cancer, ids, 0.2, seed=3)
    assert list(flipped2) == list(flipped) and again.fingerprint == noisy.fingerprint
    with pytest.raises(ConfigError):
        flip_labels(load_dataset("diabetes"), load_dataset("diabetes").point_ids[:10], 0.2)


def test_point_addition_law_rankings_beat_random_when_the_laws_are_right(wide):
    # Plant laws that are *right*: half of the candidates get flipped labels and
    # a negative c, the clean ones a positive c. Every law-based ranking then
    # adds clean points only, random adds ~50 % mislabelled ones.
    cand = wide.point_ids[:120]
    noisy, flipped = flip_labels(wide, cand, 0.5, seed=0)
    bad = np.isin(cand, flipped)
    c = np.where(bad, -1.0, 1.0)
    laws = planted_laws(cand, c)
    res = point_addition_experiment(noisy, laws, n_small=20, n_large=120, m=30, repeats=4,
                                    candidates=list(cand), seed=1)
    s = res.summary.set_index(["regime", "ranking"])
    assert len(res.summary) == 8 and (res.summary["n_repeats"] == 4).all()
    assert not res.refused
    assert set(res.selections["point_id"]) <= set(cand[~bad])
    # balanced: 15 per class in every law-based selection
    for _, sel in res.selections.groupby("ranking"):
        assert sel["label"].value_counts().tolist() == [15, 15]
    for regime in ("small", "large"):
        for ranking in ("size_small", "size_large", "shapley"):
            # 15 of 30 random picks are mislabelled: > 1 pp of accuracy at n = 120 (600 test rows)
            assert s.loc[(regime, ranking), "mean_gain_vs_random"] > 0.01, (regime, ranking)
    t = res.trials
    np.testing.assert_allclose(t["gain"], t["score"] - t["base_score"])
    # paired design: one base score per (regime, repeat)
    assert t.groupby(["regime", "repeat"])["base_score"].nunique().max() == 1
    # different initial sets in different repeats: base scores are not all equal
    assert t[t["regime"] == "large"]["base_score"].nunique() > 1
    # deterministic
    res2 = point_addition_experiment(noisy, laws, n_small=20, n_large=120, m=30, repeats=4,
                                     candidates=list(cand), seed=1)
    pd.testing.assert_frame_equal(res.trials, res2.trials)


def test_point_addition_outcome_is_test_accuracy_whatever_the_utility(wide):
    # The outcome is recomputed independently: sklearn's accuracy_score of the
    # same model trained on the same rows, scored on the test split.
    from sklearn.metrics import accuracy_score

    from pointscale.sampling.models import make_estimator
    from pointscale.seeding import STREAM_MODEL, STREAM_SELECTION, int_seed, rng
    from pointscale.valuation.experiments import _stratified

    cand = wide.point_ids[:60]
    laws = planted_laws(cand, np.linspace(-1, 1, 60))
    res = point_addition_experiment(wide, laws, n_small=30, n_large=200, m=10, repeats=2,
                                    candidates=list(cand), seed=2)
    assert res.settings["metric"] == "accuracy" and set(res.summary["metric"]) == {"accuracy"}
    assert "test accuracy in pp" in str(res)
    rest = np.setdiff1d(np.arange(wide.n_pool), wide.index_of(list(cand)))
    base = _stratified(rng(2, STREAM_SELECTION, "initial", "small", 0), rest,
                       np.asarray(wide.y_train)[rest].astype(np.int64), 30)
    est = make_estimator("logreg", "classification", int_seed(2, STREAM_MODEL, "addition", "small", 0), None)
    est.fit(np.asarray(wide.X_train)[base], np.asarray(wide.y_train)[base])
    expected = accuracy_score(wide.y_test, est.predict(wide.X_test))
    got = res.trials.query("regime == 'small' and repeat == 0")["base_score"].iloc[0]
    assert got == pytest.approx(expected, abs=1e-12)
    # a score that is a multiple of 1/600 (an accuracy), not a log-loss
    assert np.allclose(res.trials["score"] * 600, np.round(res.trials["score"] * 600))


def test_point_addition_refuses_a_small_test_split(cancer):
    ids = cancer.point_ids
    laws = planted_laws(ids, np.linspace(-1, 1, len(ids)))
    with pytest.raises(DegenerateExperimentError, match="113 rows"):
        point_addition_experiment(cancer, laws, n_small=20, n_large=60, repeats=2, m=10, seed=0)


def test_point_addition_refuses_initial_sets_that_are_not_random(wide):
    cand = wide.point_ids[:200]
    laws = planted_laws(cand, np.linspace(-1, 1, 200))
    rest = wide.n_pool - 200
    res = point_addition_experiment(wide, laws, n_small=50, n_large=rest, m=20, repeats=2,
                                    candidates=list(cand), seed=0)
    assert set(res.refused) == {"large"} and "every repeat the same set" in res.refused["large"]
    assert set(res.summary["regime"]) == {"small"} and "refused" in str(res)
    # just above half the non-candidates: still refused (sets share most points)
    res = point_addition_experiment(wide, laws, n_small=50, n_large=rest // 2 + 1, m=20, repeats=2,
                                    candidates=list(cand), seed=0)
    assert "not independent" in res.refused["large"]
    with pytest.raises(DegenerateExperimentError, match="point addition refused"):
        point_addition_experiment(wide, laws, n_small=rest // 2 + 1, n_large=rest, m=20, repeats=2,
                                  candidates=list(cand))
    with pytest.raises(ConfigError):
        point_addition_experiment(wide, laws, n_small=100, n_large=50)


def test_removal_curve_removing_mislabelled_points_helps(cancer):
    noisy, flipped = flip_labels(cancer, cancer.point_ids, 0.3, seed=5)
    # a value that knows the truth: flipped points are worth least
    values = pd.Series(np.where(np.isin(cancer.point_ids, flipped), -1.0, 1.0)
                       + np.linspace(0, 0.1, cancer.n_pool), index=cancer.point_ids)
    curve = removal_curve(noisy, values, fractions=(0.0, 0.15, 0.3), repeats=3, seed=0)
    c = curve.set_index(["strategy", "fraction"])["score"]
    assert set(curve["strategy"]) == {"lowest_first", "highest_first", "random"}
    assert c[("lowest_first", 0.3)] > c[("lowest_first", 0.0)] + 0.05
    assert c[("lowest_first", 0.3)] > c[("random", 0.3)] > c[("highest_first", 0.3)]
    assert curve.loc[curve["fraction"] == 0.3, "n_removed"].eq(round(0.3 * cancer.n_pool)).all()
    # the outcome is test accuracy, named in the frame: independently recomputed at fraction 0
    from sklearn.metrics import accuracy_score

    from pointscale.sampling.models import make_estimator
    from pointscale.seeding import STREAM_MODEL, int_seed

    assert set(curve["metric"]) == {"accuracy"} and set(curve["n_test"]) == {113}
    est = make_estimator("logreg", "classification", int_seed(0, STREAM_MODEL, "removal"), None)
    est.fit(noisy.X_train, noisy.y_train)
    assert c[("lowest_first", 0.0)] == pytest.approx(accuracy_score(noisy.y_test, est.predict(noisy.X_test)))
    # also accepts a values table
    table = pd.DataFrame({"point_id": values.index, "shapley": values.to_numpy()})
    curve2 = removal_curve(noisy, table, fractions=(0.3,), repeats=1)
    assert curve2.set_index("strategy").loc["lowest_first", "score"] == c[("lowest_first", 0.3)]


def test_noisy_label_auc_above_chance(cancer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = noisy_label_check(
            cancer, flip_fraction=0.2, n_points=80, seed=0,
            sampling=dict(k_min=20, k_max=150, samples_per_point=30, seed=0),
        )
    assert out["n_points"] == 80 and out["n_flipped"] == 16
    # 16 of 80 flipped: the AUC's sd under the null (chance) is
    # sqrt((16 + 64 + 1) / (12·16·64)) ≈ 0.08, so 0.7 is 2.5 sd above chance.
    # Over seeds 0-4 this setting gave 0.77-0.98 (the spread comes from which
    # points are flipped: a flip near the class boundary barely hurts).
    assert out["auc_shapley"] > 0.7, out
    assert out["auc_c"] > 0.7, out
    assert out["auc_monte_carlo"] > 0.7, out
    tab = out["table"]
    assert len(tab) == 80 and tab["flipped"].sum() == 16
    # flipped points are worth less on average
    assert tab.loc[tab["flipped"], "shapley"].mean() < tab.loc[~tab["flipped"], "shapley"].mean()


def test_point_addition_end_to_end_from_sampled_laws(wide):
    # The whole chain on real data: sample Δ for the candidates, fit the laws by
    # maximum likelihood, rank, add, retrain. A fifth of the candidates carry a
    # flipped label, so rankings that work must beat random by a clear margin.
    from pointscale.laws import fit_mle
    from pointscale.sampling import SamplingConfig, sample_marginals

    cand = list(wide.point_ids[::2][:120])
    noisy, flipped = flip_labels(wide, cand, 0.2, seed=4)
    config = SamplingConfig(k_min=20, k_max=150, samples_per_point=30, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        samples = sample_marginals(noisy, config, points=cand)
        laws = fit_mle(samples)
    assert laws.k_range[0] >= 20 and laws.k_range[1] <= 150
    res = point_addition_experiment(noisy, laws, n_small=20, n_large=150, m=30, repeats=8,
                                    candidates=cand, seed=4)
    assert not res.messages, res.messages
    assert res.trials["failed"].sum() == 0
    # On this easy task 30 added points move accuracy by ~1 pp at n = 150 (one
    # test row = 0.17 pp), so single rankings are within noise; the average of
    # the six law-based gains over random is not (measured +1.0 pp).
    law = res.summary[res.summary["ranking"] != "random"]
    assert law["mean_gain_vs_random"].mean() > 0, str(res)
    # the law-based selections hold fewer flipped points than the 20 % base rate
    # (a random pick of 30 has sd ≈ 7 %; 0.15 is 0.7 sd below the base rate)
    share = res.selections.groupby("ranking")["point_id"].apply(lambda p: p.isin(set(flipped)).mean())
    assert (share < 0.15).all() and share.mean() < 0.12, share


@pytest.mark.parametrize("metric", ["accuracy", "neg_log_loss"])
def test_point_addition_exact_solver_scores_equal_the_estimators(cancer, metric):
    """The Newton path for whole added sets lands on the estimator's optimum: the same test scores."""
    from pointscale.valuation.experiments import _set_scores, _set_solver

    solver = _set_solver(cancer, "logreg", metric, None)
    assert solver is not None
    g = np.random.default_rng(0)
    base = np.sort(g.choice(cancer.n_pool, 60, replace=False))
    rest = np.setdiff1d(np.arange(cancer.n_pool), base)
    sets = [base] + [np.concatenate([base, g.choice(rest, m, replace=False)]) for m in (5, 20, 40)]
    fast = _set_scores(cancer, solver, sets, model="logreg", metric=metric, seed=0, params=None)
    slow = _set_scores(cancer, None, sets, model="logreg", metric=metric, seed=0, params=None)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-6 if metric != "accuracy" else 0)
    assert _set_solver(cancer, "knn", metric, None) is None  # no exact set solver: the estimator path
