"""The committed ground-truth archive (reproduction/archive.py) and the tables that keep what they cannot recompute.

Real samples: logistic regression on the bundled breast_cancer data, through
the product's ledger, staggered as the non-linear ground truths are.
"""

import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pointscale.data import load_dataset
from pointscale.errors import ConfigError
from pointscale.sampling import SamplingConfig, sample_marginals
from pointscale.sampling.ledger import Ledger
from reproduction import archive, settle
from reproduction.verdicts import halves_by_round

ROOT = Path(__file__).resolve().parents[2]


def _sample(folder: Path, depth: int, seed: int = 0) -> pd.DataFrame:
    ds = load_dataset("breast_cancer")
    cfg = SamplingConfig(model="logreg", mode="staggered", sizes=(20, 30, 40, 60), samples_per_size=depth, seed=seed,
                         block_size=6, shard_size=2)
    return sample_marginals(ds, cfg, [str(p) for p in ds.point_ids[:6]], ledger=Ledger(folder))


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory):
    root = tmp_path_factory.mktemp("gt")
    _sample(root / "seed0", 3)
    return root


def test_checkpoint_round_trips_exactly_and_appends_only_new_samples(ledgers, tmp_path):
    folder = ledgers / "seed0"
    first = archive.checkpoint(archive.ledger_samples(folder, 0), "bc", "logreg", root=tmp_path)
    assert first is not None and first.name == "part-0000.parquet"
    assert archive.checkpoint(archive.ledger_samples(folder, 0), "bc", "logreg", root=tmp_path) is None

    deeper = ledgers / "deeper"
    shutil.copytree(folder, deeper)
    _sample(deeper, 5)  # the same seed, two more rounds per size: the old rows are kept, new rows added
    second = archive.checkpoint(archive.ledger_samples(deeper, 0), "bc", "logreg", root=tmp_path)
    assert second is not None and second.name == "part-0001.parquet"
    old, new = pd.read_parquet(first), pd.read_parquet(second)
    assert len(old) == 6 * 4 * 3 and len(new) == 6 * 4 * 2  # points × sizes × rounds

    ledger = Ledger(deeper).read(columns=["point_id", "k", "round", "delta"])
    pooled = archive.pooled_samples({}, "bc", "logreg", root=tmp_path)  # the archive alone, no ledger
    a = ledger.set_index(["point_id", "k", "round"])["delta"].sort_index()
    b = pooled.set_index(["point_id", "k", "round"])["delta"].sort_index()
    assert a.index.equals(b.index)
    assert np.array_equal(a.to_numpy(), b.to_numpy())  # float64, bit for bit


def test_a_checkpoint_waits_for_another_jobs_checkpoint_of_the_same_ground_truth(ledgers, tmp_path):
    """Two seeds' jobs checkpoint one ground truth side by side: neither may claim the other's part number."""
    seed0 = archive.ledger_samples(ledgers / "seed0", 0)
    folder = tmp_path / "bc" / "logreg"
    folder.mkdir(parents=True)
    written: list = []
    with archive._locked(folder):  # another job is in the middle of its checkpoint
        job = threading.Thread(target=lambda: written.append(archive.checkpoint(seed0, "bc", "logreg", root=tmp_path)))
        job.start()
        job.join(timeout=1.0)
        assert job.is_alive() and not list(folder.glob("part-*"))  # it waits rather than reading a stale part list
        archive._append(seed0.assign(seed=7), "bc", "logreg", tmp_path, folder)  # the holder writes part 0
    job.join(timeout=30)
    assert [p.name for p in written] == ["part-0001.parquet"]
    assert len(archive.read_parts("bc", "logreg", root=tmp_path)) == 2 * len(seed0)


def test_another_seed_adds_independent_rounds_kept_whole_in_a_half(ledgers, tmp_path):
    archive.checkpoint(archive.ledger_samples(ledgers / "seed0", 0), "bc", "logreg", root=tmp_path)
    _sample(ledgers / "seed1", 3, seed=1)
    pooled = archive.pooled_samples({0: ledgers / "seed0", 1: ledgers / "seed1"}, "bc", "logreg", root=tmp_path)
    assert len(pooled) == 2 * 6 * 4 * 3  # the archive and the seed-0 ledger overlap: each sample once
    assert pooled.groupby(["point_id", "k"]).size().eq(6).all()
    assert set(pooled.loc[pooled.seed == 1, "round"]) >= {archive.ROUND_STRIDE}
    for half in halves_by_round(pooled):
        per_round = half.groupby(["k", "round"])["point_id"].nunique()
        assert per_round.eq(6).all()  # every round's points together: common random numbers stay in a half
    # The seeds are independent draws: their deltas differ.
    s0 = pooled[pooled.seed == 0].set_index(["point_id", "k", "round"])["delta"].to_numpy()
    s1 = pooled[pooled.seed == 1].set_index(["point_id", "k", "round"])["delta"].to_numpy()
    assert not np.allclose(s0, s1)


def test_tables_keep_committed_rows_whose_samples_are_not_here(tmp_path):
    dest = tmp_path / "results"
    shutil.copytree(ROOT / "docs" / "results", dest)
    before = {p.name: p.read_bytes() for p in dest.glob("*.csv")}
    settle.tables(tmp_path / "no-ledgers", dest, n_boot=10, archive_root=tmp_path / "no-archive")
    after = {p.name: p.read_bytes() for p in dest.glob("*.csv")}
    assert after == before


def test_a_shallower_ground_truth_does_not_replace_the_committed_row(ledgers, tmp_path):
    dest = tmp_path / "results"
    shutil.copytree(ROOT / "docs" / "results", dest)
    laws = pd.read_csv(dest / "laws.csv")
    row = laws[(laws.dataset == "adult") & (laws.model == "svm")].iloc[0]
    gt_root = tmp_path / "archive"
    _sample(tmp_path / "six", 6)
    samples = archive.ledger_samples(tmp_path / "six", 0)  # 6 rounds per size: far shallower
    archive.checkpoint(samples, "adult", "svm", root=gt_root)
    fresh, _ = settle.law_tables(tmp_path / "no-ledgers", n_boot=10, archive_root=gt_root)
    assert list(zip(fresh.dataset, fresh.model)) == [("adult", "svm")] and fresh.samples_per_size.iloc[0] < 10
    settle.tables(tmp_path / "no-ledgers", dest, n_boot=10, archive_root=gt_root)
    kept = pd.read_csv(dest / "laws.csv")
    kept = kept[(kept.dataset == "adult") & (kept.model == "svm")].iloc[0]
    assert kept["samples_per_size"] == row["samples_per_size"] and kept["value"] == row["value"]


def test_rounds_another_machine_sampled_are_not_drawn_again(ledgers, tmp_path):
    # The archive holds seed-0 rounds of adult/svm; this machine has no seed-0 ledger: sampling seed 0 again
    # would repeat those rounds, so it is refused before anything is sampled, naming the next seed.
    archive.checkpoint(archive.ledger_samples(ledgers / "seed0", 0), "adult", "svm", root=tmp_path / "gt")
    with pytest.raises(ConfigError, match="give --seed 1 to add independent rounds"):
        settle.sample_nonlinear(tmp_path / "work", [2], labels=["svm"], datasets=["adult"], checkpoint=True,
                                archive_root=tmp_path / "gt")
    assert not (tmp_path / "work").exists()
