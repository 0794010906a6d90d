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
* **The fingerprint** hashes the raw rows in order plus the ingestion settings
  (and the base version's fingerprint when extending): same content, same
  fingerprint; any changed or added row, a new one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..config import StableConfig, stable_hash
from ..errors import ConfigError, DataError
from ..io import atomic_save_npy, atomic_write_json, read_json
from .sources import BUILTIN_DATASETS, OPTIONAL_DATASETS, read_files

SCHEMA_VERSION = 1
MAX_CLASSES = 50
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
    """

    source: str = "breast_cancer"
    target: str | None = None
    id_column: str | None = None
    task: str | None = None
    val_size: int | float | None = None
    test_size: int | float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
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
        lookup = {pid: i for i, pid in enumerate(self.point_ids.tolist())}
        out = np.empty(len(point_ids), dtype=np.int64)
        for j, pid in enumerate(point_ids):
            try:
                out[j] = lookup[pid]
            except KeyError:
                raise DataError(f"point id {pid!r} is not in the training pool of {self.name}") from None
        return out

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


def open_dataset(path: str | Path, *, mmap: bool = True) -> Dataset:
    """Load a stored dataset version from its folder (arrays memory-mapped by default)."""
    folder = Path(path)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise DataError(
            f"no dataset version at {folder} (meta.json missing); the run folder must be "
            "on storage every worker can read"
        )
    meta = read_json(meta_path)
    mode = "r" if mmap else None
    arrays = {n: np.load(folder / f"{n}.npy", mmap_mode=mode, allow_pickle=False) for n in _ARRAYS}
    ids = {n: np.load(folder / f"{n}.npy", allow_pickle=False).astype(object)
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


# --------------------------------------------------------------------------- main entry


def read_table(config: DataConfig) -> tuple[pd.DataFrame, str, str | None]:
    """The raw table of ``config.source``, its target column and its declared task."""
    if config.source in BUILTIN_DATASETS or config.source in OPTIONAL_DATASETS:
        loader = BUILTIN_DATASETS.get(config.source) or OPTIONAL_DATASETS[config.source]
        frame, target, task = loader()
        if config.target is not None and config.target != target:
            raise ConfigError(f"dataset {config.source!r} has target {target!r}, not {config.target!r}")
        return frame, target, task
    frame = read_files(Path(config.source))
    if config.target is None:
        raise ConfigError(f"--target is required for a data file; columns of {config.source}: "
                          f"{', '.join(map(str, frame.columns[:20]))}")
    return frame, config.target, None


def load_dataset(
    source: str | Path = "breast_cancer",
    *,
    target: str | None = None,
    id_column: str | None = None,
    task: str | None = None,
    val_size: int | float | None = None,
    test_size: int | float | None = None,
    seed: int = 0,
    base: Dataset | None = None,
    frame: pd.DataFrame | None = None,
) -> Dataset:
    """Read, validate, split and preprocess a dataset.

    Parameters
    ----------
    source : str or path, default="breast_cancer"
        Built-in name (``breast_cancer``, ``digits``, ``diabetes``; after
        ``make data`` also ``adult``, ``magic``, ``california``) or a path to a
        CSV/Parquet file or a folder of them.
    target, id_column, task, val_size, test_size, seed
        See :class:`DataConfig`.
    base : Dataset, optional
        A previous version this data extends: its rows keep their split and
        preprocessing; new rows join the training pool.
    frame : DataFrame, optional
        Use this raw table instead of reading ``source`` (``source`` then only names it).

    Raises
    ------
    DataError, ConfigError
        With a message naming the problem and the fix.
    """
    config = DataConfig(source=str(source), target=target, id_column=id_column, task=task,
                        val_size=val_size, test_size=test_size, seed=int(seed))
    if frame is None:
        frame, target_col, declared_task = read_table(config)
    else:
        if target is None:
            raise ConfigError("target is required with frame=")
        target_col, declared_task = target, None
    if frame.shape[0] == 0:
        raise DataError(f"{config.source}: no rows")
    if target_col not in frame.columns:
        raise DataError(f"target column {target_col!r} not found in {config.source}; "
                        f"columns: {', '.join(map(str, frame.columns[:20]))}")
    if id_column is not None and id_column not in frame.columns:
        raise DataError(f"id column {id_column!r} not found in {config.source}")

    frame = frame.reset_index(drop=True)
    n_missing_target = int(frame[target_col].isna().sum())
    if n_missing_target:
        frame = frame[frame[target_col].notna()].reset_index(drop=True)
    if frame.shape[0] == 0:
        raise DataError(f"target column {target_col!r} of {config.source} is entirely missing")

    feature_cols = [c for c in frame.columns if c not in (target_col, id_column)]
    if not feature_cols:
        raise DataError(f"{config.source} has no feature columns besides the target")
    all_missing = [str(c) for c in feature_cols if frame[c].isna().all()]
    if all_missing:
        raise DataError(f"column(s) {', '.join(all_missing)} of {config.source} are entirely "
                        "missing; drop them from the file")

    if id_column is not None:
        ids = frame[id_column].astype("string").to_numpy(dtype=object)
        if pd.isna(frame[id_column]).any():
            raise DataError(f"id column {id_column!r} has missing values")
        dup = pd.Series(ids).duplicated()
        if dup.any():
            raise DataError(f"id column {id_column!r} has duplicate ids, e.g. {ids[dup.to_numpy()][0]!r}")
    else:
        ids = content_ids(frame.drop(columns=[]))

    y_raw = frame[target_col]
    inferred = declared_task or _infer_task(y_raw)
    the_task = task or inferred

    # ---- label encoding and class checks
    if the_task == "classification":
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
            raise DataError(f"target {target_col!r} has a single class ({classes[0]!r}); "
                            "classification needs at least two")
        if len(classes) > MAX_CLASSES:
            raise DataError(f"target {target_col!r} has {len(classes)} classes; if it is numeric, "
                            "pass --task regression")
        counts = np.bincount(y_codes, minlength=len(classes))
        small = [f"{classes[i]!r} ({counts[i]} row{'s' if counts[i] != 1 else ''})"
                 for i in range(len(classes)) if counts[i] < 2]
        if small and base is None:
            raise DataError(f"class(es) {', '.join(small)} of {target_col!r} have fewer than 2 rows; "
                            "remove them or merge them into another class")
        y_all = y_codes.astype(np.int64)
    else:
        if not pd.api.types.is_numeric_dtype(y_raw):
            y_num = pd.to_numeric(y_raw, errors="coerce")
            if y_num.isna().any():
                raise DataError(f"target {target_col!r} is not numeric; pass --task classification")
            y_raw = y_num
        classes = None
        y_all = y_raw.to_numpy(dtype=np.float64)

    # ---- splits
    n = len(frame)
    split = np.full(n, "train", dtype=object)
    if base is not None:
        val_set, test_set = set(base.val_ids.tolist()), set(base.test_ids.tolist())
        for i, pid in enumerate(ids):
            if pid in val_set:
                split[i] = "val"
            elif pid in test_set:
                split[i] = "test"
    else:
        n_val = _split_counts(n, val_size, 1000, 4)
        n_test = _split_counts(n, test_size, 1000, 5)
        n_classes = 1 if classes is None else len(classes)
        min_pool = max(10, 2 * n_classes)
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

    train = split == "train"
    X_raw = frame[feature_cols]
    missing_counts = {str(c): int(X_raw[c].isna().sum()) for c in feature_cols if X_raw[c].isna().any()}
    prep = dict(base.preprocessing) if base is not None else _fit_preprocessing(X_raw[train])
    X_all, names = _apply_preprocessing(X_raw, prep)

    parts = {"train": train, "val": split == "val", "test": split == "test"}
    if classes is not None:
        present = np.unique(y_all[parts["train"]])
        if len(present) < len(classes):
            raise DataError(f"the training pool of {config.source} lacks some classes; supply more rows")

    digest_input = {
        "raw": _raw_digest(frame),
        "config": {k: v for k, v in config.to_dict().items() if k != "source"},
        "target": target_col,
        "task": the_task,
        "base": None if base is None else base.fingerprint,
    }
    fingerprint = stable_hash(digest_input)
    report = {
        "rows": n,
        "rows_dropped_missing_target": n_missing_target,
        "missing_values_imputed": missing_counts,
        "n_train": int(parts["train"].sum()),
        "n_val": int(parts["val"].sum()),
        "n_test": int(parts["test"].sum()),
        "target": target_col,
        "task_inferred": inferred,
        "base_fingerprint": None if base is None else base.fingerprint,
    }
    return Dataset(
        name=config.name,
        X_train=X_all[parts["train"]], y_train=y_all[parts["train"]],
        X_val=X_all[parts["val"]], y_val=y_all[parts["val"]],
        X_test=X_all[parts["test"]], y_test=y_all[parts["test"]],
        point_ids=ids[parts["train"]], val_ids=ids[parts["val"]], test_ids=ids[parts["test"]],
        feature_names=tuple(names), task=the_task,
        classes=None if classes is None else np.asarray(classes, dtype=object),
        fingerprint=fingerprint, config=config, preprocessing=prep, report=report,
    )
