"""The run folder: one place for everything a run produces, and its manifest.

Layout::

    <run>/run.json            manifest: config, fingerprints, versions, counts, timings
    <run>/datasets/<fp>/      dataset versions (npy + meta.json), memory-mapped by workers
    <run>/samples/            the sample ledger (Parquet shards), the system of record
    <run>/laws_mle.parquet    per-point laws (and .json sidecars)
    <run>/laws_amortized.parquet
    <run>/values.parquet, selection.parquet, report.md, figures/

The manifest is rewritten atomically after every stage, so a crash leaves the
last complete state. A run folder is locked (``fcntl.flock``) while a run
writes to it: a second run on the same folder waits or stops with a message.
"""

from __future__ import annotations

import fcntl
import os
import platform
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from .errors import RunLockedError
from .io import atomic_write_json, read_json

_PACKAGES = ("pointscale", "numpy", "scipy", "pandas", "pyarrow", "scikit-learn", "xgboost-cpu",
             "xgboost", "prefect", "prefect-dask", "dask", "distributed", "matplotlib")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


class RunFolder:
    """Paths and manifest of one run folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    # paths -------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "run.json"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def file(self, name: str) -> Path:
        return self.root / name

    # manifest ----------------------------------------------------------
    def read_manifest(self) -> dict[str, Any]:
        if self.manifest_path.exists():
            return read_json(self.manifest_path)
        return {}

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into run.json (nested dicts merged one level deep)."""
        manifest = self.read_manifest()
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(manifest.get(key), dict):
                manifest[key] = {**manifest[key], **value}
            else:
                manifest[key] = value
        manifest["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_json(self.manifest_path, manifest)
        return manifest

    # lock --------------------------------------------------------------
    @contextmanager
    def lock(self, *, wait: bool = False, timeout: float | None = None) -> Iterator[None]:
        """Hold an exclusive lock on the run folder.

        Raises
        ------
        RunLockedError
            If another process holds it and ``wait`` is false (or ``timeout`` passed).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        fh = open(path, "a+")
        start = time.monotonic()
        try:
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    fh.seek(0)
                    holder = fh.read().strip() or "another process"
                    if not wait or (timeout is not None and time.monotonic() - start > timeout):
                        raise RunLockedError(
                            f"run folder {self.root} is in use by {holder}; wait for it to finish "
                            "(or pass --wait), or choose another --out"
                        ) from None
                    time.sleep(0.5)
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {platform.node()}")
            fh.flush()
            yield
        finally:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            finally:
                fh.close()
