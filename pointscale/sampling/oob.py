r"""Out-of-bag evidence: what models trained without a point say about its label.

Every base model of the sampling plan is trained on a subset D that leaves
most of the pool out. Scoring pool points outside D costs a prediction, not
a fit; averaged over many bases, how well models trained *without* z predict
z's own label is the Data-OOB signal (Kwon & Zou 2023): a mislabelled point
is predicted badly by the rest of the data. The engine records it while
sampling, at zero extra fits (SPEC §6).

What is scored
--------------
For a base with subset D (size k), the out-of-bag set is the pool minus D
(which includes the block's own points, also outside D). When it has more
than ``cap`` = :func:`oob_cap` points, an identity-seeded random subset of
that size is scored instead (``rng(seed, STREAM_OOB, base_id)``); the number
of predictions made is counted in the shard's commit record
(``oob_predictions``).

How many per base
-----------------
On a large pool almost every prediction of a shard is a point of its own, so
the evidence costs one stored row (about 25–40 bytes) per prediction, against
about 45 bytes per sample for the ledger. A fixed cap per base (1,024 in the
first version) gave 32 predictions per sample at the default block size B =
32: ~800 bytes of evidence per sample, 18× the ledger (measured on adult,
shards of 256 samples). The cap therefore scales with the block size and
shrinks with the pool:

.. math::

    \mathrm{cap} = \max\bigl(B,\; \lceil B N_0 / N \rceil\bigr),
    \qquad N_0 = 32{,}768 \ (\texttt{OOB\_POOL\_FLOOR}),

so a run with s samples per point on a pool of N points makes about
s·max(N, N_0) predictions in all: one per sample (a row per sample, at most
the ledger's weight) once N ≥ N_0, and on small pools, where a shard's rows
are bounded by the pool anyway, every point still gets about s·N_0/N
predictions (a pool of 1,000 points: every out-of-bag point, as before). The
cap depends on the pool size and the configured block size only, never on
sharding, workers or order.

Per scored point:

* classification: ``score`` = the model's probability of the point's label;
  ``correct`` = the arg-max class is the label (ties to the lower class).
  A model without ``predict_proba`` scores ``score = correct``.
* regression: ``score`` = exp(−½ (r/s)²), r the residual and s the standard
  deviation of the pool's targets (1 for a perfect prediction, 0.61 at one
  s); ``correct`` = |r| ≤ s.

Storage and exactness
---------------------
A shard's evidence is one small table with a row per (point, size bucket):
``n`` (predictions), ``n_correct`` and ``score_fx`` = Σ round(score·2^24)
(integers, :mod:`.schema`). Integer sums are associative, so the evidence of a run is
bit-identical whatever the shard size, worker count, order or resume
(floating-point sums would differ in the last bits with the grouping). The
score's quantisation error is below 3e-8 per prediction. The table is
written with its shard and vouched for by the shard's checksum record
(:class:`~pointscale.sampling.ledger.Ledger`): both commit together. The
ledger reads a run's evidence back (:func:`~pointscale.sampling.ledger.oob_evidence`).

Size buckets are :data:`N_BUCKETS` equal ranges of log k over
[k_min, k_max] of the sampling config.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..seeding import STREAM_OOB, rng
# The evidence reader lives with the ledger; pointscale.laws.auto still imports it from here.
from .plans import _skip_excluded
from .schema import N_BUCKETS, SCORE_SCALE, empty_oob_frame

__all__ = ["OOB_POOL_FLOOR", "oob_cap", "oob_subset", "size_bucket", "score_predictions", "aggregate"]

#: Pool size below which every point gets more than one prediction per sample (see :func:`oob_cap`).
OOB_POOL_FLOOR = 32_768


def oob_cap(n_pool: int, block_size: int) -> int:
    """Most pool points one base scores: max(B, ceil(B·N_0/N)) (see "How many per base")."""
    B, N = max(1, int(block_size)), max(1, int(n_pool))
    return max(B, -(-B * OOB_POOL_FLOOR // N))


def oob_subset(n_pool: int, D: np.ndarray, seed: int, base_id: int, cap: int) -> np.ndarray:
    """Pool indices scored by the base model trained on ``D`` (sorted), at most ``cap`` (:func:`oob_cap`).

    When more than ``cap`` points are out of bag, ``cap`` positions among them
    are drawn (the same draw as ``choice(out_of_bag, cap)``: choice draws
    positions, then indexes) and mapped past D's members, so a base costs
    O(cap + |D|) whatever the pool size -- an O(pool) mask per base made
    sampling quadratic in the pool.
    """
    cap = int(cap)
    D = np.unique(np.asarray(D, dtype=np.int64))
    n_out = int(n_pool) - D.size
    if n_out <= cap:
        mask = np.ones(n_pool, dtype=bool)
        mask[D] = False
        return np.flatnonzero(mask)
    positions = rng(seed, STREAM_OOB, base_id).choice(n_out, size=cap, replace=False)
    return np.sort(_skip_excluded(positions, D))


def size_bucket(k: int, k_min: int, k_max: int, n_buckets: int = N_BUCKETS) -> int:
    """Bucket of size k: equal ranges of log k over [k_min, k_max] (clipped)."""
    if k_max <= k_min:
        return 0
    t = (np.log(k) - np.log(k_min)) / (np.log(k_max) - np.log(k_min))
    return int(np.clip(np.floor(t * n_buckets), 0, n_buckets - 1))


def score_predictions(task: str, y: np.ndarray, pred: np.ndarray, *, y_scale: float = 1.0,
                      is_proba: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(correct, score) of each scored point; see the module docstring."""
    if task == "classification":
        y = np.asarray(y, dtype=np.intp)
        if not is_proba:  # class predictions only
            correct = np.asarray(pred).astype(np.intp) == y
            return correct, correct.astype(np.float64)
        proba = np.asarray(pred, dtype=np.float64)
        score = proba[np.arange(y.size), y]
        return np.argmax(proba, axis=1) == y, np.clip(score, 0.0, 1.0)
    r = (np.asarray(y, dtype=np.float64) - np.asarray(pred, dtype=np.float64)) / (y_scale or 1.0)
    score = np.exp(-0.5 * r * r)
    return np.abs(r) <= 1.0, np.where(np.isfinite(score), score, 0.0)


def aggregate(point_ids: np.ndarray, index: np.ndarray, bucket: np.ndarray, correct: np.ndarray,
              score: np.ndarray) -> pd.DataFrame:
    """A shard's evidence table: integer sums per (point, bucket), rows sorted.

    Parameters
    ----------
    point_ids : ndarray of str
        The pool's point ids (``index`` refers to them).
    index, bucket, correct, score : ndarray of shape (m,)
        One entry per prediction.
    """
    if index.size == 0:
        return empty_oob_frame()
    key = index.astype(np.int64) * N_BUCKETS + bucket.astype(np.int64)
    uniq, inv = np.unique(key, return_inverse=True)
    fx = np.rint(np.asarray(score, dtype=np.float64) * SCORE_SCALE).astype(np.int64)
    n = np.bincount(inv, minlength=uniq.size).astype(np.int64)
    n_correct = np.bincount(inv, weights=correct.astype(np.int64), minlength=uniq.size).astype(np.int64)
    score_fx = np.zeros(uniq.size, dtype=np.int64)
    np.add.at(score_fx, inv, fx)  # integer adds: exact in any order
    # Index first, then convert: only the evidence's points become Python strings.
    return pd.DataFrame({"point_id": np.asarray(point_ids)[uniq // N_BUCKETS].astype(object),
                         "bucket": (uniq % N_BUCKETS).astype(np.int64), "n": n,
                         "n_correct": n_correct, "score_fx": score_fx})
