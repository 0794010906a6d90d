"""Nothing a command starts outlives it; its flow client always uses the server it started; the UI tells the truth.

Real ``pointscale run`` subprocesses, each starting its own local Prefect
server (``PREFECT_API_URL`` unset, a fresh ``PREFECT_HOME``), killed with
SIGKILL of their whole process group. Every wait is bounded; what a test
starts it kills by process id.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from flows.runtime import local_prefect_server
from tests.conftest import REPO
from tests.flows.conftest import tail, wait_for

pytestmark = pytest.mark.slow

# Small and quick, yet long enough in sampling to be killed there (24 shards, one worker).
JOB = ["--model", "knn", "--points", "64", "--samples-per-point", "3", "--block-size", "8", "--shard-size", "1",
       "--k-min", "60", "--k-max", "200", "--seed", "3", "--no-amortized", "--no-removal", "--workers", "1",
       "--laws", "mle"]  # the law choice is not under test here (tests/core/test_laws_auto.py)


def _own_server_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment, less the session's server: the command starts its own, with its own database."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), **extra)
    return env


def _start(out: Path, log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", *JOB, "--out", str(out)], cwd=REPO,
                                env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return out


def _api(url: str, path: str, body: dict) -> list[dict]:
    req = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def test_sigkill_of_the_group_leaves_nothing_and_the_rerun_marks_the_killed_run_crashed(tmp_path, monkeypatch):
    home, out, log = tmp_path / "prefect", tmp_path / "run", tmp_path / "first.log"
    env = _own_server_env(home)
    proc = _start(out, log, env)
    seen: dict[int, psutil.Process] = {}
    try:
        def sampling() -> bool:
            for p in _tree(proc.pid):  # every process of the command, the server's included
                seen.setdefault(p.pid, p)
            return "sampling:" in tail(log) or proc.poll() is not None

        wait_for(sampling, timeout=400, interval=0.5, what="the run to start sampling",
                 on_timeout=lambda: tail(log))
        assert proc.poll() is None, tail(log)
        for p in _tree(proc.pid):
            seen.setdefault(p.pid, p)
        started = list(seen.values())
        assert any("server" in " ".join(p.cmdline()) for p in started if p.is_running()), "no server seen"
        os.killpg(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(timeout=10)
        wait_for(lambda: not _alive(started), timeout=10, interval=0.2, what="every process of the run to end",
                 on_timeout=lambda: "\n".join(_alive(started)))
        print(f"all {len(started)} processes gone {time.monotonic() - killed:.1f} s after the SIGKILL")
    finally:
        for p in seen.values():  # a failed test must not leave them either
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
    killed_id = json.loads((out / "run.json").read_text())["flow_run_id"]

    rerun = subprocess.run([sys.executable, "-m", "flows.cli", "run", *JOB, "--out", str(out)], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=500)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    # Its own server is stopped only after Prefect has sent the queued logs (before: every finished
    # run printed "--- Error logging to API --- All connection attempts failed").
    assert "Error logging to API" not in rerun.stderr, rerun.stderr[-2000:]
    rerun_id = json.loads((out / "run.json").read_text())["flow_run_id"]
    assert rerun_id != killed_id

    # What the UI shows: the same database, read through a server of the test's own.
    monkeypatch.setenv("PREFECT_HOME", str(home))
    with local_prefect_server(timeout=240, set_env=False, log_path=tmp_path / "check-server.log") as url:
        runs = {r["id"]: r for r in _api(url, "/flow_runs/filter", {})}
        assert runs[killed_id]["state_type"] == "CRASHED", runs[killed_id]["state"]
        assert not [r["name"] for r in runs.values() if r["state_type"] == "RUNNING"]
        lines = [entry["message"] for entry in _api(url, "/logs/filter", {"logs": {
            "flow_run_id": {"any_": [rerun_id]}}})]
        text = "\n".join(lines)
        for stage in ("reading and checking", "Dask cluster", "fitting the per-point laws", "valuing the points",
                      "writing the report", "Crashed"):
            assert stage in text, text
        # One name per run: the run's title is the name it started with.
        assert runs[rerun_id]["name"] == "breast_cancer-knn-3spp-64pts"


def test_no_ephemeral_server_under_a_saturated_cpu(tmp_path):
    """Every core busy; ephemeral servers allowed as in Prefect's default profile: none may start."""
    home, out, log = tmp_path / "prefect", tmp_path / "run", tmp_path / "run.log"
    env = _own_server_env(home, PREFECT_SERVER_EPHEMERAL_ENABLED="true")
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    proc = None
    ephemeral: list[str] = []
    try:
        proc = _start(out, log, env)
        deadline = time.monotonic() + 500
        while proc.poll() is None and time.monotonic() < deadline:
            for p in _tree(proc.pid):
                try:  # Prefect's ephemeral server is a uvicorn child marked in its environment
                    if p.environ().get("PREFECT__SERVER_EPHEMERAL") == "1":
                        ephemeral.append(" ".join(p.cmdline()))
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            time.sleep(0.3)
        assert proc.poll() is not None, "the run did not finish in 500 s\n" + tail(log)
    finally:
        for b in busy:
            b.kill()
            b.wait()
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not ephemeral, ephemeral
    assert proc.returncode == 0, tail(log)


def test_the_watchdog_stops_its_command_when_its_starter_dies(tmp_path):
    """The mechanism alone, in seconds: a starter holds the pipe, is SIGKILLed, the watched command goes."""
    starter = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys, time\n"
        "r, w = os.pipe()\n"
        "p = subprocess.Popen([sys.executable, '-m', 'flows.runtime', 'watch', 'sleep', '600'], stdin=r,"
        " start_new_session=True)\n"
        "os.close(r)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n")], cwd=REPO, stdout=subprocess.PIPE, text=True, start_new_session=True)
    watchdog = None
    try:
        watchdog = psutil.Process(int(starter.stdout.readline()))
        watched = wait_for(lambda: watchdog.children(), timeout=30, interval=0.1, what="the watched command")
        assert watched[0].cmdline()[:2] == ["sleep", "600"]
        os.killpg(starter.pid, signal.SIGKILL)
        starter.wait(timeout=10)
        wait_for(lambda: not _alive([watchdog, *watched]), timeout=10, interval=0.1,
                 what="the watchdog and its command to end", on_timeout=lambda: "\n".join(_alive(watched)))
    finally:
        if starter.poll() is None:
            os.killpg(starter.pid, signal.SIGKILL)
        if watchdog is not None and watchdog.is_running():
            os.killpg(watchdog.pid, signal.SIGKILL)
