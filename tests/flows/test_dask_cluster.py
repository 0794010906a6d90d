"""Sampling on an existing Dask cluster: a real ``dask scheduler`` and two
``dask worker`` processes on loopback, driven by ``pointscale run --dask-address``
against the session's real Prefect server."""

from __future__ import annotations

import time

import pytest

from pointscale.data import open_dataset
from pointscale.errors import DataError
from pointscale.io import read_json
from pointscale.sampling import Ledger
from tests.conftest import run_cli

from .conftest import dask_cluster, tail

pytestmark = pytest.mark.slow

POINTS, SAMPLES_PER_POINT = 40, 5


@pytest.fixture(scope="module")
def cluster(prefect_server, tmp_path_factory):
    """Scheduler and workers inherit PREFECT_API_URL: Prefect's task engine runs on the workers."""
    logs = tmp_path_factory.mktemp("dask-logs")
    started = time.monotonic()
    with dask_cluster(logs, n_workers=2) as info:
        print(f"\n[dask] scheduler and 2 workers ready after {time.monotonic() - started:.1f} s")
        info["logs"] = logs
        yield info


def _executed_per_worker(address: str) -> dict[str, int]:
    """Tasks each worker has run (every shard is one Dask task running Prefect's task engine)."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        return client.run(lambda dask_worker: dask_worker.state.executed_count)


def test_pipeline_samples_on_an_existing_cluster(cluster, tmp_path):
    out = tmp_path / "run"
    before = _executed_per_worker(cluster["address"])
    started = time.monotonic()
    proc = run_cli("run", "--dask-address", cluster["address"], "--points", str(POINTS),
                   "--samples-per-point", str(SAMPLES_PER_POINT), "--shard-size", "1",
                   "--no-amortized", "--no-removal", "--out", str(out), timeout=240)
    took = time.monotonic() - started
    assert proc.returncode == 0, (proc.stdout[-2000:] + proc.stderr[-4000:]
                                  + "".join(tail(p) for p in sorted(cluster["logs"].iterdir())))
    print(f"\n[dask] pointscale run on the cluster took {took:.1f} s")

    manifest = read_json(out / "run.json")
    assert manifest["status"] == "completed"
    assert manifest["config"]["options"]["dask_address"] == cluster["address"]
    ledger = Ledger(out / "samples").read()
    assert len(ledger) == POINTS * SAMPLES_PER_POINT
    assert ledger.groupby("point_id").size().eq(SAMPLES_PER_POINT).all()
    shards = manifest["counts"]["shards_executed"]
    # One block per shard: 40 points in blocks of up to 32 make at least 2 shards per round.
    assert shards == manifest["counts"]["shards_planned"] >= 2 * SAMPLES_PER_POINT

    # The cluster's two workers did the sampling and the stages after it, both of them, and nothing
    # else did: with one partition of points, one task each to read and store the data (ingest: the
    # flow process never holds it), choose the points and the sampling config, plan the shards (the
    # flow never holds the point ids), plan the split, split the ledger, fit
    # the MLE laws, join them, find the committed split again (the choice stage: below the choice's
    # point cap nothing else is partitioned there), choose the laws, find the split again (the value
    # stage), cut the chosen laws into partitions (the MLE laws are read from their parts), value the
    # partition, join the values, select the points and write the report.
    after = _executed_per_worker(cluster["address"])
    ran = {w: after[w] - before.get(w, 0) for w in after}
    assert len(ran) == 2 and all(n > 0 for n in ran.values()), ran
    assert manifest["outputs"]["laws_mle"]["result"]["partitions"] == 1
    assert sum(ran.values()) == shards + 15, ran


def test_worker_without_the_run_folder_fails_with_a_clear_message(cluster, tmp_path):
    """A worker that cannot see the run folder (no shared storage) says so."""
    from distributed import Client

    missing = str(tmp_path / "not-shared" / "datasets" / "0123abcd")
    with pytest.raises(DataError, match="storage every worker can read"):
        open_dataset(missing)
    with Client(cluster["address"], timeout=30) as client:
        future = client.submit(open_dataset, missing, pure=False)
        with pytest.raises(DataError, match="storage every worker can read"):
            future.result(timeout=60)
