"""Stage caching: a stage reruns exactly when something that changes its result changed.

A stage's key is the hash of its inputs (settings, the dataset fingerprint,
the ledger's content hash, the sha256 of the files the previous stages
produced: every reference it is passed) and of the code that computes it
(:func:`code_version`: the core package *and* ``tasks/`` and ``flows/``).
``run.json`` records, per stage, the key it last ran with and the sha256 of
each file it wrote (:func:`pointscale.pipeline.record_output`). A stage whose
record matches its key and whose files are intact is skipped, returning the
recorded summary; anything else (other inputs, other code, a file rewritten
by a run with other switches, or deleted) recomputes it.

The record lives in the run folder, not in Prefect's result storage, so it
cannot point at a file that another run has since overwritten.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from pointscale import pipeline
from pointscale.config import stable_hash

_ROOT = Path(__file__).resolve().parents[1]


def code_version() -> str:
    """Hash of the code that computes results: ``pointscale/``, ``tasks/`` and ``flows/``."""
    return pipeline.code_version(_ROOT / "tasks", _ROOT / "flows")


def stage_key(stage: str, inputs: Mapping[str, Any]) -> str:
    """The key of ``stage`` for these inputs (plain JSON values) under the current code."""
    return stable_hash({"stage": stage, "code": code_version(), "inputs": dict(inputs)})


def output_ref(result: Optional[Mapping[str, Any]]) -> Optional[dict[str, str]]:
    """What a downstream key needs of an upstream result: its files' sha256 (None: not in this run)."""
    return None if result is None else dict(result["output"])


def run_stage(run_dir: str, stage: str, inputs: Mapping[str, Any],
              compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``compute()`` unless ``stage`` is up to date for ``inputs``; record and return its summary.

    The summary carries ``output`` (``{file: sha256}``) and ``reused`` (True
    when the recorded output was up to date and nothing ran).
    """
    key = stage_key(stage, inputs)
    current = pipeline.current_output(run_dir, stage, key)
    if current is not None:
        _logger().info("%s is up to date (same inputs and code): %s", stage,
                              ", ".join(current["output"]) or "no files")
        return dict(current, reused=True)
    return dict(pipeline.record_output(run_dir, stage, key, compute()), reused=False)


def _logger() -> logging.Logger:
    """The run's logger (its lines reach the UI), or this module's outside a run (``.fn()`` calls)."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()  # type: ignore[return-value]
    except MissingContextError:
        return logging.getLogger(__name__)
