"""The per-point stages after sampling, by partitions of points.

Out-of-bag aggregation, the per-point maximum-likelihood laws and the values
table depend, for each point, on that point's rows only. So the run's
points are cut into ``n_parts`` partitions by a stable hash of their ids
(:func:`part_of`), and each stage runs as one call per partition that reads
only its partition's rows and writes its part of the stage's table; a last
call joins the parts into the run's table. Nothing in between holds more
than one partition (or, for the join, one table) in memory, and every call
reads and writes the run folder only (a local path or an fsspec URL,
:mod:`.storage`), so any process that can reach the run folder can run it.

Where the calls run is the caller's choice, as with emcee's ``pool``: the
stage functions of :mod:`.pipeline` take ``pool`` (anything with
``.map(fn, *iterables)`` returning a list; default :data:`SERIAL`, in this
process), and the flow passes one that runs each call as a task on its Dask
cluster. The functions mapped are module-level and take plain arguments
(locations, hashes, indices), never arrays.

Layout, under ``<run>/parts/<key>/`` with ``key`` a hash of everything the
partition depends on (the verified ledger's shard checksums, ``points.json``,
the sampling identity and ``n_parts``), so parts are write-once and a
rerun with the same ledger reuses them:

* ``points/p0003.json`` -- the run's points of partition 3 (pool order);
* ``samples/g00012-p0003.parquet`` -- the rows of partition 3 from group 12
  of ledger shards (each group is one :func:`split_group` call; groups are
  read back in order, so a partition's rows are exactly the ledger's rows of
  its points, in ledger order, and the ledger's deduplication by
  ``sample_id`` keeps the same row; each row's place in the ledger,
  :data:`LEDGER_ROW`, puts rows of several partitions back in ledger order);
* ``oob/g00012-p0003.parquet`` -- the out-of-bag evidence rows likewise
  (a shard whose bases an earlier shard already counted is left out, as
  :meth:`~pointscale.sampling.Ledger.iter_oob` does);
* ``bases/g00012.parquet`` -- one row per base fit (``base_id``, ``k``,
  ``u_base``) for the aggregate learning curve;
* ``split.json`` -- the commit record, written last: a partition exists only
  once it is there.

Stage parts live beside them (``laws_mle/p0003.parquet``, committed by
``laws_mle/done.json``) or under a folder named by their inputs' hash
(values; ``amortized-<key>/`` with the amortized model in ``model/``,
``trained.json``, ``p0003.parquet`` per partition of the pool's points and
``done.json``). Every shard is read against its
checksum record, so a torn or corrupted shard is never read.

Identity with one process: each point's law, value and evidence is computed
from the same rows in the same order by the same arithmetic, and integer
evidence counts are exact in any grouping; with one partition the tables are
the tables of the single-process computation, byte for byte. With more, the
MLE laws' ``meta`` holds each part's record (``meta['parts']``, as
:meth:`~pointscale.laws.FittedScalingLaws.concat` does) and the values'
``rank`` is recomputed over the whole table at the join.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
import posixpath
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .config import stable_hash
from .data import open_dataset
from .errors import DataError
from .seeding import point_keys
from .runs import read_point_groups
from .storage import Store

#: Points per partition (a partition's rows, laws and values table fit in a
#: worker's memory many times over at this size: ~100 samples per point).
PART_POINTS = 50_000
#: Ledger shards per split call.
SHARDS_PER_GROUP = 64
#: Columns of the partitioned sample rows (what the law fits and values read).
SAMPLE_COLUMNS = ("sample_id", "base_id", "point_id", "k", "delta", "failed")
#: Column of the stored rows giving each row's place in the ledger (group * 2**40 + row within the
#: group's rows), so rows read from several partitions can be put back in ledger order.
LEDGER_ROW = "ledger_row"
#: Bumped when the split's files change (part of its key: an older split is never read).
SPLIT_LAYOUT = 2
PARTS = "parts"


class SerialPool:
    """Runs every call in this process, in order (the default ``pool``)."""

    @staticmethod
    def map(fn: Callable, *iterables: Iterable) -> list:
        return [fn(*args) for args in zip(*iterables)]


SERIAL = SerialPool()


def n_parts(n_points: int, part_points: int = PART_POINTS) -> int:
    """How many partitions ``n_points`` points make (at least one)."""
    if part_points < 1:
        raise ValueError(f"part_points={part_points} must be at least 1")
    return max(1, math.ceil(int(n_points) / int(part_points)))


def part_of(point_ids: Any, parts: int) -> np.ndarray:
    """The partition of each point id: a stable hash of the id's text modulo ``parts``.

    The same in every process and on every machine (pandas' keyed 64-bit
    hash with its fixed key), so no table of assignments travels.
    """
    ids = np.asarray(point_ids, dtype=object)
    if parts <= 1 or ids.size == 0:
        return np.zeros(ids.size, dtype=np.int64)
    text = ids.astype(str).astype(object)
    return (pd.util.hash_array(text, categorize=False) % np.uint64(parts)).astype(np.int64)


def _p(part: int) -> str:
    return f"p{part:04d}"


def _g(group: int) -> str:
    return f"g{group:05d}"


# --------------------------------------------------------------------------- laws on a store


def save_laws(store: Store, name: str, laws) -> str:
    """Write a laws table and its sidecar under ``name`` (each object whole); its location."""
    with tempfile.TemporaryDirectory() as tmp:
        path = laws.save(Path(tmp) / "laws.parquet")
        store.write_bytes(name + ".json", Path(str(path) + ".json").read_bytes())
        return store.write_bytes(name, path.read_bytes())


def load_laws(store: Store, name: str):
    """Read laws written by :func:`save_laws` (or :meth:`FittedScalingLaws.save` in a local folder)."""
    from .laws import FittedScalingLaws

    if not store.remote:
        return FittedScalingLaws.load(store.local_path(name))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "laws.parquet"
        path.write_bytes(store.read_bytes(name))
        Path(str(path) + ".json").write_bytes(store.read_bytes(name + ".json"))
        return FittedScalingLaws.load(path)


# --------------------------------------------------------------------------- the split


def plan_split(run_dir: str, sampling: Mapping[str, Any], part_points: int = PART_POINTS,
               shards_per_group: int = SHARDS_PER_GROUP) -> dict[str, Any]:
    """Verify the ledger and decide the partitions (``part_points`` points each); write each one's points.

    Returns the split's ``key``, ``parts``, and ``groups`` (per group, the
    shards to read: name, file, checksum and, where its evidence counts,
    the evidence file and checksum) -- or ``done`` when the split with this
    key is committed already (then ``groups`` is empty).
    """
    from .sampling import Ledger, SamplingConfig

    store = Store(run_dir)
    cfg = SamplingConfig.from_dict(dict(sampling))
    ledger = Ledger(store.child("samples"))
    records = ledger.verify()
    points = _run_points(store)
    parts = n_parts(points["ids"].size, part_points)
    key = stable_hash({"ledger": [(r.name, r.sha256) for r in records], "points": points["hash"],
                       "config": [cfg.identity_hash(), cfg.stable_hash()], "mode": cfg.mode,
                       "k": [cfg.k_min, cfg.k_max], "parts": int(parts), "layout": SPLIT_LAYOUT})[:16]
    folder = posixpath.join(PARTS, key)
    if store.exists(folder, "split.json"):
        return {**store.read_json(folder, "split.json"), "done": True, "groups": []}
    ids = points["ids"]
    codes = part_of(ids, parts)
    for part in range(parts):
        store.write_json(posixpath.join(folder, "points", _p(part) + ".json"),
                         [str(p) for p in ids[codes == part]])
    counted: set[int] = set()
    shards = []
    for rec in records:
        oob = None
        if rec.oob_sha256 is not None and not counted.intersection(rec.base_ids):
            counted.update(rec.base_ids)
            oob = [rec.oob_file, rec.oob_sha256]
        shards.append({"name": rec.name, "file": rec.file, "sha256": rec.sha256, "oob": oob})
    groups = [shards[i:i + shards_per_group] for i in range(0, len(shards), shards_per_group)]
    return {"key": key, "parts": int(parts), "n_groups": len(groups), "n_points": int(len(ids)),
            "done": False, "groups": groups}


def _run_points(store: Store) -> dict[str, Any]:
    """The run's point ids (``points.json``, all groups, in order) and the file's hash."""
    groups, digest = read_point_groups(store.url)
    ids = list(dict.fromkeys(p for g in groups for p in g))
    return {"ids": np.asarray(ids, dtype=object), "hash": digest}


@functools.lru_cache(maxsize=2)
def _point_set(run_dir: str, key: str):
    """The run's point ids as an Arrow array, read once per worker process for split ``key``.

    ``key`` covers ``points.json``'s hash, so a cached set is never another
    points file's; without the cache every group of shards re-read and
    re-parsed all the run's ids (groups grow with points: points² in all).
    """
    import pyarrow as pa

    return pa.array(_run_points(Store(run_dir))["ids"].tolist(), type=pa.string())


def _verified_parquet(store: Store, name: str, digest: str, columns: Sequence[str] | None = None):
    """A ledger object read whole and checked against its record's sha256 (a torn file is never read)."""
    import pyarrow.parquet as pq

    data = store.read_bytes(name)
    if hashlib.sha256(data).hexdigest() != digest:
        raise DataError(f"{store.location(name)} does not match its checksum record (changed since the "
                        "ledger was verified); rerun the command")
    return pq.read_table(io.BytesIO(data), columns=None if columns is None else list(columns))


def split_group(run_dir: str, sampling: Mapping[str, Any], key: str, parts: int, group: int,
                shards: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Write the rows and evidence of ``shards`` (one group, in ledger order) partition by partition.

    Rows are filtered as :func:`pointscale.pipeline.load_samples` filters
    them (this sampling identity, the uniform size range, the run's points).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from .sampling import SamplingConfig

    store = Store(run_dir)
    cfg = SamplingConfig.from_dict(dict(sampling))
    folder = posixpath.join(PARTS, key)
    points = _point_set(run_dir, key)
    hashes = pa.array(sorted({cfg.identity_hash(), cfg.stable_hash()}), type=pa.string())
    ledger = Store(store.location("samples"))
    tables, evidence = [], []
    for shard in shards:
        table = _verified_parquet(ledger, shard["file"], shard["sha256"],
                                  [*SAMPLE_COLUMNS, "u_base", "config_hash"])
        keep = pc.is_in(table.column("config_hash"), value_set=hashes)
        if cfg.mode == "uniform":
            keep = pc.and_(keep, pc.and_(pc.greater_equal(table.column("k"), cfg.k_min),
                                         pc.less_equal(table.column("k"), cfg.k_max)))
        tables.append(table.filter(keep).drop(["config_hash"]))
        if shard.get("oob"):
            evidence.append(_verified_parquet(ledger, shard["oob"][0], shard["oob"][1]).to_pandas())
    rows = None
    if tables:
        # The run's points once per group, not per shard: ``is_in`` builds a hash table of the whole
        # point set on every call (10^6 ids at the README's scale; per shard it grew with points²).
        joined = pa.concat_tables(tables, promote_options="permissive")
        rows = joined.filter(pc.is_in(joined.column("point_id"), value_set=points)).to_pandas()
    counts = {"rows": 0, "evidence_rows": 0}
    if rows is not None and len(rows):
        bases = rows.drop_duplicates("base_id")[["base_id", "k", "u_base"]]
        store.write_parquet(posixpath.join(folder, "bases", _g(group) + ".parquet"), bases)
        rows = rows[list(SAMPLE_COLUMNS)].assign(
            **{LEDGER_ROW: np.int64(group) * np.int64(2 ** 40) + np.arange(len(rows), dtype=np.int64)})
        codes = part_of(rows["point_id"].to_numpy(), parts)
        for part in np.unique(codes):
            store.write_parquet(posixpath.join(folder, "samples", f"{_g(group)}-{_p(part)}.parquet"),
                                rows.loc[codes == part])
        counts["rows"] = int(len(rows))
    if evidence:
        ev = pd.concat(evidence, ignore_index=True)
        codes = part_of(ev["point_id"].to_numpy(), parts)
        for part in np.unique(codes):
            store.write_parquet(posixpath.join(folder, "oob", f"{_g(group)}-{_p(part)}.parquet"),
                                ev.loc[codes == part])
        counts["evidence_rows"] = int(len(ev))
    return counts


def commit_split(run_dir: str, plan: Mapping[str, Any], counts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Write the split's commit record (after every group is written); the record."""
    record = {"key": plan["key"], "parts": plan["parts"], "n_groups": plan["n_groups"],
              "n_points": plan["n_points"], "rows": int(sum(c["rows"] for c in counts)),
              "evidence_rows": int(sum(c["evidence_rows"] for c in counts))}
    Store(run_dir).write_json(posixpath.join(PARTS, plan["key"], "split.json"), record)
    return record


def split(run_dir: str, sampling: Mapping[str, Any], *, part_points: int = PART_POINTS,
          pool=SERIAL) -> dict[str, Any]:
    """The run's partitions, written once per ledger state (a committed split is reused).

    The plan, each group of shards and the commit are calls of ``pool``
    (the plan reads the point ids and verifies the ledger: not the caller's
    work); returns the commit record (``key``, ``parts``, ``n_groups``, counts).
    """
    plan = pool.map(plan_split, [run_dir], [dict(sampling)], [part_points])[0]
    if plan["done"]:
        return {k: v for k, v in plan.items() if k not in ("done", "groups")}
    count = len(plan["groups"])
    counts = pool.map(split_group, [run_dir] * count, [dict(sampling)] * count, [plan["key"]] * count,
                      [plan["parts"]] * count, range(count), plan["groups"])
    plan.pop("groups")
    return commit_split(run_dir, plan, counts)


# --------------------------------------------------------------------------- reading a partition


def _objects(store: Store, folder: str, suffix: str, n_groups: int) -> list[str]:
    """Names ``g00000<suffix>`` .. present under ``folder``, in group order."""
    present = set(store.list(folder))
    return [posixpath.join(folder, f"{_g(g)}{suffix}") for g in range(n_groups) if f"{_g(g)}{suffix}" in present]


def part_points(run_dir: str, split_record: Mapping[str, Any], part: int) -> list[str]:
    """The run's points in partition ``part`` (pool order)."""
    return list(Store(run_dir).read_json(PARTS, split_record["key"], "points", _p(part) + ".json"))


def part_samples(run_dir: str, split_record: Mapping[str, Any], part: int, *,
                 ledger_row: bool = False) -> pd.DataFrame:
    """Partition ``part``'s ledger rows: the rows :func:`pointscale.pipeline.load_samples` returns for its points.

    In ledger order, deduplicated by ``sample_id`` (the first committed row
    wins). ``ledger_row``: keep the :data:`LEDGER_ROW` column (rows of
    several partitions sorted by it are in ledger order).
    """
    import pyarrow as pa

    store = Store(run_dir)
    folder = posixpath.join(PARTS, split_record["key"], "samples")
    names = _objects(store, folder, f"-{_p(part)}.parquet", split_record["n_groups"])
    tables = [store.read_parquet(n) for n in names]
    if not tables:
        from .sampling.schema import empty_frame

        frame = empty_frame()[list(SAMPLE_COLUMNS)]
        if ledger_row:
            frame[LEDGER_ROW] = pd.Series(dtype=np.int64)
        return frame
    table = pa.concat_tables(tables, promote_options="permissive")
    if not ledger_row:
        table = table.drop([LEDGER_ROW])
    frame = table.to_pandas()
    first = pd.Index(frame["sample_id"].to_numpy()).duplicated(keep="first")
    return frame.loc[~first].reset_index(drop=True) if first.any() else frame


def part_evidence(run_dir: str, split_record: Mapping[str, Any], part: int) -> pd.DataFrame:
    """Partition ``part``'s out-of-bag evidence per point (:func:`pointscale.sampling.oob_evidence`'s rows)."""
    from .sampling.ledger import sum_evidence, summarize
    from .sampling.schema import empty_oob_frame

    store = Store(run_dir)
    folder = posixpath.join(PARTS, split_record["key"], "oob")
    names = _objects(store, folder, f"-{_p(part)}.parquet", split_record["n_groups"])
    if not names:
        return summarize(empty_oob_frame())
    return summarize(sum_evidence([store.read_parquet(n).to_pandas() for n in names]))


def evidence(run_dir: str, split_record: Mapping[str, Any], points: Sequence[str] | None = None
             ) -> pd.DataFrame | None:
    """The out-of-bag evidence of the run's points (or of ``points``), sorted by point id (None: none).

    Read partition by partition, keeping only ``points``' rows, so memory
    holds one partition's evidence and the rows kept.
    """
    if not split_record["evidence_rows"]:
        return None
    keep = None if points is None else pd.Index(np.asarray(points, dtype=object))
    frames = []
    for part in range(split_record["parts"]):
        table = part_evidence(run_dir, split_record, part)
        if keep is not None:
            table = table.loc[keep.get_indexer(table["point_id"].to_numpy(dtype=object)) >= 0]
        if len(table):
            frames.append(table)
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True).sort_values("point_id", kind="stable").reset_index(drop=True)


def base_fits(run_dir: str, split_record: Mapping[str, Any]) -> pd.DataFrame:
    """One row per base fit of the run's points (``base_id``, ``k``, ``u_base``), for the learning curve."""
    store = Store(run_dir)
    folder = posixpath.join(PARTS, split_record["key"], "bases")
    names = _objects(store, folder, ".parquet", split_record["n_groups"])
    if not names:
        return pd.DataFrame({"base_id": pd.Series(dtype=np.int64), "k": pd.Series(dtype=np.int64),
                             "u_base": pd.Series(dtype=np.float64)})
    frame = pd.concat([store.read_parquet(n).to_pandas() for n in names], ignore_index=True)
    return frame.drop_duplicates("base_id").reset_index(drop=True)


# --------------------------------------------------------------------------- per-point maximum likelihood


def fit_mle_part(run_dir: str, split_record: Mapping[str, Any], part: int) -> dict[str, Any]:
    """Maximum-likelihood laws of partition ``part`` -> ``parts/<key>/laws_mle/p0003.parquet``."""
    from .laws.mle import fit_mle_chunked

    samples = part_samples(run_dir, split_record, part)
    name = posixpath.join(PARTS, split_record["key"], "laws_mle", _p(part) + ".parquet")
    if samples.empty and part > 0:  # partition 0 is fitted even empty (one process fits the empty ledger)
        return {"part": part, "points": 0, "samples": 0, "file": None}
    laws = fit_mle_chunked(samples)
    save_laws(Store(run_dir), name, laws)
    return {"part": part, "points": int(laws.n_points), "samples": int(len(samples)), "file": name}


def _concat_laws(parts: Sequence[Any]):
    """:meth:`FittedScalingLaws.concat` of ``parts``; the laws of one model (every part's meta the same,
    as the amortized estimator's) keep that meta instead of a record per part."""
    from .laws import FittedScalingLaws

    laws = FittedScalingLaws.concat(parts)
    first = json.dumps(parts[0].meta, sort_keys=True, default=str)
    if all(json.dumps(p.meta, sort_keys=True, default=str) == first for p in parts[1:]):
        laws = dataclasses.replace(laws, meta=dict(parts[0].meta))
    return laws


def join_laws(run_dir: str, names: Sequence[str], out: str) -> dict[str, Any]:
    """The laws of every part, joined and ordered by point id -> ``out`` in the run folder.

    One part is copied as it is (the single-process table, byte for byte).
    """
    store = Store(run_dir)
    parts = [load_laws(store, n) for n in names]
    if len(parts) == 1:
        laws = parts[0]
    else:
        laws = _concat_laws(parts)
        order = pd.Index(laws.point_ids.astype(object)).argsort()
        laws = laws._take(np.asarray(order, dtype=np.intp))
    save_laws(store, out, laws)
    flags = {name: int(np.sum(v)) for name, v in laws.flags.items()}
    return {"points": int(laws.n_points), "flags": flags,
            "median_alpha": float(np.nanmedian(laws.alpha)) if laws.n_points else None}


# --------------------------------------------------------------------------- values


def split_laws(run_dir: str, split_record: Mapping[str, Any], name: str, digest: str) -> str:
    """The laws in ``name`` (content sha256 ``digest``) cut into the partitions' points; their folder.

    Partition ``p``'s file (``<folder>/p0003.parquet``) holds the laws of the
    run's points in that partition, in the file's order, so a value task
    reads its own points' laws only. Written once per content (``done.json`` last).
    """
    store = Store(run_dir)
    folder = posixpath.join(PARTS, split_record["key"], f"laws-{digest[:16]}")
    if store.exists(folder, "done.json"):
        return folder
    laws = load_laws(store, name)
    ids = laws.point_ids.astype(object)
    parts = split_record["parts"]
    points = [part_points(run_dir, split_record, p) for p in range(parts)]
    in_run = pd.Index(np.asarray([q for pts in points for q in pts], dtype=object)).get_indexer(ids) >= 0
    codes = part_of(ids, parts)
    for part in range(parts):
        save_laws(store, posixpath.join(folder, _p(part) + ".parquet"), laws.subset(in_run & (codes == part)))
    store.write_json(posixpath.join(folder, "done.json"), {"source": name, "sha256": digest, "parts": parts})
    return folder


def committed_parts(run_dir: str, split_record: Mapping[str, Any], parts: Mapping[str, Any] | None) -> str | None:
    """The folder of a stage's laws by partitions (``parts``: its summary's ``parts``), or None.

    None unless they were cut by this split and committed (``done.json``):
    then the laws file itself is cut (:func:`split_laws`).
    """
    if not parts or parts.get("split") != split_record["key"]:
        return None
    return parts["folder"] if Store(run_dir).exists(parts["folder"], "done.json") else None


def laws_of_points(run_dir: str, split_record: Mapping[str, Any], folder: str,
                   points: Sequence[str] | None = None):
    """The laws in ``folder`` (by partitions) of the run's points, or of ``points`` among them.

    Read partition by partition, keeping only those points' laws; in
    partition order, each part's points in its file's order.
    """
    store = Store(run_dir)
    keep = None if points is None else pd.Index(np.asarray(points, dtype=object))
    laws = []
    for part in range(split_record["parts"]):
        name = posixpath.join(folder, _p(part) + ".parquet")
        if not store.exists(name):  # a partition without points
            continue
        wanted = keep if keep is not None else pd.Index(np.asarray(part_points(run_dir, split_record, part),
                                                                    dtype=object))
        part_laws = load_laws(store, name)
        laws.append(part_laws.subset(wanted.get_indexer(part_laws.point_ids.astype(object)) >= 0))
    return laws[0] if len(laws) == 1 else _concat_laws(laws)


def _part_laws(store: Store, folder: str | None, part: int):
    """Partition ``part``'s laws from a folder :func:`split_laws` or a stage wrote (None: none).

    A stage's folder has no file for a partition it fitted no point of.
    """
    if folder is None:
        return None
    name = posixpath.join(folder, _p(part) + ".parquet")
    return load_laws(store, name) if store.exists(name) else None


def value_part(run_dir: str, dataset_path: str, split_record: Mapping[str, Any], part: int,
               sources: Mapping[str, str | None], k_range: Sequence[int], sizes: Sequence[int],
               out: str) -> dict[str, Any]:
    """The values table of partition ``part`` -> ``out/p0003.parquet`` (its ``rank`` is the join's to set).

    ``sources`` names the folders :func:`split_laws` cut the laws files into:
    ``laws`` (behind ``shapley``), ``mle`` and ``amortized`` (None: not in this run).
    """
    from .valuation import values_table

    store = Store(run_dir)
    points = part_points(run_dir, split_record, part)
    if not points:
        return {"part": part, "points": 0, "file": None}
    ds = open_dataset(dataset_path, object_ids=False)
    chosen = _part_laws(store, sources["laws"], part)
    mle = _part_laws(store, sources.get("mle"), part)
    amortized = _part_laws(store, sources.get("amortized"), part)
    if amortized is not None:  # the amortized stage's parts hold the pool's points: the run's only
        amortized = amortized.subset(pd.Index(np.asarray(points, dtype=object))
                                     .get_indexer(amortized.point_ids.astype(object)) >= 0)
    samples = part_samples(run_dir, split_record, part)[["point_id", "k", "delta", "failed"]]
    # Evidence columns whenever the run has evidence (as one process has), empty or not here.
    oob = part_evidence(run_dir, split_record, part) if split_record["evidence_rows"] else None
    part_ds = _PartDataset(ds, points, _pool_parts(dataset_path, split_record["parts"]), part)
    table = values_table(chosen, part_ds, k_min=int(k_range[0]), k_max=int(k_range[1]),
                         target_sizes=list(sizes), samples=samples, amortized=amortized,
                         compare={"mle": mle, "amortized": amortized}, oob=oob)
    name = posixpath.join(out, _p(part) + ".parquet")
    store.write_parquet(name, table)
    return {"part": part, "points": int(len(table)), "file": name,
            "attrs": {"k_range_shapley": [int(v) for v in table.attrs["k_range_shapley"]],
                      "has_intervals": bool(table.attrs["has_intervals"])}}


@functools.lru_cache(maxsize=4)
def _pool_parts(dataset_path: str, parts: int) -> np.ndarray:
    """The partition of every pool point of a dataset version (:func:`part_of`), once per worker process.

    A version is write-once, so its path names its content. Computed per
    partition, hashing every pool id made each value and prediction task cost
    the whole pool: partitions × points in all.
    """
    return part_of(np.asarray(open_dataset(dataset_path, object_ids=False).point_ids), parts)


class _PartDataset:
    """The dataset as :func:`~pointscale.valuation.values_table` sees it, its pool cut to some points.

    ``n_pool`` stays the whole pool's (the values at the current size); the
    ids and labels are those of ``points`` (partition ``part``'s; ``codes``
    the pool's partitions, :func:`_pool_parts`), in pool order.
    """

    def __init__(self, ds, points: Sequence[str], codes: np.ndarray, part: int) -> None:
        index = np.flatnonzero(codes == part)  # the partition's pool rows, in pool order
        ids = np.asarray(ds.point_ids)[index].astype(object)
        keep = pd.Index(np.asarray(points, dtype=object)).get_indexer(ids.astype(str).astype(object)) >= 0
        self.n_pool = ds.n_pool
        self.task = ds.task
        self.classes = getattr(ds, "classes", None)
        self.point_ids = ids[keep]
        self.y_train = np.asarray(ds.y_train)[index[keep]]

    def __getattr__(self, name: str):
        raise AttributeError(f"a partition's dataset has no {name!r}")


def join_values(run_dir: str, dataset_path: str, sampling: Mapping[str, Any], split_record: Mapping[str, Any],
                parts: Sequence[Mapping[str, Any]], names: Mapping[str, str]) -> dict[str, Any]:
    """The parts' values tables joined in pool order and ranked over the whole table, and what needs all points.

    Adds ``value_now`` and ``size_now``; for classification with out-of-bag
    evidence, ``label_issue_score`` and the flagged rows of the whole pool
    (``names['label_issues']``, :mod:`pointscale.valuation.label_issues`);
    the aggregate learning curve from the base fits
    (``names['learning_curve']``). Writes ``names['values']``. Returns the
    files written and the small facts the run records.
    """
    from .sampling import SamplingConfig
    from .valuation import value_column
    from .valuation.label_issues import label_issues_frame, pool_label_issues
    from .valuation.learning_curve import fit_learning_curve
    from .valuation.values import value_ranks

    store = Store(run_dir)
    ds = open_dataset(dataset_path)
    cfg = SamplingConfig.from_dict(dict(sampling))
    made = [p for p in parts if p["file"]]
    frames = [store.read_parquet(p["file"]).to_pandas() for p in made]
    if len(frames) == 1:
        table = frames[0]
    else:
        table = pd.concat(frames, ignore_index=True)
        pool = pd.Index(np.asarray(ds.point_ids).astype(str).astype(object))
        order = np.argsort(pool.get_indexer(table["point_id"].to_numpy(dtype=object)), kind="stable")
        table = table.iloc[order].reset_index(drop=True)
        table["rank"] = value_ranks(table["shapley"].to_numpy(dtype=np.float64))
    if made:
        table.attrs.update(made[0]["attrs"])
    table["value_now"] = table[value_column(ds.n_pool)]
    table["size_now"] = np.int64(ds.n_pool)
    files = [names["values"]]
    issues = pool_label_issues(evidence(run_dir, split_record), ds)
    if issues is not None:
        scores = issues.table.set_index("point_id")["label_issue_score"]
        table["label_issue_score"] = scores.reindex(table["point_id"].astype(str)).to_numpy(dtype=np.float64)
        text = label_issues_frame(issues, ds.classes).to_csv(index=False)
        store.write_bytes(names["label_issues"], text.encode("utf-8"))
        files.append(names["label_issues"])
    label_summary = None if issues is None else dict(issues.summary(), file=names["label_issues"])
    store.write_parquet(names["values"], table)
    try:
        curve = fit_learning_curve(base_fits(run_dir, split_record), n_pool=ds.n_pool, seed=cfg.seed)
        curve["metric"] = cfg.metric
        store.write_json(names["learning_curve"], curve)
        files.append(names["learning_curve"])
    except DataError as exc:  # too few base fits: say so, do not invent a curve
        curve = {"skipped": str(exc)}
    by_estimator = table["estimator"].value_counts().to_dict()
    return {"files": files, "points": int(len(table)),
            "by_estimator": {str(k): int(v) for k, v in by_estimator.items()},
            "negative_c": int(table["negative_c"].sum()) if "negative_c" in table else None,
            "learning_curve": curve, "label_issues": label_summary}


# --------------------------------------------------------------------------- the law choice


#: Salt of the keys that draw the law choice's sample of points.
_CHOICE_SALT = 0xC401CE


def choice_points(run_dir: str, split_record: Mapping[str, Any], seed: int, cap: int) -> list[str] | None:
    """The points whose samples the law choice reads: None (every point) when the run has at most ``cap``.

    Else the ``cap`` points with the smallest keys (a hash of the id and
    ``seed``: a uniform random sample, independent of order and of the
    partitioning), sorted; read partition by partition, holding at most
    ``cap`` + one partition's ids.
    """
    if int(split_record["n_points"]) <= int(cap):
        return None
    ids, keys = np.empty(0, dtype=object), np.empty(0, dtype=np.uint64)
    for part in range(split_record["parts"]):
        more = np.asarray(part_points(run_dir, split_record, part), dtype=object)
        ids = np.concatenate([ids, more])
        keys = np.concatenate([keys, point_keys(more, int(seed) + _CHOICE_SALT)])
        if ids.size > cap:
            best = np.argsort(keys, kind="stable")[:cap]
            ids, keys = ids[best], keys[best]
    return sorted(ids.tolist())


def base_totals_part(run_dir: str, split_record: Mapping[str, Any], part: int) -> str:
    """Partition ``part``'s block totals for the control variate (:func:`~pointscale.laws.control.base_totals`); the file."""
    from .laws.control import base_totals

    name = posixpath.join(PARTS, split_record["key"], "base_totals", _p(part) + ".parquet")
    Store(run_dir).write_parquet(name, base_totals(part_samples(run_dir, split_record, part)))
    return name


def save_amortized_model(store: Store, folder: str, samples: pd.DataFrame, ds, oob, seed: int,
                         k_range: Sequence[int]) -> str:
    """The amortized model the law choice fitted to ``samples`` (trained again: deterministic) -> ``folder``."""
    from .laws.auto import usable_samples
    from .laws.estimators import FitContext, amortized_model

    context = FitContext(dataset=ds, oob=oob, random_state=int(seed), k_range=(int(k_range[0]), int(k_range[1])))
    model = amortized_model(usable_samples(samples), context)[0]
    with tempfile.TemporaryDirectory() as tmp:
        saved = model.save(Path(tmp) / "model")
        for file in sorted(saved.iterdir()):
            store.write_bytes(posixpath.join(folder, file.name), file.read_bytes())
    return folder


# --------------------------------------------------------------------------- the amortized estimator


def train_amortized(run_dir: str, dataset_path: str, sampling: Mapping[str, Any], split_record: Mapping[str, Any],
                    params: Mapping[str, Any], max_train_points: int | None, folder: str,
                    copies: Sequence[str] = ()) -> dict[str, Any]:
    """The amortized estimator trained on the run's samples -> ``folder/model/`` (and each folder of ``copies``).

    The model :func:`~pointscale.laws.amortized.training_points` would train
    on the whole ledger, read partition by partition: the sampled points'
    ids first (one column), then the training points'
    (:func:`~pointscale.laws.amortized.training_sample`: all of them up to
    ``max_train_points``, else a seeded sample) rows, put back in ledger
    order, and their out-of-bag evidence only. Holds the training rows and
    one partition. ``folder/trained.json`` (the summary) is written last: a
    committed model is reused. ``copies`` get the model's files each time.
    """
    import pyarrow as pa

    from .laws import AmortizedScalingLaws
    from .laws.amortized import training_sample
    from .sampling import SamplingConfig

    store = Store(run_dir)
    record = posixpath.join(folder, "trained.json")
    if store.exists(record):
        summary = store.read_json(record)
    else:
        ds = open_dataset(dataset_path)
        cfg = SamplingConfig.from_dict(dict(sampling))
        parts = range(split_record["parts"])
        ids = [np.asarray(pa.concat_tables([store.read_parquet(n, columns=["point_id"]) for n in names])
                          .column("point_id").unique().to_pylist(), dtype=object)
               for names in (_objects(store, posixpath.join(PARTS, split_record["key"], "samples"),
                                      f"-{_p(p)}.parquet", split_record["n_groups"]) for p in parts) if names]
        sampled = np.unique(np.concatenate(ids)) if ids else np.empty(0, dtype=object)
        train = training_sample(sampled, cfg.seed, max_train_points)
        keep = pd.Index(train)
        frames = []
        for part in parts:
            rows = part_samples(run_dir, split_record, part, ledger_row=True)
            if train.size < sampled.size:
                rows = rows.loc[keep.get_indexer(rows["point_id"].to_numpy(dtype=object)) >= 0]
            frames.append(rows[["point_id", "k", "delta", "failed", LEDGER_ROW]])
        rows = pd.concat(frames, ignore_index=True).sort_values(LEDGER_ROW, kind="stable")
        samples = rows.drop(columns=[LEDGER_ROW]).reset_index(drop=True)
        idx = ds.index_of(train)
        oob = evidence(run_dir, split_record, train)
        # The dataset knows its task; inferring it from y would call integer targets (diabetes) classes.
        model = AmortizedScalingLaws(random_state=cfg.seed, **{"task": ds.task, **dict(params or {})})
        model.fit(np.asarray(ds.X_train)[idx], np.asarray(ds.y_train)[idx], samples, train, oob=oob)
        with tempfile.TemporaryDirectory() as tmp:
            saved = model.save(Path(tmp) / "model")
            names = sorted(f.name for f in saved.iterdir())
            for name in names:
                store.write_bytes(posixpath.join(folder, "model", name), (saved / name).read_bytes())
        summary = {"points_trained": int(train.size), "points_sampled": int(sampled.size),
                   "alpha_prior": model.alpha_prior_, "hidden_layer_sizes": list(model.hidden_layer_sizes_),
                   "model_files": names}
        store.write_json(record, summary)
    for target in copies:  # also a committed model: the copies are this model's
        for name in summary["model_files"]:
            store.write_bytes(posixpath.join(target, name), store.read_bytes(folder, "model", name))
    return summary


def predict_amortized_part(run_dir: str, dataset_path: str, split_record: Mapping[str, Any], part: int,
                           folder: str) -> dict[str, Any]:
    """The amortized laws of the pool's points in partition ``part`` -> ``folder/p0003.parquet``.

    The pool's points, not only the run's (rows that just arrived get laws
    too), cut by :func:`part_of` as the run's are; each predicted from its
    features, label and out-of-bag evidence by the model in ``folder/model``.
    """
    store = Store(run_dir)
    ds = open_dataset(dataset_path, object_ids=False)
    index = np.flatnonzero(_pool_parts(dataset_path, split_record["parts"]) == part)
    if index.size == 0:
        return {"part": part, "points": 0, "file": None}
    model = _load_amortized_model(store, posixpath.join(folder, "model"))
    oob = part_evidence(run_dir, split_record, part) if split_record["evidence_rows"] else None
    laws = model.predict_laws(np.asarray(ds.X_train)[index], np.asarray(ds.y_train)[index],
                              np.asarray(ds.point_ids)[index].astype(object), oob=oob)
    name = posixpath.join(folder, _p(part) + ".parquet")
    save_laws(store, name, laws)
    return {"part": part, "points": int(laws.n_points), "file": name}


def _load_amortized_model(store: Store, folder: str):
    from .laws import AmortizedScalingLaws

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "model"
        local.mkdir()
        for name in store.list(folder):
            (local / name).write_bytes(store.read_bytes(posixpath.join(folder, name)))
        return AmortizedScalingLaws.load(local)


def apply_laws_part(run_dir: str, dataset_path: str, split_record: Mapping[str, Any], part: int,
                    plan: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen estimator's laws of partition ``part``'s points outside the choice's sample.

    ``plan`` is what the choice (:func:`pointscale.pipeline.compute_chosen_laws`)
    returned: the estimator, its population-level hyperparameters (fixed
    here: ``FitContext.populations``), the control variate's coefficient and
    table when applied, the amortized laws (the stored ones cut into the
    partitions, or the choice's model when it was fitted to adjusted
    samples). Each point is fitted as in the choice's fit on all its samples.
    Writes ``<choice folder>/parts/p0003.parquet``.
    """
    from .laws.auto import usable_samples
    from .laws.control import apply_control
    from .laws.estimators import FitContext, fit_estimator, get_estimator

    store = Store(run_dir)
    chosen = plan["chosen"]
    sample = pd.Index(np.asarray(store.read_json(plan["folder"], "points.json"), dtype=object))
    rows = part_samples(run_dir, split_record, part)
    rows = rows.loc[sample.get_indexer(rows["point_id"].to_numpy(dtype=object)) < 0]
    if rows.empty:
        return {"part": part, "points": 0, "file": None}
    control = plan["control"]
    if control["applied"]:  # as the choice's samples: adjusted rows whole, raw ones the law columns
        rows = apply_control(rows, store.read_parquet(control["table"]).to_pandas(), float(control["b"]))
    else:
        rows = rows[["point_id", "k", "delta", "failed"]]
    usable = usable_samples(rows)
    points = rows["point_id"].unique()
    ds = open_dataset(dataset_path)
    oob = evidence(run_dir, split_record, points) if split_record["evidence_rows"] else None
    context = FitContext(dataset=ds, oob=oob, random_state=int(plan["seed"]),
                         k_range=(int(plan["k_range"][0]), int(plan["k_range"][1])), populations=plan["populations"])
    cache = {}
    for role in ("mle", "amortized"):  # laws on all samples the choice reused, cut to this partition
        folder = plan.get(f"{role}_parts")
        laws = _part_laws(store, folder, part)
        if laws is not None:
            cache[role] = laws.subset(pd.Index(points).get_indexer(laws.point_ids.astype(object)) >= 0)
    if plan.get("model") and "amortized" in (chosen, *get_estimator(chosen).requires):
        model = _load_amortized_model(store, plan["model"])
        ids = np.asarray(pd.unique(usable["point_id"].to_numpy(dtype=object)))
        idx = ds.index_of(ids)
        cache["amortized"] = model.predict_laws(np.asarray(ds.X_train)[idx], np.asarray(ds.y_train)[idx], ids,
                                                samples=usable, oob=oob)
    laws = fit_estimator(chosen, usable, context, cache)
    name = posixpath.join(plan["folder"], "parts", _p(part) + ".parquet")
    save_laws(store, name, laws)
    return {"part": part, "points": int(laws.n_points), "file": name}


def join_chosen_laws(run_dir: str, plan: Mapping[str, Any], names: Sequence[str], out: str) -> dict[str, Any]:
    """The choice's laws and every partition's applied laws, joined and ordered by point id -> ``out``.

    The meta is the choice's (its selection and law diagnostic) with
    ``choice`` (how many points the choice used, of how many, and how they
    were drawn) and ``parts`` (each applied part's record).
    """
    from .laws import FittedScalingLaws

    store = Store(run_dir)
    choice = load_laws(store, posixpath.join(plan["folder"], "laws.parquet"))
    parts = [load_laws(store, n) for n in names]
    laws = FittedScalingLaws.concat([choice, *parts])
    order = pd.Index(laws.point_ids.astype(object)).argsort()
    laws = laws._take(np.asarray(order, dtype=np.intp))
    laws = dataclasses.replace(laws, meta={**choice.meta, "choice": dict(plan["choice"]),
                                           "parts": [{k: v for k, v in p.meta.items() if k != "population_state"} for p in parts]})
    save_laws(store, out, laws)
    return {"points": int(laws.n_points)}
