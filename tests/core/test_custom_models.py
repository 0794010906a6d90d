"""The user's own estimator (``module:Class`` or an object), scikit-learn scorers, the task's
default model, and ``--points FILE``."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer, get_scorer_names
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pointscale.data import load_dataset
from pointscale.errors import ConfigError
from pointscale.pipeline import choose_points
from pointscale.sampling import Ledger, SamplingConfig, base_subset, plan_blocks, sample_marginals
from pointscale.sampling.metrics import check_metric, check_metric_on, scorer_task


class MajorityClassifier(ClassifierMixin, BaseEstimator):
    """A minimal user classifier (importable as tests.core.test_custom_models:MajorityClassifier)."""

    def __init__(self, smoothing=1.0):
        self.smoothing = smoothing

    def fit(self, X, y):
        self.classes_, counts = np.unique(y, return_counts=True)
        self.prior_ = (counts + self.smoothing) / (counts.sum() + self.smoothing * len(counts))
        return self

    def predict_proba(self, X):
        return np.tile(self.prior_, (len(X), 1))

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def _cfg(**kw):
    return SamplingConfig(**{"k_min": 40, "k_max": 80, "samples_per_point": 3, "block_size": 8, **kw})


# --------------------------------------------------------------------------- hashing, storing, rebuilding


def test_object_and_class_path_are_one_config():
    a = _cfg(model=LogisticRegression(C=0.5))
    b = _cfg(model="sklearn.linear_model:LogisticRegression", model_params={"C": 0.5})
    assert a.model == b.model == "sklearn.linear_model:LogisticRegression"  # the public name
    assert a.model_params == b.model_params and a.model_params["C"] == 0.5
    assert "max_iter" in a.model_params  # full settings: a changed library default changes the hash
    assert a.stable_hash() == b.stable_hash() and a.identity_hash() == b.identity_hash()
    assert _cfg(model=LogisticRegression(C=0.25)).identity_hash() != a.identity_hash()
    # Stored as plain JSON and read back: the same config.
    again = SamplingConfig.from_dict(a.to_dict())
    assert again.stable_hash() == a.stable_hash()


def test_nested_estimators_round_trip_without_pickles():
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.5))
    cfg = _cfg(model=pipe)
    assert cfg.model.endswith(":Pipeline")
    import json

    text = json.dumps(cfg.to_dict())  # plain JSON, nothing pickled
    again = SamplingConfig.from_dict(json.loads(text))
    assert again.stable_hash() == cfg.stable_hash()
    from pointscale.sampling import make_estimator

    rebuilt = make_estimator(again.model, "classification", 0, again.model_params)
    assert rebuilt.steps[1][1].C == 0.5 and type(rebuilt.steps[0][1]) is StandardScaler


@pytest.mark.parametrize("kwargs, message", [
    (dict(model="nosuch.module:Thing"), "cannot import module 'nosuch.module'"),
    (dict(model="sklearn.linear_model:NoSuchModel"), "has no 'NoSuchModel'"),
    (dict(model="sklearn.linear_model:LogisticRegression", model_params={"Cee": 1}), "does not accept"),
    (dict(model="sklearn.metrics:accuracy_score"), "is not a class"),
    (dict(model="pointscale.errors:ConfigError"), "has no fit"),
    (dict(model=LogisticRegression(), model_params={"solver": lambda: 0}), "cannot be stored as plain data"),
])
def test_bad_models_fail_at_construction(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(model="sklearn.svm:SVC"), "has no predict_proba, which metric 'paper_ce' needs"),
    (dict(model="sklearn.linear_model:RidgeClassifier", metric="sklearn:neg_brier_score"), "has no predict_proba"),
    (dict(model="sklearn.linear_model:Ridge"), "is a regressor; it does not fit a classification task"),
    (dict(model="sklearn.linear_model:LogisticRegression", model_params={"C": -1.0}), "'C' parameter"),
    (dict(metric="sklearn:r2"), "scores regression, so it does not fit a classification task"),
    (dict(metric="sklearn:f2"), "unknown scikit-learn scorer 'f2'"),
])
def test_bad_model_or_metric_for_the_data_fails_before_compute(cancer, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(**kwargs).resolved(cancer)


def test_models_without_probabilities_work_under_metrics_that_score_predictions(cancer):
    for metric in ("accuracy", "sklearn:roc_auc", "sklearn:f1"):
        _cfg(model="sklearn.svm:SVC", metric=metric).resolved(cancer)


def test_class_in_main_is_refused():
    Local = type("Local", (MajorityClassifier,), {"__module__": "__main__"})
    with pytest.raises(ConfigError, match="defined in __main__"):
        _cfg(model=Local())


# --------------------------------------------------------------------------- sampling with the user's model


def test_custom_estimator_deltas_are_the_refits_of_the_planned_subsets(cancer):
    cfg = _cfg(model=GaussianNB(), samples_per_point=2, metric="neg_log_loss").resolved(cancer)
    points = cancer.point_ids[:16].tolist()
    frame = sample_marginals(cancer, cfg, points)
    assert frame["method"].eq("cold").all() and np.isfinite(frame["delta"]).all()
    # Independent check: rebuild D for a few rows with the plan, fit scikit-learn directly.
    blocks = {b.base_id: b for b in plan_blocks(cancer, cfg, points)}
    for _, row in frame.sample(4, random_state=0).iterrows():
        D = base_subset(cancer, cfg, blocks[row["base_id"]])
        z = cancer.index_of([row["point_id"]])[0]

        def nll(idx):
            p = GaussianNB().fit(cancer.X_train[idx], cancer.y_train[idx]).predict_proba(cancer.X_val)
            # neg_log_loss as the metrics module defines it: clipped below at machine epsilon.
            return np.mean(np.log(np.clip(p[np.arange(len(p)), cancer.y_val], np.finfo(float).eps, 1)))

        expected = nll(np.append(D, z)) - nll(D)
        assert row["delta"] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_registry_name_keeps_its_fast_path_and_class_path_uses_base_sharing(cancer):
    points = cancer.point_ids[:16].tolist()
    fast = sample_marginals(cancer, _cfg(model="logreg"), points)
    custom = sample_marginals(cancer, _cfg(model="sklearn.linear_model:LogisticRegression",
                                           model_params={"C": 0.5, "max_iter": 1000}), points)
    assert set(fast["method"]) <= {"batched_newton", "rank_one"} and set(custom["method"]) == {"cold"}
    assert np.isfinite(custom["delta"]).all()


def test_randomised_user_estimator_gets_the_derived_seed_and_reruns_bit_identical(cancer):
    cfg = _cfg(model=RandomForestClassifier(n_estimators=5), samples_per_point=1)
    assert cfg.model_params["random_state"] is None
    points = cancer.point_ids[:8].tolist()
    a = sample_marginals(cancer, cfg, points)
    b = sample_marginals(cancer, SamplingConfig.from_dict(cfg.to_dict()), points)
    pd.testing.assert_frame_equal(a, b)
    seeded = sample_marginals(cancer, _cfg(model=RandomForestClassifier(n_estimators=5, random_state=7),
                                           samples_per_point=1), points)
    assert not np.allclose(seeded["delta"], a["delta"])  # the user's own seed is used instead


def test_resume_with_a_custom_estimator(cancer, tmp_path):
    # A first run with the estimator object; a second run with the stored config (class path and
    # settings, as a worker or a rerun sees it) finds every sample in the ledger.
    cfg = _cfg(model=MajorityClassifier(smoothing=0.5), samples_per_point=2, shard_size=1).resolved(cancer)
    assert cfg.model == "tests.core.test_custom_models:MajorityClassifier"
    points = cancer.point_ids[:24].tolist()
    ledger = Ledger(tmp_path / "samples")
    full = sample_marginals(cancer, cfg, points, ledger=ledger)
    names = ledger.shard_names()
    assert len(names) > 2
    # Lose a shard (a crash before it was written): the rerun samples only that one, bit-identically.
    lost = names[1]
    for path in ledger.shard_dir.iterdir():
        if path.name.startswith(lost):
            path.unlink()
    stored = SamplingConfig.from_dict(cfg.to_dict())
    calls = []
    again = sample_marginals(cancer, stored, points, ledger=Ledger(tmp_path / "samples"),
                             map=lambda fn, shards: [calls.append(s.name) or fn(s) for s in shards])
    assert calls == [lost]
    pd.testing.assert_frame_equal(again, full)


# --------------------------------------------------------------------------- scikit-learn scorers


@pytest.mark.parametrize("name", get_scorer_names())
def test_every_sklearn_scorer_is_accepted_for_its_task_and_refused_for_the_other(name):
    task = scorer_task(name)
    other = "regression" if task == "classification" else "classification"
    check_metric(f"sklearn:{name}", task)
    with pytest.raises(ConfigError, match="does not fit"):
        check_metric(f"sklearn:{name}", other)
    # The task split follows scikit-learn's own modules (regression scores need predict only).
    if task == "regression":
        assert get_scorer(name)._response_method == "predict"


def test_sklearn_scorer_that_cannot_score_the_data_stops_before_compute(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=300), "y": rng.choice(["a", "b", "c"], size=300)})
    path = tmp_path / "three.csv"
    frame.to_csv(path, index=False)
    three = load_dataset(path, target="y")
    with pytest.raises(ConfigError, match="sklearn:f1' cannot score the validation split"):
        check_metric_on("sklearn:f1", three)
    check_metric_on("sklearn:f1_macro", three)


def test_sampling_with_an_sklearn_scorer_matches_the_scorer(cancer):
    cfg = _cfg(model="sklearn.naive_bayes:GaussianNB", metric="sklearn:roc_auc", samples_per_point=1)
    frame = sample_marginals(cancer, cfg, cancer.point_ids[:8].tolist())
    row = frame.iloc[0]
    D = base_subset(cancer, cfg.resolved(cancer), [b for b in plan_blocks(cancer, cfg, cancer.point_ids[:8].tolist())
                                                   if b.base_id == row["base_id"]][0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = GaussianNB().fit(cancer.X_train[D], cancer.y_train[D])
    assert row["u_base"] == pytest.approx(get_scorer("roc_auc")(est, cancer.X_val, cancer.y_val), rel=1e-12)
    assert frame["metric"].eq("sklearn:roc_auc").all()


# --------------------------------------------------------------------------- default model, points file


def test_default_model_follows_the_task(diabetes):
    frame = sample_marginals(diabetes, _cfg(), diabetes.point_ids[:16].tolist())
    assert frame["model"].eq("ridge").all() and frame["method"].eq("rank_one").all()
    assert frame["metric"].eq("neg_mse").all()


def test_points_file(cancer, tmp_path):
    ids = cancer.point_ids[[5, 2, 9]].tolist()
    path = tmp_path / "points.txt"
    path.write_text(f"# chosen by hand\n{ids[0]}\n\n{ids[1]}\n{ids[2]}\n{ids[0]}\n")
    assert choose_points(cancer, str(path), seed=0) == [cancer.point_ids[i] for i in (2, 5, 9)]
    path.write_text("\n".join([ids[0], "nope-1", "nope-2"]))
    with pytest.raises(ConfigError, match=r"2 point id\(s\) in .* not in the training pool .*'nope-1', 'nope-2'"):
        choose_points(cancer, str(path), seed=0)
    path.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="lists no point ids"):
        choose_points(cancer, str(path), seed=0)
    with pytest.raises(ConfigError, match="no such file"):
        choose_points(cancer, str(tmp_path / "missing.txt"), seed=0)
