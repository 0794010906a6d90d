"""Workers started with nothing but ``dask worker ADDRESS``: no Prefect variables, an empty
working folder and home of their own. ``pointscale run --dask-address`` must hand them what
Prefect's task engine needs (the API URL) so that no temporary Prefect server starts anywhere."""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from pointscale.io import read_json
from pointscale.sampling import Ledger
from tests.conftest import run_cli

from .conftest import background, dask_executable, tail

pytestmark = pytest.mark.slow

POINTS, SAMPLES_PER_POINT = 24, 3


def bare_environment(home: Path, **extra: str) -> dict[str, str]:
    """What a freshly started machine has: PATH, a home, a locale; nothing of Prefect's or ours."""
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", **extra}


def start_bare_cluster(stack: ExitStack, root: Path, n_workers: int = 2, extra_env: dict | None = None) -> dict:
    """``dask scheduler`` and ``n_workers`` ``dask worker ADDRESS``, each in an empty folder of its own."""
    from distributed import Client

    from flows.runtime import free_port

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    folders, procs = [], []
    sched = root / "scheduler"
    sched.mkdir(parents=True)
    stack.enter_context(_bare(["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              sched, root / "scheduler.log", {}))
    for i in range(n_workers):
        folder = root / f"worker-{i}"
        folder.mkdir()
        folders.append(folder)
        procs.append(stack.enter_context(_bare(["worker", address], folder, root / f"worker-{i}.log",
                                               extra_env or {})))
    with Client(address, timeout=60) as client:
        client.wait_for_workers(n_workers, timeout=90)
    return {"address": address, "folders": folders, "workers": procs, "logs": root}


def _bare(args, folder: Path, log: Path, extra: dict):
    env = bare_environment(folder, **extra)
    # background() merges os.environ in; start from an empty one instead.
    import subprocess

    from contextlib import contextmanager

    from flows.runtime import stop_process_group

    @contextmanager
    def run():
        with open(log, "ab") as fh:
            proc = subprocess.Popen([dask_executable(), *args], stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=str(folder), start_new_session=True)
        try:
            yield proc
        finally:
            stop_process_group(proc, grace=10.0)

    return run()


def test_bare_workers_need_no_prefect_settings(tmp_path):
    """As a new user runs it: no PREFECT_API_URL anywhere, so the command starts its own server."""
    with ExitStack() as stack:
        cluster = start_bare_cluster(stack, tmp_path / "cluster")
        out = tmp_path / "run"
        started = time.monotonic()
        proc = run_cli("run", "--dask-address", cluster["address"], "--points", str(POINTS),
                       "--samples-per-point", str(SAMPLES_PER_POINT), "--shard-size", "1",
                       "--no-amortized", "--no-removal", "--laws", "mle", "--out", str(out), timeout=170,
                       unset=("PREFECT_API_URL",), cwd=tmp_path)
        logs = "".join(f"\n--- {p.name}\n" + tail(p) for p in sorted(cluster["logs"].glob("*.log")))
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:] + logs
        print(f"\n[bare workers] run took {time.monotonic() - started:.1f} s")
        assert read_json(out / "run.json")["status"] == "completed"
        assert len(Ledger(out / "samples").read()) == POINTS * SAMPLES_PER_POINT
        # No temporary Prefect server anywhere: none announced, no database in any worker's home.
        assert "temporary server" not in logs.lower() and "ephemeral" not in logs.lower(), logs
        for folder in cluster["folders"]:
            assert not list(folder.rglob("*.db")), sorted(folder.rglob("*"))
