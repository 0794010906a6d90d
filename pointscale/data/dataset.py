"""Dataset versions: stable point ids, seeded stratified splits, preprocessing,
content fingerprints, and on-disk storage that workers memory-map.

Design decisions, and why:

* **Point ids** come from the id column when given, else from a hash of the
  row's raw content (numbers normalised to float64, everything else to text),
  with ``~1``, ``~2`` suffixes for exact duplicates in file order. Appending
  rows therefore keeps every existing point's id, which incremental
  revaluation relies on.
* **Splits** are drawn per class by ranking ``sha256(seed, point_id)``: they
  depend on which points exist, never on row order.
* **Extending a version** (``base=``): rows already in the base keep their split,
  new rows join the training pool, and the base's fitted preprocessing is
  reused. Old points' features and the validation split stay exactly the same,
  so every ledger sample of an old point stays valid.
* **Preprocessing** is fitted on the training pool only and stored as plain
  JSON (means, scales, categories, fill values) -- no pickles.
* **Given splits** (``valid=``/``test=`` files, or a ``split_column``): the
  user's trusted validation (and test) rows are used as they are, nothing is
  drawn. Training-file ids are computed from the training file alone, so
  appending training rows keeps every id; preprocessing is fitted on the
  training pool only, and categories unseen there encode as all zeros. When a
  version extends a base, the validation and test rows must be exactly the
  base's (a value is only comparable against the same validation set).
* **Dirty numeric columns**: a column whose values are numbers except for a
  few stray entries (at least 90 % of its present values parse) is an error
  naming the column, the count and the first rows -- never one-hot encoded
  into hundreds of levels -- unless ``coerce_numeric`` turns the strays into
  missing values (then imputed, and counted in the report).
* **Columns that cannot be features as they are**: a text column whose values
  look like dates becomes numeric date features (days since 1970, month,
  weekday); a text column with almost one distinct value per row (a note, a
  name) is dropped -- one-hot encoded it would give every row a feature of its
  own. Each is said in one line naming the column and ``--keep-columns``,
  which keeps it as it is. Every such line (rows dropped, columns converted or
  dropped, values imputed) is in ``report["data_preparation"]``.
* **The fingerprint** hashes the raw rows in order plus the ingestion settings
  (and the base version's fingerprint when extending): same content, same
  fingerprint; any changed or added row, a new one. With given splits it
  hashes every split's rows, each under its split's name.
"""

from __future__ import annotations

import codecs
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..config import StableConfig, stable_hash
from ..errors import ConfigError, DataError
from ..io import atomic_save_npy, atomic_write_json, read_json
from ..storage import cached_file, cached_folder, is_url
from .sources import BUILTIN_DATASETS, OPTIONAL_DATASETS, read_files

SCHEMA_VERSION = 1
MAX_CLASSES = 50
#: A text column is "numeric with strays" when at least this share of its present values parse.
NUMERIC_SHARE = 0.9
#: Names a split column may use for each split (compared case-insensitively).
SPLIT_NAMES = {"train": "train", "training": "train", "valid": "val", "val": "val", "validation": "val",
               "test": "test"}
_SPLIT_LABEL = {"train": "training", "val": "validation", "test": "test"}
# Fields added after the first release: left out of the fingerprint while at
# their defaults, so versions ingested before them keep their fingerprints.
_NEW_FIELDS = {"valid": None, "test": None, "split_column": None, "coerce_numeric": False, "encoding": None,
               "keep_columns": None}
_ARRAYS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test")


@dataclass(frozen=True)
class DataConfig(StableConfig):
    """How a raw table becomes a dataset version.

    Parameters
    ----------
    source : str, default="breast_cancer"
        A built-in name or a path to a CSV/Parquet file or a folder of them.
    target : str or None
        Target column (required for files; built-ins know theirs).
    id_column : str or None
        Column holding stable point ids; otherwise ids derive from row content.
    task : {"classification", "regression"} or None
        Inferred from the target when None.
    val_size, test_size : int, float or None
        Rows (int) or fractions (float) for the validation and test splits.
        Default: ``min(1000, n // 4)`` validation rows, ``min(1000, n // 5)`` test rows.
    seed : int, default=0
        Root seed of the split.
    valid, test : str or None
        Given validation and test files (same columns as ``source``). With
        ``valid`` nothing is drawn: the training pool is all of ``source``;
        without ``test`` the test split is empty.
    split_column : str or None
        A column whose values (``train``, ``valid``, ``test``) say each row's
        split; the column is not a feature.
    coerce_numeric : bool, default=False
        Read stray non-numbers in numeric columns as missing (imputed) instead
        of stopping with an error.
    encoding : str or None
        Text encoding of CSV files (default UTF-8).
    keep_columns : tuple of str or None
        Columns taken as they are: a column of dates is not turned into date
        features, a near-unique text column is not dropped.
    """

    source: str = "breast_cancer"
    target: str | None = None
    id_column: str | None = None
    task: str | None = None
    val_size: int | float | None = None
    test_size: int | float | None = None
    seed: int = 0
    valid: str | None = None
    test: str | None = None
    split_column: str | None = None
    coerce_numeric: bool = False
    encoding: str | None = None
    keep_columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.keep_columns is not None:
            kept = (self.keep_columns,) if isinstance(self.keep_columns, str) else self.keep_columns
            object.__setattr__(self, "keep_columns", tuple(str(c) for c in kept) or None)
        for name in ("valid", "test"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, str(v))
        if self.test is not None and self.valid is None:
            raise ConfigError(f"test={self.test!r} needs valid= too: give the validation file "
                              "(--valid), or neither")
        if self.split_column is not None and self.valid is not None:
            raise ConfigError("give the splits either as files (--valid/--test) or as a split column "
                              "(--split-column), not both")
        if self.given_splits and (self.val_size is not None or self.test_size is not None):
            raise ConfigError("val_size/test_size size the seeded split; with given splits "
                              "(--valid or --split-column) leave them out")
        if not isinstance(self.coerce_numeric, (bool, np.bool_)):
            raise ConfigError(f"coerce_numeric={self.coerce_numeric!r} must be True or False")
        object.__setattr__(self, "coerce_numeric", bool(self.coerce_numeric))
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except (LookupError, TypeError):
                raise ConfigError(f"unknown encoding {self.encoding!r}; use a Python codec name such as "
                                  "utf-8, latin-1 or cp1252") from None
        if self.task not in (None, "classification", "regression"):
            raise ConfigError(f"task={self.task!r} must be 'classification' or 'regression'")
        for name in ("val_size", "test_size"):
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{name}={v!r} must be a row count or a fraction")
            if isinstance(v, float) and not 0 < v < 1:
                raise ConfigError(f"{name}={v} must be a fraction in (0, 1) or a row count")
            if isinstance(v, int) and v < 1:
                raise ConfigError(f"{name}={v} must be at least 1")
        if int(self.seed) < 0:
            raise ConfigError(f"seed={self.seed} must be non-negative")

    @property
    def given_splits(self) -> bool:
        """True when the user gives the splits (files or a split column)."""
        return self.valid is not None or self.split_column is not None

    def fingerprint_fields(self) -> dict[str, Any]:
        """The settings the fingerprint covers: paths left out (content counts), new fields only when set."""
        return {k: v for k, v in self.to_dict().items()
                if k not in ("source", "valid", "test") and not (k in _NEW_FIELDS and v == _NEW_FIELDS[k])}

    @property
    def name(self) -> str:
        if self.source in BUILTIN_DATASETS or self.source in OPTIONAL_DATASETS:
            return self.source
        return Path(self.source).stem or "data"


@dataclass(frozen=True)
class Dataset:
    """A preprocessed, split dataset version. Arrays may be memory-mapped.

    ``point_ids`` name the rows of ``X_train`` (the training pool: the points
    being valued); ``val_ids`` and ``test_ids`` those of the other splits.
    Classification labels are encoded as ``0..len(classes)-1``.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    point_ids: np.ndarray
    val_ids: np.ndarray
    test_ids: np.ndarray
    feature_names: tuple[str, ...]
    task: str
    classes: np.ndarray | None
    fingerprint: str
    config: DataConfig
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    report: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def n_pool(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        return 0 if self.classes is None else int(len(self.classes))

    @property
    def short(self) -> str:
        return self.fingerprint[:8]

    def index_of(self, point_ids) -> np.ndarray:
        """Indices into the training pool of the given point ids (error if unknown)."""
        wanted = np.asarray(point_ids if isinstance(point_ids, np.ndarray) else list(point_ids), dtype=object)
        if wanted.size == 0:
            return np.empty(0, dtype=np.int64)
        pos = self.id_index().get_indexer(wanted).astype(np.int64)
        if (pos < 0).any():
            raise DataError(f"point id {wanted[pos < 0][0]!r} is not in the training pool of {self.name}")
        return pos

    def id_index(self) -> pd.Index:
        """The pool's point ids as a ``pandas.Index`` (hash lookups in C), built once per object."""
        index = self.__dict__.get("_id_index")
        if index is None:
            # A frozen dataclass: the cache goes straight into the instance dict.
            index = self.__dict__["_id_index"] = pd.Index(np.asarray(self.point_ids).astype(object))
        return index

    def save(self, root: str | Path) -> Path:
        """Store this version under ``root/<fingerprint>/`` (idempotent, atomic per file)."""
        folder = Path(root) / self.fingerprint
        meta_path = folder / "meta.json"
        if meta_path.exists():
            return folder
        for name in _ARRAYS:
            atomic_save_npy(folder / f"{name}.npy", np.ascontiguousarray(getattr(self, name)))
        for name in ("point_ids", "val_ids", "test_ids"):
            atomic_save_npy(folder / f"{name}.npy", np.asarray(getattr(self, name)).astype("U"))
        meta = {
            "schema": SCHEMA_VERSION,
            "name": self.name,
            "fingerprint": self.fingerprint,
            "task": self.task,
            "classes": None if self.classes is None else self.classes.tolist(),
            "feature_names": list(self.feature_names),
            "config": self.config.to_dict(),
            "preprocessing": dict(self.preprocessing),
            "report": dict(self.report),
        }
        atomic_write_json(meta_path, meta)  # written last: its presence marks a complete version
        return folder


def open_dataset(path: str | Path, *, mmap: bool = True, object_ids: bool = True) -> Dataset:
    """Load a stored dataset version from its folder (arrays memory-mapped by default).

    ``object_ids=False`` keeps the point ids as the stored fixed-width string
    arrays (memory-mapped with ``mmap``) instead of one Python string per
    point: what a sampling worker wants, since it only ever looks up the ids
    of its own shard's points (at 10^7 points the object array alone is
    ~0.8 GB per process).
    """
    # A version at an fsspec URL (a run folder on object storage) is copied once per machine.
    folder = cached_folder(path) if is_url(os.fspath(path)) else Path(path)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise DataError(
            f"no dataset version at {folder} (meta.json missing); the run folder must be "
            "on storage every worker can read"
        )
    meta = read_json(meta_path)
    mode = "r" if mmap else None
    arrays = {n: np.load(folder / f"{n}.npy", mmap_mode=mode, allow_pickle=False) for n in _ARRAYS}
    if object_ids:
        ids = {n: np.load(folder / f"{n}.npy", allow_pickle=False).astype(object)
               for n in ("point_ids", "val_ids", "test_ids")}
    else:
        ids = {n: np.load(folder / f"{n}.npy", mmap_mode=mode, allow_pickle=False)
               for n in ("point_ids", "val_ids", "test_ids")}
    classes = meta["classes"]
    return Dataset(
        name=meta["name"],
        **arrays,
        **ids,
        feature_names=tuple(meta["feature_names"]),
        task=meta["task"],
        classes=None if classes is None else np.asarray(classes, dtype=object),
        fingerprint=meta["fingerprint"],
        config=DataConfig.from_dict(meta["config"]),
        preprocessing=meta["preprocessing"],
        report=meta["report"],
        path=folder,
    )


# --------------------------------------------------------------------------- ids and hashes


def _normalised(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as float64, everything else as text, so ids survive dtype changes."""
    out = {}
    for col in frame.columns:
        s = frame[col]
        if pd.api.types.is_bool_dtype(s):
            out[col] = s.astype("float64")
        elif pd.api.types.is_numeric_dtype(s):
            out[col] = s.astype("float64")
        else:
            out[col] = s.astype("string").fillna("<NA>").astype(object)
    return pd.DataFrame(out, index=frame.index)


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """A uint64 content hash per row (column names included via ordering of values)."""
    return pd.util.hash_pandas_object(_normalised(frame), index=False).to_numpy(np.uint64)


def content_ids(frame: pd.DataFrame) -> np.ndarray:
    """Point ids from row content, ``~n`` suffixes for exact duplicates in file order."""
    hashes = row_hashes(frame)
    seen: dict[int, int] = {}
    ids = []
    for h in hashes.tolist():
        n = seen.get(h, 0)
        seen[h] = n + 1
        ids.append(f"{h:016x}" if n == 0 else f"{h:016x}~{n}")
    return np.asarray(ids, dtype=object)


def _raw_digest(frame: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(repr([str(c) for c in frame.columns]).encode())
    h.update(row_hashes(frame).tobytes())
    return h.hexdigest()


def _rank_key(seed: int, ids: np.ndarray) -> np.ndarray:
    return np.asarray(
        [int.from_bytes(hashlib.sha256(f"{seed}:{pid}".encode()).digest()[:8], "little") for pid in ids],
        dtype=np.uint64,
    )


# --------------------------------------------------------------------------- preprocessing


def _fit_preprocessing(X: pd.DataFrame) -> dict[str, Any]:
    columns = []
    for col in X.columns:
        s = X[col]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            v = s.astype("float64")
            fill = float(v.median()) if v.notna().any() else 0.0
            v = v.fillna(fill)
            scale = float(v.std(ddof=0))
            columns.append({"name": str(col), "kind": "numeric", "fill": fill,
                            "mean": float(v.mean()), "scale": scale if scale > 0 else 1.0})
        else:
            v = s.astype("string").fillna("__missing__")
            cats = sorted(v.unique().tolist())
            columns.append({"name": str(col), "kind": "categorical", "categories": cats})
    return {"columns": columns}


def _apply_preprocessing(X: pd.DataFrame, prep: Mapping[str, Any]) -> tuple[np.ndarray, list[str]]:
    blocks, names = [], []
    for spec in prep["columns"]:
        col = spec["name"]
        if col not in X.columns:
            raise DataError(f"column {col!r} of the base version is missing from the new data")
        s = X[col]
        if spec["kind"] == "numeric":
            v = pd.to_numeric(s, errors="coerce").astype("float64").fillna(spec["fill"]).to_numpy()
            blocks.append(((v - spec["mean"]) / spec["scale"])[:, None])
            names.append(col)
        else:
            v = s.astype("string").fillna("__missing__").to_numpy(dtype=object)
            cats = spec["categories"]
            onehot = np.zeros((len(v), len(cats)))
            index = {c: i for i, c in enumerate(cats)}
            for r, value in enumerate(v):
                j = index.get(value)  # unknown categories: all zeros
                if j is not None:
                    onehot[r, j] = 1.0
            blocks.append(onehot)
            names.extend(f"{col}={c}" for c in cats)
    X_out = np.hstack(blocks) if blocks else np.zeros((len(X), 0))
    return np.ascontiguousarray(X_out, dtype=np.float64), names


def _infer_task(y: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(y) or not pd.api.types.is_numeric_dtype(y):
        return "classification"
    values = y.dropna().to_numpy(dtype=float)
    integral = np.all(np.isclose(values, np.round(values)))
    if integral and len(np.unique(values)) <= min(MAX_CLASSES, max(2, len(values) // 10)):
        return "classification"
    return "regression"


def _split_counts(n: int, size: int | float | None, default_cap: int, default_div: int) -> int:
    if size is None:
        return min(default_cap, n // default_div)
    if isinstance(size, float):
        return int(round(n * size))
    return int(size)


# --------------------------------------------------------------------------- dirty columns


def _describe_rows(rows: list[tuple[str, int, Any]], limit: int = 3) -> str:
    shown = [f"{value!r} at row {row} of {where}" for where, row, value in rows[:limit]]
    more = f" (and {len(rows) - limit} more)" if len(rows) > limit else ""
    return "; ".join(shown) + more


def _numeric_columns(frame: pd.DataFrame, columns: list, where: np.ndarray, rowno: np.ndarray,
                     coerce: bool) -> tuple[pd.DataFrame, dict[str, int]]:
    """Text columns that are numbers except for a few strays: an error, or coerced to missing.

    ``where`` and ``rowno`` give each row's file and its 1-based data row in
    that file (header excluded), for the message. Columns whose present
    values all parse but arrive as text (e.g. one split's file held a number
    column the other read as text) become numeric too.
    """
    coerced: dict[str, int] = {}
    frame = frame.copy()
    for col in columns:
        s = frame[col]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            continue
        present = s.notna().to_numpy()
        if not present.any():
            continue
        text = s.astype("string").str.strip()
        num = pd.to_numeric(text.where(text != "", None), errors="coerce")
        ok = present & num.notna().to_numpy()
        bad = present & ~ok
        if ok.sum() < NUMERIC_SHARE * present.sum():
            continue  # a categorical column
        if not bad.any():
            if any(not isinstance(v, str) for v in s[present].head(1000)):
                frame[col] = num.astype("float64")
            continue
        if not coerce:
            idx = np.flatnonzero(bad)
            rows = [(str(where[i]), int(rowno[i]), s.iloc[i]) for i in idx[:3]]
            raise DataError(
                f"column {col!r} is numeric except for {len(idx)} value(s) that are not numbers: "
                f"{_describe_rows(rows)} (rows counted from 1 after the header); fix them, or pass "
                "--coerce-numeric to read them as missing")
        coerced[str(col)] = int(bad.sum())
        frame[col] = num.astype("float64")
    return frame, coerced


# --------------------------------------------------------------------------- main entry


def read_table(config: DataConfig) -> tuple[pd.DataFrame, str, str | None]:
    """The raw table of ``config.source``, its target column and its declared task."""
    if config.source in BUILTIN_DATASETS or config.source in OPTIONAL_DATASETS:
        loader = BUILTIN_DATASETS.get(config.source) or OPTIONAL_DATASETS[config.source]
        frame, target, task = loader()
        if config.target is not None and config.target != target:
            raise ConfigError(f"dataset {config.source!r} has target {target!r}, not {config.target!r}")
        return frame, target, task
    frame = read_files(cached_file(config.source), config.encoding)  # a path or an fsspec URL
    if config.target is None:
        raise ConfigError(f"--target is required for a data file; columns of {config.source}: "
                          f"{', '.join(map(str, frame.columns[:20]))}")
    return frame, config.target, None


def _given_parts(config: DataConfig, frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame, str]]:
    """``(split, raw rows, where)`` for the training table and the given validation/test files."""
    parts = [("train", frame, config.source)]
    for split, path in (("val", config.valid), ("test", config.test)):
        if path is None:
            continue
        other = read_files(cached_file(path), config.encoding)
        missing = [str(c) for c in frame.columns if c not in other.columns]
        extra = [str(c) for c in other.columns if c not in frame.columns]
        if missing or extra:
            what = "; ".join(x for x in (f"missing {', '.join(missing)}" if missing else "",
                                         f"extra {', '.join(extra)}" if extra else "") if x)
            raise DataError(f"the {_SPLIT_LABEL[split]} file {path} has other columns than the training "
                            f"data ({what}); every split needs the same columns")
        parts.append((split, other[list(frame.columns)], path))
    return parts


def _split_from_column(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    if column not in frame.columns:
        raise DataError(f"split column {column!r} not found in {source}; "
                        f"columns: {', '.join(map(str, frame.columns[:20]))}")
    raw = frame[column]
    if raw.isna().any():
        first = int(np.flatnonzero(raw.isna().to_numpy())[0]) + 1
        raise DataError(f"split column {column!r} has missing values (first at row {first}); "
                        "every row needs train, valid or test")
    text = raw.astype("string").str.strip().str.lower()
    unknown = sorted(set(text.tolist()) - set(SPLIT_NAMES))
    if unknown:
        raise DataError(f"split column {column!r} has value(s) {', '.join(map(repr, unknown[:5]))}; "
                        "use train, valid or test")
    return text.map(SPLIT_NAMES).to_numpy(dtype=object)


@dataclass
class _Table:
    """The raw rows of every split in one table, as :func:`load_dataset`'s steps pass them on.

    ``part``, ``where`` and ``rowno`` give each row's split (given splits),
    file and 1-based data row in that file; ``raw`` is what the fingerprint
    hashes (the rows as read, before any coercion); ``notes`` the lines that
    say what was done to the data, ``columns`` what was done to each column.
    """

    frame: pd.DataFrame
    raw: pd.DataFrame
    target: str
    declared_task: str | None
    part: np.ndarray
    where: np.ndarray
    rowno: np.ndarray
    features: list
    notes: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)
    rules: dict[str, list[str]] = field(default_factory=dict)
    missing_target: int = 0
    coerced: dict[str, int] = field(default_factory=dict)


def _read(config: DataConfig, frame: pd.DataFrame | None) -> _Table:
    """Step 1: read every split's rows, drop rows without a target, name the feature columns."""
    if frame is None:
        frame, target_col, declared_task = read_table(config)
    else:
        if config.target is None:
            raise ConfigError("target is required with frame=")
        target_col, declared_task = config.target, None
    if frame.shape[0] == 0:
        raise DataError(f"{config.source}: no rows")
    if target_col not in frame.columns:
        raise DataError(f"target column {target_col!r} not found in {config.source}; "
                        f"columns: {', '.join(map(str, frame.columns[:20]))}")
    id_column, split_column = config.id_column, config.split_column
    if id_column is not None and id_column not in frame.columns:
        raise DataError(f"id column {id_column!r} not found in {config.source}")

    parts = _given_parts(config, frame.reset_index(drop=True))
    frame = pd.concat([p[1] for p in parts], ignore_index=True) if len(parts) > 1 \
        else parts[0][1].reset_index(drop=True)
    part = np.concatenate([np.full(len(p[1]), p[0], dtype=object) for p in parts])
    where = np.concatenate([np.full(len(p[1]), p[2], dtype=object) for p in parts])
    rowno = np.concatenate([np.arange(1, len(p[1]) + 1) for p in parts])
    if split_column is not None:
        part = _split_from_column(frame, split_column, config.source)

    notes = []
    n_missing_target = int(frame[target_col].isna().sum())
    if n_missing_target:
        keep = frame[target_col].notna().to_numpy()
        frame, part, where, rowno = frame[keep].reset_index(drop=True), part[keep], where[keep], rowno[keep]
        notes.append(f"dropped {n_missing_target} of {n_missing_target + len(frame)} rows: their target "
                     f"{target_col!r} is missing")
    if frame.shape[0] == 0:
        raise DataError(f"target column {target_col!r} of {config.source} is entirely missing")

    features = [c for c in frame.columns if c not in (target_col, id_column, split_column)]
    if not features:
        raise DataError(f"{config.source} has no feature columns besides the target")
    all_missing = [str(c) for c in features if frame[c].isna().all()]
    if all_missing:
        raise DataError(f"column(s) {', '.join(all_missing)} of {config.source} are entirely "
                        "missing; drop them from the file")
    columns = {str(target_col): "target"}
    if id_column is not None:
        columns[str(id_column)] = "point ids (not a feature)"
    if split_column is not None:
        columns[str(split_column)] = "split of each row (not a feature)"
    return _Table(frame=frame, raw=frame, target=target_col, declared_task=declared_task, part=part, where=where,
                  rowno=rowno, features=features, notes=notes, columns=columns, missing_target=n_missing_target)


def _coerce(t: _Table, config: DataConfig, base: Dataset | None) -> None:
    """Step 2: numbers read as text, dates and near-unique text columns, each said in one line.

    A column of dates becomes numeric date features; a text column with
    almost one distinct value per row is dropped (one-hot encoding it would
    give every row a feature of its own). ``--keep-columns`` keeps a column as
    it is. Extending a base version applies the base's decisions.
    """
    t.frame, t.coerced = _numeric_columns(t.frame, t.features, t.where, t.rowno, config.coerce_numeric)
    for col, n in t.coerced.items():
        t.notes.append(f"column {col!r}: {n} value(s) that are not numbers read as missing (--coerce-numeric) "
                       "and imputed")
    keep = set(config.keep_columns or ())
    unknown = sorted(keep - {str(c) for c in t.features})
    if unknown:
        raise ConfigError(f"--keep-columns names {', '.join(map(repr, unknown))}, not feature column(s) of "
                          f"{config.source}; columns: {', '.join(map(str, t.features[:20]))}")
    if base is not None:
        rules = dict(base.preprocessing.get("column_rules") or {})
        dates, dropped = list(rules.get("dates", [])), list(rules.get("dropped", []))
    else:
        dates, dropped = [], []
        for col in t.features:
            if str(col) in keep:
                continue
            s = t.frame[col]
            if _as_dates(s) is not None:
                dates.append(str(col))
            elif _near_unique_text(s):
                dropped.append(str(col))
    features = []
    for col in t.features:
        name = str(col)
        if name in dropped:
            s = t.frame[col]
            t.notes.append(f"dropped column {name!r}: text with {s.nunique()} distinct values in {int(s.notna().sum())} "
                           f"rows, no use as a category; --keep-columns {name} keeps it")
            t.columns[name] = f"dropped: near-unique text ({s.nunique()} distinct values)"
            continue
        if name in dates:
            when = _as_dates(t.frame[col], force=True)
            unparsed = int((when.isna() & t.frame[col].notna()).sum())
            derived = {f"{name}.days": (when - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1),
                       f"{name}.month": when.dt.month.astype("float64"),
                       f"{name}.weekday": when.dt.day_of_week.astype("float64")}
            for new, values in derived.items():
                t.frame[new] = values.astype("float64").to_numpy()
                features.append(new)
            said = f"; {unparsed} value(s) that are not dates imputed" if unparsed else ""
            t.notes.append(f"column {name!r} holds dates: became numeric features {', '.join(derived)}{said}; "
                           f"--keep-columns {name} keeps it as it is")
            t.columns[name] = f"dates: became {', '.join(derived)}"
            continue
        features.append(col)
    t.features = features
    t.rules = {k: v for k, v in (("dates", dates), ("dropped", dropped)) if v}


#: A text column with at least this many distinct values per present value is not a category.
NEAR_UNIQUE_SHARE = 0.9
#: ... when it has at least this many present values (tiny files keep their columns).
NEAR_UNIQUE_MIN_ROWS = 20
_DATE_PATTERN = (r"^\s*(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4})"
                 r"([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?\s*(Z|[+-]\d{2}:?\d{2})?\s*$")


def _as_dates(s: pd.Series, force: bool = False) -> pd.Series | None:
    """``s`` as naive UTC timestamps when its values look like dates (or ``force``), else None."""
    if pd.api.types.is_datetime64_any_dtype(s):
        out = pd.to_datetime(s, utc=True)
        return out.dt.tz_localize(None)
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return None if not force else pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns]")
    text = s.astype("string")
    present = text.dropna()
    if not force:
        if present.empty or present.head(500).str.match(_DATE_PATTERN).mean() < NUMERIC_SHARE:
            return None
    out = pd.to_datetime(text.astype(object).where(text.notna(), None), errors="coerce", utc=True,
                         format="mixed")
    if not force and out[present.index].notna().mean() < NUMERIC_SHARE:
        return None
    return out.dt.tz_localize(None)


def _near_unique_text(s: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return False
    n = int(s.notna().sum())
    return n >= NEAR_UNIQUE_MIN_ROWS and s.nunique() >= NEAR_UNIQUE_SHARE * n


def _point_ids(t: _Table, config: DataConfig) -> np.ndarray:
    """Step 3a: a stable id per row (the id column, or the row's content)."""
    id_column, frame, part = config.id_column, t.frame, t.part
    if id_column is not None:
        ids = frame[id_column].astype("string").to_numpy(dtype=object)
        if pd.isna(frame[id_column]).any():
            raise DataError(f"id column {id_column!r} has missing values")
        for name in dict.fromkeys(part.tolist()):
            within = ids[part == name] if config.valid is not None else ids
            dup = pd.Series(within).duplicated().to_numpy()
            if dup.any():
                raise DataError(f"id column {id_column!r} has duplicate ids, e.g. {within[dup][0]!r}")
        return ids
    # Content ids of the rows as read (derived date columns are not content).
    content = t.raw
    if config.valid is not None:
        # Ids of each file from that file alone: appending training rows keeps every id.
        ids = np.empty(len(content), dtype=object)
        for name in dict.fromkeys(part.tolist()):
            ids[part == name] = content_ids(content[part == name])
    else:
        ids = content_ids(content.drop(columns=[config.split_column]) if config.split_column else content)
    copies = sum(1 for i in ids if "~" in i)
    if copies:
        t.notes.append(f"{copies} row(s) repeat an earlier row exactly; each is kept as a point of its own")
    return ids


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value a user wrote (``1``, not ``np.int64(1)``)."""
    return value.item() if isinstance(value, np.generic) else value


def _labels(t: _Table, config: DataConfig, base: Dataset | None) -> tuple[str, str, np.ndarray | None, np.ndarray]:
    """Step 3b: the task, and the labels encoded (classes checked): ``(task, inferred, classes, y)``."""
    target_col, part = t.target, t.part
    y_raw = t.frame[target_col]
    inferred = t.declared_task or _infer_task(y_raw)
    the_task = config.task or inferred
    if the_task != "classification":
        if not pd.api.types.is_numeric_dtype(y_raw):
            y_num = pd.to_numeric(y_raw, errors="coerce")
            if y_num.isna().any():
                raise DataError(f"target {target_col!r} is not numeric; pass --task regression only for "
                                "numeric targets, or --task classification")
            y_raw = y_num
        return the_task, inferred, None, y_raw.to_numpy(dtype=np.float64)
    y_text = y_raw.astype("string").to_numpy(dtype=object) if not pd.api.types.is_numeric_dtype(y_raw) \
        else y_raw.to_numpy()
    classes, y_codes = np.unique(y_text, return_inverse=True)
    if base is not None:
        if base.task != "classification":
            raise DataError("the base version is not a classification dataset")
        base_classes = list(base.classes)
        mapping = {c: i for i, c in enumerate(base_classes)}
        unknown = sorted({str(c) for c in classes if c not in mapping})
        if unknown:
            raise DataError(f"new data has classes not in the base version: {', '.join(unknown)}")
        classes = np.asarray(base_classes, dtype=object)
        y_codes = np.asarray([mapping[v] for v in y_text], dtype=np.int64)
    if len(classes) < 2:
        raise DataError(f"target {target_col!r} has a single class ({_plain(classes[0])!r}) in all "
                        f"{len(y_codes)} rows; classification needs at least two: check that --target names "
                        "the label column, or pass --task regression for a numeric target")
    if len(classes) > MAX_CLASSES:
        raise DataError(f"target {target_col!r} has {len(classes)} classes; if it is numeric, "
                        "pass --task regression")
    counted = y_codes[part == "train"] if config.given_splits else y_codes
    counts = np.bincount(counted, minlength=len(classes))
    # With given splits a class absent from the pool gets its own message later.
    small = [f"{_plain(classes[i])!r} ({counts[i]} row{'s' if counts[i] != 1 else ''})"
             for i in range(len(classes)) if counts[i] < 2 and not (config.given_splits and counts[i] == 0)]
    where_small = " in the training pool" if config.given_splits else ""
    if small and base is None:
        raise DataError(f"class(es) {', '.join(small)} of {target_col!r} have fewer than 2 rows"
                        f"{where_small}; remove them or merge them into another class")
    return the_task, inferred, classes, y_codes.astype(np.int64)


def _split(t: _Table, config: DataConfig, ids: np.ndarray, classes: np.ndarray | None, y_all: np.ndarray,
           base: Dataset | None) -> tuple[np.ndarray, dict[str, str]]:
    """Step 4: each row's split (given, the base's, or drawn by seeded rank), and the given splits' digests."""
    n = len(t.frame)
    n_classes = 1 if classes is None else len(classes)
    min_pool = max(10, 2 * n_classes)
    split_digests: dict[str, str] = {}
    if config.given_splits:
        split = t.part
        for name in ("val", "test"):
            if (split == name).any():
                split_digests[name] = _raw_digest(t.raw[split == name])
        if not (split == "val").any():
            raise DataError(f"the validation split of {config.source} is empty; give validation rows "
                            f"(--valid FILE, or rows marked valid in --split-column)")
        if int((split == "train").sum()) < min_pool:
            raise DataError(f"the training pool of {config.source} has {int((split == 'train').sum())} rows; "
                            f"at least {min_pool} are needed")
        if base is not None:
            before = dict(base.report.get("split_digests") or {})
            for name in ("val", "test"):
                if split_digests.get(name) != before.get(name):
                    raise DataError(
                        f"the {_SPLIT_LABEL[name]} rows differ from those of the run's dataset version; "
                        f"values are only comparable against the same {_SPLIT_LABEL[name]} rows: keep that "
                        "file unchanged, or start a new run")
        return split, split_digests
    split = np.full(n, "train", dtype=object)
    if base is not None:
        val_set, test_set = set(base.val_ids.tolist()), set(base.test_ids.tolist())
        for i, pid in enumerate(ids):
            if pid in val_set:
                split[i] = "val"
            elif pid in test_set:
                split[i] = "test"
        return split, split_digests
    n_val = _split_counts(n, config.val_size, 1000, 4)
    n_test = _split_counts(n, config.test_size, 1000, 5)
    if n_val < n_classes or n - n_val - n_test < min_pool or n_test < 0:
        raise DataError(
            f"{config.source} has {n} rows: too few for a validation split of {n_val}, a test split "
            f"of {n_test} and a training pool of at least {min_pool}; supply more rows or "
            "smaller --val-size/--test-size"
        )
    key = _rank_key(config.seed, ids)
    groups = [np.arange(n)] if classes is None else [np.flatnonzero(y_all == c) for c in range(len(classes))]
    for members in groups:
        share = len(members) / n
        order = members[np.argsort(key[members], kind="stable")]
        gv = max(1, int(round(n_val * share))) if classes is not None else n_val
        gt = int(round(n_test * share)) if classes is not None else n_test
        if classes is not None:
            gt = min(gt, max(0, len(members) - gv - 1))
        split[order[:gv]] = "val"
        split[order[gv:gv + gt]] = "test"
    return split, split_digests


def _encode(t: _Table, config: DataConfig, split: np.ndarray, classes: np.ndarray | None, y_all: np.ndarray,
            base: Dataset | None) -> tuple[np.ndarray, list[str], dict[str, Any], dict[str, int]]:
    """Step 5: preprocessing fitted on the training pool (or the base's), applied to every row."""
    train = split == "train"
    X_raw = t.frame[t.features]
    missing_counts = {str(c): int(X_raw[c].isna().sum()) for c in t.features if X_raw[c].isna().any()}
    if base is not None:
        prep = dict(base.preprocessing)
    else:
        prep = _fit_preprocessing(X_raw[train])
        if t.rules:
            prep["column_rules"] = t.rules
    X_all, names = _apply_preprocessing(X_raw, prep)
    kinds = {spec["name"]: spec for spec in prep["columns"]}
    for col in t.features:
        spec = kinds.get(str(col), {})
        if spec.get("kind") == "categorical":
            t.columns.setdefault(str(col), f"categorical: {len(spec['categories'])} one-hot features")
        else:
            t.columns.setdefault(str(col), "numeric, standardised")
        n_missing = missing_counts.get(str(col), 0)
        if n_missing:
            how = "with the training pool's median" if spec.get("kind") == "numeric" \
                else "as a category of their own"
            t.notes.append(f"column {str(col)!r}: {n_missing} missing value(s) imputed {how}")
    if classes is not None:
        present = set(np.unique(y_all[train]).tolist())
        lacking = [repr(_plain(classes[c])) for c in range(len(classes)) if c not in present]
        if lacking:
            raise DataError(f"the training pool of {config.source} has no rows of class(es) "
                            f"{', '.join(lacking)} that the other splits hold; supply such rows")
    return X_all, names, prep, missing_counts


def load_dataset(
    source: str | Path = "breast_cancer",
    *,
    target: str | None = None,
    id_column: str | None = None,
    task: str | None = None,
    val_size: int | float | None = None,
    test_size: int | float | None = None,
    seed: int = 0,
    valid: str | Path | None = None,
    test: str | Path | None = None,
    split_column: str | None = None,
    coerce_numeric: bool = False,
    encoding: str | None = None,
    keep_columns: Sequence[str] | None = None,
    base: Dataset | None = None,
    frame: pd.DataFrame | None = None,
) -> Dataset:
    """Read, validate, split and preprocess a dataset.

    The steps: read (:func:`_read`) -> coerce columns (:func:`_coerce`) ->
    ids and labels -> split (:func:`_split`) -> encode (:func:`_encode`).
    What they did to the data (rows dropped, columns dropped or converted,
    values imputed) is in ``report["data_preparation"]``, one line each, and
    what they did to every column in ``report["columns"]``.

    Parameters
    ----------
    source : str or path, default="breast_cancer"
        Built-in name (``breast_cancer``, ``digits``, ``diabetes``; after
        ``make data`` also ``adult``, ``magic``, ``california``) or a path to a
        CSV/Parquet file or a folder of them. With ``valid=`` it holds the
        training pool only.
    target, id_column, task, val_size, test_size, seed
        See :class:`DataConfig`.
    valid, test : str or path, optional
        Given validation and test files or folders (same columns as
        ``source``). Without them a seeded, stratified split is drawn.
    split_column : str, optional
        A column with ``train``/``valid``/``test`` per row (instead of files).
    coerce_numeric : bool, default=False
        Stray non-numbers in a numeric column become missing values instead
        of an error.
    encoding : str, optional
        Text encoding of CSV files (default UTF-8).
    keep_columns : sequence of str, optional
        Columns taken as they are: not converted from dates, not dropped as
        near-unique text.
    base : Dataset, optional
        A previous version this data extends: its rows keep their split and
        preprocessing; new rows join the training pool. With given splits the
        validation and test rows must equal the base's.
    frame : DataFrame, optional
        Use this raw table instead of reading ``source`` (``source`` then only names it).

    Raises
    ------
    DataError, ConfigError
        With a message naming the problem and the fix.
    """
    config = DataConfig(source=str(source), target=target, id_column=id_column, task=task,
                        val_size=val_size, test_size=test_size, seed=int(seed),
                        valid=None if valid is None else str(valid), test=None if test is None else str(test),
                        split_column=split_column, coerce_numeric=coerce_numeric, encoding=encoding,
                        keep_columns=None if keep_columns is None else tuple(keep_columns))
    if frame is not None and target is None:
        raise ConfigError("target is required with frame=")
    t = _read(config, frame)
    _coerce(t, config, base)
    ids = _point_ids(t, config)
    the_task, inferred, classes, y_all = _labels(t, config, base)
    split, split_digests = _split(t, config, ids, classes, y_all, base)
    X_all, names, prep, missing_counts = _encode(t, config, split, classes, y_all, base)
    masks = {"train": split == "train", "val": split == "val", "test": split == "test"}

    raw: Any = _raw_digest(t.raw)
    if config.valid is not None:
        # Every split's rows under its own name (the training file's digest alone would miss them).
        raw = {"train": _raw_digest(t.raw[t.part == "train"]), **split_digests}
    digest_input = {"raw": raw, "config": config.fingerprint_fields(), "target": t.target, "task": the_task,
                    "base": None if base is None else base.fingerprint}
    if t.rules:  # only then: versions without such columns keep their fingerprints
        digest_input["column_rules"] = t.rules
    report = {
        "rows": len(t.frame),
        "rows_dropped_missing_target": t.missing_target,
        "missing_values_imputed": missing_counts,
        "n_train": int(masks["train"].sum()),
        "n_val": int(masks["val"].sum()),
        "n_test": int(masks["test"].sum()),
        "target": t.target,
        "task_inferred": inferred,
        "base_fingerprint": None if base is None else base.fingerprint,
        "splits": "given" if config.given_splits else ("base" if base is not None else "seeded"),
        "data_preparation": list(t.notes),
        "columns": dict(t.columns),
    }
    if config.given_splits:
        report["split_digests"] = split_digests
        content = row_hashes(t.raw[[c for c in t.raw.columns if c not in (id_column, split_column)]])
        shared = set(content[masks["train"]].tolist()) & set(content[~masks["train"]].tolist())
        # Exact copies of training rows in the validation/test splits inflate those rows' values.
        report["training_rows_also_in_other_splits"] = int(np.isin(content[masks["train"]], list(shared)).sum())
    if t.coerced:
        report["coerced_to_missing"] = t.coerced
    return Dataset(
        name=config.name,
        X_train=X_all[masks["train"]], y_train=y_all[masks["train"]],
        X_val=X_all[masks["val"]], y_val=y_all[masks["val"]],
        X_test=X_all[masks["test"]], y_test=y_all[masks["test"]],
        point_ids=ids[masks["train"]], val_ids=ids[masks["val"]], test_ids=ids[masks["test"]],
        feature_names=tuple(names), task=the_task,
        classes=None if classes is None else np.asarray(classes, dtype=object),
        fingerprint=stable_hash(digest_input), config=config, preprocessing=prep, report=report,
    )


def too_little_data(dataset: Dataset, pool_needed: int, fix: str) -> str:
    """One line for data too small to value: its rows, its splits, and the smallest file that works.

    ``pool_needed`` is the smallest training pool the run's settings work
    with; ``fix`` names the flags that make this file work instead.
    """
    rep, config = dataset.report, dataset.config
    dropped = int(rep.get("rows_dropped_missing_target") or 0)
    rows = int(rep.get("rows", dataset.n_pool)) + dropped
    said = f" ({dropped} without a target dropped)" if dropped else ""
    splits = (f"{dataset.n_pool} in the training pool, {dataset.X_val.shape[0]} validation, "
              f"{dataset.X_test.shape[0]} test")
    if config.given_splits:
        need = f"a training pool of at least {pool_needed} rows"
    else:
        total = pool_needed
        while total - _split_counts(total, config.val_size, 1000, 4) \
                - _split_counts(total, config.test_size, 1000, 5) < pool_needed:
            total += 1
        need = f"a file of at least {total} rows (a training pool of {pool_needed})"
    return f"{config.source} has {rows} rows{said}: {splits}; valuing needs {need}; {fix}"


def load_from_config(config: DataConfig, base: Dataset | None = None) -> Dataset:
    """:func:`load_dataset` with every setting taken from a :class:`DataConfig`."""
    return load_dataset(**config.to_dict(), base=base)
