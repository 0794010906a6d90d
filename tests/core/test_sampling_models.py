"""Model registry and utility metrics, checked against scikit-learn's own scorers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss, mean_squared_error

from pointscale.errors import ConfigError
from pointscale.sampling import METRICS, MODELS, check_metric, default_metric, make_estimator, utility


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_builds_single_threaded_with_its_seed(name):
    for task in MODELS[name].tasks:
        est = make_estimator(name, task, seed=123)
        params = est.get_params()
        assert params.get("n_jobs", 1) in (1, None) or name == "logreg"
        if "random_state" in params:
            assert params["random_state"] == 123
        # Every default is written in the registry, not left to the library.
        for key, value in MODELS[name].defaults[task].items():
            assert params[key] == value


def test_registry_contents():
    assert {"logreg", "xgboost", "hist_gbm", "random_forest", "decision_tree", "knn", "svm", "mlp",
            "ridge", "linear"} <= set(MODELS)
    lr = make_estimator("logreg", "classification", 0)
    assert lr.C == 1.0 and lr.l1_ratio == 0.0
    xgb = make_estimator("xgboost", "classification", 0)
    assert xgb.get_params()["tree_method"] == "hist" and xgb.get_params()["n_jobs"] == 1


def test_unknown_or_mismatched_model_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown model 'boost'; valid models: .*logreg"):
        make_estimator("boost", "classification", 0)
    with pytest.raises(ConfigError, match="valid models for regression: .*linear.*ridge"):
        make_estimator("logreg", "regression", 0)
    with pytest.raises(ConfigError, match="unknown setting"):
        make_estimator("knn", "classification", 0, {"n_trees": 3})


def test_params_override_defaults():
    est = make_estimator("logreg", "classification", 0, {"C": 0.5})
    assert est.C == 0.5


def test_metric_defaults_and_task_checks():
    assert default_metric("classification") == "paper_ce"
    assert default_metric("regression") == "neg_mse"
    with pytest.raises(ConfigError, match="metric 'neg_mse' does not fit a classification task"):
        check_metric("neg_mse", "classification")
    with pytest.raises(ConfigError, match="unknown metric"):
        check_metric("f1", "classification")
    assert set(METRICS) == {"neg_log_loss", "accuracy", "neg_mse", "paper_ce", "neg_brier"}


@pytest.fixture(scope="module")
def three_class():
    X, y = make_classification(n_samples=300, n_features=5, n_informative=4, n_redundant=0,
                               n_classes=3, random_state=0)
    return X[:200], y[:200], X[200:], y[200:]


def test_utilities_match_sklearn(three_class):
    X, y, Xv, yv = three_class
    est = LogisticRegression().fit(X, y)
    proba = est.predict_proba(Xv)
    assert utility("neg_log_loss", est, Xv, yv, 3) == pytest.approx(-log_loss(yv, proba), rel=1e-12)
    assert utility("accuracy", est, Xv, yv, 3) == pytest.approx(accuracy_score(yv, est.predict(Xv)))
    # The paper's score: torch's cross_entropy applied to probabilities (log-softmax of p).
    expected = np.mean(log_softmax(proba, axis=1)[np.arange(len(yv)), yv])
    assert utility("paper_ce", est, Xv, yv, 3) == pytest.approx(expected, rel=1e-12)
    assert utility("paper_ce", est, Xv, yv, 3) != pytest.approx(utility("neg_log_loss", est, Xv, yv, 3))
    # Brier over all classes: mean over rows of sum_c (p_c - 1[y = c])^2, negated
    onehot = np.eye(3)[yv]
    assert utility("neg_brier", est, Xv, yv, 3) == pytest.approx(-np.mean(((proba - onehot) ** 2).sum(1)), rel=1e-12)


def test_neg_brier_is_twice_sklearns_binary_brier_score_and_bounded():
    from sklearn.metrics import brier_score_loss

    X, y = make_classification(n_samples=300, n_features=5, random_state=1)
    est = LogisticRegression().fit(X[:200], y[:200])
    p = est.predict_proba(X[200:])
    # binary: (p1 - y)^2 + (p0 - (1 - y))^2 = 2 (p1 - y)^2
    assert utility("neg_brier", est, X[200:], y[200:], 2) == pytest.approx(
        -2 * brier_score_loss(y[200:], p[:, 1]), rel=1e-12)
    worst = np.eye(2)[1 - y[200:]]  # all mass on the wrong class
    from pointscale.sampling.metrics import neg_brier_from_proba

    assert neg_brier_from_proba(worst, y[200:]) == pytest.approx(-2.0)
    assert neg_brier_from_proba(np.eye(2)[y[200:]], y[200:]) == pytest.approx(0.0)


def test_subset_missing_a_class_still_scores(three_class):
    X, y, Xv, yv = three_class
    keep = y != 2
    est = LogisticRegression().fit(X[keep], y[keep])
    u = utility("neg_log_loss", est, Xv, yv, 3)
    assert np.isfinite(u)
    full = np.zeros((len(yv), 3))
    full[:, :2] = est.predict_proba(Xv)
    assert u == pytest.approx(-log_loss(yv, np.clip(full, 1e-300, 1), labels=[0, 1, 2]), rel=1e-3)


def test_neg_mse():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    X, Xv = rng.normal(size=(50, 3)), rng.normal(size=(20, 3))
    y, yv = X @ [1.0, 2.0, 3.0], Xv @ [1.0, 2.0, 3.0] + rng.normal(size=20)
    est = Ridge().fit(X, y)
    assert utility("neg_mse", est, Xv, yv, 0) == pytest.approx(-mean_squared_error(yv, est.predict(Xv)))
