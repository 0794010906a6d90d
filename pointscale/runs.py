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

A run folder at an fsspec URL (``s3://bucket/runs/x``, :mod:`.storage`): the
sample ledger and the plans live there and workers read and write them
directly, as they read the dataset version (copied once per machine). The
flow keeps its own files (manifest, points, laws, values, report) in a local
working copy named by the URL, filled from the URL when the run takes the
lock (:meth:`RunFolder.pull`) and written back after every manifest update
(:meth:`RunFolder.push`), so a rerun on another machine resumes from what is
at the URL. The lock is this machine's only: one flow per run folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import platform
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from .errors import RunLockedError
from .io import atomic_write_bytes, atomic_write_json, read_json
from .storage import Store, is_remote

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


#: Folders at a run URL that workers read or write there directly (never copied to the flow's disk).
_SHARED = ("samples", "plans", "quarantine")
_PUSHED = ".pushed.json"


def read_point_groups(run_dir: str | os.PathLike) -> tuple[list[list[str]], str]:
    """The point groups of a run's ``points.json``, read where the run folder is (a worker has no
    working copy), and the file's sha256; ``([], "")`` when there is none. The one reader of the file."""
    import json

    store = Store(RunFolder(run_dir).location())
    if not store.exists("points.json"):
        return [], ""
    data = store.read_bytes("points.json")
    groups = [[str(p) for p in g] for g in json.loads(data.decode("utf-8"))["groups"]]
    return groups, hashlib.sha256(data).hexdigest()


def working_copy(url: str) -> Path:
    """The local working copy of the run folder at ``url`` (``$POINTSCALE_CACHE/runs/<sha256(url)[:16]>``)."""
    root = Path(os.environ.get("POINTSCALE_CACHE") or Path(tempfile.gettempdir()) / "pointscale-cache")
    return root / "runs" / hashlib.sha256(url.encode()).hexdigest()[:16]


class RunFolder:
    """Paths and manifest of one run folder (a local path or an fsspec URL).

    Parameters
    ----------
    root : str or path
        A local folder, ``file://...`` or a URL such as ``s3://bucket/runs/x``.
    storage_options : dict, optional
        For a URL: passed to its fsspec filesystem; never written anywhere.

    Attributes
    ----------
    root : Path
        The local folder the flow writes (for a URL: its working copy).
    store : Store or None
        The folder at the URL (None for a local run folder).
    """

    def __init__(self, root: str | os.PathLike, storage_options: dict | None = None):
        if is_remote(os.fspath(root)):
            self.store: Store | None = Store(os.fspath(root), storage_options)
            self.root = working_copy(self.store.url)
        else:
            self.store = None
            self.root = Path(Store(os.fspath(root)).path)

    def location(self, *parts: str) -> str:
        """Where ``parts`` of this run live, as a string another process can open (path or URL)."""
        if self.store is not None:
            return self.store.location(*parts)
        return str(self.root.joinpath(*parts))

    # paths -------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "run.json"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def samples(self) -> Path | str:
        """The sample ledger's folder (a URL for a run folder at a URL: workers write there)."""
        return self.root / "samples" if self.store is None else self.store.location("samples")

    # working copy of a run folder at a URL ------------------------------
    def pull(self) -> None:
        """Fill the working copy from the URL (every object but the shared folders); no-op if local."""
        if self.store is None:
            return
        ledger = self.root / _PUSHED
        # Records of files not copied here stay while the URL has them: the dataset version a
        # worker of this machine pushed from this working copy is at the URL already (dropping
        # its record made the next push upload it again, whole, from the flow's process).
        keys = list(self.store.walk())
        present = set(keys)
        pushed = {k: v for k, v in (read_json(ledger) if ledger.exists() else {}).items() if k in present}
        for key in keys:
            if key.split("/", 1)[0] in _SHARED or key.startswith("datasets/"):
                continue  # read where they are (the dataset version through a copy per machine)
            target = self.root / key
            atomic_write_bytes(target, self.store.read_bytes(key))
            st = target.stat()
            pushed[key] = [st.st_size, st.st_mtime_ns]  # the same bytes as at the URL
        atomic_write_json(ledger, pushed)

    def push(self) -> None:
        """Write the working copy's new or changed files to the URL; no-op if local."""
        if self.store is None or not self.root.exists():
            return
        ledger = self.root / _PUSHED
        pushed = read_json(ledger) if ledger.exists() else {}
        changed = False
        for dirpath, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.startswith("."):
                    continue  # the lock, temporary files, this bookkeeping
                path = Path(dirpath) / name
                rel = path.relative_to(self.root).as_posix()
                st = path.stat()
                stamp = [st.st_size, st.st_mtime_ns]
                if pushed.get(rel) == stamp:
                    continue
                self.store.write_bytes(rel, path.read_bytes())
                pushed[rel] = stamp
                changed = True
        if changed:
            atomic_write_json(ledger, pushed)

    def fetch(self, *names: str) -> None:
        """Copy ``names`` from the URL into the working copy (files a worker wrote there); no-op if local.

        Recorded as pushed, so :meth:`push` does not write them back.
        """
        if self.store is None:
            return
        ledger = self.root / _PUSHED
        pushed = read_json(ledger) if ledger.exists() else {}
        for name in names:
            target = self.store.download(name, self.root / name)
            st = target.stat()
            pushed[name] = [st.st_size, st.st_mtime_ns]
        atomic_write_json(ledger, pushed)

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

    def stored_manifest(self) -> dict[str, Any]:
        """run.json where the run lives: at the URL for a run folder there (not the working copy,
        which may be stale or absent on this machine before the run takes the lock)."""
        if self.store is None:
            return self.read_manifest()
        return self.store.read_json("run.json") if self.store.exists("run.json") else {}

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
        self.push()
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
            self.pull()  # at a URL: start from what is there (a rerun on another machine)
            yield
            self.push()
        finally:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            finally:
                fh.close()
