"""Reliability of real runs (issue 8): crash and resume, retries, worker loss,
ledger integrity, and the run-folder lock.

Every test runs the real ``pointscale run`` in a subprocess against a real
Prefect server (session fixture) with a real process-based Dask LocalCluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pointscale.data import open_dataset
from pointscale.io import read_json
from pointscale.runs import RunFolder
from pointscale.sampling import Ledger, SamplingConfig, sample_marginals
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow

# A job with many small shards (8 blocks of 8 points x 8 rounds = 64 shards of 9 fits),
# slow enough (k-NN, one block per shard) to be killed midway.
JOB = ["--model", "knn", "--points", "64", "--samples-per-point", "8", "--block-size", "8",
       "--shard-size", "1", "--k-min", "60", "--k-max", "200", "--seed", "3",
       "--no-amortized", "--no-removal", "--laws", "mle", "--workers", "2"]
N_SHARDS = 64
N_SAMPLES = 64 * 8
# The smaller job of the single-worker tests: 3 rounds x 8 blocks = 24 shards.
SMALL = [*JOB[:-2], "--workers", "1", "--samples-per-point", "3"]
N_SMALL = 64 * 3


def _shards(out: Path) -> list[Path]:
    folder = out / "samples" / "shards"
    return sorted(folder.glob("*.parquet.sha256")) if folder.exists() else []


def _start(out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    full = dict(os.environ, **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", *JOB, *extra, "--out", str(out)],
                            cwd=REPO, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _reference(out: Path) -> pd.DataFrame:
    """The same sampling, uninterrupted, in-process (same code, same seed)."""
    manifest = read_json(out / "run.json")
    ds = open_dataset(manifest["dataset"]["path"])
    cfg = SamplingConfig.from_dict(manifest["config"]["sampling"])
    points = read_json(out / "points.json")["groups"][0]
    return sample_marginals(ds, cfg, points)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("sample_id").reset_index(drop=True)


def test_sigkill_midway_then_rerun_finishes_only_the_rest(prefect_api, tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(_shards(out)) < N_SHARDS // 5:
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed:\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done_at_kill = len(_shards(out))
    assert 0 < done_at_kill < N_SHARDS, done_at_kill

    # Whatever was committed is readable and verified: no partial shard is ever read.
    partial = Ledger(out / "samples").read()
    assert partial["sample_id"].is_unique and len(partial) == 8 * len(Ledger(out / "samples").shard_names())

    rerun = run_cli("run", *JOB, "--out", str(out), timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    counts = read_json(out / "run.json")["counts"]
    assert counts["samples_reused"] >= 8 * done_at_kill
    assert counts["samples_reused"] + counts["samples_new"] == N_SAMPLES
    assert counts["shards_executed"] == N_SHARDS - counts["samples_reused"] // 8
    assert counts["fits_executed"] == counts["samples_new"] + counts["shards_executed"]

    final = _sorted(Ledger(out / "samples").read())
    assert final["sample_id"].is_unique and len(final) == N_SAMPLES
    ref = _sorted(_reference(out))
    assert list(final["sample_id"]) == list(ref["sample_id"])
    # Bit for bit, not approximately.
    np.testing.assert_array_equal(final["delta"].to_numpy().view(np.int64), ref["delta"].to_numpy().view(np.int64))
    np.testing.assert_array_equal(final["k"].to_numpy(), ref["k"].to_numpy())
    assert (out / "values.parquet").exists() and (out / "report.md").exists()


@pytest.fixture(scope="module")
def retried_run(prefect_api, tmp_path_factory):
    """The small job with one transient shard failure, run once; completed.

    Shared by the retry check (which reads what this run wrote, kept here as it was) and the
    corruption check (which corrupts a shard of this completed run folder and reruns it).
    """
    out = tmp_path_factory.mktemp("retried") / "run"
    proc = run_cli("run", *SMALL, "--out", str(out),
                   env={"POINTSCALE_FAIL_SHARD": "#3"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"out": out, "proc": proc, "counts": read_json(out / "run.json")["counts"],
            "markers": [p.name for p in (out / "samples" / ".faults").iterdir()],
            "n_samples": len(Ledger(out / "samples").read())}


def test_transient_shard_failure_is_retried(retried_run):
    proc, markers = retried_run["proc"], retried_run["markers"]
    assert len(markers) == 1  # it did fail once, then the retry succeeded
    assert retried_run["n_samples"] == N_SMALL
    # The retry stays visible afterwards: counted, and the shard named by its stable key.
    counts = retried_run["counts"]
    assert counts["shards_retried"] == 1 and counts["retried_shards"] == [markers[0]]
    # Not a terminal: plain progress lines, the run's UI link, no traceback.
    assert "flow run: http://127.0.0.1:" in proc.stderr and f"{N_SMALL // 8}/{N_SMALL // 8} shards" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_permanent_shard_failure_names_the_shard_and_keeps_the_rest(prefect_api, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("run", *SMALL, "--out", str(out),
                   env={"POINTSCALE_FAIL_SHARD": "#3:always"}, timeout=300)
    assert proc.returncode == 1
    assert "shard" in proc.stderr and "(#3)" in proc.stderr and "injected failure" in proc.stderr
    # One line for the failure, no traceback (the tracebacks of each attempt are in the UI).
    assert "Traceback" not in proc.stderr and proc.stderr.count("injected failure") == 1, proc.stderr
    kept = Ledger(out / "samples").read()
    assert len(kept) == N_SMALL - 8  # every other shard is saved
    # Without the fault, a rerun does exactly the missing shard.
    again = run_cli("run", *SMALL, "--out", str(out), timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    counts = read_json(out / "run.json")["counts"]
    assert counts["shards_executed"] == 1 and counts["samples_new"] == 8


def test_killing_a_dask_worker_does_not_fail_the_run(prefect_api, tmp_path):
    import psutil

    out = tmp_path / "run"
    proc = _start(out)
    deadline = time.monotonic() + 240
    victim = None
    while time.monotonic() < deadline and victim is None:
        if proc.poll() is not None:
            pytest.fail(f"run ended before a worker could be killed:\n{proc.stderr.read()[-3000:]}")
        if len(_shards(out)) >= 5:
            workers = [c for c in psutil.Process(proc.pid).children(recursive=True)
                       if "spawn_main" in " ".join(c.cmdline()) or "forkserver" in " ".join(c.cmdline())]
            if len(workers) >= 2:
                victim = workers[0]
        time.sleep(0.05)
    assert victim is not None, "no Dask worker process found"
    victim.send_signal(signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stderr[-4000:]
    final = Ledger(out / "samples").read()
    assert len(final) == N_SAMPLES and final["sample_id"].is_unique


def test_corrupted_shard_is_detected_and_resampled(retried_run):
    # A completed run folder (the retried run's: its retry left every shard committed and verified).
    out = retried_run["out"]
    args = [*SMALL, "--out", str(out)]
    victim = sorted((out / "samples" / "shards").glob("*.parquet"))[2]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # truncated
    proc = run_cli("run", *args, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = read_json(out / "run.json")["counts"]
    assert counts["shards_executed"] == 1 and counts["samples_new"] == 8
    assert any(victim.name.removesuffix(".parquet") in q for q in counts["quarantined"])
    assert len(Ledger(out / "samples").read()) == N_SMALL


def test_second_run_on_a_locked_folder_exits_with_a_message(prefect_api, tmp_path):
    out = tmp_path / "run"
    with RunFolder(out).lock():
        proc = run_cli("run", *SMALL, "--out", str(out),
                       timeout=300)
    assert proc.returncode == 2
    assert "is in use by pid" in proc.stderr and "--wait" in proc.stderr
    assert not (out / "samples").exists()  # nothing was written by the refused run
