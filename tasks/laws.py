"""Law tasks: fit the MLE and amortized laws, then choose the laws the values come from.

Each runs when its inputs (the ledger, the points, the settings, the laws it
reads) or the code changed.
"""

from __future__ import annotations

from typing import Any, Optional

from prefect import task

from pointscale import pipeline
from pointscale.partitions import PART_POINTS

from ._cache import output_ref, run_stage
from .partitions import current_pool


@task(name="fit-mle-laws", retries=1)
def fit_mle_laws(run_dir: str, sampling: dict[str, Any], samples: dict[str, Any],
                 partition_points: int = PART_POINTS) -> dict[str, Any]:
    """Per-point maximum likelihood -> laws_mle.parquet, partition by partition on the flow's cluster.

    ``samples`` is the sampling stage's result (its ``ledger_hash`` and
    ``points_hash`` identify the samples the laws are fitted to).
    ``partition_points`` sizes the partitions (never changes a law: not part of the key).
    """
    inputs = {"sampling": sampling, "ledger": samples["ledger_hash"], "points": samples["points_hash"]}
    return run_stage(run_dir, "laws_mle", inputs, lambda: pipeline.fit_mle_laws(
        run_dir, sampling, pool=current_pool(), part_points=partition_points))


@task(name="fit-amortized", retries=1)
def fit_amortized(run_dir: str, dataset: dict[str, Any], sampling: dict[str, Any], samples: dict[str, Any],
                  params: dict[str, Any] | None = None, partition_points: int = PART_POINTS) -> dict[str, Any]:
    """The amortized estimator -> laws_amortized.parquet (every pool point): trained on a worker, predicted
    partition by partition on the flow's cluster (``partition_points`` never changes a law: not part of the key)."""
    inputs = {"dataset": dataset["fingerprint"], "sampling": sampling, "ledger": samples["ledger_hash"],
              "points": samples["points_hash"], "params": params}
    return run_stage(run_dir, "laws_amortized", inputs,
                     lambda: pipeline.fit_amortized(run_dir, dataset["path"], sampling, params,
                                                    pool=current_pool(), part_points=partition_points))


@task(name="choose-laws", retries=1)
def choose_laws(run_dir: str, dataset: dict[str, Any], sampling: dict[str, Any], samples: dict[str, Any],
                laws_mle: dict[str, Any], laws_amortized: Optional[dict[str, Any]] = None,
                method: str = "auto", control_variate: str = "auto",
                partition_points: int = PART_POINTS) -> dict[str, Any]:
    """The laws behind the values -> laws.parquet: the estimator with the best held-out likelihood.

    Its choice, the candidates' held-out scores and the rule are recorded in
    the laws' ``meta['selection']`` and in the result (``estimator``); the
    block-mean control variate's record (applied where it helps) in ``control_variate``.
    The choice reads at most :data:`pointscale.pipeline.CHOICE_POINTS` points' samples on one
    worker; the chosen estimator is applied to the others partition by partition on the cluster.
    """
    inputs = {"dataset": dataset["fingerprint"], "sampling": sampling, "ledger": samples["ledger_hash"],
              "points": samples["points_hash"], "laws_mle": output_ref(laws_mle),
              "laws_amortized": output_ref(laws_amortized), "method": method,
              "control_variate": control_variate}
    return run_stage(run_dir, "laws", inputs, lambda: pipeline.choose_laws(
        run_dir, dataset["path"], sampling, laws_mle=pipeline.LAWS_MLE,
        laws_amortized=pipeline.LAWS_AMORTIZED if laws_amortized else None,
        laws_parts={"mle": laws_mle.get("parts"), "amortized": (laws_amortized or {}).get("parts")}, method=method,
        control_variate=control_variate, pool=current_pool(), part_points=partition_points))
