"""The pipeline flow: ingest -> sample -> fit laws -> choose laws -> value -> select -> removal -> report.

The laws are fitted by maximum likelihood (task ``fit-mle-laws``) and, unless
switched off, by the amortized estimator (``fit-amortized``); ``choose-laws``
picks the laws the values come from by held-out likelihood.

Every stage is a task (or, for sampling, a subflow on Dask) that takes the
results of the stages before it (so it reads exactly what they wrote, and the
run graph draws the true order) and reruns only when its inputs, its settings
or the code changed (:mod:`tasks._cache`); a rerun after a crash resumes from
the ledger. ``run.json`` records which outputs are current (``outputs``).
``revalue`` runs the same stages on a new dataset version that extends the one
a run folder already holds, sampling only what is missing; its logic is
:mod:`pointscale.revaluation`.
"""

from __future__ import annotations

import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from prefect import flow, get_run_logger
from prefect.utilities.annotations import quote

from pointscale import pipeline, revaluation
from pointscale.data import DataConfig
from pointscale.runs import RunFolder, package_versions
from pointscale.storage import is_url, set_storage_options
from tasks import ingest as ingest_tasks
from tasks import laws as law_tasks
from tasks import valuation as value_tasks
from tasks.partitions import TaskPool, use_pool
from tasks._cache import code_version

from .options import ExecutionOptions, PipelineOptions
from .progress import RunProgress, claim_run_folder, log_line, reporter
from .sampling import check_dask_address, dask_cluster, dask_task_runner, describe_cluster, sample_stage


def _label(dataset: str) -> str:
    """A short dataset name for run names: a built-in name, or a file's or folder's stem."""
    from pathlib import PurePath

    return PurePath(str(dataset).rstrip("/")).stem or str(dataset)


def _pipeline_run_name() -> str:
    """``<dataset>-<model>-<samples>spp[-<points>pts]``: what a person looks for in the run list."""
    from prefect.runtime import flow_run

    options = flow_run.parameters.get("options") or {}
    if not isinstance(options, dict):
        options = options.model_dump()
    return _name(options, options.get("model") or "auto")


def _name(options: dict[str, Any], model: str) -> str:
    name = f"{_label(options.get('dataset', 'breast_cancer'))}-{model}-{options.get('samples_per_point', 100)}spp"
    if options.get("points", "all") != "all":
        name += f"-{_label(str(options['points']))}pts"
    return name


def _name_the_model(options: PipelineOptions, model: str) -> None:
    """A run started with the task's default model is renamed once the model is known."""
    if options.model:
        return
    from prefect import get_client
    from prefect.runtime import flow_run

    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, name=_name(options.model_dump(), model))
    except Exception as exc:  # a name is not worth failing a run for
        get_run_logger().debug("could not rename the run: %s", exc)


def _revalue_run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters
    return f"revalue-{_label(params.get('run_dir', 'run'))}-with-{_label(params.get('source', 'data'))}"


def _stage_done(run: RunFolder, name: str, timings: dict[str, float], started: float) -> None:
    timings[name] = round(time.perf_counter() - started, 3)
    run.update_manifest(timings={name: timings[name]}, stage=name)


def _run_stages(run: RunFolder, ds_info: dict[str, Any], sampling: dict[str, Any], options: PipelineOptions,
                progress: RunProgress, address: str, *, timings: dict[str, float]) -> dict[str, Any]:
    """Sampling and every stage after it on the run's cluster at ``address``, each given what the stages before it produced."""
    root = run.location()  # a URL for a run folder on object storage: tasks find the ledger there

    t = time.perf_counter()
    samples = sample_stage.with_options(task_runner=dask_task_runner(address))(
        run_dir=root, dataset=ds_info, sampling=sampling, points_hash=pipeline.points_hash(run.root),
        progress_id=progress.artifact_id)
    run.update_manifest(counts=samples["counts"])
    _stage_done(run, "sample", timings, t)
    # The per-point stages run partition by partition on the same cluster (tasks.partitions).
    with dask_task_runner(address) as runner, use_pool(TaskPool(runner)):
        return _downstream(run, ds_info, sampling, samples, options, progress, timings=timings)


@contextmanager
def _cluster(options: ExecutionOptions | PipelineOptions, progress: RunProgress) -> Iterator[str]:
    """The run's Dask cluster (started, or the one at ``--dask-address``), announced on the progress bar."""
    progress.stage("dask", f"{describe_cluster(options.workers, options.dask_address)} ...")
    with dask_cluster(options.workers, options.dask_address) as address:
        yield address


def _ingest_on_cluster(address: str, data: dict[str, Any], run_dir: str | None, *, shared_disk: bool,
                       base_path: str | None = None) -> dict[str, Any]:
    """The ingest task, its reading and storing done on a worker of the cluster at ``address``.

    The flow process then never holds the data (at 10^6 points reading and
    storing them peaked at 1.9 GB there). A plain local path (the run folder,
    the default ``runs/`` root) is made absolute first. Where the workers do
    not share this machine's disk (``--dask-address``) and the data is a
    local file, the flow reads it itself: a worker could not.
    """
    def absolute(path: str | None) -> str | None:
        return path if path is None or is_url(path) else str(Path(path).resolve())

    source = str(data.get("source") or "")
    if not shared_disk and source and not is_url(source) and Path(source).exists():
        return ingest_tasks.ingest(data, run_dir, base_path)
    with dask_task_runner(address) as runner, use_pool(TaskPool(runner)):
        return ingest_tasks.ingest(data, absolute(run_dir), base_path, runs_root=absolute("runs"))


def _prepare_points(run: RunFolder, ds_info: dict[str, Any], options: PipelineOptions, address: str
                    ) -> dict[str, Any]:
    """The points to value and the sampling config, decided on a worker (the flow never holds the point ids).

    ``points.json`` is written where the run folder is and copied into the
    flow's working copy; the config's warnings are repeated here, where the
    user sees them.
    """
    with dask_task_runner(address) as runner:
        prepared = TaskPool(runner).map(pipeline.prepare_points, [run.location()], [ds_info["path"]],
                                        [options.points], [options.seed], [options.sampling_kwargs()],
                                        [options.workers])[0]
    run.fetch("points.json")
    for message, category in prepared.pop("warnings"):
        warnings.warn(message, category, stacklevel=2)
    return prepared


def _downstream(run: RunFolder, ds_info: dict[str, Any], sampling: dict[str, Any], samples: dict[str, Any],
                options: PipelineOptions, progress: RunProgress, *, timings: dict[str, float]) -> dict[str, Any]:
    """Every stage after sampling, each given what the stages before it produced."""
    root = run.location()

    # Every stage reads the stored dataset version, but only through the samples: quoted,
    # the reference draws no edge from ingest to each stage, so the run graph shows the
    # order that matters (ingest -> sample -> fit -> choose -> value -> ...), drawn from real results.
    dataset = quote(ds_info)
    t = time.perf_counter()
    progress.stage("fit-mle-laws", "fitting the per-point laws (maximum likelihood)")
    mle = law_tasks.fit_mle_laws(root, sampling, samples, options.partition_points)
    _stage_done(run, "fit_mle_laws", timings, t)
    amortized = None
    if options.amortized:
        t = time.perf_counter()
        progress.stage("fit-amortized", "training the amortized estimator")
        amortized = law_tasks.fit_amortized(root, dataset, sampling, samples,
                                            partition_points=options.partition_points)
        _stage_done(run, "fit_amortized", timings, t)
    else:
        pipeline.clear_output(root, "laws_amortized")
    t = time.perf_counter()
    progress.stage("choose-laws", "choosing the laws by held-out likelihood")
    laws = law_tasks.choose_laws(root, dataset, sampling, samples, mle, amortized, method=options.laws,
                                 partition_points=options.partition_points)
    # Also when the stage was reused: run.json holds this run's diagnostic.
    run.update_manifest(law_diagnostic=laws.get("law_diagnostic"))
    if laws.get("law_diagnostic"):
        log_line(laws["law_diagnostic"]["sentence"])
    _stage_done(run, "choose_laws", timings, t)
    t = time.perf_counter()
    progress.stage("value", "valuing the points")
    values = value_tasks.value(root, dataset, sampling, samples, laws, mle, amortized, options.target_sizes,
                               options.partition_points)
    progress.stage("select", f"selecting {options.select_m} points")
    selection = value_tasks.select(root, dataset, laws, values, options.select_m)
    _stage_done(run, "value_select", timings, t)
    removal = None
    if options.removal:
        t = time.perf_counter()
        progress.stage("removal", "computing the removal curve" if ds_info["n_test"] else
                       "no removal curve: the run has no test split (give --test FILE)")
        removal = value_tasks.removal(root, dataset, sampling, values)
        _stage_done(run, "removal", timings, t)
    else:
        pipeline.clear_output(root, "removal")
    t = time.perf_counter()
    progress.stage("report", "writing the report")
    rep = value_tasks.report(root, dataset, mle, laws, values, selection, removal)
    _stage_done(run, "report", timings, t)
    return {"run_dir": root, "counts": samples["counts"], "summary": rep["summary"], "report": rep["path"],
            "values": values}


def run_url() -> Optional[str]:
    """This flow run's page in the UI the server serves by default (V2 unless turned off)."""
    import json
    import urllib.request

    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    # The settings may predate the local server this command started: fall back to
    # the API address in the environment (its UI is the same address without /api).
    api = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    ui = PREFECT_UI_URL.value() or (api[: -len("/api")] if api.endswith("/api") else None)
    if not ui or not flow_run.id:
        return None
    try:
        with urllib.request.urlopen(f"{ui}/ui-settings", timeout=5) as resp:
            settings = json.load(resp)
    except (OSError, ValueError):
        return f"{ui}/runs/flow-run/{flow_run.id}"
    if settings.get("default_ui") == "v2" and settings.get("v2_base_url"):
        return f"{ui}{settings['v2_base_url'].rstrip('/')}/runs/flow-run/{flow_run.id}"
    return f"{ui}/runs/flow-run/{flow_run.id}"


def _start(words: str) -> RunProgress:
    """The run's progress bar, and its UI link for the terminal."""
    url = run_url()
    if url:
        reporter().run_url(url)
    return RunProgress.create(words)


@flow(name="pointscale-pipeline", flow_run_name=_pipeline_run_name, validate_parameters=True)
def pipeline_flow(
    options: PipelineOptions = PipelineOptions(),
    out: Optional[str] = None,
    wait_for_lock: bool = False,
) -> dict[str, Any]:
    """Value the points of a dataset: the whole pipeline on one dataset version."""
    started = time.perf_counter()
    set_storage_options(options.storage_options)
    progress = _start(f"reading {options.dataset}")
    check_dask_address(options.dask_address)
    data = DataConfig(**options.data_config()).to_dict()
    with _cluster(options, progress) as address:
        progress.stage("ingest", f"reading and checking {options.dataset}")
        ds_info = _ingest_on_cluster(address, data, out, shared_disk=not options.dask_address)
        return _pipeline_run(ds_info, data, options, progress, address, started, wait_for_lock)


def _pipeline_run(ds_info: dict[str, Any], data: dict[str, Any], options: PipelineOptions, progress: RunProgress,
                  address: str, started: float, wait_for_lock: bool) -> dict[str, Any]:
    """The pipeline after ingest: claim the run folder, choose the points, run every stage."""
    logger = get_run_logger()
    run = RunFolder(ds_info["run_dir"])
    logger.info("dataset %s (%s): %d pool, %d validation, %d test rows; run folder %s", ds_info["name"],
                ds_info["fingerprint"][:8], ds_info["n_pool"], ds_info["n_val"], ds_info["n_test"], run.root)
    with run.lock(wait=wait_for_lock):
        claim_run_folder(run)
        timings: dict[str, float] = {"ingest": round(time.perf_counter() - started, 3)}
        prepared = _prepare_points(run, ds_info, options, address)
        sampling = prepared["sampling"]
        _name_the_model(options, sampling["model"] if isinstance(sampling["model"], str) else "custom")
        run.update_manifest(
            kind="pipeline",
            config={"data": data, "sampling": sampling, "options": options.model_dump(mode="json")},
            sampling_hash=prepared["sampling_hash"],
            dataset=ds_info,
            points={"n": prepared["n_points"], "file": "points.json"},
            versions=package_versions(),
            code_version=code_version(),
            status="running",
            # Facts of an earlier run in this folder are not facts of this one.
            timings=None, counts=None, revalue=None, values_change=None, previous_dataset=None, stage=None,
            law_diagnostic=None,
        )
        # ``stage`` names the last stage finished (a monitor attributes time to the next one).
        run.update_manifest(timings=dict(timings), stage="ingest")
        result = _run_stages(run, ds_info, sampling, options, progress, address, timings=timings)
        run.update_manifest(status="completed", total_seconds=round(time.perf_counter() - started, 3))
    progress.stage("done", f"done in {time.perf_counter() - started:.0f} s: {result['report']}")
    return result


@flow(name="pointscale-revalue", flow_run_name=_revalue_run_name, validate_parameters=True)
def revalue_flow(
    source: str,
    run_dir: str,
    fingerprint: Optional[str] = None,
    execution: ExecutionOptions = ExecutionOptions(),
    wait_for_lock: bool = True,
) -> dict[str, Any]:
    """Revalue after new data: extend the run's dataset version with ``source``.

    Rows already in the run keep their ids, split and features; every ledger
    sample of those points is reused. Only new points are sampled, the laws
    are refitted, the amortized model values new points at once, and
    ``values_change.parquet`` (and the ``values-change`` artifact) shows how
    existing points' values moved. The run's own options apply; only where
    the fits run (``execution``) may change. ``fingerprint`` (from the
    watcher's event) is recorded for traceability. See
    :mod:`pointscale.revaluation` for the logic and its recovery rules.
    """
    logger = get_run_logger()
    started = time.perf_counter()
    set_storage_options(execution.storage_options)
    progress = _start(f"revaluing {run_dir} with {source}")
    check_dask_address(execution.dask_address)
    run = RunFolder(run_dir)
    revaluation.revaluation_base(run.location())  # a folder with no run to extend fails before the lock
    with run.lock(wait=wait_for_lock), _cluster(execution, progress) as address:
        claim_run_folder(run)
        base = revaluation.revaluation_base(run.location())
        config = base["config"]
        options = PipelineOptions.model_validate({**config["options"], **execution.model_dump()})
        progress.stage("ingest", f"reading {source} on top of the run's data")
        ds_info = _ingest_on_cluster(address, dict(config["data"], source=str(source)), run.location(),
                                     shared_disk=not options.dask_address, base_path=base["dataset"]["path"])
        plan = revaluation.start_revaluation(run.location(), ds_info, base, source=str(source),
                                             event_fingerprint=fingerprint)
        if not plan["changed"]:
            logger.info("dataset unchanged (%s); nothing to revalue", ds_info["fingerprint"][:8])
            progress.stage("done", "dataset unchanged; nothing to revalue")
            return {"run_dir": run.location(), "changed": False}
        logger.info("revaluing: %d new points join %d already valued; their samples are reused",
                    len(plan["new_points"]), sum(len(g) for g in plan["groups"]) - len(plan["new_points"]))
        timings: dict[str, float] = {"ingest": round(time.perf_counter() - started, 3)}
        if plan["new_points"]:
            # Before any new row is sampled: every earlier model is out of bag for them.
            progress.stage("triage", f"triaging {len(plan['new_points'])} new rows")
            t = time.perf_counter()
            triaged = value_tasks.triage(run.location(), ds_info, config["sampling"], plan["new_points"])
            _stage_done(run, "triage", timings, t)
            logger.info("triage: %d new rows scored in %.1f s; most suspicious: %s", triaged["points"],
                        triaged["seconds"], ", ".join(r["point_id"] for r in triaged["most_suspicious"]))
        result = _run_stages(run, ds_info, config["sampling"], options, progress, address, timings=timings)
        change = value_tasks.compare_values(run.location(), result["values"])
        if change is not None:
            result["values_change"] = change
        if plan["new_points"]:
            result["triage"] = value_tasks.grade_triage(run.location(), result["values"])
        run.update_manifest(status="completed", total_seconds=round(time.perf_counter() - started, 3))
    result["new_points"] = len(plan["new_points"])
    progress.stage("done", f"done in {time.perf_counter() - started:.0f} s")
    return result
