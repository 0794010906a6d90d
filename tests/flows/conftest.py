"""Real components for the flow tests: the Prefect server, served deployments, a Dask cluster.

* ``prefect_server``: the session's real ``prefect server start`` on a free
  loopback port (``prefect_api`` in ``tests/conftest.py``: temporary
  ``PREFECT_HOME``, ``PREFECT_API_URL`` exported for subprocesses), also made
  the API of this process's Prefect client even when prefect was imported
  (and its settings read) before the server started.
* :func:`background` starts a command in its own process group with a log
  file and kills the whole group (flow runs, Dask workers) at the end.
* :func:`dask_cluster` starts ``dask scheduler`` and ``dask worker``
  processes on 127.0.0.1 and waits, bounded, until every worker registered.
* :func:`wait_for` polls a condition with a deadline and says what it waited for.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest

from flows.runtime import stop_process_group
from tests.conftest import REPO


@pytest.fixture(scope="session")
def prefect_server(prefect_api: str) -> Iterator[str]:
    """The session's Prefect API URL, for subprocesses (environment) and this process (settings)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    assert os.environ.get("PREFECT_API_URL") == prefect_api
    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        yield prefect_api


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 1.0,
             on_timeout: Callable[[], str] | None = None) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{detail}")
        time.sleep(interval)


def tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return f"({path} unreadable)"


@contextmanager
def background(args: Sequence[str], log: Path, *, env: dict[str, str] | None = None,
               cwd: str | Path = REPO) -> Iterator[subprocess.Popen]:
    """Run ``args`` in a new session (own process group), output to ``log``; kill the group after."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(list(args), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(os.environ, **(env or {})), cwd=str(cwd), start_new_session=True)
    try:
        yield proc
    finally:
        stop_process_group(proc, grace=15.0)


def pointscale_args(*args: str) -> list[str]:
    """The CLI of this checkout, run with this interpreter."""
    return [sys.executable, "-m", "flows.cli", *args]


def dask_executable() -> str:
    candidate = Path(sys.executable).with_name("dask")
    return str(candidate) if candidate.exists() else "dask"


@contextmanager
def dask_cluster(logs: Path, *, n_workers: int = 2, timeout: float = 90.0) -> Iterator[dict[str, Any]]:
    """A real ``dask scheduler`` and ``n_workers`` ``dask worker`` processes on 127.0.0.1.

    Workers run one thread each without nanny or dashboard and inherit this
    environment (``PREFECT_API_URL`` included: Prefect's task engine runs on
    them). Yields ``{"address", "scheduler", "workers"}``; everything is
    stopped afterwards.
    """
    from distributed import Client

    from flows.runtime import free_port

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    with ExitStack() as stack:
        scheduler = stack.enter_context(background(
            [dask_executable(), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            logs / "scheduler.log"))
        workers = [
            stack.enter_context(background(
                [dask_executable(), "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                 "--host", "127.0.0.1", "--name", f"w{i}"], logs / f"worker-{i}.log"))
            for i in range(n_workers)
        ]
        with Client(address, timeout=timeout) as client:
            client.wait_for_workers(n_workers, timeout=timeout)
        yield {"address": address, "scheduler": scheduler, "workers": workers}


def own_files(tmp_path: Path, n: int = 150):
    """A user's training file and clean validation file with ids: ``train.csv``, ``valid.csv``."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)

    def frame(rows: int, prefix: str):
        x = rng.normal(size=(rows, 3))
        return pd.DataFrame({"row_id": [f"{prefix}{i}" for i in range(rows)], "a": x[:, 0], "b": x[:, 1],
                             "c": x[:, 2], "label": np.where(x[:, 0] + x[:, 1] > 0, "p", "q")})

    train, valid = frame(n, "t"), frame(60, "v")
    train.to_csv(tmp_path / "train.csv", index=False)
    valid.to_csv(tmp_path / "valid.csv", index=False)
    return train, valid
