"""SamplingConfig: validation at construction, data-dependent checks, hashes."""

from __future__ import annotations

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


def test_clamped_to_fits_the_pool(cancer):
    cfg = SamplingConfig(k_min=100, k_max=1000).clamped_to(cancer)
    assert cfg.k_max == cancer.n_pool - cfg.block_size and cfg.k_min == 100
    cfg.validate_for(cancer)
    stag = SamplingConfig(mode="staggered").clamped_to(cancer)
    assert max(stag.sizes) <= cancer.n_pool - stag.block_size
    stag.validate_for(cancer)


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
    assert (cfg.resolved(cancer).model, cfg.resolved(cancer).metric) == ("logreg", "neg_log_loss")
    # The default model follows the task: ridge (exact rank-one fast path) for regression.
    assert (cfg.resolved(diabetes).model, cfg.resolved(diabetes).metric) == ("ridge", "neg_mse")
    explicit = SamplingConfig(k_min=20, k_max=50, model="logreg", metric="neg_log_loss")
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
    cfg = SamplingConfig(model="mlp", model_params={"hidden_layer_sizes": (16,)}, mode="staggered",
                         sizes=(30, 10, 20), samples_per_size=3)
    again = SamplingConfig.from_dict(cfg.to_dict())
    assert again.stable_hash() == cfg.stable_hash()
    assert cfg.sizes == (10, 20, 30) and (cfg.k_min, cfg.k_max) == (10, 30)
    # sha256 of canonical JSON: a fixed value, not Python's salted hash().
    assert len(cfg.stable_hash()) == 64 and int(cfg.stable_hash(), 16) >= 0


def test_staggered_default_grid_is_the_spec_grid():
    spec = (100, 129, 166, 215, 278, 359, 464, 599, 774, 1000)
    assert default_sizes(100, 1000) == spec
    cfg = SamplingConfig(mode="staggered")
    assert cfg.sizes == spec
    assert cfg.n_rounds == 10 * cfg.samples_per_size
    assert [cfg.size_of_round(r) for r in range(11)] == list(spec) + [100]
