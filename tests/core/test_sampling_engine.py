"""The engine: reproducibility, fast-path exactness, failures, reruns and top-ups."""

from __future__ import annotations

import builtins
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

from pointscale.data import load_dataset
from pointscale.sampling import (
    COLUMNS,
    Ledger,
    SamplingConfig,
    plan_blocks,
    run_blocks,
    sample_marginals,
    shard_blocks,
    sort_samples,
    subset_for,
    utility,
)
from pointscale.sampling import engine
from pointscale.sampling.solvers.base import BlockFit


@pytest.fixture(scope="module")
def saved_cancer(cancer, tmp_path_factory):
    return cancer.save(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def four_classes():
    rng = np.random.default_rng(3)
    n = 500
    y = rng.integers(0, 4, n)
    X = rng.normal(size=(n, 4)) + 0.8 * np.eye(4)[y]
    frame = pd.DataFrame(X, columns=list("abcd")).assign(y=y)
    return load_dataset("four", frame=frame, target="y", task="classification")


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 5))
    frame = pd.DataFrame(X, columns=list("abcde")).assign(y=X @ [1.0, -2.0, 0.5, 0.0, 3.0] + rng.normal(size=400))
    return load_dataset("reg", frame=frame, target="y", task="regression")


SMALL = dict(k_min=30, k_max=90, samples_per_point=2, block_size=16)


@pytest.fixture(scope="module")
def reference(cancer):
    """All samples of the small job, run in one call."""
    cfg = SamplingConfig(**SMALL)
    return cfg, sample_marginals(cancer, cfg)


def _bits_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = sort_samples(a), sort_samples(b)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for col in ("delta", "u_base", "u_with"):
        assert np.array_equal(a[col].to_numpy().view(np.uint64), b[col].to_numpy().view(np.uint64))


def test_rows_columns_and_identities(cancer, reference):
    cfg, rows = reference
    assert tuple(rows.columns) == COLUMNS
    assert len(rows) == 2 * cancer.n_pool
    assert rows["sample_id"].is_unique
    assert not rows["failed"].any() and rows["converged"].all()
    assert (rows["method"] == "batched_newton").all()
    assert (rows["delta"] == rows["u_with"] - rows["u_base"]).all()
    assert rows["k"].between(30, 90).all()
    assert (rows["config_hash"] == cfg.resolved(cancer).identity_hash()).all()
    assert (rows["dataset_fingerprint"] == cancer.fingerprint).all()
    assert rows.groupby("point_id").size().eq(2).all()


@pytest.mark.parametrize("shard_size", [1, 7, 64])
def test_bit_identical_whatever_the_shard_size(cancer, reference, shard_size):
    cfg, rows = reference
    shards = shard_blocks(plan_blocks(cancer, cfg), shard_size)
    # Run the shards in reverse order, as a scheduler might.
    parts = [run_blocks(cancer, cfg, s) for s in reversed(shards)]
    _bits_equal(pd.concat(parts, ignore_index=True), rows)


def test_bit_identical_on_two_worker_processes(saved_cancer, reference):
    cfg, rows = reference
    with ProcessPoolExecutor(max_workers=2) as pool:
        out = sample_marginals(str(saved_cancer), cfg.replace(shard_size=5), map=pool.map)
    _bits_equal(out, rows)


def test_fast_path_matches_cold_tightly_converged_fits(cancer, reference):
    cfg, rows = reference
    cfg = cfg.resolved(cancer)
    for _, row in rows.sample(12, random_state=0).iterrows():
        D = subset_for(row, cancer, cfg)
        z = cancer.index_of([row.point_id])[0]
        assert z not in D and len(D) == row.k

        def u(idx):
            est = LogisticRegression(solver="newton-cholesky", tol=1e-12, max_iter=500)
            return utility(cfg.metric, est.fit(cancer.X_train[idx], cancer.y_train[idx]),
                           cancer.X_val, cancer.y_val, 2)

        base, with_z = u(D), u(np.append(D, z))
        assert row.u_base == pytest.approx(base, abs=1e-9)
        # Δ relative to its own size: the fast path is exact, not approximately right.
        assert row.delta == pytest.approx(with_z - base, rel=1e-6, abs=1e-12)


def test_generic_warm_path_agrees_with_fast_path(cancer, reference):
    cfg, _ = reference
    slow = cfg.replace(fast_path=False)
    blocks = plan_blocks(cancer, slow)[:2]
    out = run_blocks(cancer, slow, blocks)
    assert (out["method"] == "warm").all()
    # The same bases (a base's subset depends on its id and the seed only) through the fast path.
    fast = run_blocks(cancer, cfg, blocks)
    assert (fast["method"] == "batched_newton").all()
    np.testing.assert_allclose(out["delta"], fast["delta"], rtol=1e-5, atol=1e-10)
    assert not np.array_equal(out["delta"], fast["delta"])  # two independent computations


def test_multinomial_fast_path_is_exact(four_classes):
    cfg = SamplingConfig(k_min=40, k_max=120, samples_per_point=1, block_size=12).resolved(four_classes)
    rows = run_blocks(four_classes, cfg, plan_blocks(four_classes, cfg)[:3])
    assert (rows["method"] == "batched_newton").all() and rows["converged"].all()
    for _, row in rows.head(8).iterrows():
        D = subset_for(row, four_classes, cfg)
        z = four_classes.index_of([row.point_id])[0]

        def u(idx):
            est = LogisticRegression(solver="newton-cholesky", tol=1e-12, max_iter=500)
            return utility(cfg.metric, est.fit(four_classes.X_train[idx], four_classes.y_train[idx]),
                           four_classes.X_val, four_classes.y_val, 4)

        assert row.delta == pytest.approx(u(np.append(D, z)) - u(D), rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("model, make", [("ridge", lambda: Ridge(alpha=1.0)), ("linear", LinearRegression)])
def test_rank_one_regression_is_exact(regression, model, make):
    cfg = SamplingConfig(model=model, k_min=20, k_max=80, samples_per_point=1, block_size=10).resolved(regression)
    rows = run_blocks(regression, cfg, plan_blocks(regression, cfg)[:3])
    assert (rows["method"] == "rank_one").all()
    for _, row in rows.head(8).iterrows():
        D = subset_for(row, regression, cfg)
        z = regression.index_of([row.point_id])[0]

        def u(idx):
            return utility("neg_mse", make().fit(regression.X_train[idx], regression.y_train[idx]),
                           regression.X_val, regression.y_val, 0)

        assert row.delta == pytest.approx(u(np.append(D, z)) - u(D), rel=1e-7, abs=1e-10)


def test_base_shared_models_run_and_are_reproducible(cancer):
    cfg = SamplingConfig(model="decision_tree", k_min=30, k_max=60, samples_per_point=1, block_size=8)
    points = list(cancer.point_ids[:24])
    a = sample_marginals(cancer, cfg, points)
    b = sample_marginals(cancer, cfg.replace(shard_size=1), points)
    _bits_equal(a, b)
    assert (a["method"] == "cold").all() and not a["failed"].any()
    # Each block's base utility is shared by its rows.
    assert a.groupby("base_id")["u_base"].nunique().eq(1).all()


def test_failed_fits_are_recorded_never_made_up(cancer):
    # k-NN with 25 neighbours cannot predict from fewer than 25 rows: bases with k < 25
    # fail (and with them every sample of the block); k >= 25 succeed.
    cfg = SamplingConfig(model="knn", model_params={"n_neighbors": 25}, k_min=20, k_max=30,
                         samples_per_point=1, block_size=32)
    points = list(cancer.point_ids[:96])
    rows = sample_marginals(cancer, cfg, points)
    expect_fail = rows["k"] < 25
    assert expect_fail.any() and (~expect_fail).any()
    assert (rows["failed"] == expect_fail).all()
    bad = rows[rows["failed"]]
    assert bad["delta"].isna().all() and bad["u_with"].isna().all() and bad["u_base"].isna().all()
    assert bad["error"].str.contains("n_neighbors|n_samples", regex=True).all()
    assert rows.loc[~rows["failed"], "delta"].notna().all()


def test_non_finite_utility_is_a_failure(cancer):
    class InfSolver:
        method = "fake"

        def __call__(self, Xd, yd, Xz, yz, seed=None):
            u_with = np.zeros(len(Xz))
            u_with[0] = np.inf
            return BlockFit(u_base=0.0, u_with=u_with, converged=np.ones(len(Xz), bool), method="fake")

    out = engine._fast_block(InfSolver(), cancer, np.arange(10), np.arange(10, 14), 0)
    assert out["failed"].tolist() == [True, False, False, False]


def test_rerun_with_ledger_skips_done_shards_and_tops_up(cancer, reference, tmp_path):
    cfg, rows = reference
    ledger = Ledger(tmp_path / "ledger")
    calls = []

    def counting_map(fn, shards):
        shards = list(shards)
        calls.append([s.name for s in shards])
        return builtins.map(fn, shards)

    first = sample_marginals(cancer, cfg, ledger=ledger, map=counting_map)
    _bits_equal(first, rows)
    assert len(calls[-1]) > 0
    again = sample_marginals(cancer, cfg, ledger=ledger, map=counting_map)
    assert calls[-1] == []  # nothing recomputed
    _bits_equal(again, rows)

    more = cfg.replace(samples_per_point=3)
    topped = sample_marginals(cancer, more, ledger=ledger, map=counting_map)
    new_blocks = plan_blocks(cancer, more)[len(plan_blocks(cancer, cfg)):]
    assert sum(len(s.blocks) for s in shard_blocks(new_blocks, more.shard_size)) == len(new_blocks)
    assert len(calls[-1]) == len(shard_blocks(new_blocks, more.shard_size))
    assert len(topped) == 3 * cancer.n_pool
    _bits_equal(topped[topped["round"] < 2], rows)  # old samples untouched
    assert ledger.stats()["rows"] == 3 * cancer.n_pool


def test_progress_reports_samples(cancer):
    seen = []
    cfg = SamplingConfig(k_min=30, k_max=60, samples_per_point=1, block_size=16, shard_size=3)
    sample_marginals(cancer, cfg, list(cancer.point_ids[:64]), progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 64) and seen[-1] == (64, 64)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_solver_trouble_falls_back_to_the_model_itself(cancer, monkeypatch):
    class Broken:
        method = "batched_newton"

        def __call__(self, *args, **kwargs):
            raise np.linalg.LinAlgError("not positive definite")

    monkeypatch.setattr(engine, "solver_for", lambda *a, **k: Broken())
    cfg = SamplingConfig(k_min=30, k_max=60, samples_per_point=1, block_size=8)
    rows = run_blocks(cancer, cfg, plan_blocks(cancer, cfg)[:1])
    assert (rows["method"] == "warm").all() and not rows["failed"].any()
