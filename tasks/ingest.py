"""Ingestion task: a dataset version stored once in the run folder."""

from __future__ import annotations

from typing import Any

from prefect import task

from pointscale import pipeline

from .partitions import current_pool


@task(name="ingest", retries=1, retry_delay_seconds=2)
def ingest(data: dict[str, Any], run_dir: str | None = None, base_path: str | None = None,
           runs_root: str = "runs") -> dict[str, Any]:
    """Read, validate, split, preprocess and store the data (idempotent).

    Not cached by Prefect: finding out whether the raw data changed means
    reading it, which is the whole cost; storing an existing version is a no-op.
    Runs where the flow's pool runs it (:func:`tasks.partitions.current_pool`:
    a worker of the run's cluster in the pipeline flows), so the flow process
    never holds the data.
    """
    return current_pool().map(pipeline.ingest, [data], [run_dir], [base_path], [runs_root])[0]
