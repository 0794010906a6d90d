"""Law-fitting tasks: each runs when its inputs (the ledger, the points, the settings) or the code changed."""

from __future__ import annotations

from typing import Any

from prefect import task

from pointscale import pipeline

from ._cache import run_stage


@task(name="fit-mle", retries=1)
def fit_mle(run_dir: str, sampling: dict[str, Any], samples: dict[str, Any]) -> dict[str, Any]:
    """Per-point maximum likelihood -> laws_mle.parquet.

    ``samples`` is the sampling stage's result (its ``ledger_hash`` and
    ``points_hash`` identify the samples the laws are fitted to).
    """
    inputs = {"sampling": sampling, "ledger": samples["ledger_hash"], "points": samples["points_hash"]}
    return run_stage(run_dir, "laws_mle", inputs, lambda: pipeline.fit_laws(run_dir, sampling))


@task(name="fit-amortized", retries=1)
def fit_amortized(run_dir: str, dataset: dict[str, Any], sampling: dict[str, Any], samples: dict[str, Any],
                  params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The amortized estimator -> laws_amortized.parquet (every pool point)."""
    inputs = {"dataset": dataset["fingerprint"], "sampling": sampling, "ledger": samples["ledger_hash"],
              "points": samples["points_hash"], "params": params}
    return run_stage(run_dir, "laws_amortized", inputs,
                     lambda: pipeline.fit_amortized(run_dir, dataset["path"], sampling, params))
