"""Frozen configuration with a stable content hash.

Configurations are frozen dataclasses validated in ``__post_init__``. Their
:meth:`StableConfig.stable_hash` is the SHA-256 of canonical JSON (sorted keys,
no whitespace), so it is identical across processes and machines; it names
storage folders and forms cache keys. Python's ``hash()`` is salted per
process and must never be used for either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, ClassVar

import numpy as np


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def canonical_json(value: Any) -> str:
    """Canonical JSON text: sorted keys, compact separators, numpy scalars unwrapped."""
    return json.dumps(_jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def stable_hash(value: Any) -> str:
    """SHA-256 hex digest of :func:`canonical_json` of ``value``."""
    return hashlib.sha256(canonical_json(value).encode("ascii")).hexdigest()


class StableConfig:
    """Mixin for frozen dataclasses: ``to_dict``, ``from_dict`` and ``stable_hash``.

    Fields listed in ``_unhashed`` (execution details such as shard size or
    worker count, which must not change results) are left out of the hash.
    """

    _unhashed: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)  # type: ignore[return-value]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            from .errors import ConfigError

            raise ConfigError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in data:
                v = data[f.name]
                kwargs[f.name] = tuple(v) if isinstance(v, list) else v
        return cls(**kwargs)

    def stable_hash(self) -> str:
        d = self.to_dict()
        for name in self._unhashed:
            d.pop(name, None)
        return stable_hash({"type": type(self).__name__, "fields": d})
