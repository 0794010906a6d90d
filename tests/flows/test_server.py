"""``pointscale server``: a UI that talks to its own port, and nothing left listening after SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from flows.runtime import free_port
from tests.conftest import REPO

from .conftest import tail, wait_for

pytestmark = pytest.mark.slow


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _server_processes(port: int) -> list:
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "server" in cmd and str(port) in cmd:
            found.append(p)
    return found


def test_server_on_any_port_serves_a_ui_for_that_port_and_stops_on_sigterm(tmp_path):
    import os

    port = free_port()
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_UI_API_URL")}
    env["PREFECT_HOME"] = str(tmp_path / "home")
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "server", "--port", str(port)], cwd=REPO,
                                env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        wait_for(lambda: "Prefect UI at" in tail(log) or proc.poll() is not None, timeout=120,
                 what="pointscale server to start", on_timeout=lambda: tail(log))
        assert proc.poll() is None, tail(log)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings", timeout=10) as resp:
            settings = json.load(resp)
        # The UI calls its own server's API, not 4200's.
        assert settings["api_url"] == f"http://127.0.0.1:{port}/api"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/admin/settings", timeout=10) as resp:
            assert json.load(resp)["server"]["analytics_enabled"] is False

        proc.send_signal(signal.SIGTERM)  # to the pointscale process only, not its group
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while _listening(port) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _listening(port), "the Prefect server outlived `pointscale server`"
        assert not _server_processes(port), "a `prefect server start` was orphaned"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
