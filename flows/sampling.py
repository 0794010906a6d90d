"""The sampling stage flow: plan the shards, run them on Dask, record progress."""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from typing import Any, Iterator, Optional
from urllib.parse import urlparse

from distributed import get_worker
from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect_dask import DaskTaskRunner

from pointscale import pipeline
from pointscale.errors import ConfigError, PointscaleError
from pointscale.runs import RunFolder
from tasks.sampling import RETRIES, plan_shards, sample_shard

from .progress import RunProgress
from .workers import register_worker_settings


class ShardFailed(PointscaleError):
    """A shard kept failing after its retries."""

    #: A failed run, not bad input: the command exits 1.
    exit_status = 1


class DaskUnreachable(ConfigError):
    """``--dask-address`` names no scheduler this machine can reach."""


def check_dask_address(address: Optional[str], timeout: float = 10.0) -> None:
    """Fail in seconds, with one line, when nothing listens at the scheduler address.

    Only the TCP connection is tried (``tcp://host:port``, or ``host:port``);
    Dask's own handshake comes after, when the runner connects.

    Raises
    ------
    DaskUnreachable
    """
    if not address:
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if parsed.scheme not in ("tcp", "tls") or not parsed.hostname:
        raise DaskUnreachable(f"--dask-address {address!r} must look like tcp://HOST:PORT "
                              "(the address `dask scheduler` prints)")
    port = parsed.port or 8786
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DaskUnreachable(f"no Dask scheduler answers at {address} ({reason}); start one "
                              "(`dask scheduler`) or fix --dask-address") from None


def describe_cluster(workers: Optional[int], address: Optional[str]) -> str:
    if address:
        return f"connecting to the Dask scheduler at {address}"
    n = workers or os.cpu_count() or 1
    return f"starting a local Dask cluster ({n} worker process{'es' if n != 1 else ''})"


class ClusterTaskRunner(DaskTaskRunner):
    """``DaskTaskRunner`` that hands the workers this flow's Prefect settings when it connects.

    Workers started with nothing but ``dask worker ADDRESS`` then run
    Prefect's task engine against this flow's API (:mod:`flows.workers`).
    Not done where the runner is re-entered inside a task on a worker.
    """

    @property
    def client(self):
        fresh = self._client is None
        client = super().client
        if fresh and not _on_a_worker():
            register_worker_settings(client)
        return client


def _on_a_worker() -> bool:
    try:
        get_worker()
    except ValueError:
        return False
    return True


@contextmanager
def dask_cluster(workers: int | None = None, address: str | None = None) -> Iterator[str]:
    """The scheduler address of the run's cluster: ``address``, or a LocalCluster started for the run.

    One cluster serves the sampling subflow and every partitioned stage
    after it. Local workers are processes with one thread each (the models
    are single-threaded; the parallelism is the workers) and inherit this
    process's environment, including ``PREFECT_API_URL``. No dashboard, and
    the scheduler's HTTP server on a free port: ``dashboard_address=None``
    still binds 8787 (and warns "Port 8787 is already in use" when another
    cluster has it).
    """
    if address:
        yield address
        return
    import logging

    from distributed import LocalCluster

    # Closing the cluster after the last task, the nanny kills worker processes still
    # tearing down Prefect's log and event threads, and warns; nothing is lost then.
    logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
    n = workers or os.cpu_count() or 1
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                      scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"}) as cluster:
        yield cluster.scheduler_address


def dask_task_runner(address: str) -> ClusterTaskRunner:
    """A task runner on the cluster at ``address`` (:func:`dask_cluster`) that hands workers the flow's settings."""
    return ClusterTaskRunner(address=address)


def _sampling_run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters
    dataset, sampling = params.get("dataset") or {}, params.get("sampling") or {}
    return f"sample-{dataset.get('name', 'data')}-{sampling.get('model', 'model')}"


@flow(name="pointscale-sample", flow_run_name=_sampling_run_name, log_prints=False)
def sample_stage(run_dir: str, dataset: dict[str, Any], sampling: dict[str, Any], points_hash: str,
                 progress_id: Optional[str] = None) -> dict[str, Any]:
    """Sample every planned shard not yet in the ledger; return counts and the ledger's hash.

    The points to value are read from the run folder (``points.json``;
    ``points_hash`` is its content hash, so the flow run records which set
    it valued) and the shards go to a plan file: parameters, task inputs and
    results carry paths, hashes, indices and counts, never point ids.
    The ledger is the system of record: shards already written are not
    planned again, so a rerun after a crash does only the unfinished work.
    ``dataset`` is the ingest result (path and fingerprint, never arrays).
    ``progress_id`` is the pipeline run's progress artifact, updated here.
    """
    logger = get_run_logger()
    run = RunFolder(run_dir)
    progress = RunProgress(progress_id)
    # Planned on a worker: the flow never holds the point ids (10^6 of them at the README's scale).
    plan = plan_shards.submit(run.location(), dataset["path"], sampling, points_hash).result()
    shards = pipeline.plan_shard_names(plan["plan"])
    config_hash = sampling_hash(sampling)
    logger.info("Dask is ready: %d shards (%d samples) to run, %d samples reused from the ledger",
                len(shards), plan["samples_todo"], plan["samples_reused"])
    progress.sampling_started(len(shards), plan["samples_todo"], plan["samples_reused"])
    futures = [
        sample_shard.submit(dataset["path"], dataset["fingerprint"], sampling, config_hash, plan["plan"],
                            plan["plan_hash"], i, name, str(run.samples))
        for i, name in enumerate(shards)
    ]
    index = {future.task_run_id: i for i, future in enumerate(futures)}
    failures, results = [], []
    for future in as_completed(futures):
        i = index[future.task_run_id]
        # Ask the future itself: ``future.state`` can lag behind a finished shard
        # (task states reach the API asynchronously), which dropped its counts.
        try:
            result = future.result()
        except Exception as exc:  # the shard's own error after retries
            failures.append(f"shard {shards[i]} (#{i}): {type(exc).__name__}: {exc}")
            progress.shard_done(0, RETRIES + 1)
            continue
        results.append(result)
        if result.get("attempt", 1) > 1:
            logger.warning("shard %s succeeded on attempt %d (the earlier failure is in its task run's log)",
                           result["name"], result["attempt"])
        progress.shard_done(result["samples"], result.get("attempt", 1))
    retried = sorted(r["name"] for r in results if r.get("attempt", 1) > 1)
    summary = {
        "shards_planned": len(shards),
        "shards_executed": len(results),
        "shards_retried": len(retried),
        "samples_planned": plan["samples_planned"],
        "samples_reused": plan["samples_reused"],
        "samples_new": sum(r["samples"] for r in results),
        "fits_executed": sum(r["fits"] for r in results),
        "failed_fits": sum(r["failed"] for r in results),
        "shard_seconds": round(sum(r["seconds"] for r in results), 3),
        "quarantined": plan["quarantined"],
    }
    if retried:
        summary["retried_shards"] = retried
    if failures:
        summary["failed_shards"] = sorted(failures)
        run.update_manifest(sampling_progress=summary)
        raise ShardFailed(
            f"{len(failures)} of {len(shards)} shards failed after retries; the other "
            f"{len(results)} are saved in the ledger and a rerun resumes from there. "
            + "; ".join(sorted(failures))
        )
    logger.info("sampled %d new samples in %d shards (%d retried); %d reused", summary["samples_new"],
                len(results), len(retried), plan["samples_reused"])
    return {"counts": summary, "ledger_hash": pipeline.ledger_hash(run.location()),
            "points_hash": pipeline.points_hash(run.root)}


def sampling_hash(sampling: dict[str, Any]) -> str:
    from pointscale.sampling import SamplingConfig

    return SamplingConfig.from_dict(dict(sampling)).stable_hash()
