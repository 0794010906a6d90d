"""Process environment for the orchestration layer, and a local Prefect server.

Import this module (and call :func:`configure_environment`) before importing
prefect: Prefect reads its settings from the environment once, when it is
first imported. :func:`local_prefect_server` refreshes them after it sets
``PREFECT_API_URL``, so a prefect imported earlier still talks to that server
(the cause of issue 28's "ephemeral Prefect API server" timeouts: the CLI
imported prefect before starting its server, so every flow started an
ephemeral server of its own, which under load missed its 20 s start-up).

The local server outlives nothing: it runs under a watchdog
(``python -m flows.runtime watch CMD``) that stops it when the command that
started it dies by any signal, SIGKILL of its process group included.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


LOGGING_CONFIG = Path(__file__).with_name("logging.yml")


def configure_environment(home: str | os.PathLike | None = None) -> None:
    """Telemetry off, Prefect's home inside the project, run logs to the API and not the console.

    Values already set by the user win. Child processes (the local server,
    Dask workers, served flow runs) inherit these.
    """
    os.environ.setdefault("PREFECT_HOME", str(Path(home or Path.cwd() / ".prefect").resolve()))
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's internals print warnings only; flow and task runs log INFO to the
    # API (the UI shows them) and nothing to the console (see logging.yml).
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_SETTINGS_PATH", str(LOGGING_CONFIG))
    os.environ.setdefault("MPLBACKEND", "Agg")
    # Dask's scheduler/nanny INFO lines (workers joining and leaving) drown the summary.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    # Never fall back to an ephemeral API server (Prefect's default profile allows
    # one): a client without PREFECT_API_URL fails at once with Prefect's own
    # "No Prefect API URL provided" instead of starting a server that races.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_ENABLED", "false")
    # Dask worker processes import our tasks; they must not start their own
    # ephemeral API, so flows always run against a real server URL (see
    # :func:`local_prefect_server`).


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prefect_executable() -> str:
    candidate = Path(sys.executable).with_name("prefect")
    return str(candidate) if candidate.exists() else "prefect"


def wait_healthy(api_url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"Prefect server exited with status {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception as exc:  # connection refused while starting
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"Prefect server at {api_url} not healthy after {timeout:.0f} s ({last})")


def server_environment(port: int) -> dict[str, str]:
    """Environment of a ``prefect server start`` on 127.0.0.1:``port``.

    ``--port`` alone does not tell the UI where its API is (it would call
    127.0.0.1:4200 whatever the port): ``PREFECT_UI_API_URL`` does. Analytics
    off on the server (``--analytics-off``) and in the UI it serves
    (``PREFECT_SERVER_ANALYTICS_ENABLED``).
    """
    env = os.environ.copy()
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_UI_API_URL"] = f"http://127.0.0.1:{port}/api"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    # No "Upgrade" banners in a local UI. (The V2 UI, Prefect's default, still starts
    # its analytics client on every page load whatever the analytics setting says;
    # the V1 UI has none but lists no task runs on this Prefect version. README says so.)
    env.setdefault("PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT", "false")
    return env


def stop_process_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the group ``proc`` leads (it was started in a new session), then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # children of the leader (uvicorn workers) can outlive it
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def local_prefect_server(
    port: int | None = None, *, timeout: float = 90.0, log_path: str | os.PathLike | None = None,
    set_env: bool = True,
) -> Iterator[str]:
    """Start ``prefect server start`` on 127.0.0.1, yield its API URL, stop it after.

    Telemetry is off and its SQLite database lives in ``PREFECT_HOME``. While
    it runs, ``PREFECT_API_URL`` points at it (inherited by Dask workers
    started from this process), and an already imported prefect is made to
    see it (:func:`refresh_prefect_settings`). The server runs under
    :func:`watch` in a process group of its own, stopped as a whole on exit;
    :func:`terminate_on_sigterm` turns SIGTERM into a normal exit so that this
    happens when the caller is terminated too, and the watchdog stops it when
    the caller dies without an exit (SIGKILL).
    """
    configure_environment()
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    log_file = Path(log_path) if log_path else Path(os.environ["PREFECT_HOME"]) / f"server-{port}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    # The server runs under a watchdog in a session of its own (a Ctrl-C on the
    # terminal reaches only this process, which then stops it in order). The
    # watchdog reads a pipe whose only writer is this process: when this process
    # dies, by any signal, the pipe reaches EOF and the watchdog stops the server.
    alive_r, alive_w = os.pipe()
    try:
        with open(log_file, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "flows.runtime", "watch", prefect_executable(), "server", "start",
                 "--host", "127.0.0.1", "--port", str(port), "--analytics-off", "--log-level", "WARNING"],
                stdout=log, stderr=subprocess.STDOUT, stdin=alive_r, env=server_environment(port),
                start_new_session=True,
            )
    except BaseException:
        os.close(alive_w)
        raise
    finally:
        os.close(alive_r)
    previous = os.environ.get("PREFECT_API_URL")
    try:
        wait_healthy(api_url, timeout, proc)
        if set_env:
            os.environ["PREFECT_API_URL"] = api_url
            refresh_prefect_settings()
        yield api_url
    finally:
        if set_env:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous
            refresh_prefect_settings()
        drain_prefect_services()
        stop_process_group(proc)
        os.close(alive_w)


def drain_prefect_services(timeout: float = 10.0) -> None:
    """Send what this process's Prefect still queues (logs, events) while its server is up.

    Prefect sends logs and events from background workers; stopping the server
    before they drain made every finished `pointscale run` print "Error logging
    to API: All connection attempts failed" and lost its last log lines in the UI.
    Nothing to do when prefect is not imported here. Bounded by ``timeout`` per kind.
    """
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        service.drain_all(timeout=timeout)


def refresh_prefect_settings() -> None:
    """Make an already imported prefect read its settings from the environment again.

    Prefect builds its global settings when first imported; without this, a
    prefect imported before ``PREFECT_API_URL`` was set keeps seeing no API.
    Nothing to do when prefect is not imported yet (it will read the environment).
    """
    context = sys.modules.get("prefect.context")
    if context is not None:
        context.refresh_global_settings_context()


def watch(argv: list[str], grace: float = 15.0) -> int:
    """Run ``argv`` as a child until it exits, or until standard input reaches EOF.

    EOF means the process that started us (the only writer of the pipe on our
    standard input) has died: the child gets SIGTERM, ``grace`` seconds, then
    this whole process group (the child's own children included) gets SIGKILL.
    SIGTERM to this process is passed on to the child.
    """
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin = sys.stdin.fileno()
    while child.poll() is None:
        try:
            ready, _, _ = select.select([stdin], [], [], 0.5)
        except InterruptedError:
            continue
        if ready and not os.read(stdin, 4096):
            child.terminate()
            try:
                child.wait(timeout=grace)
            finally:
                os.killpg(os.getpgrp(), signal.SIGKILL)
    return int(child.returncode)


def terminate_on_sigterm() -> None:
    """Make SIGTERM raise ``SystemExit`` in the main thread, so ``finally`` blocks (servers) run."""

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "watch":
        sys.exit(watch(sys.argv[2:]))
    sys.exit("usage: python -m flows.runtime watch COMMAND [ARG ...]")
