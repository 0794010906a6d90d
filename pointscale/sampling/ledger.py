"""The sample ledger: the system of record of every sampled Δ.

Layout of a ledger folder::

    shards/<name>.parquet        the rows of one shard (append-only)
    shards/<name>.parquet.sha256 its commit record (JSON): sha256, bytes, rows, base ids,
                                 fits, and the checksum of its out-of-bag evidence
    oob/<name>.parquet           the shard's out-of-bag evidence (:mod:`.oob`), if any
    quarantine/                  shards that failed verification, moved aside

Writing a shard (:meth:`Ledger.write_shard`): serialise the rows to Parquet in
memory, write the bytes atomically (temporary file, fsync, rename), then
write the shard's out-of-bag evidence the same way, then the commit record
(which holds both checksums) atomically. The record is written *last*, so a
shard and its evidence are committed together exactly when the record exists; a crash in between leaves an
uncommitted Parquet file that readers ignore and a rerun overwrites.

On object storage (a ledger at an ``s3://``, ``gs://``, ... URL, see
:mod:`pointscale.storage`) there is no rename. Each object is written whole
by one ``PUT``, and the shard's rows and evidence go to write-once keys named
by their content (``shards/<name>.<sha256[:16]>.parquet``,
``oob/<name>.<sha256[:16]>.parquet``); the commit record, written last, names
those keys. Readers follow records only, so an interrupted write leaves an
orphan key that nothing reads, a rewrite never changes bytes a reader may be
reading, and the guarantees above hold unchanged.

Reading (:meth:`Ledger.read`): only committed shards, each verified against
its sha256 (and the record's row count and base ids against the rows), and
its evidence file against its own sha256. A corrupted or truncated shard (or
evidence file) -- or a record without its file, or an
unreadable record -- is moved to ``quarantine/``, reported with a
:class:`LedgerIntegrityWarning` and listed in :attr:`Ledger.quarantined`; its
bases then count as not done, so the next run samples them again. Rows are
deduplicated by ``sample_id`` (the first committed shard in name order wins).

Out-of-bag evidence of a run (:func:`oob_evidence`): the shards' evidence
tables summed per point (integer sums, exact in any grouping).

A ledger must have one writer at a time (the run folder's lock ensures it).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import LedgerError
from ..config import stable_hash
from ..storage import Store
from .schema import N_BUCKETS, SCORE_SCALE, empty_frame, empty_oob_frame

RECORD_SUFFIX = ".sha256"
FORMAT_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")


#: Shards verified in this process, per ledger URL on object storage: ``{name: (identity, record)}``.
#: The identity holds the ETags of the record and of its write-once keys (one listing gives them all),
#: so a ledger read again -- by every stage of a flow, by each new ``Ledger`` -- re-reads nothing it
#: verified, while an object overwritten in place (a new ETag) is checked again.
_REMOTE_VERIFIED: dict[str, dict[str, tuple[tuple[Any, ...], "ShardRecord"]]] = {}


class LedgerIntegrityWarning(UserWarning):
    """A ledger shard failed verification and was moved to quarantine (it will be re-sampled)."""


@dataclass(frozen=True)
class ShardRecord:
    name: str
    sha256: str
    bytes: int
    rows: int
    n_failed: int
    base_ids: tuple[int, ...]
    oob_sha256: str | None = None
    oob_bytes: int = 0
    fits: int | None = None
    oob_predictions: int = 0
    #: The rows' and the evidence's keys under ``shards/`` and ``oob/`` (content-named on object storage).
    file: str = ""
    oob_file: str = ""


class Ledger:
    """Append-only, checksummed Parquet shards of ledger rows.

    Parameters
    ----------
    folder : path, URL or Store
        The ledger folder (created on first write): a local path or an fsspec
        URL (:mod:`pointscale.storage`).
    storage_options : dict, optional
        For a URL: passed to its fsspec filesystem (never written anywhere).

    Attributes
    ----------
    quarantined : list of (str, str)
        Shards moved aside by this object, with the reason.
    """

    def __init__(self, folder: str | os.PathLike | Store, storage_options: dict | None = None) -> None:
        self.store = folder if isinstance(folder, Store) else Store(folder, storage_options)
        self.folder = Path(self.store.path) if not self.store.remote else self.store.url
        self.shard_dir = self.folder / "shards" if not self.store.remote else f"{self.store.url}/shards"
        self.oob_dir = self.folder / "oob" if not self.store.remote else f"{self.store.url}/oob"
        self.quarantine_dir = self.folder / "quarantine" if not self.store.remote else f"{self.store.url}/quarantine"
        self.quarantined: list[tuple[str, str]] = []
        self._verified: dict[str, tuple[tuple[Any, ...], ShardRecord]] = \
            _REMOTE_VERIFIED.setdefault(self.store.url, {}) if self.store.remote else {}

    def __repr__(self) -> str:
        return f"Ledger({str(self.folder)!r})"

    def __reduce__(self):  # a task receives a ledger by location (its filesystem is rebuilt there)
        return (Ledger, (self.store,))

    # ------------------------------------------------------------------ keys

    @staticmethod
    def _parquet(name: str) -> str:
        return f"shards/{name}.parquet"

    @staticmethod
    def _record(name: str) -> str:
        return f"shards/{name}.parquet{RECORD_SUFFIX}"

    @staticmethod
    def _oob(name: str) -> str:
        return f"oob/{name}.parquet"

    def _data_key(self, kind: str, name: str, digest: str) -> str:
        """Where a shard's rows (``shards``) or evidence (``oob``) go: content-named on object storage."""
        if self.store.remote:
            return f"{kind}/{name}.{digest[:16]}.parquet"
        return f"{kind}/{name}.parquet"

    # ------------------------------------------------------------------ writing

    def write_shard(self, name: str, frame: pd.DataFrame, *, oob: pd.DataFrame | None = None,
                    counts: dict[str, int] | None = None) -> Path:
        """Write one shard atomically and commit it with its checksum record.

        Rewriting an existing name replaces it (the old record is withdrawn
        first, so the old checksum never vouches for new bytes).

        Parameters
        ----------
        name : str
        frame : DataFrame
            The ledger rows.
        oob : DataFrame, optional
            The shard's out-of-bag evidence (:func:`.engine.sample_blocks`);
            committed by the same record.
        counts : dict, optional
            ``fits`` and ``oob_predictions`` made for the shard (recorded).
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise LedgerError(f"shard name {name!r} must be letters, digits, '_', '.', '-'")
        if "base_id" not in frame.columns or "sample_id" not in frame.columns:
            raise LedgerError("a ledger shard needs base_id and sample_id columns")
        buffer = io.BytesIO()
        frame.reset_index(drop=True).to_parquet(buffer, engine="pyarrow", index=False)
        data = buffer.getvalue()
        record = {
            "format": FORMAT_VERSION,
            "name": name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "rows": int(len(frame)),
            "n_failed": int(frame["failed"].sum()) if "failed" in frame.columns else 0,
            "base_ids": sorted({int(b) for b in frame["base_id"].tolist()}),
        }
        oob_data = None
        if oob is not None:
            buf = io.BytesIO()
            oob.reset_index(drop=True).to_parquet(buf, engine="pyarrow", index=False)
            oob_data = buf.getvalue()
            record["oob"] = {"sha256": hashlib.sha256(oob_data).hexdigest(), "bytes": len(oob_data),
                             "rows": int(len(oob))}
        for key, value in (counts or {}).items():
            record[key] = int(value)
        record["file"] = self._data_key("shards", name, record["sha256"])
        if oob_data is not None:
            record["oob"]["file"] = self._data_key("oob", name, record["oob"]["sha256"])
        previous = self._previous_keys(name)
        self.store.delete(self._record(name))
        self._verified.pop(name, None)
        path = self.store.write_bytes(record["file"], data)
        if oob_data is not None:
            self.store.write_bytes(record["oob"]["file"], oob_data)
        self.store.write_json(self._record(name), record)
        for key in previous - {record["file"], record.get("oob", {}).get("file")}:
            self.store.delete(key)  # content keys of the replaced shard (object storage only)
        return Path(path) if not self.store.remote else path

    def _previous_keys(self, name: str) -> set[str]:
        """Content-named keys of the committed shard ``name`` (to delete once it is replaced)."""
        if not self.store.remote:
            return set()
        try:
            rec = self._load_record(name)
        except (OSError, ValueError, KeyError, TypeError):
            return set()
        return {k for k in (rec.file, rec.oob_file) if k}

    # ------------------------------------------------------------------ verification

    def shard_names(self, files: Any = None) -> list[str]:
        """Names of committed shards (a commit record exists), sorted.

        ``files``: the names under ``shards/`` if already listed.
        """
        suffix = ".parquet" + RECORD_SUFFIX
        return sorted(f[:-len(suffix)] for f in (self.store.list("shards") if files is None else files)
                      if f.endswith(suffix) and not f.startswith("."))

    def uncommitted(self) -> list[str]:
        """Parquet files no commit record names (an interrupted write): ignored."""
        files = [f for f in self.store.list("shards") if f.endswith(".parquet") and not f.startswith(".")]
        if not files:
            return []
        named = set()
        for name in self.shard_names():
            try:
                named.add(self._load_record(name).file)
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return sorted(f[:-len(".parquet")] for f in files if f"shards/{f}" not in named)

    def _quarantine(self, name: str, reason: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{time.time_ns() % 1_000_000_000:09d}"
        keys = [self._record(name), self._parquet(name), self._oob(name)]
        try:
            rec = self._load_record(name)
            keys += [k for k in (rec.file, rec.oob_file) if k]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        for key in dict.fromkeys(keys):
            if self.store.exists(key):
                self.store.move(key, f"quarantine/{key.rsplit('/', 1)[1]}.{stamp}")
        self._verified.pop(name, None)
        self.quarantined.append((name, reason))
        warnings.warn(f"ledger shard {name!r} in {self.folder} failed verification ({reason}); "
                      "moved to quarantine/, its samples will be drawn again", LedgerIntegrityWarning,
                      stacklevel=3)

    def _load_record(self, name: str) -> ShardRecord:
        raw = json.loads(self.store.read_bytes(self._record(name)).decode("utf-8"))
        oob = raw.get("oob") or {}
        return ShardRecord(name=name, sha256=str(raw["sha256"]), bytes=int(raw["bytes"]),
                           rows=int(raw["rows"]), n_failed=int(raw.get("n_failed", 0)),
                           base_ids=tuple(int(b) for b in raw["base_ids"]),
                           oob_sha256=str(oob["sha256"]) if oob else None, oob_bytes=int(oob.get("bytes", 0)),
                           fits=int(raw["fits"]) if "fits" in raw else None,
                           oob_predictions=int(raw.get("oob_predictions", 0)),
                           file=str(raw.get("file") or self._parquet(name)),
                           oob_file=str(oob.get("file") or self._oob(name)) if oob else "")

    def _listing(self) -> dict[str, tuple[Any, ...]]:
        """Identities of every object under ``shards/`` and ``oob/`` (two listings)."""
        return {f"{kind}/{n}": ident for kind in ("shards", "oob") for n, ident in self.store.listing(kind).items()}

    def _identity(self, record: ShardRecord, listing: dict[str, tuple[Any, ...]]) -> tuple[Any, ...]:
        """What identifies the bytes of a shard's record, rows and evidence now (from ``listing``)."""
        return (listing.get(self._record(record.name)), listing.get(record.file),
                listing.get(record.oob_file or self._oob(record.name)))

    def _check(self, name: str, listing: dict[str, tuple[Any, ...]] | None = None) -> ShardRecord | None:
        """The shard's record if its file matches it; quarantines it otherwise."""
        listing = self._listing() if listing is None else listing
        cached = self._verified.get(name)
        if cached is not None and cached[0] == self._identity(cached[1], listing):
            return cached[1]  # nothing changed since it was verified: no read at all
        try:
            record = self._load_record(name)
        except FileNotFoundError:
            return None  # withdrawn meanwhile
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._quarantine(name, f"unreadable checksum record: {exc}")
            return None
        try:
            size = self.store.size(record.file)
        except FileNotFoundError:
            self._quarantine(name, "shard file missing")
            return None
        if size != record.bytes:
            self._quarantine(name, f"size {size} bytes, expected {record.bytes} (truncated?)")
            return None
        if self.store.sha256(record.file) != record.sha256:
            self._quarantine(name, "sha256 mismatch (corrupted)")
            return None
        if record.oob_sha256 is not None:
            if not self.store.exists(record.oob_file):
                self._quarantine(name, "out-of-bag evidence file missing")
                return None
            if (self.store.size(record.oob_file) != record.oob_bytes
                    or self.store.sha256(record.oob_file) != record.oob_sha256):
                self._quarantine(name, "out-of-bag evidence does not match its checksum (corrupted)")
                return None
        self._verified[name] = (self._identity(record, listing), record)
        return record

    def verify(self) -> list[ShardRecord]:
        """Records of all committed shards that pass verification (others are quarantined)."""
        out = []
        listing = self._listing()
        for name in self.shard_names(n.split("/", 1)[1] for n in listing if n.startswith("shards/")):
            rec = self._check(name, listing)
            if rec is not None:
                out.append(rec)
        return out

    # ------------------------------------------------------------------ reading

    def read_table(self, columns: list[str] | None = None, *, verify: bool = True,
                   where: dict[str, Any] | None = None):
        """All rows of committed shards as one Arrow table, deduplicated by ``sample_id``.

        The streaming reader behind :meth:`read`: shard by shard, only the
        asked columns (Parquet column projection) and only the rows passing
        ``where``, so the memory held is the projected, filtered rows -- at
        10^6 points x 10 samples, ``point_id, k, delta, failed`` is ~0.3 GB
        where the full rows in pandas are ~10 GB.

        Parameters
        ----------
        columns : list of str, optional
            Columns to keep (None: all). ``sample_id`` and ``base_id`` are
            always read (deduplication, verification) and kept.
        verify : bool, default=True
            Check every shard against its checksum record first (bad ones are
            quarantined and left out). ``False`` trusts the records.
        where : dict, optional
            ``{column: allowed values}`` (a collection) or ``{column: (low,
            high)}`` (a tuple: inclusive range). Filters are applied per shard.

        Returns
        -------
        pyarrow.Table
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        where = dict(where or {})
        if verify:
            files = {r.name: r.file for r in self.verify()}
        else:
            files = {}
            for name in self.shard_names():
                try:
                    files[name] = self._load_record(name).file
                except FileNotFoundError:
                    continue
        cols = None if columns is None else list(dict.fromkeys(["sample_id", "base_id", *columns, *where]))
        value_sets = {c: pa.array(sorted(v)) if not isinstance(v, tuple) else None for c, v in where.items()}
        tables = []
        read = self.store.iter_parquet(list(files.values()), columns=cols)
        for name, (_, table) in zip(files, read):
            if isinstance(table, Exception):  # any unreadable shard is quarantined
                self._quarantine(name, f"unreadable Parquet: {type(table).__name__}: {table}")
                continue
            if verify:
                record = self._verified[name][1]
                ids = np.unique(table.column("base_id").to_numpy()).tolist()
                if table.num_rows != record.rows or ids != list(record.base_ids):
                    self._quarantine(name, "rows do not match the checksum record")
                    continue
            for col, allowed in where.items():
                if isinstance(allowed, tuple):  # ranges per shard: cheap, and shrink what is held
                    lo, hi = allowed
                    table = table.filter(pc.and_(pc.greater_equal(table.column(col), lo),
                                                 pc.less_equal(table.column(col), hi)))
            tables.append(table)
        if not tables:
            frame = empty_frame()
            if columns is not None:
                frame = frame[[c for c in frame.columns if c in ["sample_id", "base_id", *columns]]]
            return pa.Table.from_pandas(frame, preserve_index=False)
        table = pa.concat_tables(tables, promote_options="permissive")
        # Value sets once over all rows: is_in builds a hash set of the values on
        # every call, and a set of 10^6 point ids per shard made reads quadratic.
        for col, values in value_sets.items():
            if values is not None:
                table = table.filter(pc.is_in(table.column(col), value_set=values))
        if columns is not None:
            table = table.select(list(dict.fromkeys(["sample_id", "base_id", *columns])))
        sample_id = table.column("sample_id").to_numpy()
        first = pd.Index(sample_id).duplicated(keep="first")
        if first.any():  # a base committed twice (first committed shard in name order wins)
            table = table.filter(pa.array(~first))
        return table

    def read(self, verify: bool = True, columns: list[str] | None = None,
             where: dict[str, Any] | None = None) -> pd.DataFrame:
        """All rows of committed shards as a DataFrame, deduplicated by ``sample_id``.

        Parameters
        ----------
        verify : bool, default=True
            See :meth:`read_table`.
        columns : list of str, optional
            Read only these columns (``sample_id`` and ``base_id`` are always read).
        where : dict, optional
            Row filters, see :meth:`read_table`.
        """
        return self.read_table(columns, verify=verify, where=where).to_pandas()

    def iter_oob(self):
        """The out-of-bag evidence table of each verified shard, one at a time.

        A shard whose bases were already counted from an earlier shard (in
        name order) is left out whole, so no base's predictions count twice.
        """
        counted: set[int] = set()
        records = [rec for rec in self.verify() if rec.oob_sha256 is not None]
        for rec, (_, table) in zip(records, self.store.iter_parquet([rec.oob_file for rec in records])):
            if counted.intersection(rec.base_ids):
                continue
            if isinstance(table, Exception):  # any unreadable file is quarantined
                self._quarantine(rec.name, f"unreadable out-of-bag evidence: {type(table).__name__}: {table}")
                continue
            counted.update(rec.base_ids)
            yield table.to_pandas()

    def read_oob(self) -> pd.DataFrame:
        """The out-of-bag evidence tables of all verified shards, concatenated (:meth:`iter_oob`)."""
        frames = list(self.iter_oob())
        if not frames:
            return empty_oob_frame()
        return pd.concat(frames, ignore_index=True)

    def completed_base_ids(self) -> set[int]:
        """Base ids of every verified shard (a shard holds whole blocks, so these bases are done)."""
        done: set[int] = set()
        for rec in self.verify():
            done.update(rec.base_ids)
        return done

    def content_hash(self) -> str:
        """A cheap hash of the verified content (shard names and checksums): a cache key."""
        return stable_hash([(r.name, r.sha256) for r in self.verify()])

    def stats(self) -> dict[str, Any]:
        """Counts: shards, rows, failed samples, bases, bytes, fits and out-of-bag predictions
        (as recorded), quarantined, uncommitted."""
        recs = self.verify()
        return {
            "shards": len(recs),
            "rows": sum(r.rows for r in recs),
            "failed": sum(r.n_failed for r in recs),
            "bases": len({b for r in recs for b in r.base_ids}),
            "bytes": sum(r.bytes for r in recs),
            "fits": sum(r.fits or 0 for r in recs),
            "oob_predictions": sum(r.oob_predictions for r in recs),
            "quarantined": len(self.quarantine_contents()),
            "uncommitted": len(self.uncommitted()),
        }

    def quarantine_contents(self) -> list[str]:
        """Shards in ``quarantine/`` (from any session), as ``<name>.parquet.<stamp>``."""
        return sorted({f.replace(f".parquet{RECORD_SUFFIX}.", ".parquet.")
                       for f in self.store.list("quarantine")})

    def __len__(self) -> int:
        return sum(r.rows for r in self.verify())


# --------------------------------------------------------------------------- out-of-bag evidence


def oob_evidence(ledger: Any) -> pd.DataFrame:
    """Out-of-bag evidence per point from a ledger's committed shards.

    Parameters
    ----------
    ledger : Ledger or path
        The sample ledger (its verified shards' evidence tables are read).

    Returns
    -------
    DataFrame
        One row per point with evidence: ``point_id``, ``n_oob`` (predictions
        by models trained without the point), ``oob_score`` (mean score of the
        point's own label; higher = the rest of the data agrees with its
        label), ``oob_correct`` (share predicted correctly), and per size
        bucket j ``n_oob_b{j}`` and ``oob_score_b{j}`` (NaN where empty).
        Sorted by point id.
    """
    if not isinstance(ledger, Ledger):
        ledger = Ledger(ledger)
    # Shard tables are summed into one (point, bucket) table as they are read,
    # so memory holds ~points x buckets rows, not every shard's rows (at 10^6
    # points a shard's table has ~10^5 rows and there are hundreds of shards).
    total, pending, held = None, [], 0
    for table in ledger.iter_oob():
        pending.append(table)
        held += len(table)
        if held >= _OOB_MERGE_ROWS:
            total, pending, held = sum_evidence(([total] if total is not None else []) + pending), [], 0
    parts = ([total] if total is not None else []) + pending
    return summarize(sum_evidence(parts) if parts else ledger.read_oob())


#: Evidence rows held before they are summed into the running total.
_OOB_MERGE_ROWS = 4_000_000


def sum_evidence(tables: list) -> pd.DataFrame:
    """Evidence tables summed per (point, bucket): integer sums, so exact in any grouping."""
    frame = pd.concat(tables, ignore_index=True)
    return frame.groupby(["point_id", "bucket"], sort=False, as_index=False)[["n", "n_correct", "score_fx"]].sum()


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per-point evidence (the columns of :func:`oob_evidence`) from evidence tables (:func:`aggregate`)."""
    cols = ["point_id", "n_oob", "oob_score", "oob_correct"]
    for j in range(N_BUCKETS):
        cols += [f"n_oob_b{j}", f"oob_score_b{j}"]
    if table.empty:
        return pd.DataFrame({c: pd.Series([], dtype="object" if c == "point_id" else "float64") for c in cols})
    g = table.groupby(["point_id", "bucket"], sort=True)[["n", "n_correct", "score_fx"]].sum()
    wide = g.unstack("bucket", fill_value=0)
    n_b = wide["n"].reindex(columns=range(N_BUCKETS), fill_value=0)
    s_b = wide["score_fx"].reindex(columns=range(N_BUCKETS), fill_value=0)
    c_b = wide["n_correct"].reindex(columns=range(N_BUCKETS), fill_value=0)
    n = n_b.sum(axis=1).to_numpy(dtype=np.int64)
    out = pd.DataFrame({
        "point_id": wide.index.to_numpy(dtype=object),
        "n_oob": n,
        "oob_score": s_b.sum(axis=1).to_numpy(dtype=np.float64) / SCORE_SCALE / np.maximum(n, 1),
        "oob_correct": c_b.sum(axis=1).to_numpy(dtype=np.float64) / np.maximum(n, 1),
    })
    for j in range(N_BUCKETS):
        nj = n_b[j].to_numpy(dtype=np.int64)
        out[f"n_oob_b{j}"] = nj
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"oob_score_b{j}"] = np.where(nj > 0, s_b[j].to_numpy(dtype=np.float64) / SCORE_SCALE / nj, np.nan)
    return out.reset_index(drop=True)
