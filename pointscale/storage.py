"""Where a run folder lives: a local path or any fsspec URL (``s3://``, ``gs://``, ``abfs://``, ``file://``).

A :class:`Store` is a folder on one filesystem: the local disk or an object
store reached through `fsspec <https://filesystem-spec.readthedocs.io>`_
and the protocol's own package (``s3fs``, ``gcsfs``, ``adlfs``; the
optional extras ``pointscale[s3]``, ``[gcs]``, ``[azure]``).

Writes are whole-object and never read half-done:

* on a local disk, :meth:`Store.write_bytes` writes a temporary file in the
  same folder, fsyncs it and renames it over the name (:mod:`.io`);
* an object store has no rename, but a single ``PUT`` (and a multipart upload,
  at its completion) makes an object visible whole or not at all. Files that
  must be consistent *together* (a ledger shard, its out-of-bag evidence and
  their checksums) are written as write-once keys named by their content,
  then a commit record that names them is written last
  (:class:`~pointscale.sampling.ledger.Ledger`): readers follow records only,
  so an interrupted write is an orphan key nobody reads.

Credentials and endpoints come only from the protocol's standard mechanisms
(for S3: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``,
``AWS_ENDPOINT_URL``) or from ``storage_options`` given in Python. They are
never written anywhere: :attr:`Store.url` is the location without them, and
a URL that carries credentials (``s3://KEY:SECRET@bucket``) is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from .config import _jsonable
from .errors import ConfigError
from .io import atomic_write_bytes

#: The package each common protocol needs (the optional extra that installs it).
PROTOCOL_PACKAGES = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"),
                     "gcs": ("gcsfs", "gcs"), "abfs": ("adlfs", "azure"), "az": ("adlfs", "azure"),
                     "abfss": ("adlfs", "azure")}
#: Bytes per ranged read when an object is copied whole from an object store (:meth:`Store.download`).
STREAM_BLOCK = 8 << 20
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")


class StorageError(ConfigError):
    """A run folder's location cannot be used (unknown protocol, package missing, no access)."""


def is_url(location: str | os.PathLike) -> bool:
    """True for ``protocol://...`` (``file://`` included), False for a plain path."""
    return isinstance(location, str) and _URL.match(location) is not None


def is_remote(location: str | os.PathLike) -> bool:
    """True for a URL of a non-local filesystem (``s3://``, ``gs://``, ...)."""
    if not is_url(location):
        return False
    return _URL.match(str(location)).group(1).lower() not in ("file", "local")


def join(location: str | os.PathLike, *parts: str) -> str | Path:
    """``location / parts``: a Path for a local path, a URL string for a URL (never ``Path('s3://')``)."""
    if is_url(location):
        return posixpath.join(str(location).rstrip("/"), *parts)
    return Path(location).joinpath(*parts)


def parent(location: str | os.PathLike) -> str | Path:
    """The folder holding ``location`` (a URL stays a URL)."""
    if is_url(location):
        return str(location).rstrip("/").rpartition("/")[0]
    return Path(location).parent


def _split(location: str) -> tuple[str, str]:
    match = _URL.match(location)
    return match.group(1).lower(), match.group(2)


def _redacted(exc: BaseException) -> str:
    """An exception as one short line (botocore messages name no secret; still cut at 200 characters)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


class Store:
    """A folder on a local disk or at an fsspec URL.

    Parameters
    ----------
    location : str or path
        A local path, ``file://...`` or ``protocol://bucket/prefix``.
    storage_options : dict, optional
        Passed to the fsspec filesystem (endpoint, anonymous access, ...). Never
        written to disk; prefer the protocol's environment variables.

    Attributes
    ----------
    url : str
        The location as given back to users: an absolute path for the local
        disk, ``protocol://bucket/prefix`` otherwise (no credentials).
    remote : bool
        Whether the folder is on an object store (no rename, no locks).
    """

    def __init__(self, location: str | os.PathLike, storage_options: Mapping[str, Any] | None = None):
        self.storage_options = dict(storage_options or {})
        text = os.fspath(location)
        if is_url(text):
            protocol, rest = _split(text)
            if "@" in rest.split("/", 1)[0]:
                raise StorageError(f"{protocol}:// URL with credentials in it; give them through the "
                                   "protocol's environment variables (e.g. AWS_ACCESS_KEY_ID) or a profile")
        else:
            protocol, rest = "file", str(Path(text).expanduser().resolve())
        if protocol in ("file", "local"):
            self.remote = False
            self.protocol = "file"
            self.path = str(Path(rest if rest.startswith("/") else "/" + rest).resolve()) \
                if is_url(text) else rest
            self.url = self.path
        else:
            self.remote = True
            self.protocol = protocol
            self.path = rest.strip("/")
            if not self.path:
                raise StorageError(f"{text!r} names no bucket; use {protocol}://BUCKET/PREFIX")
            self.url = f"{protocol}://{self.path}"
        self._fs = None

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def __reduce__(self):  # tasks receive a Store by value: rebuild the filesystem on the worker
        return (Store, (self.url, self.storage_options))

    # ------------------------------------------------------------------ filesystem

    @property
    def fs(self):
        """The fsspec filesystem (created on first use; raises :class:`StorageError` if unusable)."""
        if self._fs is None:
            self._fs = filesystem(self.protocol, self.storage_options)
        return self._fs

    def child(self, *parts: str) -> "Store":
        """The sub-folder ``parts`` of this store, on the same filesystem."""
        sub = Store.__new__(Store)
        sub.__dict__.update(self.__dict__)
        sub.path = posixpath.join(self.path, *parts)
        sub.url = sub.path if not self.remote else f"{self.protocol}://{sub.path}"
        return sub

    def key(self, *parts: str) -> str:
        """The filesystem path of ``parts`` under this folder."""
        return posixpath.join(self.path, *parts)

    def location(self, *parts: str) -> str:
        """``parts`` as a location a user (or :class:`Store`) can open: a path or a URL."""
        return posixpath.join(self.url, *parts) if parts else self.url

    def local_path(self, *parts: str) -> Path:
        """``parts`` as a local :class:`~pathlib.Path` (only for a local store)."""
        if self.remote:
            raise StorageError(f"{self.url} is not on a local disk")
        return Path(self.key(*parts))

    # ------------------------------------------------------------------ checks

    def check(self, *, write: bool = True) -> "Store":
        """Fail with one line unless the folder can be listed (and, if ``write``, written).

        For a remote store: the bucket must exist and the credentials must
        allow listing it and (``write``) writing and deleting a probe object
        under the folder. Raises :class:`StorageError`.
        """
        if not self.remote:
            return self
        bucket = self.path.split("/", 1)[0]
        probe = self.key(f".pointscale-write-check-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            self.fs.ls(bucket, detail=False)
            if write:
                self.fs.pipe_file(probe, b"")
                self.fs.rm_file(probe)
        except FileNotFoundError:
            raise StorageError(f"bucket {bucket!r} of {self.url} does not exist (or is not visible with "
                               "these credentials); create it or fix the URL") from None
        except PermissionError as exc:
            raise StorageError(f"no access to {self.url} ({_redacted(exc)}); check the credentials "
                               f"({_credential_hint(self.protocol)})") from None
        except Exception as exc:  # noqa: BLE001 -- missing credentials, unreachable endpoint, ...
            raise StorageError(f"cannot reach {self.url}: {type(exc).__name__}: {_redacted(exc)}; check "
                               f"the credentials and endpoint ({_credential_hint(self.protocol)})") from None
        return self

    # ------------------------------------------------------------------ reading

    def exists(self, *parts: str) -> bool:
        key = self.key(*parts)
        if not self.remote:
            return os.path.exists(key)
        return bool(self.fs.exists(key))

    def read_bytes(self, *parts: str) -> bytes:
        key = self.key(*parts)
        if not self.remote:
            return Path(key).read_bytes()
        return self.fs.cat_file(key)

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_bytes(*parts).decode("utf-8"))

    def open(self, *parts: str, mode: str = "rb", block_size: int | None = None):
        """A file object for reading (``pyarrow.parquet.read_table`` and pandas take it).

        ``block_size``: on an object store, bytes per ranged read (fsspec's default otherwise).
        """
        if mode not in ("rb", "r"):
            raise ValueError("Store.open reads only; write whole objects with write_bytes")
        key = self.key(*parts)
        if not self.remote:
            return open(key, mode)
        # Another process (a worker) may have written or rewritten it since this one listed its folder.
        self.fs.invalidate_cache(key)
        return self.fs.open(key, mode) if block_size is None else self.fs.open(key, mode, block_size=block_size)

    def read_parquet(self, *parts: str, columns: list[str] | None = None):
        """A Parquet object as a pyarrow Table (only ``columns`` if given)."""
        import pyarrow.parquet as pq

        if not self.remote:
            return pq.read_table(self.key(*parts), columns=columns)
        with self.fs.open(self.key(*parts), "rb") as fh:
            return pq.read_table(fh, columns=columns)

    def iter_parquet(self, names: list[str], columns: list[str] | None = None,
                     batch: int = 64) -> Iterator[tuple[str, Any]]:
        """``(name, pyarrow Table)`` for each Parquet object in ``names``, in order.

        An object that cannot be read comes back as ``(name, exception)``. On an
        object store, ``batch`` objects are fetched at a time by concurrent
        requests (one request each would make reading a ledger of 10^4 shards
        cost 10^4 round trips in a row).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        for start in range(0, len(names), batch if self.remote else 1):
            chunk = names[start:start + (batch if self.remote else 1)]
            blobs = self.fs.cat([self.key(n) for n in chunk], on_error="return") if self.remote else {}
            for name in chunk:
                try:
                    if self.remote:
                        blob = blobs.get(self.key(name), FileNotFoundError(self.location(name)))
                        if isinstance(blob, BaseException):
                            raise blob
                        yield name, pq.read_table(pa.BufferReader(blob), columns=columns)
                    else:
                        yield name, pq.read_table(self.key(name), columns=columns)
                except Exception as exc:  # noqa: BLE001 -- handed to the caller
                    yield name, exc

    def size(self, *parts: str) -> int:
        key = self.key(*parts)
        return os.path.getsize(key) if not self.remote else int(self.fs.size(key))

    def list(self, *parts: str) -> list[str]:
        """Names (not paths) of the objects directly under ``parts``; [] if there is none."""
        key = self.key(*parts)
        if not self.remote:
            try:
                return sorted(os.listdir(key))
            except (FileNotFoundError, NotADirectoryError):
                return []
        try:
            entries = self.fs.ls(key, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e.rstrip("/")) for e in entries)

    def listing(self, *parts: str) -> dict[str, tuple[Any, ...]]:
        """``{name: identity}`` of the objects directly under ``parts`` in one listing.

        The identity changes whenever the bytes may have: (size, mtime, inode)
        on a local disk; (size, ETag or generation) on an object store, where
        the ETag of a single-part upload is the content's MD5.
        """
        key = self.key(*parts)
        if not self.remote:
            try:
                with os.scandir(key) as entries:
                    return {e.name: (st.st_size, st.st_mtime_ns, st.st_ino)
                            for e in entries if e.is_file() for st in (e.stat(),)}
            except (FileNotFoundError, NotADirectoryError):
                return {}
        try:
            entries = self.fs.ls(key, detail=True, refresh=True)
        except FileNotFoundError:
            return {}
        out = {}
        for e in entries:
            if e.get("type") == "directory":
                continue
            tag = e.get("ETag") or e.get("etag") or e.get("generation") or e.get("LastModified") or e.get("mtime")
            out[posixpath.basename(e["name"].rstrip("/"))] = (int(e.get("size") or 0), str(tag))
        return out

    def sha256(self, *parts: str, chunk: int = 1 << 20) -> str:
        h = hashlib.sha256()
        with self.open(*parts) as fh:
            while block := fh.read(chunk):
                h.update(block)
        return h.hexdigest()

    # ------------------------------------------------------------------ writing

    def write_bytes(self, name: str, data: bytes) -> str:
        """Write one object whole: a rename into place locally, one ``PUT`` on an object store.

        Returns the written location.
        """
        key = self.key(name)
        if not self.remote:
            atomic_write_bytes(key, data)
        else:
            self.fs.pipe_file(key, data)
        return self.location(name)

    def write_json(self, name: str, obj: Any) -> str:
        return self.write_bytes(name, (json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n").encode())

    def write_parquet(self, name: str, frame) -> str:
        """A pandas DataFrame as Parquet (pyarrow engine, no index), written whole."""
        buffer = io.BytesIO()
        frame.to_parquet(buffer, engine="pyarrow", index=False)
        return self.write_bytes(name, buffer.getvalue())

    def download(self, name: str, path: str | os.PathLike) -> Path:
        """Copy one object to the local file ``path`` in chunks (never whole in memory), atomically."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            # 8 MiB ranges: fsspec's default 50 MiB blocks, with read-ahead, held ~150 MB for a 100 MB table.
            with os.fdopen(fd, "wb") as out, self.open(name, block_size=STREAM_BLOCK) as src:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def delete(self, *parts: str) -> None:
        """Remove one object; nothing if it is not there."""
        key = self.key(*parts)
        if not self.remote:
            Path(key).unlink(missing_ok=True)
            return
        try:
            self.fs.rm_file(key)
        except FileNotFoundError:
            pass

    def move(self, src: str, dst: str) -> None:
        """Move one object (a rename locally; copy then delete on an object store)."""
        if not self.remote:
            target = Path(self.key(dst))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.key(src), target)
            return
        self.fs.copy(self.key(src), self.key(dst))
        self.delete(src)

    # ------------------------------------------------------------------ caching

    def local_copy(self, prefix: str, cache: str | os.PathLike | None = None) -> Path:
        """The folder ``prefix`` on the local disk: itself if local, else a copy made once per cache.

        The copy goes to ``cache/<sha256(url)[:16]>`` (default: a folder in the
        system's temporary directory) through a temporary folder renamed into
        place, so concurrent callers on one machine share one complete copy.
        Meant for write-once content such as a dataset version (named by its
        fingerprint).
        """
        if not self.remote:
            return Path(self.key(prefix))
        root = Path(cache or os.environ.get("POINTSCALE_CACHE") or Path(tempfile.gettempdir()) / "pointscale-cache")
        target = root / hashlib.sha256(self.location(prefix).encode()).hexdigest()[:16]
        if (target / ".complete").exists():
            return target
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
        try:
            src = self.key(prefix)
            for entry in self.fs.find(src):
                rel = posixpath.relpath(entry, src)
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(self.fs.cat_file(entry))
            (tmp / ".complete").write_text(self.location(prefix) + "\n")
            try:
                os.rename(tmp, target)
            except OSError:  # another process got there first
                if not (target / ".complete").exists():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    def walk(self) -> Iterator[str]:
        """Every object under the folder, as a key relative to it."""
        if not self.remote:
            for dirpath, _, files in os.walk(self.path):
                for f in files:
                    yield os.path.relpath(os.path.join(dirpath, f), self.path)
            return
        for entry in self.fs.find(self.path):
            yield posixpath.relpath(entry, self.path)


def _credential_hint(protocol: str) -> str:
    if protocol in ("s3", "s3a"):
        return "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, AWS_ENDPOINT_URL for an S3-compatible server"
    if protocol in ("gs", "gcs"):
        return "GOOGLE_APPLICATION_CREDENTIALS"
    if protocol in ("abfs", "abfss", "az"):
        return "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY or a service principal"
    return "the protocol's own environment variables or storage_options"


#: Parts of option names that carry credentials: such options are never taken from the
#: options model (its values are stored with a flow run's parameters and shown in the UI).
SECRET_WORDS = ("key", "secret", "token", "password", "credential", "sas", "connection_string", "signature")
#: The storage options of this process's run folders (:func:`set_storage_options`).
_DEFAULTS: dict[str, Any] = {}


def secret_options(options: Mapping[str, Any] | None, prefix: str = "") -> list[str]:
    """The names (dotted, nested ones too) of options in ``options`` that look like credentials."""
    found = []
    for name, value in dict(options or {}).items():
        if any(word in str(name).lower() for word in SECRET_WORDS):
            found.append(prefix + str(name))
        if isinstance(value, Mapping):
            found += secret_options(value, prefix=f"{prefix}{name}.")
    return found


def set_storage_options(options: Mapping[str, Any] | None) -> None:
    """The fsspec options of every :class:`Store` made in this process without its own (e.g. an endpoint).

    Only settings that are not credentials (refused with one line naming
    them): credentials come from the protocol's environment variables or
    profile. The flow sets them from the options model and hands them to its
    Dask workers (:mod:`flows.workers`).
    """
    secret = secret_options(options)
    if secret:
        raise StorageError(f"storage_options {', '.join(secret)}: credentials never go in storage_options (they "
                           "would be stored with the run's parameters); give them through the protocol's "
                           "environment variables or a profile")
    _DEFAULTS.clear()
    _DEFAULTS.update(dict(options or {}))


def storage_options() -> dict[str, Any]:
    """The storage options :func:`set_storage_options` set in this process (a copy)."""
    return json.loads(json.dumps(_DEFAULTS))


def filesystem(protocol: str, storage_options: Mapping[str, Any] | None = None):
    """The fsspec filesystem of ``protocol``; one line naming the package to install if it is missing."""
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with dask
        raise StorageError("run folders at a URL need fsspec: pip install fsspec") from None
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except ImportError:
        package, extra = PROTOCOL_PACKAGES.get(protocol, (f"the {protocol} fsspec package", None))
        hint = f"pip install 'pointscale[{extra}]' (or {package})" if extra else f"install {package}"
        raise StorageError(f"{protocol}:// needs the package {package}, which is not installed; {hint}") from None
    except ValueError:
        raise StorageError(f"unknown storage protocol {protocol!r}; use a local path or an fsspec URL "
                           "such as s3://BUCKET/PREFIX") from None
    options = {**_DEFAULTS, **dict(storage_options or {})}
    if protocol in ("s3", "s3a"):
        # Fail in seconds, not after minutes of retries, when the endpoint does not answer.
        options.setdefault("config_kwargs", {"connect_timeout": 10, "read_timeout": 60,
                                             "retries": {"max_attempts": 3}})
    return cls(**options)


def open_store(location: str | os.PathLike, storage_options: Mapping[str, Any] | None = None, *,
               check: bool = True) -> Store:
    """A :class:`Store` at ``location``, checked to be reachable (one-line :class:`StorageError` if not)."""
    store = Store(location, storage_options)
    if check:
        store.check()
    return store


# --------------------------------------------------------------------------- single locations


def _parent(location: str | os.PathLike, storage_options: Mapping[str, Any] | None) -> tuple[Store, str]:
    text = os.fspath(location)
    if is_url(text):
        head, _, name = text.rstrip("/").rpartition("/")
        return Store(head, storage_options), name
    path = Path(text)
    return Store(path.parent, storage_options), path.name


def write_to(location: str | os.PathLike, data: bytes, storage_options: Mapping[str, Any] | None = None) -> str:
    """Write ``data`` whole to one file or object (:meth:`Store.write_bytes`); returns the location."""
    store, name = _parent(location, storage_options)
    return store.write_bytes(name, data)


def open_for_reading(location: str | os.PathLike, storage_options: Mapping[str, Any] | None = None):
    """A binary file object for one file or object (pyarrow reads row groups from it lazily)."""
    store, name = _parent(location, storage_options)
    return store.open(name)


def cached_folder(location: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> Path:
    """A local folder with the contents of ``location``: itself if local, else a copy made once per machine."""
    store, name = _parent(location, storage_options)
    if not store.remote:
        return Path(store.key(name))
    return store.local_copy(name)


def cached_file(location: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> Path:
    """A local path with the bytes of one file at ``location``: itself if local, else a copy.

    The copy is made once per machine and version of the object (its ETag, or
    size and modification time), under the cache folder; the name keeps the
    file's suffix (``.csv``, ``.parquet``) so readers recognise its format.
    """
    text = os.fspath(location)
    if not is_remote(text):
        return Path(Store(text).path) if is_url(text) else Path(text)
    store, name = _parent(text, storage_options)
    try:
        info = store.fs.info(store.key(name))
    except FileNotFoundError:
        raise StorageError(f"no file at {store.location(name)}; check the URL") from None
    except Exception as exc:  # noqa: BLE001 -- credentials, endpoint, bucket
        raise StorageError(f"cannot read {store.location(name)}: {type(exc).__name__}: {_redacted(exc)}; "
                           f"check the credentials and endpoint ({_credential_hint(store.protocol)})") from None
    if info.get("type") == "directory":
        return store.local_copy(name)
    version = str(info.get("ETag") or info.get("etag") or (info.get("size"), info.get("LastModified")))
    root = Path(os.environ.get("POINTSCALE_CACHE") or Path(tempfile.gettempdir()) / "pointscale-cache")
    digest = hashlib.sha256(f"{store.location(name)}\n{version}".encode()).hexdigest()[:16]
    target = root / "files" / digest / name
    if not target.exists():
        atomic_write_bytes(target, store.read_bytes(name))
    return target
