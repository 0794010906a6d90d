"""Sampling marginal contributions Δ(z, D) = U(D ∪ {z}) − U(D) (SPEC §2).

Table of contents:

* :mod:`.config` -- :class:`SamplingConfig`, what a run computes.
* :mod:`.models` -- the model registry (:data:`MODELS`, :func:`make_estimator`).
* :mod:`.metrics` -- utilities (:data:`METRICS`, :func:`utility`).
* :mod:`.plans` -- deterministic blocks of points sharing a base subset
  (:func:`plan_blocks`, :func:`shard_blocks`, :func:`subset_for`).
* :mod:`.solvers` -- batched solvers (one block's fits at once): the protocol
  (:mod:`.solvers.base`) and one file per model family.
* :mod:`.engine` -- :func:`run_blocks` (the unit of work) and
  :func:`sample_marginals` (a whole job in-process or through any ``map``).
* :mod:`.schema` -- the ledger's columns (:data:`COLUMNS`, :func:`empty_frame`, evidence columns).
* :mod:`.ledger` -- the append-only, checksummed sample ledger, and the
  out-of-bag evidence read from it (:func:`oob_evidence`).
* :mod:`.oob` -- out-of-bag evidence recorded while sampling (:func:`oob_cap`).
"""

from .config import SamplingConfig, default_sizes
from .engine import (ShardResult, as_dataset, run_blocks, run_shard, sample_blocks, sample_marginals, sample_shard,
                     sort_samples)
from .ledger import Ledger, LedgerIntegrityWarning, oob_evidence
from .metrics import METRICS, check_metric, default_metric, utility
from .models import MODELS, ModelSpec, make_estimator, register_model
from .oob import oob_cap
from .plans import Block, Shard, base_subset, plan_blocks, plan_key, shard_blocks, subset_for
from .schema import COLUMNS, empty_frame

__all__ = [
    "COLUMNS",
    "METRICS",
    "MODELS",
    "ModelSpec",
    "oob_cap",
    "ShardResult",
    "Block",
    "Ledger",
    "LedgerIntegrityWarning",
    "SamplingConfig",
    "Shard",
    "as_dataset",
    "base_subset",
    "check_metric",
    "default_metric",
    "default_sizes",
    "empty_frame",
    "make_estimator",
    "register_model",
    "oob_evidence",
    "plan_blocks",
    "plan_key",
    "run_blocks",
    "run_shard",
    "sample_blocks",
    "sample_shard",
    "sample_marginals",
    "shard_blocks",
    "sort_samples",
    "subset_for",
    "utility",
]
