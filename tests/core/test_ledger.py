"""The sample ledger: atomic checksummed shards, corruption and truncation handling."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from pointscale.data import load_dataset
from pointscale.errors import LedgerError
from pointscale.sampling import Ledger, LedgerIntegrityWarning, SamplingConfig, sample_marginals, sort_samples


def _frame(base_ids, per_base=3, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for b in base_ids:
        for j in range(per_base):
            rows.append({"sample_id": b * 100 + j, "point_id": f"p{j}", "base_id": b, "k": 10,
                         "delta": rng.normal(), "failed": False})
    return pd.DataFrame(rows)


def test_round_trip_is_exact(tmp_path):
    ledger = Ledger(tmp_path)
    a, b = _frame([1, 2]), _frame([3], seed=1)
    ledger.write_shard("a", a)
    ledger.write_shard("b", b)
    out = ledger.read()
    pd.testing.assert_frame_equal(out, pd.concat([a, b], ignore_index=True), check_exact=True)
    assert ledger.completed_base_ids() == {1, 2, 3}
    assert ledger.stats() == {"shards": 2, "rows": 9, "failed": 0, "bases": 3,
                              "bytes": ledger.stats()["bytes"], "fits": 0, "oob_predictions": 0,
                              "quarantined": 0, "uncommitted": 0}
    assert len(ledger) == 9


def test_rows_are_deduplicated_by_sample_id(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.write_shard("a", _frame([1]))
    ledger.write_shard("b", _frame([1]))  # the same samples again (e.g. two runs raced)
    assert len(ledger.read()) == 3


def test_no_temporary_or_partial_files_are_read(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.write_shard("a", _frame([1]))
    # A crash between writing the Parquet file and its record: uncommitted, ignored.
    (tmp_path / "shards" / "b.parquet").write_bytes(b"PAR1 half written")
    # A crash inside the atomic write leaves only a hidden temporary file.
    (tmp_path / "shards" / ".c.parquet.x1y2.tmp").write_bytes(b"junk")
    assert ledger.completed_base_ids() == {1}
    assert len(ledger.read()) == 3
    assert ledger.stats()["uncommitted"] == 1
    assert ledger.quarantined == []


def _corrupt(path, how):
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "delete":
        path.unlink()
    elif how == "record":
        path.with_name(path.name + ".sha256").write_text("{not json")


@pytest.mark.parametrize("how", ["flip", "truncate", "delete", "record"])
def test_damaged_shard_is_detected_quarantined_and_not_used(tmp_path, how):
    ledger = Ledger(tmp_path)
    ledger.write_shard("good", _frame([1]))
    ledger.write_shard("bad", _frame([2]))
    _corrupt(tmp_path / "shards" / "bad.parquet", how)
    with pytest.warns(LedgerIntegrityWarning, match="'bad'"):
        out = ledger.read()
    assert set(out["base_id"]) == {1}
    assert [name for name, _ in ledger.quarantined] == ["bad"]
    assert ledger.completed_base_ids() == {1}  # its bases are to be sampled again
    assert ledger.stats()["quarantined"] == 1
    assert not (tmp_path / "shards" / "bad.parquet").exists()
    assert any(p.name.startswith("bad.parquet") for p in (tmp_path / "quarantine").iterdir())


def test_flip_in_data_bytes_changes_checksum_even_when_parquet_still_parses(tmp_path):
    # Independent of Parquet's own checks: the record's sha256 must catch any changed byte.
    ledger = Ledger(tmp_path)
    ledger.write_shard("s", _frame([1]))
    path = tmp_path / "shards" / "s.parquet"
    data = bytearray(path.read_bytes())
    data[8] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(LedgerIntegrityWarning, match="sha256 mismatch"):
        assert ledger.read().empty


def test_rewrite_replaces_and_content_hash_tracks_content(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.write_shard("a", _frame([1]))
    h1 = ledger.content_hash()
    assert Ledger(tmp_path).content_hash() == h1  # another process sees the same
    ledger.write_shard("b", _frame([2]))
    h2 = ledger.content_hash()
    assert h2 != h1
    ledger.write_shard("b", _frame([2], seed=5))
    assert ledger.content_hash() not in (h1, h2)
    assert ledger.read().query("base_id == 2")["delta"].tolist() == _frame([2], seed=5)["delta"].tolist()


def test_bad_names_and_frames_are_rejected(tmp_path):
    ledger = Ledger(tmp_path)
    with pytest.raises(LedgerError):
        ledger.write_shard("../escape", _frame([1]))
    with pytest.raises(LedgerError):
        ledger.write_shard("ok", pd.DataFrame({"x": [1]}))


def test_corrupted_shard_is_resampled_to_the_identical_result(tmp_path):
    ds = load_dataset("breast_cancer")
    cfg = SamplingConfig(k_min=30, k_max=60, samples_per_point=2, block_size=16, shard_size=4)
    ledger = Ledger(tmp_path)
    first = sample_marginals(ds, cfg, ledger=ledger)
    names = ledger.shard_names()
    victim = names[len(names) // 2]
    _corrupt(tmp_path / "shards" / f"{victim}.parquet", "truncate")

    executed = []

    def spy(fn, shards):
        shards = list(shards)
        executed.extend(s.name for s in shards)
        return map(fn, shards)

    with pytest.warns(LedgerIntegrityWarning):
        again = sample_marginals(ds, cfg, ledger=Ledger(tmp_path), map=spy)
    assert executed == [victim]  # only the damaged shard is sampled again
    pd.testing.assert_frame_equal(sort_samples(first), sort_samples(again), check_exact=True)
    assert os.path.exists(tmp_path / "shards" / f"{victim}.parquet")
