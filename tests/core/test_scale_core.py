"""What keeps every stage linear in the number of points (issue 17)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pointscale import pipeline
from pointscale.data import load_dataset
from pointscale.errors import LedgerError
from pointscale.laws import fit_mle, simulate
from pointscale.laws.mle import fit_mle_chunked
from pointscale.sampling import Ledger, SamplingConfig, plan_blocks, run_blocks, shard_blocks
from pointscale.sampling.plans import draw_subset, plan_file_shards, pool_info, read_plan_shard, write_plan_file
from pointscale.valuation import removal_curve


def _subset_by_mask(info, seed, base_id, k, excluded):
    """The direct draw: choice over the materialised available members (O(pool) per base)."""
    from pointscale.sampling.plans import stratified_counts
    from pointscale.seeding import STREAM_BASE, rng

    gen = rng(seed, STREAM_BASE, base_id, 1)
    mask = np.ones(info.n_pool, dtype=bool)
    mask[excluded] = False
    avail = [m[mask[m]] for m in info.class_members]
    counts = stratified_counts(int(k), info.shares, np.array([len(a) for a in avail]))
    return np.sort(np.concatenate([gen.choice(a, size=int(c), replace=False) for a, c in zip(avail, counts)]))


def test_subset_draw_without_a_pool_mask_is_the_same_draw(cancer):
    # The O(k) draw must equal the choice over the materialised available set,
    # so ledgers written before and after the change agree.
    info = pool_info(cancer)
    g = np.random.default_rng(0)
    for t in range(200):
        excluded = g.choice(info.n_pool, size=int(g.integers(0, 40)), replace=True)
        k = int(g.integers(2, info.n_pool - 40))
        assert np.array_equal(draw_subset(info, 7, 1000 + t, k, excluded),
                              _subset_by_mask(info, 7, 1000 + t, k, excluded))


def test_plan_file_round_trips_the_shards(cancer, tmp_path):
    cfg = SamplingConfig(k_min=20, k_max=60, samples_per_point=3, block_size=8, shard_size=2)
    blocks = plan_blocks(cancer, cfg, [str(p) for p in cancer.point_ids[:50]])
    shards = shard_blocks(blocks, 2)
    path = tmp_path / "plan.parquet"
    digest = write_plan_file(path, shards, cancer)
    assert len(digest) == 64
    assert plan_file_shards(path) == [s.name for s in shards]
    for i, shard in enumerate(shards):
        assert read_plan_shard(path, i, cancer) == shard
    other = load_dataset("digits")
    with pytest.raises(LedgerError, match="dataset version"):
        read_plan_shard(path, 0, other)
    with pytest.raises(LedgerError, match="no shard"):
        read_plan_shard(path, len(shards), cancer)


def test_ledger_reads_projected_and_filtered_rows(cancer, tmp_path):
    cfg = SamplingConfig(k_min=20, k_max=60, samples_per_point=4, block_size=8, shard_size=2)
    ledger = Ledger(tmp_path)
    blocks = plan_blocks(cancer, cfg, [str(p) for p in cancer.point_ids[:30]])
    for shard in shard_blocks(blocks, 2):
        ledger.write_shard(shard.name, run_blocks(cancer, cfg, shard.blocks))
    full = ledger.read()
    keep = set(full["point_id"].unique()[:10])
    part = ledger.read(columns=["point_id", "k", "delta"], where={"point_id": keep, "k": (30, 50)})
    assert list(part.columns) == ["sample_id", "base_id", "point_id", "k", "delta"]
    expect = full[full["point_id"].isin(keep) & full["k"].between(30, 50)][list(part.columns)]
    pd.testing.assert_frame_equal(part.reset_index(drop=True), expect.reset_index(drop=True))


def test_chunked_mle_equals_one_fit():
    params = simulate.draw_parameters(300, seed=1)
    samples = simulate.simulate_samples(params, 8, 2).sample(frac=1.0, random_state=0)
    one = fit_mle(samples).to_frame()
    chunked = fit_mle_chunked(samples, chunk_points=37).to_frame()
    pd.testing.assert_frame_equal(one, chunked)


def test_removal_budget_subsamples_and_says_so(cancer):
    values = pd.DataFrame({"point_id": cancer.point_ids.astype(str),
                           "shapley": np.random.default_rng(0).normal(size=cancer.n_pool)})
    curve = removal_curve(cancer, values, fractions=(0.0, 0.2), repeats=2, max_train=150)
    assert (curve["n_pool_used"] == 150).all()
    assert curve.loc[curve["fraction"] == 0.0, "n_train"].eq(150).all()
    assert curve.loc[curve["fraction"] == 0.2, "n_removed"].eq(30).all()
    full = removal_curve(cancer, values, fractions=(0.0,), repeats=1)
    assert (full["n_pool_used"] == cancer.n_pool).all()


def test_out_of_bag_evidence_streams_to_the_same_table(cancer, tmp_path, monkeypatch):
    from pointscale.sampling import ledger as ledger_module, sample_marginals

    cfg = SamplingConfig(k_min=20, k_max=60, samples_per_point=4, block_size=8, shard_size=2)
    ledger = Ledger(tmp_path)
    sample_marginals(cancer, cfg, [str(p) for p in cancer.point_ids[:40]], ledger=ledger)
    whole = ledger_module.summarize(ledger.read_oob())
    assert len(whole) > 0
    monkeypatch.setattr(ledger_module, "_OOB_MERGE_ROWS", 1)  # sum after every shard
    pd.testing.assert_frame_equal(ledger_module.oob_evidence(ledger), whole)


def test_out_of_bag_subset_costs_no_pool_mask():
    # The same draw as choice over the materialised out-of-bag set (see oob_subset).
    from pointscale.sampling.oob import oob_subset
    from pointscale.seeding import STREAM_OOB, rng

    g = np.random.default_rng(0)
    for t in range(100):
        n = int(g.choice([1500, 200_000]))
        D = np.sort(g.choice(n, size=int(g.integers(1, 1000)), replace=False))
        mask = np.ones(n, dtype=bool)
        mask[D] = False
        out = np.flatnonzero(mask)
        expect = np.sort(rng(5, STREAM_OOB, t).choice(out, size=1024, replace=False)) if out.size > 1024 else out
        assert np.array_equal(oob_subset(n, D, 5, t, 1024), expect)
