"""SamplingConfig: validation at construction, data-dependent checks, hashes."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from pointscale.data import load_dataset
from pointscale.errors import ConfigError
from pointscale.sampling import SamplingConfig, default_sizes


@pytest.fixture(scope="module")
def four_classes():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 4, n)
    frame = pd.DataFrame({"a": rng.normal(size=n) + y, "b": rng.normal(size=n), "y": y})
    return load_dataset("four", frame=frame, target="y", task="classification")


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(k_min=500, k_max=100), "k_min=500 must not exceed k_max=100"),
        (dict(samples_per_point=0), "samples_per_point=0"),
        (dict(mode="staggered", samples_per_size=0), "samples_per_size=0"),
        (dict(model="gpt"), "unknown model 'gpt'"),
        (dict(metric="auc"), "unknown metric 'auc'"),
        (dict(mode="random"), "mode='random'"),
        (dict(block_size=0), "block_size=0"),
        (dict(shard_size=0), "shard_size=0"),
        (dict(k_min=2.5), "k_min=2.5 must be an integer"),
        (dict(sizes=(100, 200)), "only used with mode='staggered'"),
        (dict(mode="staggered", sizes=(100, 100)), "duplicates"),
        (dict(model="logreg", model_params={"n_trees": 3}), "unknown setting(s) n_trees"),
        (dict(seed=-1), "seed=-1"),
    ],
)
def test_bad_values_fail_at_construction_naming_the_value(kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        SamplingConfig(**kwargs)
    assert fragment in str(info.value)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError, match="valid models: .*decision_tree.*logreg.*xgboost"):
        SamplingConfig(model="gpt")


def test_k_max_too_large_names_largest_allowed_k(cancer):
    cfg = SamplingConfig(k_min=100, k_max=1000, block_size=32)
    largest = cancer.n_pool - 32
    with pytest.raises(ConfigError, match=f"largest k is {largest}"):
        cfg.validate_for(cancer)
    assert cfg.largest_k(cancer) == largest
    SamplingConfig(k_min=100, k_max=largest, block_size=32).validate_for(cancer)  # the edge is fine
    with pytest.raises(ConfigError, match=f"largest k is {largest}"):
        SamplingConfig(k_min=100, k_max=largest + 1, block_size=32).validate_for(cancer)


def test_k_min_below_number_of_classes(four_classes):
    with pytest.raises(ConfigError, match=r"k_min=3 must be at least the number of classes \(4\)"):
        SamplingConfig(k_min=3, k_max=50).validate_for(four_classes)


@pytest.mark.parametrize("metric", ["neg_log_loss", "accuracy", "paper_ce"])
def test_classification_metric_on_regression_fails_before_compute(diabetes, metric):
    with pytest.raises(ConfigError, match=f"metric '{metric}' does not fit a regression task"):
        SamplingConfig(model="ridge", k_min=20, k_max=50, metric=metric).validate_for(diabetes)


def test_model_that_does_not_fit_task(diabetes, cancer):
    with pytest.raises(ConfigError, match="model 'logreg' does not fit a regression task; valid models"):
        SamplingConfig(model="logreg", k_min=20, k_max=50).validate_for(diabetes)
    with pytest.raises(ConfigError, match="model 'ridge' does not fit a classification task"):
        SamplingConfig(model="ridge", k_min=20, k_max=50).validate_for(cancer)


def test_bad_setting_value_fails_before_compute(cancer):
    with pytest.raises(ConfigError, match="'C' parameter"):
        SamplingConfig(k_min=20, k_max=50, model_params={"C": -1.0}).validate_for(cancer)


def test_resolved_fills_default_model_and_metric_and_keeps_identity(cancer, diabetes):
    cfg = SamplingConfig(k_min=20, k_max=50)
    assert (cfg.resolved(cancer).model, cfg.resolved(cancer).metric) == ("logreg", "paper_ce")
    # The default model follows the task: ridge (exact rank-one fast path) for regression.
    assert (cfg.resolved(diabetes).model, cfg.resolved(diabetes).metric) == ("ridge", "neg_mse")
    explicit = SamplingConfig(k_min=20, k_max=50, model="logreg", metric="paper_ce")
    assert cfg.resolved(cancer).identity_hash() == explicit.identity_hash()
    assert cfg.resolved(diabetes).identity_hash() == SamplingConfig(
        k_min=20, k_max=50, model="ridge", metric="neg_mse").identity_hash()


def test_hashes_what_changes_results_only():
    base = SamplingConfig(k_min=20, k_max=50)
    # Execution-only: shard size.
    assert base.stable_hash() == SamplingConfig(k_min=20, k_max=50, shard_size=7).stable_hash()
    # Changes samples: block size, seed, model, fast path.
    for other in (dict(block_size=8), dict(seed=1), dict(model="knn"), dict(fast_path=False)):
        changed = SamplingConfig(k_min=20, k_max=50, **other)
        assert changed.stable_hash() != base.stable_hash()
        assert changed.identity_hash() != base.identity_hash()
    # Counts change the run, not the identity of each sample (top-ups keep old samples).
    more = SamplingConfig(k_min=20, k_max=50, samples_per_point=500)
    assert more.stable_hash() != base.stable_hash()
    assert more.identity_hash() == base.identity_hash()


def test_round_trip_and_hash_is_process_independent():
    import hashlib
    import json
    import os
    import subprocess
    import sys

    cfg = SamplingConfig(model="mlp", model_params={"hidden_layer_sizes": (16,)}, mode="staggered",
                         sizes=(30, 10, 20), samples_per_size=3)
    again = SamplingConfig.from_dict(cfg.to_dict())
    assert again.stable_hash() == cfg.stable_hash()
    assert cfg.sizes == (10, 20, 30) and (cfg.k_min, cfg.k_max) == (10, 30)
    # The value, recomputed independently: sha256 of sorted-key compact JSON of the fields
    # (minus the execution-only shard_size and device), tagged with the class name.
    fields = {k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items() if k not in ("shard_size", "device")}
    text = json.dumps({"type": "SamplingConfig", "fields": fields}, sort_keys=True, separators=(",", ":"))
    assert cfg.stable_hash() == hashlib.sha256(text.encode("ascii")).hexdigest()
    # Two fresh interpreters with different string-hash salts compute the same hash.
    code = ("from pointscale.sampling import SamplingConfig as S; print(S(model='mlp', "
            "model_params={'hidden_layer_sizes': (16,)}, mode='staggered', sizes=(30, 10, 20), "
            "samples_per_size=3).stable_hash())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": salt}).stdout.strip() for salt in ("1", "2")}
    assert outs == {cfg.stable_hash()}


def test_staggered_default_grid_is_the_spec_grid():
    spec = (100, 129, 166, 215, 278, 359, 464, 599, 774, 1000)
    assert default_sizes(100, 1000) == spec
    cfg = SamplingConfig(mode="staggered")
    assert cfg.sizes == spec
    assert cfg.n_rounds == 10 * cfg.samples_per_size
    assert [cfg.size_of_round(r) for r in range(11)] == list(spec) + [100]


# --------------------------------------------------------------------------- size range vs a finite pool


def test_default_k_range_keeps_k_max_within_a_third_of_the_pool():
    from pointscale.sampling.config import MAX_POOL_FRACTION, default_k_range

    assert default_k_range(46_842, 2) == (100, 1000)  # the paper's range where the pool allows
    assert default_k_range(3000, 2) == (100, 1000)
    assert default_k_range(2999, 2) == (99, 999)
    assert default_k_range(314, 2) == (10, 104)  # breast_cancer: k_max = 314 // 3, k_min = k_max // 10
    for n in (40, 100, 314, 1500, 5000, 10**6):
        lo, hi = default_k_range(n, 2)
        assert hi <= MAX_POOL_FRACTION * n and 2 <= lo <= hi
    assert default_k_range(330, 2) == (11, 110)
    assert default_k_range(110, 2) == (10, 36)  # at least 10 rows: k-NN's 5 neighbours still fit
    assert default_k_range(30, 2) == (5, 10)
    assert default_k_range(300, 12)[0] == 12  # one row per class at least
    with pytest.raises(ConfigError, match="too small"):
        default_k_range(6, 4)


def test_a_range_beyond_half_the_pool_is_accepted_with_a_warning_that_says_why():
    from pointscale.data import load_dataset
    from pointscale.errors import FinitePoolWarning

    cancer = load_dataset("breast_cancer")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default range warns about nothing
        SamplingConfig(k_min=10, k_max=104).resolved(cancer)
    with pytest.warns(FinitePoolWarning, match=r"k_max=282 is 90% of the pool of 314 points.*keep k_max <= 104"):
        cfg = SamplingConfig(k_min=100, k_max=282).resolved(cancer)
    assert cfg.k_max == 282  # accepted
    with pytest.warns(FinitePoolWarning, match="the largest size in sizes=200"):
        SamplingConfig(mode="staggered", sizes=(20, 200)).resolved(cancer)


def test_pipeline_default_range_follows_the_rule():
    from pointscale import pipeline
    from pointscale.data import load_dataset

    cancer = load_dataset("breast_cancer")
    common = dict(model="logreg", metric=None, samples_per_point=5, seed=0, block_size=32, shard_size=4,
                  n_points=cancer.n_pool)
    cfg = pipeline.resolve_sampling(cancer, k_min=None, k_max=None, **common)
    assert (cfg.k_min, cfg.k_max) == (10, 104)
    cfg = pipeline.resolve_sampling(cancer, k_min=None, k_max=100, **common)
    assert (cfg.k_min, cfg.k_max) == (10, 100)
