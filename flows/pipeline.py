"""The pipeline flow: ingest -> sample -> fit MLE -> fit amortized -> value -> select -> report.

Every stage is a task (or, for sampling, a subflow on Dask) that reads and
writes the run folder and is cached on content, so a re-run after a change
redoes only what changed, and a re-run after a crash resumes from the ledger.
``revalue`` runs the same stages on a new dataset version that extends the
one a run folder already holds, sampling only what is missing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import pandas as pd
from prefect import flow, get_run_logger

from pointscale import pipeline
from pointscale.data import DataConfig, open_dataset
from pointscale.errors import ConfigError
from pointscale.runs import RunFolder, package_versions
from tasks import ingest as ingest_tasks
from tasks import laws as law_tasks
from tasks import valuation as value_tasks

from flows.options import ExecutionOptions, PipelineOptions
from flows.sampling import dask_task_runner, sample_stage

def _stage(run: RunFolder, name: str, timings: dict[str, float], started: float) -> None:
    timings[name] = round(time.perf_counter() - started, 3)
    run.update_manifest(timings={name: timings[name]}, stage=name)


def _run_stages(run: RunFolder, ds_info: dict[str, Any], sampling: dict[str, Any], options: PipelineOptions, *,
                timings: dict[str, float]) -> dict[str, Any]:
    logger = get_run_logger()
    path, fp = ds_info["path"], ds_info["fingerprint"]

    t = time.perf_counter()
    runner = dask_task_runner(workers=options.workers, address=options.dask_address)
    counts = sample_stage.with_options(task_runner=runner)(
        run_dir=str(run.root), dataset_path=path, dataset_fingerprint=fp, sampling=sampling,
        points_hash=pipeline.points_hash(run.root))
    run.update_manifest(counts=counts)
    _stage(run, "sample", timings, t)
    logger.info("sampled: %s", counts)

    lh = pipeline.ledger_hash(run.root)
    t = time.perf_counter()
    mle = law_tasks.fit_mle(str(run.root), sampling, lh)
    _stage(run, "fit_mle", timings, t)
    amort = None
    if options.amortized:
        t = time.perf_counter()
        amort = law_tasks.fit_amortized(str(run.root), path, fp, sampling, lh)
        _stage(run, "fit_amortized", timings, t)
    t = time.perf_counter()
    values = value_tasks.value(str(run.root), path, fp, sampling, lh, options.target_sizes)
    selection = value_tasks.select(str(run.root), path, fp, lh, options.select_m)
    _stage(run, "value_select", timings, t)
    if options.removal:
        t = time.perf_counter()
        value_tasks.removal(str(run.root), path, fp, sampling, lh)
        _stage(run, "removal", timings, t)
    run.update_manifest(results={"mle": mle, "amortized": amort, "values": values, "selection": selection})
    t = time.perf_counter()
    rep = value_tasks.report(str(run.root), path)
    _stage(run, "report", timings, t)
    return {"run_dir": str(run.root), "counts": counts, "summary": rep["summary"], "report": rep["path"]}


@flow(name="pointscale-pipeline", validate_parameters=True)
def pipeline_flow(
    options: PipelineOptions = PipelineOptions(),
    out: Optional[str] = None,
    wait_for_lock: bool = False,
) -> dict[str, Any]:
    """Value the points of a dataset: the whole pipeline on one dataset version."""
    started = time.perf_counter()
    data = DataConfig(**options.data_config()).to_dict()
    ds_info = ingest_tasks.ingest(data, out)
    run = RunFolder(ds_info["run_dir"])
    with run.lock(wait=wait_for_lock):
        timings: dict[str, float] = {"ingest": round(time.perf_counter() - started, 3)}
        run.update_manifest(timings=dict(timings))
        ds = open_dataset(ds_info["path"])
        chosen = pipeline.choose_points(ds, options.points, options.seed)
        cfg = pipeline.resolve_sampling(ds, n_points=len(chosen), workers=options.workers,
                                        **options.sampling_kwargs())
        sampling = cfg.to_dict()
        previous = pipeline.load_point_groups(run.root)
        if sorted(p for g in previous for p in g) != sorted(chosen):
            pipeline.save_point_groups(run.root, [chosen])
        run.update_manifest(
            kind="pipeline",
            config={"data": data, "sampling": sampling, "options": options.model_dump(mode="json")},
            sampling_hash=cfg.stable_hash(),
            dataset=ds_info,
            points={"n": len(chosen), "file": "points.json"},
            versions=package_versions(),
            code_version=pipeline.code_version(),
            status="running",
        )
        result = _run_stages(run, ds_info, sampling, options, timings=timings)
        run.update_manifest(status="completed", total_seconds=round(time.perf_counter() - started, 3))
    return result


@flow(name="pointscale-revalue", validate_parameters=True)
def revalue_flow(
    source: str,
    run_dir: str,
    fingerprint: Optional[str] = None,
    execution: ExecutionOptions = ExecutionOptions(),
    wait_for_lock: bool = True,
) -> dict[str, Any]:
    """Revalue after new data: extend the run's dataset version with ``source``.

    Rows already in the run keep their ids, split and features; every ledger
    sample of those points is reused. Only new points are sampled (and points
    below the target count topped up), the laws are refitted, the amortized
    model values new points at once, and ``values_change.parquet`` records how
    existing points' values moved. ``fingerprint`` (from the watcher's event)
    is recorded for traceability.
    """
    logger = get_run_logger()
    started = time.perf_counter()
    run = RunFolder(run_dir)
    manifest = run.read_manifest()
    if not manifest.get("config"):
        raise ConfigError(f"{run_dir} holds no completed pipeline run to extend; run `pointscale run` first")
    with run.lock(wait=wait_for_lock):
        manifest = run.read_manifest()
        config = manifest["config"]
        # The run's own options; only where the fits run may change.
        options = PipelineOptions.model_validate({**config["options"], **execution.model_dump()})
        old_info = pipeline.base_version(manifest)
        data = dict(config["data"], source=str(source))
        ds_info = ingest_tasks.ingest(data, str(run.root), base_path=old_info["path"])
        if ds_info["fingerprint"] == old_info["fingerprint"]:
            logger.info("dataset unchanged (%s); nothing to revalue", ds_info["fingerprint"][:8])
            return {"run_dir": str(run.root), "changed": False}
        ds = open_dataset(ds_info["path"])
        old = open_dataset(old_info["path"])
        groups = pipeline.load_point_groups(run.root)
        known = {p for g in groups for p in g}
        old_pool = set(old.point_ids.tolist())
        new_points = [p for p in ds.point_ids.tolist() if p not in old_pool and p not in known]
        if options.points == "all" or new_points:
            groups = groups + ([sorted(new_points)] if new_points else [])
        pipeline.save_point_groups(run.root, groups)
        sampling = config["sampling"]
        prev_values = run.file("values.parquet")
        previous = pd.read_parquet(prev_values) if prev_values.exists() else None
        run.update_manifest(kind="revalue", dataset=ds_info, previous_dataset=old_info, status="running",
                            revalue={"source": str(source), "event_fingerprint": fingerprint,
                                     "new_points": len(new_points)})
        timings: dict[str, float] = {"ingest": round(time.perf_counter() - started, 3)}
        result = _run_stages(run, ds_info, sampling, options, timings=timings)
        if previous is not None:
            moved = pipeline.values_change(previous, pd.read_parquet(prev_values))
            from pointscale.io import atomic_write_parquet

            atomic_write_parquet(run.file("values_change.parquet"), moved["table"])
            run.update_manifest(values_change=moved["summary"])
            result["values_change"] = moved["summary"]
        run.update_manifest(status="completed", total_seconds=round(time.perf_counter() - started, 3))
    result["new_points"] = len(new_points)
    return result
