"""Sampling tasks: one task run per shard (a batch of many model fits)."""

from __future__ import annotations

import os
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pointscale import pipeline
from pointscale.storage import Store

FAULT_ENV = "POINTSCALE_FAIL_SHARD"


class InjectedFault(RuntimeError):
    """Raised by the test hook :data:`FAULT_ENV`."""


def maybe_inject_fault(shard_name: str, shard_index: int, ledger_dir: str) -> None:
    """Test hook: ``POINTSCALE_FAIL_SHARD=<name or #index>[:always]`` fails that shard.

    Without ``:always`` it fails once (a marker file under the ledger folder
    remembers it), so a retry succeeds; with it, every attempt fails.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    target, _, mode = spec.partition(":")
    if target not in (shard_name, f"#{shard_index}"):
        return
    folder = Store(ledger_dir)  # a path or an fsspec URL
    marker = f".faults/{shard_name}"
    if mode != "always":
        if folder.exists(marker):
            return
        folder.write_bytes(marker, b"failed once\n")
    raise InjectedFault(f"injected failure in shard {shard_name} ({FAULT_ENV}={spec})")


#: Attempts of a shard task: the first and two retries.
RETRIES = 2


@task(name="plan-shards", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def plan_shards(run_dir: str, dataset_path: str, sampling: dict[str, Any], points_hash: str) -> dict[str, Any]:
    """The shards still to run for the run's points (:func:`pointscale.pipeline.plan_run_sampling`), on a worker.

    Returns counts and the plan file's location and hash, never point ids.
    """
    return pipeline.plan_run_sampling(run_dir, dataset_path, sampling, points_hash)


@task(
    name="sample-shard",
    # The shard's name is derived from its base ids: the same shard has the same
    # name in every run, so a shard that failed is found again by name on the rerun.
    task_run_name="shard-{shard_name}",
    retries=RETRIES,
    retry_delay_seconds=[1, 4],
    # No result cache: the ledger is the record. Planning leaves out every shard
    # already committed, so a shard task only runs for work that is missing.
    cache_policy=NO_CACHE,
    persist_result=False,
)
def sample_shard(dataset_path: str, dataset_fingerprint: str, sampling: dict[str, Any], config_hash: str,
                 plan: str, plan_hash: str, shard_index: int, shard_name: str, ledger_dir: str) -> dict[str, Any]:
    """Fit shard ``shard_index`` of the plan file, append its samples to the ledger.

    Runs on a Dask worker: it receives references only -- the dataset's path
    (memory-mapped there), the plan file's path and hash, the shard's index
    and name -- never point ids or arrays, and returns only counts.
    """
    from prefect.runtime import task_run

    attempt = int(task_run.run_count or 1)
    if attempt > 1:
        get_run_logger().warning("shard %s: attempt %d of %d (the previous attempt failed; its error is "
                                 "logged above)", shard_name, attempt, RETRIES + 1)
    maybe_inject_fault(shard_name, shard_index, ledger_dir)
    return {**pipeline.run_shard(dataset_path, sampling, plan, shard_index, ledger_dir), "attempt": attempt}
