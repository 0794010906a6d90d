"""Plans: which base subsets are drawn, and which points are valued against each.

A plan is a deterministic list of :class:`Block` work units keyed by identity:

* The **plan key** names the points being planned and the sampling identity
  (:meth:`SamplingConfig.identity_hash`): ``combine_ids(("plan", identity,
  digest of the sorted point ids))``. Points added later are planned on their
  own (a new key), so existing points' samples are untouched.
* **Rounds**: every planned point gets one sample per round. Uniform mode has
  ``samples_per_point`` rounds; staggered mode ``len(sizes) *
  samples_per_size`` rounds, round r using size ``sizes[r % len(sizes)]``.
  Asking for more samples adds rounds at the end; earlier rounds (and their
  base ids) do not change, so a top-up computes only the new ones.
* **Blocks**: in round r the planned points (sorted by id) are shuffled by a
  generator keyed by ``(seed, STREAM_BLOCKS, plan_key, r)`` and cut into
  ``ceil(n / block_size)`` nearly equal blocks. A point is in exactly one
  block per round, so it appears at most once per base and its samples are
  independent.
* Each block has a **base id** ``combine_ids((plan_key, r, b))``. In uniform
  mode its size k is drawn from ``rng(seed, STREAM_BASE, base_id, 0)``
  uniformly in [k_min, k_max], both ends included.
* Its **base subset** D is drawn from ``rng(seed, STREAM_BASE, base_id, 1)``
  from the pool *without the block's points*: class-stratified for
  classification (class c gets its share of k by largest remainders, i.e.
  ``round(k * share_c)`` up to one, at least one per class, shares of the
  whole pool), plain uniform for regression.

Nothing depends on the shard size, the number of workers or the order of
execution. :func:`subset_for` redraws D from a ledger row alone (its base id,
k and block members, which each row stores compactly as pool indices).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, DataError, LedgerError
from ..seeding import STREAM_BASE, STREAM_BLOCKS, combine_ids, rng
from .config import SamplingConfig

PLAN_VERSION = "pointscale-plan-v1"


@dataclass(frozen=True)
class Block:
    """One base subset and the points valued against it (ints and strings only).

    Attributes
    ----------
    base_id : int
        Stable 63-bit identity of the base; seeds k, the subset and the model.
    round : int
        Round of the plan (one sample per planned point per round).
    index : int
        Position of the block within its round.
    k : int
        Size of the base subset.
    point_ids : tuple of str
        Points valued against this base (in block order).
    plan_key : int
        Identity of the plan (sampling identity and planned point set).
    """

    base_id: int
    round: int
    index: int
    k: int
    point_ids: tuple[str, ...]
    plan_key: int
    #: Pool positions of ``point_ids`` when the block was read from a plan file
    #: (so a worker needs no id -> position index of the whole pool); not part of
    #: the block's identity.
    members: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def n_samples(self) -> int:
        return len(self.point_ids)


@dataclass(frozen=True)
class Shard:
    """A batch of blocks run as one unit of work; ``name`` is derived from its base ids."""

    name: str
    blocks: tuple[Block, ...]

    @property
    def n_samples(self) -> int:
        return sum(b.n_samples for b in self.blocks)

    @property
    def base_ids(self) -> tuple[int, ...]:
        return tuple(b.base_id for b in self.blocks)


# --------------------------------------------------------------------------- pool facts


class PoolInfo:
    """Facts about a training pool used by every draw, computed once per dataset version."""

    def __init__(self, dataset) -> None:
        # The ids as stored (a fixed-width array, memory-mapped for a saved version):
        # no Python object per point. The id -> position index is built only when
        # asked for (planning), never on a worker that reads its shards from a plan
        # file: at 10^7 points it would take ~0.3 kB per point in every worker.
        self.ids = np.asarray(dataset.point_ids)
        self._index = None
        self.fingerprint = dataset.fingerprint
        self.n_pool = int(self.ids.shape[0])
        self.task = dataset.task
        if dataset.task == "classification":
            y = np.asarray(dataset.y_train, dtype=np.int64)
            self.n_classes = dataset.n_classes
            self.class_members = [np.flatnonzero(y == c) for c in range(self.n_classes)]
            counts = np.array([len(m) for m in self.class_members], dtype=np.float64)
            self.shares = counts / counts.sum()
            self.label = y
        else:
            self.n_classes = 0
            self.class_members = [np.arange(self.n_pool)]
            self.shares = np.ones(1)
            self.label = np.zeros(self.n_pool, dtype=np.int64)

    @property
    def index(self):
        """``pandas.Index`` of the pool's ids (hash lookups in C), built on first use."""
        if self._index is None:
            import pandas as pd

            self._index = pd.Index(self.ids.astype(object))
        return self._index

    def positions(self, point_ids: Iterable[str]) -> np.ndarray:
        """Pool positions of ``point_ids``; -1 for an id not in the pool."""
        wanted = np.asarray(list(point_ids) if not isinstance(point_ids, np.ndarray) else point_ids, dtype=object)
        if wanted.size == 0:
            return np.empty(0, dtype=np.int64)
        return self.index.get_indexer(wanted).astype(np.int64)

    def indices(self, point_ids: Iterable[str]) -> np.ndarray:
        pos = self.positions(point_ids)
        if (pos < 0).any():
            bad = np.asarray(list(point_ids) if not isinstance(point_ids, np.ndarray) else point_ids,
                             dtype=object)[pos < 0][0]
            raise DataError(f"point id {bad!r} is not in the training pool")
        return pos


_POOL_CACHE: dict[tuple[str, int], PoolInfo] = {}


def pool_info(dataset) -> PoolInfo:
    key = (dataset.fingerprint, dataset.n_pool)
    info = _POOL_CACHE.get(key)
    if info is None:
        if len(_POOL_CACHE) > 8:
            _POOL_CACHE.clear()
        info = _POOL_CACHE[key] = PoolInfo(dataset)
    return info


# --------------------------------------------------------------------------- the plan


def _points_digest(point_ids: Sequence[str]) -> str:
    h = hashlib.sha256()
    for pid in point_ids:
        h.update(pid.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def _planned_points(dataset, points) -> list[str]:
    if points is None:
        ids = [str(p) for p in dataset.point_ids.tolist()]
    else:
        if isinstance(points, str):
            raise ConfigError("points must be a collection of point ids, not a single string")
        ids = [str(p) for p in points]
        info = pool_info(dataset)
        missing = np.asarray(ids, dtype=object)[info.positions(ids) < 0].tolist()
        if missing:
            raise DataError(f"{len(missing)} point id(s) not in the training pool of {dataset.name}, "
                            f"e.g. {missing[0]!r}")
        if len(set(ids)) != len(ids):
            raise ConfigError("points has duplicate ids")
    if not ids:
        raise ConfigError("no points to value")
    return sorted(ids)


def plan_key(config: SamplingConfig, point_ids: Sequence[str]) -> int:
    """Identity of a plan: the sampling identity and the (sorted) planned point set."""
    return combine_ids((PLAN_VERSION, config.identity_hash(), _points_digest(sorted(point_ids))))


def _done_set(have) -> set[int]:
    if have is None:
        return set()
    if hasattr(have, "completed_base_ids"):
        return set(have.completed_base_ids())
    return {int(b) for b in have}


def plan_blocks(dataset, config: SamplingConfig, points: Iterable[str] | None = None, *,
                have=None, warn: bool = True) -> list[Block]:
    """The deterministic list of blocks of a sampling job.

    Parameters
    ----------
    dataset : Dataset
    config : SamplingConfig
        Resolved and validated against ``dataset`` here.
    points : iterable of str, optional
        Point ids to value; None means the whole training pool.
    have : Ledger or iterable of int, optional
        Base ids already done (or a ledger to ask); their blocks are left out.
    warn : bool, default=True
        Issue the finite-pool warning; False when the caller's entry point
        already resolved ``config`` and warned.

    Returns
    -------
    list of Block
        Ordered by (round, index).
    """
    ids = _planned_points(dataset, points)
    config = config.resolved(dataset, n_points=len(ids), warn=warn)
    key = plan_key(config, ids)
    done = _done_set(have)
    ids_arr = np.asarray(ids, dtype=object)
    where = pool_info(dataset).indices(ids_arr)  # pool positions, one vectorised lookup
    n = len(ids)
    n_blocks = -(-n // config.block_size)
    blocks: list[Block] = []
    for r in range(config.n_rounds):
        order = rng(config.seed, STREAM_BLOCKS, key, r).permutation(n)
        size = config.size_of_round(r)
        for b, members in enumerate(np.array_split(order, n_blocks)):
            base_id = combine_ids((key, r, b))
            if base_id in done:
                continue
            k = size if size is not None else int(
                rng(config.seed, STREAM_BASE, base_id, 0).integers(config.k_min, config.k_max + 1))
            blocks.append(Block(base_id=base_id, round=r, index=b, k=int(k),
                                point_ids=tuple(ids_arr[members].tolist()), plan_key=key,
                                members=where[members]))
    return blocks


def shard_blocks(blocks: Sequence[Block], shard_size: int) -> list[Shard]:
    """Group blocks into shards of ``shard_size`` blocks, in plan order.

    A shard's name is derived from its base ids, so the same blocks always
    make the same shard name whatever run or process builds it.
    """
    if int(shard_size) < 1:
        raise ConfigError(f"shard_size={shard_size} must be at least 1")
    shards = []
    for start in range(0, len(blocks), int(shard_size)):
        chunk = tuple(blocks[start:start + int(shard_size)])
        digest = combine_ids(("shard",) + tuple(b.base_id for b in chunk))
        shards.append(Shard(name=f"r{chunk[0].round:05d}-{digest:016x}", blocks=chunk))
    return shards


# --------------------------------------------------------------------------- base subsets


def stratified_counts(k: int, shares: np.ndarray, available: np.ndarray) -> np.ndarray:
    """Per-class counts summing to k: largest remainders, at least one per class, capped.

    Each class gets ``floor(k * share)`` plus one for the classes with the
    largest remainders (ties to the lower class), so every count is within
    one of ``k * share``. Then classes with none take one from the largest
    class, and counts above what a class has available are moved to the
    classes with room (largest deficit first).
    """
    raw = k * shares
    counts = np.floor(raw).astype(np.int64)
    rest = int(k - counts.sum())
    if rest > 0:
        order = np.argsort(-(raw - counts), kind="stable")
        counts[order[:rest]] += 1
    for c in np.flatnonzero(counts == 0):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[c] += 1
    excess = int(np.maximum(counts - available, 0).sum())
    if excess:
        counts = np.minimum(counts, available)
        while excess:
            room = available - counts
            if not room.any():
                raise ConfigError(f"the pool has too few points for a subset of size {k}")
            c = int(np.argmax(np.where(room > 0, raw - counts, -np.inf)))
            counts[c] += 1
            excess -= 1
    return counts


def _skip_excluded(positions: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Map positions in ``members`` with the sorted positions ``removed`` taken out back to
    positions in ``members``: O(len(positions) · log len(removed)), never O(len(members))."""
    if removed.size == 0:
        return positions
    # The i-th removed position e_i shifts every kept position p >= e_i - i by one.
    shifted = removed - np.arange(removed.size)
    return positions + np.searchsorted(shifted, positions, side="right")


def draw_subset(info: PoolInfo, seed: int, base_id: int, k: int, excluded: np.ndarray) -> np.ndarray:
    """The base subset D (sorted pool indices) of base ``base_id``, avoiding ``excluded``.

    Per class, ``k_c`` positions are drawn among the class's members without
    the excluded points -- the same draw as ``gen.choice(available, k_c)``
    (choice draws positions, then indexes), but without building the
    available array, so a block costs O(k) whatever the pool size: at 10^6
    points the O(pool) mask made sampling quadratic in the pool.
    """
    gen = rng(seed, STREAM_BASE, base_id, 1)
    excluded = np.unique(np.asarray(excluded, dtype=np.int64))
    removed = []
    for members in info.class_members:
        pos = np.searchsorted(members, excluded)
        hit = pos < members.size
        hit[hit] = members[pos[hit]] == excluded[hit]
        removed.append(pos[hit])
    available = np.array([m.size - r.size for m, r in zip(info.class_members, removed)], dtype=np.int64)
    if int(k) > int(available.sum()):
        raise ConfigError(f"k={k} exceeds the {int(available.sum())} points available to the base")
    if info.task == "classification":
        counts = stratified_counts(int(k), info.shares, available)
    else:
        counts = np.array([int(k)])
    parts = [members[_skip_excluded(gen.choice(int(a), size=int(c), replace=False), r)]
             for members, r, a, c in zip(info.class_members, removed, available, counts)]
    return np.sort(np.concatenate(parts)).astype(np.int64)


def base_subset(dataset, config: SamplingConfig, block: Block) -> np.ndarray:
    """Indices into the training pool of the base subset of ``block``."""
    info = pool_info(dataset)
    return draw_subset(info, config.seed, block.base_id, block.k, info.indices(block.point_ids))


def encode_block_members(indices: np.ndarray, n_pool: int) -> str:
    """The block's members as stored in every ledger row: ``"<w>:<hex>"``.

    Pool indices (sorted), each as ``w`` lower-case hex digits with ``w`` just
    wide enough for the pool -- about 4 bytes per member instead of ~19 for a
    JSON list of ids, which matters at millions of rows. Indices are tied to
    the dataset version, as is the subset itself (rows carry the fingerprint).
    """
    w = max(1, len(format(max(int(n_pool) - 1, 0), "x")))
    return f"{w}:" + "".join(format(int(i), f"0{w}x") for i in np.sort(np.asarray(indices)))


def decode_block_members(text: str) -> np.ndarray:
    """Pool indices from :func:`encode_block_members`."""
    try:
        w_text, body = str(text).split(":", 1)
        w = int(w_text)
        if w < 1 or len(body) % w:
            raise ValueError
        return np.array([int(body[i:i + w], 16) for i in range(0, len(body), w)], dtype=np.int64)
    except ValueError:
        raise LedgerError(f"malformed block_members {str(text)[:40]!r}") from None


def subset_for(row: Mapping[str, Any], dataset, config: SamplingConfig | None = None) -> np.ndarray:
    """Reconstruct the base subset D of a ledger row: indices into the training pool.

    Parameters
    ----------
    row : mapping or pandas Series
        A ledger row (needs ``base_id``, ``k``, ``block_members``,
        ``dataset_fingerprint`` and ``config_hash``).
    dataset : Dataset
        The dataset version the row was sampled on (same fingerprint).
    config : SamplingConfig, optional
        The config it was sampled with (its seed drives the draw); checked
        against the row's ``config_hash``.

    Raises
    ------
    LedgerError
        The row belongs to another dataset version or config.
    """
    fp = str(row["dataset_fingerprint"])
    if fp != dataset.fingerprint:
        raise LedgerError(f"row was sampled on dataset version {fp[:12]}, not {dataset.fingerprint[:12]}")
    if config is None:
        raise ConfigError("subset_for needs the SamplingConfig the row was sampled with (for its seed)")
    config = config.resolved(dataset, n_points=1, warn=False)
    if str(row["config_hash"]) != config.identity_hash():
        raise LedgerError(f"row was sampled with config {str(row['config_hash'])[:12]}, "
                          f"not {config.identity_hash()[:12]}")
    info = pool_info(dataset)
    members = decode_block_members(row["block_members"])
    if len(members) and (members.min() < 0 or members.max() >= info.n_pool):
        raise LedgerError("block_members point outside the training pool")
    return draw_subset(info, config.seed, int(row["base_id"]), int(row["k"]), members)


# --------------------------------------------------------------------------- plan files

#: Columns of a plan file: one row per block, one Parquet row group per shard.
PLAN_FILE_VERSION = 1


def write_plan_file(path, shards: Sequence[Shard], dataset) -> str:
    """Store shards in one Parquet file (a path or an fsspec URL), shard ``i`` as row group ``i``;
    return its sha256.

    Workers read their shard by index (:func:`read_plan_shard`), so what
    travels to a task is the file's path, its hash and an index -- never the
    shard's point ids. Members are pool indices (int32) in block order.
    """
    from ..storage import write_to

    data = plan_file_bytes(shards, dataset)
    write_to(path, data)  # written whole
    return hashlib.sha256(data).hexdigest()


def plan_file_bytes(shards: Sequence[Shard], dataset) -> bytes:
    """The bytes of the plan file of ``shards`` (:func:`write_plan_file`)."""
    import io as _io

    import pyarrow as pa
    import pyarrow.parquet as pq

    info = pool_info(dataset)
    schema = pa.schema([("shard", pa.string()), ("base_id", pa.int64()), ("round", pa.int64()),
                        ("index", pa.int64()), ("k", pa.int64()), ("plan_key", pa.int64()),
                        ("members", pa.list_(pa.int32()))],
                       metadata={"pointscale_plan": str(PLAN_FILE_VERSION), "fingerprint": dataset.fingerprint})
    buffer = _io.BytesIO()
    with pq.ParquetWriter(buffer, schema) as writer:
        for shard in shards:
            blocks = shard.blocks
            table = pa.table({
                "shard": [shard.name] * len(blocks),
                "base_id": [b.base_id for b in blocks], "round": [b.round for b in blocks],
                "index": [b.index for b in blocks], "k": [b.k for b in blocks],
                "plan_key": [b.plan_key for b in blocks],
                "members": [(b.members if b.members is not None else info.indices(b.point_ids)).astype(np.int32)
                            for b in blocks],
            }, schema=schema)
            writer.write_table(table, row_group_size=max(1, len(blocks)))
    return buffer.getvalue()


def plan_file_shards(path) -> list[str]:
    """Shard names of a plan file, in row-group order (reads one column)."""
    import pyarrow.parquet as pq

    import pandas as pd

    from ..storage import open_for_reading

    with open_for_reading(path) as fh:
        names = pq.read_table(fh, columns=["shard"]).column("shard").to_numpy(zero_copy_only=False)
    return [str(n) for n in pd.unique(names)]


def read_plan_shard(path, index: int, dataset) -> Shard:
    """Shard ``index`` of a plan file written by :func:`write_plan_file` for ``dataset``."""
    import pyarrow.parquet as pq

    from ..storage import open_for_reading

    with open_for_reading(path) as fh:  # a path or an fsspec URL: only this row group is read
        pf = pq.ParquetFile(fh)
        fingerprint = (pf.schema_arrow.metadata or {}).get(b"fingerprint", b"").decode()
        if fingerprint != dataset.fingerprint:
            raise LedgerError(f"plan {path} was made for dataset version {fingerprint[:12]}, "
                              f"not {dataset.fingerprint[:12]}")
        if not 0 <= int(index) < pf.num_row_groups:
            raise LedgerError(f"plan {path} has {pf.num_row_groups} shards; no shard #{index}")
        rows = pf.read_row_group(int(index)).to_pydict()
    ids = np.asarray(dataset.point_ids)
    members = [np.asarray(m, dtype=np.int64) for m in rows["members"]]
    blocks = tuple(Block(base_id=int(b), round=int(r), index=int(i), k=int(k),
                         point_ids=tuple(str(p) for p in ids[m].tolist()), plan_key=int(pk), members=m)
                   for b, r, i, k, pk, m in zip(rows["base_id"], rows["round"], rows["index"], rows["k"],
                                                rows["plan_key"], rows["members"]))
    return Shard(name=str(rows["shard"][0]), blocks=blocks)
