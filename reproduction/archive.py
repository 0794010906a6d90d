"""The ground-truth archive: the non-linear ground truths' samples, committed with the repository.

Why: a non-linear ground truth deep enough to decide its verdict takes more
CPU hours than one working session has, and the ledger that records it lives
on the machine that sampled it. When the machine is replaced the ledger is
gone (it happened once: every ground truth behind the page had to be
sampled again). The archive keeps what the verdicts need -- ``point_id``,
``k``, ``round``, the ledger's ``seed`` and ``delta`` (float64, exact) -- in
append-only Parquet parts under ``reproduction/ground_truth/<dataset>/<label>/``
(about 7 bytes a sample), so any checkout can tabulate it and a later
session adds to it.

* :func:`checkpoint` writes one new part with the ledger rows no earlier part
  holds (parts are never rewritten, so the repository's history holds each
  sample once);
* :func:`pooled_samples` reads the parts and every ledger of that ground
  truth and returns each sample once. A ledger sampled with another seed
  (on a new machine, where the seed-0 ledger is gone) adds independent
  rounds: its base subsets and model seeds come from its own stream. Rounds
  are keyed by (seed, round), so common random numbers stay within a round
  and :func:`reproduction.verdicts.halves_by_round` keeps whole rounds in a
  half.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pointscale.io import atomic_write_bytes
from pointscale.sampling.ledger import Ledger

#: Where the archive lives, relative to the repository.
ARCHIVE = Path(__file__).resolve().parent / "ground_truth"
COLUMNS = ["point_id", "k", "round", "seed", "delta"]
#: A round key unique across seeds: seed · ROUND_STRIDE + round.
ROUND_STRIDE = 1_000_000


def _folder(root: Path, dataset: str, label: str) -> Path:
    return Path(root) / dataset / label


def read_parts(dataset: str, label: str, root: Path = ARCHIVE) -> pd.DataFrame:
    """Every archived sample of one ground truth (empty frame with :data:`COLUMNS` if none)."""
    parts = sorted(_folder(root, dataset, label).glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                             zip(COLUMNS, ["object", "int64", "int64", "int64", "float64"])})
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    frame["point_id"] = frame["point_id"].astype(str)
    return frame.astype({"k": "int64", "round": "int64", "seed": "int64", "delta": "float64"})


def ledger_samples(folder: Path, seed: int) -> pd.DataFrame:
    """One ledger's samples in the archive's columns."""
    frame = Ledger(folder).read(columns=["point_id", "k", "round", "delta"])
    frame = frame[["point_id", "k", "round", "delta"]].assign(seed=int(seed))
    frame["point_id"] = frame["point_id"].astype(str)
    return frame.astype({"k": "int64", "round": "int64"})[COLUMNS]


def _key(frame: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_frame(frame[["seed", "round", "k", "point_id"]])


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (two seeds' jobs may checkpoint one ground truth at once)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def checkpoint(samples: pd.DataFrame, dataset: str, label: str, root: Path = ARCHIVE) -> Path | None:
    """Append the samples no archived part holds as a new part; returns its path (None if nothing new).

    The write is atomic (:func:`pointscale.io.atomic_write_bytes`), so an interrupted
    checkpoint leaves the archive as it was. The folder is locked from reading
    the parts to writing the new one, so jobs of two seeds sampling the same
    ground truth side by side never claim the same part number.
    """
    folder = _folder(root, dataset, label)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        return _append(samples, dataset, label, root, folder)


def _append(samples: pd.DataFrame, dataset: str, label: str, root: Path, folder: Path) -> Path | None:
    old = read_parts(dataset, label, root)
    new = samples[COLUMNS]
    if len(old):
        new = new[~_key(new).isin(_key(old))]
    if new.empty:
        return None
    new = new.sort_values(["seed", "k", "round", "point_id"], kind="mergesort")
    index = len(list(folder.glob("part-*.parquet")))
    path = folder / f"part-{index:04d}.parquet"
    table = pa.Table.from_pandas(new.astype({"point_id": "category", "k": "int32", "round": "int32",
                                             "seed": "int16"}), preserve_index=False)
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd", compression_level=19,
                   use_dictionary=["point_id", "k", "round", "seed"], column_encoding={"delta": "BYTE_STREAM_SPLIT"})
    return atomic_write_bytes(path, buf.getvalue().to_pybytes())


def pooled_samples(ledgers: dict[int, Path], dataset: str, label: str, root: Path = ARCHIVE) -> pd.DataFrame:
    """The archive's samples and those of ``ledgers`` (seed → folder; missing folders skipped), each once.

    Returns ``point_id, k, round, delta, seed`` with ``round`` made unique
    across seeds (seed · :data:`ROUND_STRIDE` + round), as the verdicts expect.
    """
    frames = [read_parts(dataset, label, root)]
    for seed, folder in sorted(ledgers.items()):
        if Path(folder).exists():
            frames.append(ledger_samples(Path(folder), seed))
    frame = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else frames[0]
    frame = frame[~_key(frame).duplicated(keep="last")]  # a ledger's float64 row wins (it is the same value)
    frame = frame.assign(round=frame["seed"] * ROUND_STRIDE + frame["round"])
    return frame.sort_values(["seed", "k", "round", "point_id"], kind="mergesort").reset_index(drop=True)
