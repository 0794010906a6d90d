"""Shared test setup: keep Prefect's home, database and results in a temporary
folder, telemetry off, before anything imports prefect."""

from __future__ import annotations

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="pointscale-prefect-home-")
os.environ.setdefault("PREFECT_HOME", _HOME)
# Under pytest-xdist (`make test` runs two workers) every worker starts its own server and S3 server:
# each gets its own home, hence its own SQLite database, below the one given.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["PREFECT_HOME"] = os.path.join(os.environ["PREFECT_HOME"], os.environ["PYTEST_XDIST_WORKER"])
    os.makedirs(os.environ["PREFECT_HOME"], exist_ok=True)
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MPLBACKEND", "Agg")
# Run logs to the API at INFO, not to the console (as every pointscale process does).
os.environ.setdefault("PREFECT_LOGGING_SETTINGS_PATH",
                      os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "flows", "logging.yml"))


import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` (real servers, clusters, whole runs) first, otherwise in collection order.

    `make test`'s pytest-xdist workers take the files in this order as they finish one: long files
    first, the many short ones last, so the workers end together instead of one finishing a long run alone.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def prefect_api():
    """A real ``prefect server start`` on a free loopback port for the whole session.

    Sets ``PREFECT_API_URL`` in ``os.environ`` so subprocesses (the CLI, served
    deployments, Dask workers) use it; stopped at the end of the session.
    """
    from flows.runtime import local_prefect_server

    with local_prefect_server(timeout=120) as url:
        yield url


def run_cli(*args: str, env: dict | None = None, timeout: float = 300, cwd: str | Path | None = None,
            check: bool = False, unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``pointscale ARGS`` in a subprocess with this environment (bounded time), less ``unset``."""
    full_env = {k: v for k, v in os.environ.items() if k not in unset}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd or REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"pointscale {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


# ----------------------------------------------------------------------------- object storage
from benchmarks.s3server import KEY_ID as S3_KEY_ID, SECRET as S3_SECRET  # noqa: E402,F401


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible HTTP server (moto's standalone server) on a free loopback port.

    Exports ``AWS_ENDPOINT_URL`` and the test credentials for this process and
    its children (CLI runs, Dask workers); stopped by its process id at the
    end. Skipped where moto's server is not installed (``pip install -e '.[test]'`` installs it).
    """
    from benchmarks.s3server import local_s3_server, moto_executable

    if moto_executable() is None:
        pytest.skip("moto's S3 server is not installed (pip install 'moto[server]')")
    with local_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket on the test S3 server; yields its ``s3://`` URL."""
    import re
    import uuid

    from benchmarks.s3server import make_bucket

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    yield make_bucket(name)
