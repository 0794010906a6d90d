"""The sample ledger's schema: the columns every writer and reader of samples and evidence agree on.

The engine writes rows with these columns, the ledger stores and reads them,
the out-of-bag scorer writes evidence tables and the ledger sums them
(:func:`~.ledger.oob_evidence`); all of them import the schema from here.

Ledger row columns (one row per sample):

==================== ==========================================================
sample_id            int64, ``combine_ids((base_id, point_id))``, unique
point_id             str
k                    int64, size of the base subset D
delta                float64, U(D ∪ {z}) − U(D); NaN when failed
u_base, u_with       float64, U(D) and U(D ∪ {z})
failed               bool
converged            bool, the optimiser met its tolerance (no warning)
error                str or None, why the fit failed
base_id, plan_key    int64, identity of the base and of the plan
round, block         int64, position in the plan
block_members        str, the block's pool indices (``w:hex``, see plans) to redraw D
model, metric        str
method               str, ``batched_newton``, ``rank_one``, ``batched_adam``,
                     ``batched_adam_shared``, ``precomputed_kernel``, ``warm`` or ``cold``
dataset_fingerprint  str
config_hash          str, :meth:`SamplingConfig.identity_hash`
==================== ==========================================================

Out-of-bag evidence (:mod:`.oob`): one row per (point, size bucket) of a shard,
:data:`OOB_COLUMNS`, integer sums ``n`` (predictions), ``n_correct`` and
``score_fx`` = Σ round(score · :data:`SCORE_SCALE`), in :data:`N_BUCKETS` size buckets.
"""

from __future__ import annotations

import pandas as pd

COLUMNS = ("sample_id", "point_id", "k", "delta", "u_base", "u_with", "failed", "converged", "error",
           "base_id", "plan_key", "round", "block", "block_members", "model", "metric", "method",
           "dataset_fingerprint", "config_hash")
#: Column dtypes other than ``object`` (strings, and ``error`` which may be None).
DTYPES = {"sample_id": "int64", "k": "int64", "delta": "float64", "u_base": "float64",
          "u_with": "float64", "failed": "bool", "converged": "bool", "base_id": "int64",
          "plan_key": "int64", "round": "int64", "block": "int64"}

#: Columns of a shard's out-of-bag evidence table (``point_id`` str, the others int64).
OOB_COLUMNS = ("point_id", "bucket", "n", "n_correct", "score_fx")
#: Size buckets of the evidence (equal ranges of log k over [k_min, k_max]).
N_BUCKETS = 4
#: Fixed-point unit of the stored score sums.
SCORE_SCALE = 1 << 24


def empty_frame() -> pd.DataFrame:
    """A ledger frame with no rows and the right columns and dtypes."""
    return pd.DataFrame({c: pd.Series([], dtype=DTYPES.get(c, "object")) for c in COLUMNS})


def empty_oob_frame() -> pd.DataFrame:
    """An evidence table with no rows and the right columns and dtypes."""
    return pd.DataFrame({c: pd.Series([], dtype="object" if c == "point_id" else "int64") for c in OOB_COLUMNS})
