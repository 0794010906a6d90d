"""Law-fitting tasks, cached on the ledger's content."""

from __future__ import annotations

from typing import Any

from prefect import task

from pointscale import pipeline

from ._cache import content_key


@task(name="fit-mle", retries=1, persist_result=True,
      cache_key_fn=content_key("run_dir", "ledger_hash", "sampling", outputs=("laws_mle.parquet",)))
def fit_mle(run_dir: str, sampling: dict[str, Any], ledger_hash: str) -> dict[str, Any]:
    """Per-point maximum likelihood -> laws_mle.parquet."""
    return pipeline.fit_laws(run_dir, sampling)


@task(name="fit-amortized", retries=1, persist_result=True,
      cache_key_fn=content_key("run_dir", "ledger_hash", "dataset_fingerprint", "sampling", "params",
                               outputs=("laws_amortized.parquet",)))
def fit_amortized(run_dir: str, dataset_path: str, dataset_fingerprint: str, sampling: dict[str, Any],
                  ledger_hash: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The amortized estimator -> laws_amortized.parquet (every pool point)."""
    return pipeline.fit_amortized(run_dir, dataset_path, sampling, params)
