"""A local S3-compatible server (moto's standalone server) for tests and benchmarks.

:func:`local_s3_server` starts ``moto_server`` on 127.0.0.1, exports
``AWS_ENDPOINT_URL`` and made-up credentials in ``os.environ`` (so this
process and its children -- the CLI, Dask workers -- reach it through the
standard AWS variables, as they would a real S3), and stops it by its
process id afterwards. Its buckets live in the server's memory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

#: Made-up credentials of the local server (tests grep run folders and logs for the secret).
KEY_ID = "pointscale-test-key-id"
SECRET = "pointscale-test-secret-7f3a9c1e5b"
_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def moto_executable() -> str | None:
    candidate = Path(sys.executable).with_name("moto_server")
    return str(candidate) if candidate.exists() else shutil.which("moto_server")


@contextmanager
def local_s3_server(timeout: float = 60.0) -> Iterator[str]:
    """Start ``moto_server`` on a free loopback port; yield its endpoint URL; stop it after."""
    from flows.runtime import free_port

    exe = moto_executable()
    if exe is None:
        raise RuntimeError("moto's S3 server is not installed: pip install 'moto[server]'")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.mkdtemp(prefix="pointscale-moto-")) / "moto.log"
    saved = {k: os.environ.get(k) for k in _VARIABLES}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except Exception:  # noqa: BLE001 -- not listening yet
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {endpoint} (log: {log_path})") from None
                time.sleep(0.2)
        os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET,
                          AWS_DEFAULT_REGION="us-east-1")
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def make_bucket(name: str) -> str:
    """Create bucket ``name`` on the server in ``AWS_ENDPOINT_URL``; its ``s3://`` URL."""
    import s3fs

    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(name)
    return f"s3://{name}"
