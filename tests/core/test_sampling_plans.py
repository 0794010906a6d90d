"""Plans: the invariants of SPEC §2 and identity-keyed determinism."""

from __future__ import annotations

import collections

import numpy as np
import pandas as pd
import pytest

from pointscale.data import load_dataset
from pointscale.errors import ConfigError, DataError, LedgerError
from pointscale.sampling import SamplingConfig, base_subset, plan_blocks, shard_blocks, subset_for
from pointscale.sampling.plans import decode_block_members, encode_block_members, stratified_counts


@pytest.fixture(scope="module")
def imbalanced():
    # Three classes with shares 0.6 / 0.3 / 0.1.
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], [360, 180, 60])
    frame = pd.DataFrame({"a": rng.normal(size=600) + y, "b": rng.normal(size=600), "y": y})
    return load_dataset("imb", frame=frame, target="y", task="classification")


@pytest.fixture(scope="module")
def diabetes():
    return load_dataset("diabetes")


def _check_invariants(ds, cfg, blocks):
    cfg = cfg.resolved(ds)
    pool_shares = np.bincount(ds.y_train, minlength=ds.n_classes) / ds.n_pool if ds.n_classes else None
    seen = collections.Counter()
    per_round = collections.defaultdict(list)
    for block in blocks:
        D = base_subset(ds, cfg, block)
        Z = ds.index_of(list(block.point_ids))
        assert len(D) == block.k == len(np.unique(D)), "|D| = k, no repeats"
        assert not set(Z.tolist()) & set(D.tolist()), "z ∉ D (nor any other point of the block)"
        assert cfg.k_min <= block.k <= cfg.k_max
        assert len(block.point_ids) <= cfg.block_size
        if pool_shares is not None:
            counts = np.bincount(ds.y_train[D], minlength=ds.n_classes)
            assert (counts >= 1).all()
            assert np.all(np.abs(counts - block.k * pool_shares) <= 1.0 + 1e-9), (counts, block.k)
        seen.update(block.point_ids)
        per_round[block.round].extend(block.point_ids)
    for r, ids in per_round.items():
        assert len(ids) == len(set(ids)), f"a point appears twice in round {r}"
    return seen


def test_invariants_uniform(cancer):
    cfg = SamplingConfig(k_min=20, k_max=120, samples_per_point=3, block_size=16)
    blocks = plan_blocks(cancer, cfg)
    seen = _check_invariants(cancer, cfg, blocks)
    assert set(seen) == set(cancer.point_ids) and set(seen.values()) == {3}
    ks = {b.k for b in blocks}
    assert min(ks) >= 20 and max(ks) <= 120 and len(ks) > 20  # k really is drawn


def test_invariants_imbalanced_three_classes(imbalanced):
    cfg = SamplingConfig(k_min=10, k_max=200, samples_per_point=2, block_size=25)
    _check_invariants(imbalanced, cfg, plan_blocks(imbalanced, cfg))


def test_regression_subsets_are_plain_uniform(diabetes):
    cfg = SamplingConfig(model="ridge", k_min=30, k_max=60, samples_per_point=2, block_size=10)
    _check_invariants(diabetes, cfg, plan_blocks(diabetes, cfg))


def test_k_range_is_inclusive_at_both_ends(cancer):
    cfg = SamplingConfig(k_min=20, k_max=22, samples_per_point=10, block_size=8)
    ks = collections.Counter(b.k for b in plan_blocks(cancer, cfg))
    assert set(ks) == {20, 21, 22}
    # Roughly uniform: each value about a third of ~400 blocks.
    assert min(ks.values()) > 0.25 * sum(ks.values())


def test_staggered_rounds_cycle_the_grid(cancer):
    cfg = SamplingConfig(mode="staggered", sizes=(20, 40, 80), samples_per_size=2, block_size=32)
    blocks = plan_blocks(cancer, cfg)
    by_size = collections.Counter()
    for b in blocks:
        assert b.k == (20, 40, 80)[b.round % 3]
        by_size[b.k] += len(b.point_ids)
    assert dict(by_size) == {20: 2 * cancer.n_pool, 40: 2 * cancer.n_pool, 80: 2 * cancer.n_pool}


def test_stratified_counts_largest_remainder():
    shares = np.array([0.6, 0.3, 0.1])
    big = np.array([1000, 1000, 1000])
    for k in range(3, 200):
        c = stratified_counts(k, shares, big)
        assert c.sum() == k and (c >= 1).all()
        assert np.all(np.abs(c - k * shares) < 1 + 1e-12)
    # A rare class that runs out gives its share to the others, total still k.
    c = stratified_counts(100, shares, np.array([1000, 1000, 4]))
    assert c.sum() == 100 and c[2] == 4


def test_plan_is_deterministic_and_identity_keyed(cancer):
    cfg = SamplingConfig(k_min=20, k_max=100, samples_per_point=2, block_size=16)
    a = plan_blocks(cancer, cfg)
    b = plan_blocks(cancer, cfg)
    assert a == b
    # The order in which points are listed does not matter, only which points.
    shuffled = list(np.random.default_rng(0).permutation(cancer.point_ids))
    assert plan_blocks(cancer, cfg, shuffled) == a
    # A different seed gives a different plan.
    other = plan_blocks(cancer, SamplingConfig(k_min=20, k_max=100, samples_per_point=2, block_size=16, seed=1))
    assert {x.base_id for x in other}.isdisjoint({x.base_id for x in a})


def test_top_up_adds_only_new_rounds(cancer):
    small = plan_blocks(cancer, SamplingConfig(k_min=20, k_max=100, samples_per_point=2, block_size=16))
    big = plan_blocks(cancer, SamplingConfig(k_min=20, k_max=100, samples_per_point=5, block_size=16))
    assert big[: len(small)] == small
    assert {b.round for b in big[len(small):]} == {2, 3, 4}
    # With what we have, only the new blocks are planned.
    rest = plan_blocks(cancer, SamplingConfig(k_min=20, k_max=100, samples_per_point=5, block_size=16),
                       have={b.base_id for b in small})
    assert rest == big[len(small):]


def test_points_added_later_get_their_own_blocks(cancer):
    ids = list(cancer.point_ids)
    cfg = SamplingConfig(k_min=20, k_max=100, samples_per_point=2, block_size=16)
    old = plan_blocks(cancer, cfg, ids[:200])
    new = plan_blocks(cancer, cfg, ids[200:])
    assert {p for b in new for p in b.point_ids} == set(ids[200:])
    assert {b.base_id for b in old}.isdisjoint({b.base_id for b in new})
    assert plan_blocks(cancer, cfg, ids[:200]) == old  # planning new points leaves old ones alone


def test_unknown_points_and_duplicates(cancer):
    cfg = SamplingConfig(k_min=20, k_max=100)
    with pytest.raises(DataError, match="not in the training pool"):
        plan_blocks(cancer, cfg, ["nope"])
    with pytest.raises(ConfigError, match="duplicate"):
        plan_blocks(cancer, cfg, [cancer.point_ids[0]] * 2)


def test_shards_partition_blocks_with_stable_names(cancer):
    blocks = plan_blocks(cancer, SamplingConfig(k_min=20, k_max=100, samples_per_point=3, block_size=16))
    for size in (1, 7, 64):
        shards = shard_blocks(blocks, size)
        assert [b for s in shards for b in s.blocks] == blocks
        assert all(len(s.blocks) <= size for s in shards)
        names = [s.name for s in shards]
        assert len(set(names)) == len(names)
        assert names == [s.name for s in shard_blocks(blocks, size)]


def test_subset_for_reconstructs_from_a_row_alone(cancer):
    cfg = SamplingConfig(k_min=20, k_max=100, samples_per_point=1, block_size=16).resolved(cancer)
    block = plan_blocks(cancer, cfg)[3]
    members = encode_block_members(cancer.index_of(list(block.point_ids)), cancer.n_pool)
    row = {"base_id": block.base_id, "k": block.k, "block_members": members,
           "dataset_fingerprint": cancer.fingerprint, "config_hash": cfg.identity_hash()}
    np.testing.assert_array_equal(subset_for(row, cancer, cfg), base_subset(cancer, cfg, block))
    with pytest.raises(LedgerError, match="sampled with config"):
        subset_for(row, cancer, SamplingConfig(k_min=20, k_max=100, seed=5))
    with pytest.raises(LedgerError, match="dataset version"):
        subset_for(dict(row, dataset_fingerprint="0" * 64), cancer, cfg)


def test_block_members_encoding_round_trips():
    for n_pool in (1, 16, 17, 314, 46842, 10**7):
        idx = np.unique(np.random.default_rng(n_pool).integers(0, n_pool, 32))
        text = encode_block_members(idx, n_pool)
        np.testing.assert_array_equal(decode_block_members(text), np.sort(idx))
    assert encode_block_members(np.array([255, 3]), 300) == "3:0030ff"
    with pytest.raises(LedgerError):
        decode_block_members("3:0030f")
