"""The deployments ``pointscale serve`` registers and serves.

Three deployments, served by one process against the Prefect server in
``PREFECT_API_URL`` (``deployments/prefect.yaml`` describes the same three
for ``prefect deploy`` with a process work pool):

* ``pointscale-pipeline/scheduled``: the whole pipeline on a cron schedule
  (UTC), into ``<runs_dir>/<dataset name>``. Every stage is cached on
  content, so a scheduled run on unchanged data does almost nothing.
* ``pointscale-watch/watch``: the data watcher (:func:`flows.watch.watch_flow`).
  One flow run scans every ``watch_interval`` seconds for
  ``watch_run_seconds`` (an hour by default) and logs one line per change, so
  the run list shows one watch run per hour, not one per scan; the first
  starts when ``serve`` starts. At most one runs at a time.
* ``pointscale-on-new-data/on-new-data``: no schedule; a
  ``DeploymentEventTrigger`` on ``pointscale.dataset.updated`` runs it with the
  event's ``name``, ``path`` and ``fingerprint`` as parameters, and the
  serve's pipeline options (every option of ``pointscale run``) as its
  default ``options``.

Entrypoints are module paths (``flows.watch.on_new_data_flow``), so the
served runs work from any working folder where pointscale is installed.
"""

from __future__ import annotations

import os
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

from pointscale.errors import ConfigError

from .options import PipelineOptions, ServeOptions
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


def _scheduled_options(options: PipelineOptions) -> PipelineOptions:
    """The scheduled run's options: a built-in dataset knows its target and has no id column."""
    from pointscale.data import BUILTIN_DATASETS, OPTIONAL_DATASETS

    if options.dataset in BUILTIN_DATASETS or options.dataset in OPTIONAL_DATASETS:
        return options.model_copy(update={"target": None, "id_column": None})
    return options.model_copy(update={"dataset": str(Path(options.dataset).resolve())})


def _scheduled_name(options: PipelineOptions) -> str:
    from pointscale.data import BUILTIN_DATASETS, OPTIONAL_DATASETS

    builtin = options.dataset in BUILTIN_DATASETS or options.dataset in OPTIONAL_DATASETS
    return dataset_name(options.dataset if builtin else Path(options.dataset).stem)


def _watch_parameters(serve: ServeOptions, data_dir: str, runs_dir: str) -> dict[str, Any]:
    return {"data_dir": data_dir, "runs_dir": runs_dir, "min_age_seconds": serve.min_age_seconds,
            "poll_seconds": serve.watch_interval, "run_seconds": serve.watch_run_seconds}


def build_deployments(serve: ServeOptions, options: PipelineOptions = PipelineOptions()) -> list:
    """The three ``RunnerDeployment`` objects (not yet registered).

    Parameters
    ----------
    serve : ServeOptions
        The watched folder, the schedule, the run folders.
    options : PipelineOptions
        Settings of every pipeline run: the scheduled one (on
        ``options.dataset``) and the triggered ones (on the dropped files,
        whose target column is ``options.target``).

    Raises
    ------
    ConfigError
        For a missing data folder or a missing ``target``.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.events import DeploymentEventTrigger
    from prefect.schedules import Interval

    from .pipeline import pipeline_flow
    from .watch import on_new_data_flow, watch_flow

    data_dir = Path(serve.data_dir).resolve()
    runs_dir = Path(serve.runs_dir).resolve()
    if not data_dir.is_dir():
        raise ConfigError(f"--data-dir {data_dir} is not a folder; create it or point at the folder to watch")
    if not options.target:
        raise ConfigError("--target is required: the column to predict in the files dropped into --data-dir")
    module = EntrypointType.MODULE_PATH

    scheduled = _scheduled_options(options)
    pipeline = pipeline_flow.to_deployment(
        name=PIPELINE_DEPLOYMENT.split("/")[1], cron=serve.cron, tags=TAGS, entrypoint_type=module,
        description=f"The whole pipeline on {options.dataset} on the schedule {serve.cron!r} (UTC)",
        parameters={"options": scheduled.model_dump(mode="json"),
                    "out": str(runs_dir / _scheduled_name(options)), "wait_for_lock": True},
    )
    # One long watch run per period. `serve_all` starts the first at once; the schedule
    # takes over when it ends (an anchor "now" would depend on when the server's
    # scheduler next looks: just missed, the first scheduled run is a period away).
    start = datetime.now(timezone.utc) + timedelta(seconds=serve.watch_run_seconds)
    watch = watch_flow.to_deployment(
        name=WATCH_DEPLOYMENT.split("/")[1], tags=TAGS, entrypoint_type=module,
        schedules=[Interval(timedelta(seconds=serve.watch_run_seconds), anchor_date=start)],
        description=f"Scan {data_dir} every {serve.watch_interval:g} s; emit {DATASET_EVENT} for new or changed data",
        parameters=_watch_parameters(serve, str(data_dir), str(runs_dir)),
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
        # The trigger fills name/path/fingerprint; the options carry every serve setting.
        parameters={"runs_dir": str(runs_dir), "options": options.model_dump(mode="json")},
    )
    return [pipeline, watch, on_new_data]


def serve_all(serve: ServeOptions, options: PipelineOptions = PipelineOptions(), *,
              poll_seconds: Optional[float] = None) -> None:
    """Register the three deployments and serve them until interrupted.

    Parameters
    ----------
    serve : ServeOptions
        Watched folder, interval, schedule, run folders, runner limit.
    options : PipelineOptions
        Settings of every pipeline run (the same options as ``pointscale run``).
    poll_seconds : float, optional
        How often to ask the server for due runs; default
        ``min(10, watch_interval)``, so a triggered run starts within seconds.

    Raises
    ------
    ConfigError
        ``PREFECT_API_URL`` unset or not answering (:class:`ServerNotConfigured`),
        or a bad option.
    """
    require_api_url()
    deployments = build_deployments(serve, options)
    import asyncio

    from prefect import get_client
    from prefect.runner import Runner

    poll = poll_seconds if poll_seconds is not None else max(1.0, min(10.0, float(serve.watch_interval)))
    kwargs: dict[str, Any] = {"query_seconds": poll}
    if serve.limit is not None:
        kwargs["limit"] = serve.limit
    # prefect.serve(), plus the first watch run started now rather than a period from now.
    runner = Runner(**kwargs)
    ids = {f"{d.flow_name}/{d.name}": runner.add_deployment(d) for d in deployments}
    with get_client(sync_client=True) as client:
        client.create_flow_run_from_deployment(ids[WATCH_DEPLOYMENT])
    print("Your deployments are being served:", ", ".join(ids), flush=True)
    try:
        asyncio.run(runner.start())
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------- deployments/prefect.yaml

PREFECT_YAML = Path(__file__).resolve().parents[1] / "deployments" / "prefect.yaml"

_YAML_HEADER = """\
# GENERATED from flows/options.py and flows/deployments.py: edit those, then run
#   python -m flows.deployments --write
# (a test checks this file matches).
#
# The same three deployments `pointscale serve` runs, for `prefect deploy` and a
# process work pool. From the repository root, with PREFECT_API_URL exported
# (`pointscale server` or `make ui` prints it):
#
#   prefect work-pool create pointscale-local --type process
#   prefect deploy --all --prefect-file deployments/prefect.yaml
#   prefect worker start --pool pointscale-local
#
# Set the watched folder, run folders and target column below (or override
# them per run in the UI, where `options` is a form). Relative paths are
# relative to the folder you deploy from: the pull step makes every run start
# there. Schedules are UTC.
#
# scheduled:   the whole pipeline every night at 03:00 UTC (cached on content:
#              unchanged data costs almost nothing).
# watch:       scans data/incoming every minute and emits pointscale.dataset.updated
#              for each new or changed dataset; one flow run scans for an hour (one
#              run per hour in the run list, a log line per change). The first
#              scheduled run starts an hour after `prefect deploy`; start one now with
#              `prefect deployment run pointscale-watch/watch`.
# on-new-data: runs for every pointscale.dataset.updated event: the whole pipeline the
#              first time a dataset is seen, an incremental revaluation after that.
#
# Entrypoints are module paths (flows.watch.watch_flow), not file paths
# (flows/watch.py:watch_flow): a flow loaded from a file path is imported as a
# top-level module ("watch"), and Dask workers cannot unpickle what it sends them.
"""


def prefect_yaml_document(serve: ServeOptions | None = None,
                          options: PipelineOptions | None = None) -> dict[str, Any]:
    """``deployments/prefect.yaml`` as data: the same deployments as :func:`build_deployments`.

    Defaults: data folder ``data/incoming``, run folders ``runs``, target
    column ``label``, every other option at its default.
    """
    serve = serve or ServeOptions(data_dir="data/incoming")
    options = options or PipelineOptions(target="label")
    pool = {"name": "pointscale-local", "work_queue_name": "default"}
    scheduled = _scheduled_options(options)
    return {
        "name": "pointscale",
        "build": None,
        "push": None,
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $PWD }}"}}],
        "deployments": [
            {"name": PIPELINE_DEPLOYMENT.split("/")[1], "entrypoint": "flows.pipeline.pipeline_flow",
             "description": "The whole pipeline on a schedule", "tags": TAGS, "work_pool": pool,
             "schedules": [{"cron": serve.cron, "timezone": "UTC"}],
             "parameters": {"options": scheduled.model_dump(mode="json"),
                            "out": f"{serve.runs_dir}/{_scheduled_name(options)}", "wait_for_lock": True}},
            {"name": WATCH_DEPLOYMENT.split("/")[1], "entrypoint": "flows.watch.watch_flow",
             "description": f"Scan the data folder; emit {DATASET_EVENT} for new or changed datasets",
             "tags": TAGS, "work_pool": pool,
             "concurrency_limit": {"limit": 1, "collision_strategy": "CANCEL_NEW"},
             "schedules": [{"interval": serve.watch_run_seconds}],
             "parameters": _watch_parameters(serve, serve.data_dir, serve.runs_dir)},
            {"name": ON_NEW_DATA_DEPLOYMENT.split("/")[1], "entrypoint": "flows.watch.on_new_data_flow",
             "description": f"Value a new or changed dataset (triggered by {DATASET_EVENT})",
             "tags": TAGS, "work_pool": pool,
             "parameters": {"runs_dir": serve.runs_dir, "options": options.model_dump(mode="json")},
             "triggers": [{"type": "event", "name": TRIGGER_NAME, "enabled": True,
                           "match": {"prefect.resource.id": f"{RESOURCE_PREFIX}*"},
                           "expect": [DATASET_EVENT], "parameters": dict(TRIGGER_PARAMETERS)}]},
        ],
    }


def render_prefect_yaml() -> str:
    """The text of ``deployments/prefect.yaml``."""
    import yaml

    class NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # repeat shared values instead of &id001 anchors
            return True

    return _YAML_HEADER + "\n" + yaml.dump(prefect_yaml_document(), Dumper=NoAliases, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m flows.deployments",
                                     description="Print (or --write) deployments/prefect.yaml")
    parser.add_argument("--write", action="store_true", help=f"write {PREFECT_YAML}")
    args = parser.parse_args(argv)
    text = render_prefect_yaml()
    if args.write:
        from pointscale.io import atomic_write_text

        atomic_write_text(PREFECT_YAML, text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
