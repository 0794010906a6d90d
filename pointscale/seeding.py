"""The one way pointscale makes randomness.

Every random draw derives from ``SeedSequence(root, spawn_key=(stream, *ids))``
where ``stream`` names the purpose (a fixed integer per use) and ``ids`` are
the identities of the things drawn for (a base id, a point id). Because a draw
depends on *who* it is for and never on *when* or *where* it happens, results
are bit-identical whatever the shard size, worker count, retry or resume.

Only integers cross process and task boundaries; generators are rebuilt where
they are used.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np

# Stream identifiers. Fixed forever: changing one changes every result.
STREAM_SPLIT = 1
STREAM_POINT_CHOICE = 2
STREAM_BLOCKS = 3
STREAM_BASE = 4
STREAM_MODEL = 5
STREAM_AMORTIZED = 6
STREAM_SELECTION = 7
STREAM_SIMULATION = 8
STREAM_LABEL_NOISE = 9
STREAM_BOOTSTRAP = 10
STREAM_OOB = 11

_MASK64 = (1 << 64) - 1


def id_to_int(identity: str | int) -> int:
    """Map an identity (a point id string or an int) to a non-negative int.

    Strings are hashed with SHA-256 (never Python's salted ``hash``) and the
    first 8 bytes are used, so the mapping is the same in every process.
    """
    if isinstance(identity, (int, np.integer)):
        value = int(identity)
        if value < 0:
            raise ValueError(f"identity {value} must be a non-negative integer")
        return value
    digest = hashlib.sha256(str(identity).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def seed_sequence(root: int, stream: int, *ids: str | int) -> np.random.SeedSequence:
    """Return ``SeedSequence(root, spawn_key=(stream, *ids))`` with ids mapped to ints."""
    key = (int(stream),) + tuple(id_to_int(i) for i in ids)
    return np.random.SeedSequence(int(root), spawn_key=key)


def rng(root: int, stream: int, *ids: str | int) -> np.random.Generator:
    """A generator keyed by identity: ``default_rng(SeedSequence(root, (stream, *ids)))``."""
    return np.random.default_rng(seed_sequence(root, stream, *ids))


def int_seed(root: int, stream: int, *ids: str | int) -> int:
    """An integer seed in ``[0, 2**31)`` for libraries that take ``random_state``."""
    return int(seed_sequence(root, stream, *ids).generate_state(1, dtype=np.uint32)[0] >> 1)


def combine_ids(ids: Iterable[str | int]) -> int:
    """A stable 63-bit integer naming a collection of identities (order-sensitive)."""
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode("utf-8"))
        h.update(b"\x00")
    return int.from_bytes(h.digest()[:8], "little") >> 1


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64s: a fast, well-mixed hash of integer identities."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def point_keys(point_ids, seed: int) -> np.ndarray:
    """A pseudo-random 64-bit key per point id: depends on the id and seed, never on order.

    Sorting by it draws a random subset (e.g. held-out points) keyed by identity.
    """
    ids = np.asarray(point_ids)
    ints = np.fromiter((id_to_int(p) & _MASK64 for p in ids.tolist()), dtype=np.uint64, count=len(ids))
    salt = mix64(np.array([seed], dtype=np.uint64))[0]
    return mix64(ints ^ salt)
