"""Out-of-bag evidence: zero extra fits, bounded cost, exact resume, every model, signal."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from pointscale.data import load_dataset
from pointscale.sampling import (
    MODELS,
    Ledger,
    SamplingConfig,
    oob_evidence,
    plan_blocks,
    run_blocks,
    sample_blocks,
    sample_marginals,
    shard_blocks,
)
from pointscale.sampling import oob as oob_module
from pointscale.sampling.plans import draw_subset, pool_info
from pointscale.sampling.schema import SCORE_SCALE
from pointscale.valuation import flip_labels


SMALL = dict(k_min=30, k_max=90, samples_per_point=3, block_size=16)


def _points(ds, n):
    return [str(p) for p in ds.point_ids[:n]]


def test_generic_path_makes_no_extra_fits(cancer, monkeypatch):
    # Count every LogisticRegression fit independently of the engine's own count.
    calls = {"n": 0}
    original = LogisticRegression.fit

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", counting)
    cfg = SamplingConfig(model="logreg", fast_path=False, seed=3, **SMALL)
    blocks = plan_blocks(cancer, cfg, _points(cancer, 40))
    n_samples = sum(b.n_samples for b in blocks)
    with_oob = sample_blocks(cancer, cfg, blocks, oob=True)
    fits_with = calls["n"]
    calls["n"] = 0
    without = sample_blocks(cancer, cfg, blocks, oob=False)
    fits_without = calls["n"]
    assert fits_with == fits_without == n_samples + len(blocks)
    assert with_oob.n_fits == fits_with
    # The samples do not depend on whether evidence is recorded.
    pd.testing.assert_frame_equal(with_oob.samples, without.samples, check_exact=True)
    # Every base scored exactly the pool minus its subset (the pool is under the cap).
    info = pool_info(cancer)
    expected = sum(info.n_pool - b.k for b in blocks)
    assert with_oob.n_oob_predictions == expected == int(with_oob.oob["n"].sum())
    assert without.n_oob_predictions == 0 and without.oob.empty


def test_cap_scales_with_the_block_size_and_shrinks_with_the_pool():
    cap = oob_module.oob_cap
    floor = oob_module.OOB_POOL_FLOOR
    # Large pools: one prediction per sample of the block (the evidence weighs what the ledger does).
    for B in (1, 8, 32, 100):
        assert cap(1_000_000, B) == cap(floor, B) == B
        assert cap(floor + 1, B) == B
    # Small pools: about B * N0 / N (a 1,000-point pool: more than its out-of-bag points).
    assert cap(1000, 32) == 1049 and cap(1000, 32) > 1000
    assert cap(floor // 4, 32) == 128 and cap(floor // 4, 64) == 256
    # Total predictions of a run ~ samples x max(N, N0) / N: never below one per sample.
    for N in (10, 1000, 50_000, 10**6, 10**7):
        assert cap(N, 32) >= 32 and cap(N, 32) * N >= 32 * min(N, floor)


def test_cost_per_base_is_capped_by_an_identity_seeded_subset(cancer, monkeypatch):
    monkeypatch.setattr(oob_module, "OOB_POOL_FLOOR", 100)  # cancer's pool is above it: cap = B
    cfg = SamplingConfig(model="logreg", seed=3, **SMALL)
    cap = cfg.block_size
    assert oob_module.oob_cap(pool_info(cancer).n_pool, cfg.block_size) == cap
    blocks = plan_blocks(cancer, cfg, _points(cancer, 40))
    res = sample_blocks(cancer, cfg, blocks)
    assert res.n_oob_predictions == cap * len(blocks)
    # The subset depends on the base only, never on which other bases run with it.
    info = pool_info(cancer)
    b = blocks[3]
    D = draw_subset(info, cfg.seed, b.base_id, b.k, info.indices(b.point_ids))
    one = oob_module.oob_subset(info.n_pool, D, cfg.seed, b.base_id, cap)
    assert one.size == cap and np.all(np.diff(one) > 0) and not np.isin(one, D).any()
    np.testing.assert_array_equal(one, oob_module.oob_subset(info.n_pool, D, cfg.seed, b.base_id, cap))
    alone = sample_blocks(cancer, cfg, [b])
    assert alone.n_oob_predictions == cap


def _evidence(ds, cfg, points, folder, shard_size, map=None):
    ledger = Ledger(folder)
    kwargs = {} if map is None else {"map": map}
    sample_marginals(ds, SamplingConfig(**{**cfg.to_dict(), "shard_size": shard_size}), points, ledger=ledger,
                     **kwargs)
    return oob_evidence(ledger)


def test_evidence_is_bit_identical_for_any_shard_size_and_worker_count(cancer, tmp_path):
    saved = cancer.save(tmp_path / "data")
    cfg = SamplingConfig(model="logreg", seed=5, **SMALL)
    points = _points(cancer, 64)
    ref = _evidence(cancer, cfg, points, tmp_path / "s1", 1)
    assert len(ref) == cancer.n_pool and (ref["n_oob"] > 0).all()
    for size in (7, 64):
        pd.testing.assert_frame_equal(ref, _evidence(cancer, cfg, points, tmp_path / f"s{size}", size),
                                      check_exact=True)
    with ProcessPoolExecutor(2) as pool:
        two = _evidence(saved, cfg, points, tmp_path / "w2", 3, map=pool.map)
    pd.testing.assert_frame_equal(ref, two, check_exact=True)


@pytest.mark.parametrize("floor", [None, 100])
def test_evidence_after_a_crash_and_resume_is_identical(cancer, tmp_path, monkeypatch, floor):
    if floor is not None:  # a pool above the floor: the cap (= block size) binds, subsets are drawn
        monkeypatch.setattr(oob_module, "OOB_POOL_FLOOR", floor)
    cfg = SamplingConfig(model="logreg", seed=6, **SMALL)
    points = _points(cancer, 64)
    ref = _evidence(cancer, cfg, points, tmp_path / "clean", 2)
    ledger = Ledger(tmp_path / "crashed")
    plan = plan_blocks(cancer, cfg, points)
    shards = shard_blocks(plan, 2)
    # A crash: some shards committed, one shard's files written without its commit record.
    for shard in shards[:3]:
        res = sample_blocks(cancer, cfg, shard.blocks)
        ledger.write_shard(shard.name, res.samples, oob=res.oob)
    partial = sample_blocks(cancer, cfg, shards[3].blocks)
    ledger.write_shard(shards[3].name, partial.samples, oob=partial.oob)
    (ledger.shard_dir / f"{shards[3].name}.parquet.sha256").unlink()
    (ledger.oob_dir / f"{shards[3].name}.parquet").write_bytes(b"torn write")
    # Resume with another shard size: only the missing bases are sampled.
    sample_marginals(cancer, SamplingConfig(**{**cfg.to_dict(), "shard_size": 5}), points, ledger=ledger)
    pd.testing.assert_frame_equal(ref, oob_evidence(ledger), check_exact=True)


def test_corrupted_evidence_quarantines_its_shard(cancer, tmp_path):
    cfg = SamplingConfig(model="logreg", seed=6, **SMALL)
    ledger = Ledger(tmp_path)
    sample_marginals(cancer, cfg, _points(cancer, 32), ledger=ledger)
    name = ledger.shard_names()[0]
    path = ledger.oob_dir / f"{name}.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="out-of-bag evidence"):
        ledger.verify()
    assert name not in ledger.shard_names()


@pytest.fixture(scope="module")
def diabetes():
    return load_dataset("diabetes")


@pytest.mark.parametrize("model,task", [(m, t) for m in sorted(MODELS) for t in MODELS[m].tasks])
def test_every_registry_model_records_evidence(cancer, diabetes, model, task):
    ds = cancer if task == "classification" else diabetes
    cfg = SamplingConfig(model=model, k_min=40, k_max=60, samples_per_point=1, block_size=8, seed=1)
    blocks = plan_blocks(ds, cfg, _points(ds, 8))
    res = sample_blocks(ds, cfg, blocks)
    assert res.n_oob_predictions == sum(pool_info(ds).n_pool - b.k for b in blocks)
    ev = res.oob
    assert (ev["score_fx"] >= 0).all() and (ev["score_fx"] <= ev["n"] * SCORE_SCALE).all()
    assert (ev["n_correct"] <= ev["n"]).all()


def test_low_evidence_finds_flipped_labels(cancer):
    # 10 % of the pool flipped: models trained without a flipped point predict
    # its (wrong) label badly. Breast cancer is nearly separable with logistic
    # regression, so the evidence should separate flipped from clean points
    # almost perfectly; 0.9 leaves room for the small sample (31 flipped).
    noisy, flipped = flip_labels(cancer, list(cancer.point_ids), 0.1, seed=2)
    cfg = SamplingConfig(model="logreg", k_min=40, k_max=120, samples_per_point=4, block_size=32, seed=2)
    res = sample_blocks(noisy, cfg, plan_blocks(noisy, cfg))
    table = res.oob.groupby("point_id")[["n", "score_fx"]].sum()
    score = table["score_fx"] / table["n"]
    is_flipped = np.isin(score.index.to_numpy(), flipped)
    assert roc_auc_score(is_flipped, -score.to_numpy()) > 0.9


def test_run_blocks_is_unchanged_by_evidence(cancer):
    cfg = SamplingConfig(model="logreg", seed=3, **SMALL)
    blocks = plan_blocks(cancer, cfg, _points(cancer, 20))
    pd.testing.assert_frame_equal(run_blocks(cancer, cfg, blocks), sample_blocks(cancer, cfg, blocks).samples,
                                  check_exact=True)
