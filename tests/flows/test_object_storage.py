"""A whole run with its run folder on object storage: a real S3-compatible server (moto's) on
127.0.0.1, a real Prefect server, and a process-based Dask cluster whose workers were started with
only ``dask worker ADDRESS``, each in an empty folder of its own (no path shared with the flow)."""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pointscale.sampling import Ledger
from pointscale.storage import Store
from tests.conftest import S3_KEY_ID, S3_SECRET, run_cli

from .test_bare_workers import start_bare_cluster

pytestmark = pytest.mark.slow

# Every stage, the amortized estimator and the removal curve too, by 3 partitions on the bare workers.
# The law choice is not under test in this file (tests/core/test_laws_auto.py): the per-point MLE skips its
# cross-validation (4-5 s a run).
ARGS = ("--points", "24", "--samples-per-point", "3", "--shard-size", "1", "--partition-points", "10", "--laws", "mle")


def test_run_on_s3_equals_the_local_run(prefect_server, s3_bucket, tmp_path):
    aws = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                      "AWS_DEFAULT_REGION")}
    url = f"{s3_bucket}/runs/cancer"
    with ExitStack() as stack:
        # The workers' S3 access comes from their own environment, as on a cloud cluster.
        cluster = start_bare_cluster(stack, tmp_path / "cluster", extra_env=aws)
        flow_dir = tmp_path / "flow"
        flow_dir.mkdir()
        # The data file itself is at a URL too (the local run reads the same bytes from disk).
        from sklearn.datasets import load_breast_cancer

        csv = tmp_path / "cancer.csv"
        load_breast_cancer(as_frame=True).frame.to_csv(csv, index=False)
        Store(s3_bucket).write_bytes("data/cancer.csv", csv.read_bytes())
        env = {"POINTSCALE_CACHE": str(tmp_path / "flow-cache")}
        started = time.monotonic()
        remote = run_cli("run", "--dask-address", cluster["address"], "--dataset", f"{s3_bucket}/data/cancer.csv",
                         "--target", "target", *ARGS, "--out", url, timeout=170, cwd=flow_dir, env=env)
        logs = "".join(p.read_text(errors="replace")[-3000:] for p in sorted(cluster["logs"].glob("*.log")))
        assert remote.returncode == 0, remote.stdout[-2000:] + remote.stderr[-4000:] + logs
        print(f"\n[s3] run to {url} took {time.monotonic() - started:.1f} s")
        local = run_cli("run", "--dask-address", cluster["address"], "--dataset", str(csv), "--target", "target",
                        *ARGS, "--out", str(tmp_path / "local"), timeout=170, cwd=flow_dir)
        assert local.returncode == 0, local.stdout[-2000:] + local.stderr[-4000:]

    assert not (flow_dir / "s3:").exists() and not list(flow_dir.iterdir())  # nothing local named s3:
    store = Store(url)
    assert store.read_json("run.json")["status"] == "completed"
    on_s3 = store.read_parquet("values.parquet").to_pandas().sort_values("point_id").reset_index(drop=True)
    here = pd.read_parquet(tmp_path / "local" / "values.parquet").sort_values("point_id").reset_index(drop=True)
    assert list(on_s3["point_id"]) == list(here["point_id"])
    numeric = [c for c in here.columns if pd.api.types.is_float_dtype(here[c])]
    assert len(numeric) >= 3, here.columns
    diff = 0.0
    for c in numeric:
        a, b = on_s3[c].to_numpy(), here[c].to_numpy()
        assert (np.isnan(a) == np.isnan(b)).all() and (np.isinf(a) == np.isinf(b)).all(), c
        assert (a[np.isinf(a)] == b[np.isinf(a)]).all(), c  # the same infinities (an unbounded interval end)
        finite = np.isfinite(a)
        if finite.any():
            diff = max(diff, float(np.abs(a[finite] - b[finite]).max()))
    print(f"[s3] max abs difference of the values, S3 vs local run folder: {diff:.3g}")
    assert diff <= 1e-12, diff
    assert np.isfinite(on_s3["shapley_amortized"]).all()
    amortized = store.read_json("run.json")["outputs"]["laws_amortized"]["result"]
    assert amortized["partitions"] == 3 and store.exists(amortized["parts"]["folder"], "done.json")
    for name in ("selection.parquet", "removal.parquet", "laws_amortized.parquet"):
        pd.testing.assert_frame_equal(store.read_parquet(name).to_pandas(), pd.read_parquet(tmp_path / "local" / name))
    assert len(Ledger(url + "/samples").read()) == 24 * 3
    # The workers' folders stayed empty of run data (they share no path with the flow).
    for folder in cluster["folders"]:
        assert not [p for p in folder.rglob("*") if p.is_file() and "samples" in p.parts], folder

    # No credential anywhere: the run folder at the URL, the flow's working copy, output and logs.
    texts = [remote.stdout, remote.stderr, logs]
    texts += [store.read_bytes(k).decode("latin-1") for k in store.walk()]
    texts += [p.read_bytes().decode("latin-1") for p in (tmp_path / "flow-cache").rglob("*") if p.is_file()]
    # ... and the Prefect server's database and files (what the UI shows: parameters, logs, artifacts).
    home = Path(os.environ["PREFECT_HOME"])
    texts += [p.read_bytes().decode("latin-1") for p in home.rglob("*") if p.is_file()]
    assert any(url in t for t in texts[3:])  # the greps do see the run (the URL is recorded)
    for text in texts:
        assert S3_SECRET not in text and S3_KEY_ID not in text


def test_wrong_bucket_and_missing_credentials_are_one_line(s3_server, s3_bucket, tmp_path):
    wrong = run_cli("run", "--points", "10", "--out", "s3://no-such-bucket-pointscale/runs/x", timeout=120,
                    cwd=tmp_path)
    assert wrong.returncode == 2, wrong.stderr
    assert wrong.stderr.strip().count("\n") == 0 and "bucket 'no-such-bucket-pointscale'" in wrong.stderr
    bare = run_cli("run", "--points", "10", "--out", f"{s3_bucket}/runs/x", timeout=120, cwd=tmp_path,
                   unset=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
                   env={"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                        "AWS_EC2_METADATA_DISABLED": "true"})
    assert bare.returncode == 2, bare.stderr
    assert bare.stderr.strip().count("\n") == 0 and "credentials" in bare.stderr, bare.stderr
    assert not list(tmp_path.iterdir())  # nothing written locally, no folder named s3:


@pytest.mark.parametrize("url, package", [("gs://bucket/runs/x", "gcsfs"), ("abfs://container/runs/x", "adlfs")])
def test_a_missing_protocol_package_is_one_line(url, package, tmp_path):
    pytest.importorskip("fsspec")
    try:
        __import__(package)
        pytest.skip(f"{package} is installed here")
    except ImportError:
        pass
    proc = run_cli("run", "--points", "10", "--out", url, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert f"needs the package {package}" in proc.stderr
    assert not list(tmp_path.iterdir())


# A job with many small shards (k-NN, 8 blocks of 8 points x 8 rounds = 64 shards), slow enough to kill.
JOB = ("--model", "knn", "--points", "64", "--samples-per-point", "8", "--block-size", "8", "--shard-size", "1",
       "--k-min", "60", "--k-max", "200", "--seed", "3", "--no-amortized", "--no-removal", "--laws", "mle")
N_SHARDS, N_SAMPLES = 64, 64 * 8


def test_killed_worker_and_killed_flow_lose_and_repeat_nothing_on_s3(prefect_server, s3_bucket, tmp_path):
    """A worker SIGKILLed mid-sampling, then the flow SIGKILLed after sampling (mid-downstream):
    the rerun reuses every committed sample, and the ledger at the URL has each sample once."""
    import signal
    import subprocess
    import sys

    aws = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                      "AWS_DEFAULT_REGION")}
    url = f"{s3_bucket}/runs/knn"
    store = Store(url)
    env = dict(os.environ, POINTSCALE_CACHE=str(tmp_path / "flow-cache"))

    def committed() -> int:
        return sum(1 for f in store.list("samples", "shards") if f.endswith(".sha256"))

    def manifest() -> dict:
        try:
            return store.read_json("run.json")
        except FileNotFoundError:
            return {}

    with ExitStack() as stack:
        cluster = start_bare_cluster(stack, tmp_path / "cluster", extra_env=aws)
        flow = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--dask-address", cluster["address"],
                                 *JOB, "--out", url], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        stack.callback(lambda: flow.poll() is None and os.killpg(flow.pid, signal.SIGKILL))
        deadline = time.monotonic() + 150
        while committed() < 5:
            assert flow.poll() is None, flow.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "sampling did not start"
            time.sleep(0.1)
        os.killpg(cluster["workers"][0].pid, signal.SIGKILL)  # the worker (and its nanny) die mid-sampling
        at_worker_kill = committed()
        while not manifest().get("counts"):  # sampling done (on the surviving worker)
            assert flow.poll() is None, flow.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "sampling did not finish after the worker was killed"
            time.sleep(0.05)
        os.killpg(flow.pid, signal.SIGKILL)  # the flow dies mid-downstream
        flow.wait(timeout=30)
        killed = manifest()
        assert killed.get("status") != "completed", "the run finished before the flow could be killed"
        assert at_worker_kill < N_SHARDS and committed() == N_SHARDS

        rerun = run_cli("run", "--dask-address", cluster["address"], *JOB, "--out", url, timeout=170,
                        cwd=tmp_path, env={"POINTSCALE_CACHE": str(tmp_path / "other-machine")})
        assert rerun.returncode == 0, rerun.stderr[-4000:]
    final = manifest()
    assert final["status"] == "completed"
    assert final["counts"]["samples_reused"] == N_SAMPLES and final["counts"]["samples_new"] == 0
    ledger = Ledger(url + "/samples")
    rows = ledger.read()
    assert len(rows) == N_SAMPLES and rows["sample_id"].is_unique
    assert len(ledger.shard_names()) == N_SHARDS and ledger.quarantined == []
    assert store.exists("values.parquet") and store.exists("report.md")


def test_revalue_of_a_run_folder_at_a_url(prefect_server, s3_bucket, tmp_path):
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.insert(0, "row_id", [f"r{i:03d}" for i in range(len(frame))])
    frame.iloc[:300].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[:320].to_csv(tmp_path / "train2.csv", index=False)  # 20 rows arrive
    url = f"{s3_bucket}/runs/revalue"
    common = ("--target", "target", "--id-column", "row_id")
    first = run_cli("run", "--dataset", str(tmp_path / "train.csv"), *common, "--points", "all",
                    "--samples-per-point", "3", "--no-amortized", "--no-removal", "--workers", "1", "--out", url,
                    timeout=300, cwd=tmp_path, env={"POINTSCALE_CACHE": str(tmp_path / "machine-1")})
    assert first.returncode == 0, first.stderr[-4000:]
    store = Store(url)
    n_before = len(store.read_parquet("values.parquet"))
    # From another machine (an empty working copy): everything it needs is at the URL.
    proc = run_cli("revalue", "--run-dir", url, "--dataset", str(tmp_path / "train2.csv"), "--workers", "1",
                   timeout=300, cwd=tmp_path, env={"POINTSCALE_CACHE": str(tmp_path / "machine-2")})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    record = store.read_json("run.json")
    assert record["status"] == "completed" and record["kind"] == "revalue"
    assert record["revalue"]["new_points"] == 20 and record["counts"]["samples_reused"] > 0
    values = store.read_parquet("values.parquet").to_pandas()
    assert len(values) == n_before + 20 and store.exists("values_change.parquet")
    assert record["dataset"]["path"].startswith(url)  # the new version lives at the URL
    assert not (tmp_path / "s3:").exists()
    # A URL with no run to extend: one line, exit 2.
    bad = run_cli("revalue", "--run-dir", f"{s3_bucket}/runs/none", "--dataset", str(tmp_path / "train2.csv"),
                  timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "holds no completed pipeline run" in bad.stderr


def test_sample_command_writes_its_ledger_at_the_url(s3_bucket, tmp_path):
    url = f"{s3_bucket}/runs/sampled"
    proc = run_cli("sample", "--points", "12", "--samples-per-point", "2", "--out", url, timeout=170, cwd=tmp_path,
                   env={"POINTSCALE_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = Ledger(url + "/samples").read()
    assert len(rows) == 12 * 2 and rows["sample_id"].is_unique
    assert Store(url).exists("points.json") and [p.name for p in tmp_path.iterdir()] == ["cache"]
