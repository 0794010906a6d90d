"""The sampling stage flow: plan the shards, run them on Dask, record progress."""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed

from pointscale import pipeline
from pointscale.errors import PointscaleError
from pointscale.runs import RunFolder
from tasks.sampling import sample_shard


class ShardFailed(PointscaleError):
    """A shard kept failing after its retries."""


def dask_task_runner(workers: int | None = None, address: str | None = None):
    """``DaskTaskRunner`` on an existing cluster (``address``) or a process-based LocalCluster.

    Local workers get one thread each (the models are single-threaded; the
    parallelism is the workers) and inherit this process's environment,
    including ``PREFECT_API_URL``.
    """
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    n = workers or os.cpu_count() or 1
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": n, "threads_per_worker": 1, "processes": True,
                        "dashboard_address": None, "host": "127.0.0.1"},
    )


@flow(name="sample", log_prints=False)
def sample_stage(run_dir: str, dataset_path: str, dataset_fingerprint: str, sampling: dict[str, Any],
                 points_hash: str) -> dict[str, Any]:
    """Sample every planned shard not yet in the ledger; return counts.

    The points to value are read from the run folder (``points.json``;
    ``points_hash`` is its content hash, so the flow run records which set
    it valued) and the shards go to a plan file: parameters, task inputs and
    results carry paths, hashes, indices and counts, never point ids.
    The ledger is the system of record: shards already written are not
    planned again, so a rerun after a crash does only the unfinished work.
    """
    logger = get_run_logger()
    run = RunFolder(run_dir)
    groups = pipeline.load_point_groups(run.root)
    if pipeline.points_hash(run.root) != points_hash:
        raise PointscaleError(f"{run.file('points.json')} changed since the run started "
                              f"(content hash {points_hash[:12]} expected); rerun the command")
    plan = pipeline.plan_sampling(dataset_path, sampling, groups, run.samples)
    del groups
    shards = pipeline.plan_shard_names(plan["plan"])
    config_hash = sampling_hash(sampling)
    logger.info("sampling: %d shards to run, %d samples reused from the ledger",
                len(shards), plan["samples_reused"])
    progress = create_progress_artifact(
        0.0, key="sampling-progress", description=f"Shards of {len(shards)} done") if shards else None
    futures = [
        sample_shard.submit(dataset_path, dataset_fingerprint, sampling, config_hash, plan["plan"],
                            plan["plan_hash"], i, name, str(run.samples))
        for i, name in enumerate(shards)
    ]
    index = {future.task_run_id: i for i, future in enumerate(futures)}
    done, failures, results = 0, [], []
    for future in as_completed(futures):
        done += 1
        # Ask the future itself: ``future.state`` can lag behind a finished shard
        # (task states reach the API asynchronously), which dropped its counts.
        try:
            results.append(future.result())
        except Exception as exc:  # the shard's own error after retries
            i = index[future.task_run_id]
            failures.append(f"shard {shards[i]} (#{i}): {type(exc).__name__}: {exc}")
        if progress is not None:
            update_progress_artifact(progress, 100.0 * done / len(shards),
                                     description=f"{done}/{len(shards)} shards")
    summary = {
        "shards_planned": len(shards),
        "shards_executed": len(results),
        "samples_planned": plan["samples_planned"],
        "samples_reused": plan["samples_reused"],
        "samples_new": sum(r["samples"] for r in results),
        "fits_executed": sum(r["fits"] for r in results),
        "failed_fits": sum(r["failed"] for r in results),
        "shard_seconds": round(sum(r["seconds"] for r in results), 3),
        "quarantined": plan["quarantined"],
    }
    if failures:
        summary["failed_shards"] = sorted(failures)
        run.update_manifest(sampling_progress=summary)
        raise ShardFailed(
            f"{len(failures)} of {len(shards)} shards failed after retries; the other "
            f"{len(results)} are saved in the ledger and a rerun resumes from there. "
            + "; ".join(sorted(failures))
        )
    return summary


def sampling_hash(sampling: dict[str, Any]) -> str:
    from pointscale.sampling import SamplingConfig

    return SamplingConfig.from_dict(dict(sampling)).stable_hash()
