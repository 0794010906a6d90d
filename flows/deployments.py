"""The deployments ``pointscale serve`` registers and serves.

Three deployments, served by one process against the Prefect server in
``PREFECT_API_URL`` (``deployments/prefect.yaml`` describes the same three
for ``prefect deploy`` with a process work pool):

* ``pointscale-pipeline/scheduled``: the whole pipeline on a cron schedule
  (UTC), into ``<runs_dir>/<dataset name>``. Every stage is cached on
  content, so a scheduled run on unchanged data does almost nothing.
* ``pointscale-watch/watch``: the data watcher (:func:`flows.watch.watch_flow`)
  on an interval; at most one runs at a time (a run due while one is still
  running is cancelled, the next interval catches up).
* ``pointscale-on-new-data/on-new-data``: no schedule; a
  ``DeploymentEventTrigger`` on ``pointscale.dataset.updated`` runs it with the
  event's ``name``, ``path`` and ``fingerprint`` as parameters, and the
  serve options (samples per point, workers, ...) as its default parameters.

Entrypoints are module paths (``flows.watch.on_new_data_flow``), so the
served runs work from any working folder where pointscale is installed.
"""

from __future__ import annotations

import os
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional, Union

from pointscale.errors import ConfigError

from .watch import DATASET_EVENT, RESOURCE_PREFIX, dataset_name

PIPELINE_DEPLOYMENT = "pointscale-pipeline/scheduled"
WATCH_DEPLOYMENT = "pointscale-watch/watch"
ON_NEW_DATA_DEPLOYMENT = "pointscale-on-new-data/on-new-data"
TRIGGER_NAME = "pointscale: value new or changed datasets"
TAGS = ["pointscale"]

#: What the trigger passes to the on-new-data flow (Jinja over the triggering event).
TRIGGER_PARAMETERS = {
    "name": "{{ event.payload.name }}",
    "path": "{{ event.payload.path }}",
    "fingerprint": "{{ event.payload.fingerprint }}",
}


class ServerNotConfigured(ConfigError):
    """``PREFECT_API_URL`` is unset or the server does not answer."""


def require_api_url(timeout: float = 10.0) -> str:
    """The server URL from ``PREFECT_API_URL``, checked to answer ``/health``.

    Served deployments need a real server: with Prefect's ephemeral API every
    served run (and every Dask worker) would start a server of its own.
    """
    url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    hint = ("start one with `pointscale server` (or `make ui`) and export the PREFECT_API_URL it prints, "
            "e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api")
    if not url:
        raise ServerNotConfigured(f"PREFECT_API_URL is not set; `pointscale serve` needs a Prefect server: {hint}")
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            if resp.status != 200:
                raise OSError(f"status {resp.status}")
    except Exception as exc:  # refused, timeout, DNS, HTTP error
        raise ServerNotConfigured(f"no Prefect server answers at PREFECT_API_URL={url} ({exc}); {hint}") from None
    return url


def _pipeline_options(*, id_column: Optional[str], points: Union[int, str], samples_per_point: int,
                      k_min: Optional[int], k_max: Optional[int], seed: int, workers: Optional[int],
                      dask_address: Optional[str], amortized: bool, removal: bool) -> dict[str, Any]:
    return {"id_column": id_column, "points": points, "samples_per_point": samples_per_point,
            "k_min": k_min, "k_max": k_max, "seed": seed, "workers": workers, "dask_address": dask_address,
            "amortized": amortized, "removal": removal}


def build_deployments(
    data_dir: str | os.PathLike,
    *,
    watch_interval: float = 60.0,
    cron: str = "0 3 * * *",
    runs_dir: str | os.PathLike = "runs",
    target: Optional[str] = None,
    dataset: str = "breast_cancer",
    id_column: Optional[str] = None,
    points: Union[int, str] = "all",
    samples_per_point: int = 100,
    k_min: Optional[int] = None,
    k_max: Optional[int] = None,
    seed: int = 0,
    workers: Optional[int] = None,
    dask_address: Optional[str] = None,
    amortized: bool = True,
    removal: bool = True,
    min_age_seconds: float = 1.0,
) -> list:
    """The three ``RunnerDeployment`` objects (not yet registered).

    Raises
    ------
    ConfigError
        For a missing data folder, a missing ``target`` or a non-positive interval.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.events import DeploymentEventTrigger

    from pointscale.data import BUILTIN_DATASETS, OPTIONAL_DATASETS

    from .pipeline import pipeline_flow
    from .watch import on_new_data_flow, watch_flow

    data_dir = Path(data_dir).resolve()
    runs_dir = Path(runs_dir).resolve()
    if not data_dir.is_dir():
        raise ConfigError(f"--data-dir {data_dir} is not a folder; create it or point at the folder to watch")
    if not target:
        raise ConfigError("--target is required: the column to predict in the files dropped into --data-dir")
    if not watch_interval or watch_interval <= 0:
        raise ConfigError(f"--watch-interval {watch_interval} must be a positive number of seconds")
    options = _pipeline_options(id_column=id_column, points=points, samples_per_point=samples_per_point,
                                k_min=k_min, k_max=k_max, seed=seed, workers=workers,
                                dask_address=dask_address, amortized=amortized, removal=removal)
    module = EntrypointType.MODULE_PATH

    builtin = dataset in BUILTIN_DATASETS or dataset in OPTIONAL_DATASETS
    scheduled_name = dataset_name(dataset if builtin else Path(dataset).stem)
    pipeline = pipeline_flow.to_deployment(
        name=PIPELINE_DEPLOYMENT.split("/")[1], cron=cron, tags=TAGS, entrypoint_type=module,
        description=f"The whole pipeline on {dataset} on the schedule {cron!r} (UTC)",
        parameters={**options, "dataset": dataset if builtin else str(Path(dataset).resolve()),
                    # A built-in dataset knows its target and has no id column of the watched files.
                    "target": None if builtin else target, "id_column": None if builtin else id_column,
                    "out": str(runs_dir / scheduled_name), "wait_for_lock": True},
    )
    watch = watch_flow.to_deployment(
        name=WATCH_DEPLOYMENT.split("/")[1], interval=timedelta(seconds=float(watch_interval)), tags=TAGS,
        entrypoint_type=module,
        description=f"Scan {data_dir} every {watch_interval:g} s; emit {DATASET_EVENT} for new or changed data",
        parameters={"data_dir": str(data_dir), "runs_dir": str(runs_dir), "min_age_seconds": min_age_seconds},
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
    )
    trigger = DeploymentEventTrigger(
        name=TRIGGER_NAME,
        description=f"Run {ON_NEW_DATA_DEPLOYMENT} for every {DATASET_EVENT} event",
        expect={DATASET_EVENT},
        match={"prefect.resource.id": f"{RESOURCE_PREFIX}*"},
        parameters=dict(TRIGGER_PARAMETERS),
    )
    on_new_data = on_new_data_flow.to_deployment(
        name=ON_NEW_DATA_DEPLOYMENT.split("/")[1], triggers=[trigger], tags=TAGS, entrypoint_type=module,
        description=f"Value datasets from {data_dir} (triggered by {DATASET_EVENT}); runs in {runs_dir}/<name>",
        # The trigger fills name/path/fingerprint; these defaults carry the serve options.
        parameters={"runs_dir": str(runs_dir), "target": target, **options},
    )
    return [pipeline, watch, on_new_data]


def serve_all(
    data_dir: str | os.PathLike,
    watch_interval: float = 60.0,
    cron: str = "0 3 * * *",
    runs_dir: str | os.PathLike = "runs",
    target: Optional[str] = None,
    dataset: str = "breast_cancer",
    *,
    limit: Optional[int] = None,
    poll_seconds: Optional[float] = None,
    **options: Any,
) -> None:
    """Register the three deployments and serve them until interrupted.

    Parameters
    ----------
    data_dir : path
        Folder the watcher scans.
    watch_interval : float, default=60
        Seconds between scans.
    cron : str, default="0 3 * * *"
        Schedule of the pipeline deployment (UTC).
    runs_dir : path, default="runs"
        Run folders ``<runs_dir>/<dataset name>`` and the watcher's state.
    target : str
        Target column of the watched files (required).
    dataset : str, default="breast_cancer"
        Dataset of the scheduled pipeline run.
    limit : int, optional
        Flow runs this process runs at once (default: Prefect's runner limit).
    poll_seconds : float, optional
        How often to ask the server for due runs; default
        ``min(10, watch_interval)``, so a triggered run starts within seconds.
    **options
        Pipeline settings for every run: ``id_column``, ``points``,
        ``samples_per_point``, ``k_min``, ``k_max``, ``seed``, ``workers``,
        ``dask_address``, ``amortized``, ``removal``, and the watcher's
        ``min_age_seconds``.

    Raises
    ------
    ConfigError
        ``PREFECT_API_URL`` unset or not answering (:class:`ServerNotConfigured`),
        or a bad option.
    """
    require_api_url()
    deployments = build_deployments(data_dir, watch_interval=watch_interval, cron=cron, runs_dir=runs_dir,
                                    target=target, dataset=dataset, **options)
    from prefect import serve

    poll = poll_seconds if poll_seconds is not None else max(1.0, min(10.0, float(watch_interval)))
    kwargs: dict[str, Any] = {"query_seconds": poll}
    if limit is not None:
        kwargs["limit"] = limit
    serve(*deployments, **kwargs)
