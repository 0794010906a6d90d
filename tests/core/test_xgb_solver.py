"""The XGBoost block solver reproduces cold fits of the registry's estimator bit for bit.

Its speed comes from a cheaper training container only (``DMatrix`` instead of the wrapper's
``QuantileDMatrix``), so there is no tolerance: U(D), U(D ∪ {z}), Δ and the base model's
out-of-bag predictions must equal the generic path's (the estimator fitted on the same rows with
the same seed) exactly, for binary and multi-class classification and for regression.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pointscale.data import load_dataset
from pointscale.sampling import SamplingConfig, make_estimator, plan_blocks, sample_blocks
from pointscale.sampling.models import MODELS
from pointscale.sampling.plans import draw_subset, pool_info
from pointscale.sampling.solvers.base import solver_for
from pointscale.sampling.solvers.xgb import XGBoostBlockSolver
from pointscale.seeding import STREAM_MODEL, int_seed


def _both_paths(name: str, k: tuple[int, int], n_points: int, **params):
    """The engine's samples through the solver and through the estimator, and the solver's own block fits."""
    ds = load_dataset(name)
    cfg = SamplingConfig(model="xgboost", k_min=k[0], k_max=k[1], samples_per_point=1, block_size=8,
                         model_params=params).resolved(ds)
    blocks = plan_blocks(ds, cfg, list(ds.point_ids[:n_points]))
    fast = sample_blocks(ds, cfg, blocks)
    cold = sample_blocks(ds, cfg.replace(fast_path=False), blocks)
    # The solver called directly: the engine falls back to the estimator when a solver declines
    # or raises, and the comparison above would then compare the estimator with itself.
    settings = dict(make_estimator("xgboost", ds.task, 0, params).get_params(deep=False))
    solver = solver_for(MODELS["xgboost"], settings, ds.task, ds.n_classes, ds.X_val, ds.y_val, cfg.metric)
    assert isinstance(solver, XGBoostBlockSolver)
    info = pool_info(ds)
    direct = []
    for b in blocks:
        Z = b.members if b.members is not None else info.indices(b.point_ids)
        D = draw_subset(info, cfg.seed, b.base_id, b.k, Z)
        fit = solver(ds.X_train[D], ds.y_train[D], ds.X_train[Z], ds.y_train[Z],
                     seed=int_seed(cfg.seed, STREAM_MODEL, b.base_id))
        assert fit is not None
        direct.append(np.asarray(fit.u_with) - fit.u_base)
    return ds, fast, cold, np.concatenate(direct)


@pytest.mark.parametrize(("name", "k"), [("breast_cancer", (30, 100)), ("digits", (60, 300)),
                                         ("diabetes", (30, 80))])
def test_solver_equals_cold_estimator_fits_exactly(name, k):
    ds, fast, cold, direct = _both_paths(name, k, 16, n_estimators=10)
    assert not cold.samples["failed"].any()
    np.testing.assert_array_equal(direct, cold.samples["delta"].to_numpy())
    for col in ("u_base", "u_with", "delta", "method"):
        pd.testing.assert_series_equal(fast.samples[col], cold.samples[col], check_exact=True)
    pd.testing.assert_frame_equal(fast.oob, cold.oob, check_exact=True)  # the base model's predictions
    assert fast.oob["n"].sum() > 0


def test_solver_is_used_for_the_registry_settings_and_declines_others():
    ds = load_dataset("breast_cancer")
    spec = MODELS["xgboost"]
    def built(**overrides):
        params = dict(make_estimator("xgboost", ds.task, 0, overrides).get_params(deep=False))
        return solver_for(spec, params, ds.task, ds.n_classes, ds.X_val, ds.y_val, "paper_ce")

    assert built() is not None and built().exact
    # Settings under which the wrapper's fit is not train() on the same data: the estimator fits.
    assert built(tree_method="exact") is None
    assert built(eval_metric="logloss") is None
    assert built(booster="gblinear") is None
    assert built(objective="multi:softmax") is None


def test_a_base_without_every_class_goes_to_the_estimator():
    """XGBClassifier rejects labels that are not 0..K-1; the solver leaves that failure to it."""
    ds = load_dataset("breast_cancer")
    params = dict(make_estimator("xgboost", ds.task, 0).get_params(deep=False))
    solver = solver_for(MODELS["xgboost"], params, ds.task, ds.n_classes, ds.X_val, ds.y_val, "paper_ce")
    one_class = np.flatnonzero(ds.y_train == 0)[:20]
    assert solver(ds.X_train[one_class], ds.y_train[one_class], ds.X_train[:2], ds.y_train[:2], seed=1) is None
