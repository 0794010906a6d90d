"""Shared test setup: keep Prefect's home, database and results in a temporary
folder, telemetry off, before anything imports prefect."""

from __future__ import annotations

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="pointscale-prefect-home-")
os.environ.setdefault("PREFECT_HOME", _HOME)
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MPLBACKEND", "Agg")
