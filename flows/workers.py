"""What Dask workers need from the flow, handed to them on connect.

Workers started by someone else (``dask worker ADDRESS`` on a cluster, a
Kubernetes pod, a batch job) know nothing of this run's Prefect server. Each
shard runs Prefect's task engine on a worker, and a task engine without an
API URL starts a temporary Prefect server of its own (which, under load,
misses its start-up deadline: issue 26). :class:`PrefectWorkerSettings` is a
Dask worker plugin that the flow registers on every worker (those that join
later too) when it connects: it sets the flow's Prefect API URL and settings
in the worker's environment, and turns temporary servers off there.

Paths of the flow's machine (``PREFECT_HOME``, a logging file) are not
handed over: a worker has its own disk. The run's storage options (an
endpoint, a region: never credentials, which each worker takes from its own
environment or profile) go over the same way (:class:`StorageSettings`).
"""

from __future__ import annotations

import os
import sys
from typing import Mapping

from distributed.diagnostics.plugin import WorkerPlugin

from pointscale.storage import set_storage_options, storage_options

PLUGIN_NAME = "pointscale-prefect-settings"
STORAGE_PLUGIN_NAME = "pointscale-storage-options"
#: Settings that name files on the flow's machine: meaningless on a worker.
_LOCAL_ONLY = ("PREFECT_HOME", "PREFECT_LOGGING_SETTINGS_PATH", "PREFECT_LOCAL_STORAGE_PATH",
               "PREFECT_PROFILES_PATH", "PREFECT_DEBUG_MODE")


def worker_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The flow's Prefect settings a worker needs (API URL and key, logging level, telemetry off)."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if k.startswith("PREFECT_") and k not in _LOCAL_ONLY}
    env["PREFECT_SERVER_EPHEMERAL_ENABLED"] = "false"
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env["DO_NOT_TRACK"] = environ.get("DO_NOT_TRACK", "1")
    return env


class PrefectWorkerSettings(WorkerPlugin):
    """Set the flow's Prefect settings in a worker's environment (and in a prefect it imported already)."""

    name = PLUGIN_NAME

    def __init__(self, environment: Mapping[str, str]):
        self.environment = dict(environment)

    def __repr__(self) -> str:  # the values may hold an API key: never show them
        return f"PrefectWorkerSettings({sorted(self.environment)})"

    def setup(self, worker) -> None:  # noqa: ARG002 - the plugin interface
        os.environ.update(self.environment)
        context = sys.modules.get("prefect.context")
        if context is not None:  # prefect read its settings when imported: read them again
            context.refresh_global_settings_context()


class StorageSettings(WorkerPlugin):
    """Set the flow's storage options (:func:`pointscale.storage.set_storage_options`; never credentials)."""

    name = STORAGE_PLUGIN_NAME

    def __init__(self, options: Mapping[str, object]):
        self.options = dict(options)

    def setup(self, worker) -> None:  # noqa: ARG002 - the plugin interface
        set_storage_options(self.options)


def register_worker_settings(client) -> None:
    """Register this process's Prefect settings and storage options on every worker of ``client``."""
    client.register_plugin(PrefectWorkerSettings(worker_environment()), name=PLUGIN_NAME)
    client.register_plugin(StorageSettings(storage_options()), name=STORAGE_PLUGIN_NAME)
