"""Deployments end to end: ``prefect deploy`` of deployments/prefect.yaml, and
``pointscale serve`` with its schedule, data watcher and event trigger.

Everything is real and on loopback: the session's ``prefect server start``, a
``pointscale serve`` subprocess (its served flow runs are its children, each
with a process-based Dask LocalCluster), files dropped into the watched
folder. Settings are small (5 samples per point, one Dask worker, no
amortized model or removal curve) so a run takes about a minute here.

Timings printed with ``-s``: trigger latency (file in place -> triggered run
created / started) and each run's duration.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import pandas as pd
import pytest

from flows.deployments import (
    ON_NEW_DATA_DEPLOYMENT,
    PIPELINE_DEPLOYMENT,
    TRIGGER_NAME,
    TRIGGER_PARAMETERS,
    WATCH_DEPLOYMENT,
    build_deployments,
)
from flows.options import PipelineOptions, ServeOptions
from pointscale.io import read_json
from pointscale.sampling import Ledger
from tests.conftest import REPO

from .conftest import background, pointscale_args, tail, wait_for

pytestmark = pytest.mark.slow

DEPLOYMENTS = (PIPELINE_DEPLOYMENT, WATCH_DEPLOYMENT, ON_NEW_DATA_DEPLOYMENT)
CRON = "17 4 * * 1"
WATCH_INTERVAL = 5  # each scan is a new process (~3 CPU-s); 2 s would keep a core busy
SAMPLES_PER_POINT = 5
FIRST_ROWS, ADDED_ROWS = 200, 40
# Served runs must use the serve options (not the defaults): a non-default model and metric.
MODEL, METRIC = "knn", "accuracy"
RUN_TIMEOUT = 240  # seconds; a run takes 60-100 s on two shared cores


def _cancer_rows(start: int, stop: int) -> pd.DataFrame:
    """Rows of scikit-learn's breast_cancer with a stable id column and a named target."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})
    frame.insert(0, "row_id", [f"r{i:04d}" for i in range(len(frame))])
    return frame.iloc[start:stop]


def _put_atomically(path: Path, frame: pd.DataFrame, *, append: bool = False) -> str:
    """Write (or append to a copy of) ``path`` and rename it into place; return the file's sha256."""
    tmp = path.with_name(f".{path.name}.tmp")
    if append:
        shutil.copyfile(path, tmp)
        frame.to_csv(tmp, mode="a", header=False, index=False)
    else:
        frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _client():
    from prefect import get_client

    return get_client(sync_client=True)


def _runs_of(deployment: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with _client() as client:
        dep = client.read_deployment_by_name(deployment)
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))


def _triggered_run(fingerprint: str):
    """The on-new-data run for this file version, once it reached a final state."""
    for run in _runs_of(ON_NEW_DATA_DEPLOYMENT):
        if run.parameters.get("fingerprint") == fingerprint and run.state and run.state.is_final():
            return run
    return None


def _flow_run_tree(root_id: UUID) -> list[UUID]:
    """A flow run and all its subflow runs."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    ids, frontier = [root_id], [root_id]
    with _client() as client:
        while frontier:
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)))
            frontier = [c.id for c in children if c.id not in ids]
            ids.extend(frontier)
    return ids


# --------------------------------------------------------------------------- the watcher's scan


def test_scan_finds_files_and_folders_and_skips_partial_writes(tmp_path):
    from flows.watch import diff_datasets, load_state, save_state, scan_datasets

    data, runs = tmp_path / "data", tmp_path / "runs"
    (data / "shards").mkdir(parents=True)
    one = _cancer_rows(0, 30)
    _put_atomically(data / "a.csv", one)
    one.to_parquet(data / "shards" / "part-0.parquet")
    one.to_csv(data / ".b.csv.tmp", index=False)  # a writer's temporary file
    one.to_csv(data / "c.csv.part", index=False)
    (data / "notes.txt").write_text("not data")
    found, settling = scan_datasets(data)
    assert sorted(found) == ["a", "shards"] and settling == []
    assert found["a"]["fingerprint"] == hashlib.sha256((data / "a.csv").read_bytes()).hexdigest()
    assert found["a"]["path"] == str((data / "a.csv").resolve())
    assert found["shards"]["files"] == ["part-0.parquet"]

    assert diff_datasets(found, {}) == (["a", "shards"], [])
    save_state(runs, data, found)
    assert load_state(runs, data) == found
    assert diff_datasets(scan_datasets(data)[0], load_state(runs, data)) == ([], [])

    # Content decides, not the time stamp; a second file changes a folder dataset.
    os.utime(data / "a.csv")
    _cancer_rows(30, 40).to_parquet(data / "shards" / "part-1.parquet")
    now, _ = scan_datasets(data)
    assert diff_datasets(now, found) == (["shards"], [])
    # A file younger than min_age is left for the next scan.
    _put_atomically(data / "a.csv", _cancer_rows(0, 31))
    now, settling = scan_datasets(data, min_age_seconds=60)
    assert "a" not in now and "a" in settling
    (data / "a.csv").unlink()
    assert diff_datasets(scan_datasets(data)[0], found) == (["shards"], ["a"])


# --------------------------------------------------------------------------- prefect.yaml


def test_prefect_yaml_deploys_the_same_three_deployments(prefect_server, tmp_path):
    """``prefect deploy --all`` registers them on a process work pool, with schedules and trigger.

    Runs before the serve fixture starts (same deployment names); it removes
    what it registered.
    """
    prefect = str(Path(sys.executable).with_name("prefect"))
    env = dict(os.environ, PREFECT_CLI_PROMPT="false")
    subprocess.run([prefect, "work-pool", "create", "pointscale-local", "--type", "process", "--overwrite"],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=120)
    out = subprocess.run([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with _client() as client:
        deps = {name: client.read_deployment_by_name(name) for name in DEPLOYMENTS}
        try:
            assert {d.work_pool_name for d in deps.values()} == {"pointscale-local"}
            assert deps[PIPELINE_DEPLOYMENT].entrypoint == "flows.pipeline.pipeline_flow"
            assert [s.schedule.cron for s in deps[PIPELINE_DEPLOYMENT].schedules] == ["0 3 * * *"]
            assert [s.schedule.interval.total_seconds() for s in deps[WATCH_DEPLOYMENT].schedules] == [3600]
            assert deps[WATCH_DEPLOYMENT].parameters["poll_seconds"] == 60
            assert deps[ON_NEW_DATA_DEPLOYMENT].schedules == []
            # Runs start in the folder `prefect deploy` ran from (relative paths resolve there).
            pull = deps[WATCH_DEPLOYMENT].pull_steps[0]["prefect.deployments.steps.set_working_directory"]
            assert Path(pull["directory"]).resolve() == REPO.resolve()
            automations = client.read_automations_by_name(TRIGGER_NAME)
            ours = [a for a in automations
                    if any(getattr(x, "deployment_id", None) == deps[ON_NEW_DATA_DEPLOYMENT].id for x in a.actions)]
            assert len(ours) == 1
            assert ours[0].trigger.expect == {"pointscale.dataset.updated"}
            assert ours[0].actions[0].parameters == TRIGGER_PARAMETERS
            # The same settings as `pointscale serve` registers.
            served = {f"{d.flow_name}/{d.name}": d
                      for d in build_deployments(ServeOptions(data_dir=str(tmp_path)), PipelineOptions(target="label"))}
            for name, dep in deps.items():
                assert set(dep.parameters) == set(served[name].parameters), name
                if "options" in dep.parameters:
                    assert set(dep.parameters["options"]) == set(PipelineOptions.model_fields), name
            watch = deps[WATCH_DEPLOYMENT]
            assert watch.global_concurrency_limit.limit == 1
            assert watch.concurrency_options.collision_strategy.value == "CANCEL_NEW"
        finally:
            for dep in deps.values():
                client.delete_deployment(dep.id)
            for automation in client.read_automations_by_name(TRIGGER_NAME):
                client.delete_automation(automation.id)


def test_serve_without_a_server_says_how_to_start_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    out = subprocess.run(pointscale_args("serve", "--data-dir", str(tmp_path), "--target", "label"),
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "PREFECT_API_URL is not set" in out.stderr and "pointscale server" in out.stderr


# --------------------------------------------------------------------------- pointscale serve


@pytest.fixture(scope="module")
def served(prefect_server, tmp_path_factory):
    """``pointscale serve`` on a fresh data folder, until the end of this module."""
    root = tmp_path_factory.mktemp("serve")
    data, runs, log = root / "data", root / "runs", root / "serve.log"
    data.mkdir()
    args = pointscale_args(
        "serve", "--data-dir", str(data), "--runs-dir", str(runs), "--target", "label", "--id-column", "row_id",
        "--watch-interval", str(WATCH_INTERVAL), "--min-age", "0.5", "--cron", CRON,
        "--samples-per-point", str(SAMPLES_PER_POINT), "--k-min", "20", "--workers", "1",
        "--no-amortized", "--no-removal", "--laws", "mle", "--model", MODEL, "--metric", METRIC, "--select", "7")
    started = time.monotonic()
    with background(args, log) as proc:
        def registered():
            if proc.poll() is not None:
                raise AssertionError(f"pointscale serve exited ({proc.returncode}):\n{tail(log)}")
            return "Your deployments are being served" in tail(log, 20000)

        wait_for(registered, timeout=120, what="pointscale serve to register its deployments",
                 on_timeout=lambda: tail(log))
        print(f"\n[serve] deployments registered after {time.monotonic() - started:.1f} s")
        yield {"data": data, "runs": runs, "log": log, "proc": proc}


def test_cron_deployment_is_registered_with_its_schedule(served):
    with _client() as client:
        pipeline = client.read_deployment_by_name(PIPELINE_DEPLOYMENT)
        watch = client.read_deployment_by_name(WATCH_DEPLOYMENT)
        on_new = client.read_deployment_by_name(ON_NEW_DATA_DEPLOYMENT)
        automations = [a for a in client.read_automations_by_name(TRIGGER_NAME)
                       if any(getattr(x, "deployment_id", None) == on_new.id for x in a.actions)]
    assert [(s.schedule.cron, s.active) for s in pipeline.schedules] == [(CRON, True)]
    assert pipeline.parameters["out"] == str(served["runs"].resolve() / "breast_cancer")
    scheduled = pipeline.parameters["options"]
    assert scheduled["samples_per_point"] == SAMPLES_PER_POINT
    assert (scheduled["model"], scheduled["metric"], scheduled["select_m"]) == (MODEL, METRIC, 7)
    assert scheduled["target"] is None  # breast_cancer knows its target; "label" is the watched files' column
    # One watch run scans every WATCH_INTERVAL seconds for an hour: one run per hour, not per scan.
    assert [s.schedule.interval.total_seconds() for s in watch.schedules] == [3600]
    assert watch.parameters["poll_seconds"] == WATCH_INTERVAL and watch.parameters["run_seconds"] == 3600
    assert watch.parameters["data_dir"] == str(served["data"].resolve())
    assert on_new.schedules == []
    triggered = on_new.parameters["options"]
    assert triggered["target"] == "label" and triggered["workers"] == 1
    assert (triggered["model"], triggered["metric"], triggered["select_m"]) == (MODEL, METRIC, 7)
    assert len(automations) == 1
    trigger = automations[0].trigger
    assert trigger.expect == {"pointscale.dataset.updated"}
    assert trigger.match.model_dump()["prefect.resource.id"] == "pointscale.dataset.*"
    assert automations[0].actions[0].parameters == TRIGGER_PARAMETERS


@pytest.fixture(scope="module")
def first_run(served):
    """Drop a new dataset into the watched folder; wait for the triggered run to finish."""
    path = served["data"] / "cancer.csv"
    dropped = time.time()
    fingerprint = _put_atomically(path, _cancer_rows(0, FIRST_ROWS))
    run = wait_for(lambda: _triggered_run(fingerprint), timeout=RUN_TIMEOUT,
                   what="the run triggered by a new dataset", on_timeout=lambda: tail(served["log"]))
    _report("new dataset", dropped, run)
    return {"path": path, "fingerprint": fingerprint, "run": run, "run_dir": served["runs"] / "cancer"}


def _report(what: str, dropped: float, run) -> None:
    created = run.created.timestamp() - dropped
    started = run.start_time.timestamp() - dropped if run.start_time else float("nan")
    took = run.total_run_time.total_seconds()
    print(f"\n[{what}] triggered run created {created:.1f} s after the file landed, started at "
          f"{started:.1f} s, ran {took:.1f} s")


def test_new_dataset_triggers_the_whole_pipeline(first_run):
    run = first_run["run"]
    assert run.state.is_completed(), f"{run.state.type}: {run.state.message}"
    assert run.parameters["name"] == "cancer" and run.name == "new-data-cancer"
    assert run.parameters["path"] == str(first_run["path"].resolve())
    assert (run.parameters["options"]["model"], run.parameters["options"]["metric"]) == (MODEL, METRIC)
    manifest = read_json(first_run["run_dir"] / "run.json")
    assert manifest["kind"] == "pipeline" and manifest["status"] == "completed"
    sampling = manifest["config"]["sampling"]
    assert (sampling["model"], sampling["metric"]) == (MODEL, METRIC)
    assert manifest["config"]["options"]["select_m"] == 7
    n_pool = manifest["dataset"]["n_pool"]
    assert n_pool == FIRST_ROWS - manifest["dataset"]["n_val"] - manifest["dataset"]["n_test"]
    assert manifest["counts"]["samples_new"] == n_pool * SAMPLES_PER_POINT
    ledger = Ledger(first_run["run_dir"] / "samples").read()
    assert len(ledger) == n_pool * SAMPLES_PER_POINT

    # What a user sees in the UI for this run and its subflows.
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    tree = _flow_run_tree(run.id)
    with _client() as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=tree)))
    by_key = {a.key: a for a in artifacts if a.key}
    pipeline_run = next(r for r in _flow_runs(tree) if r.name.startswith("cancer-"))
    # Progress on the pipeline run itself, finished.
    progress = [a for a in artifacts if a.key == "pipeline-progress"]
    assert len(progress) == 1 and progress[0].flow_run_id == pipeline_run.id
    assert float(progress[0].data) == pytest.approx(100.0)
    assert by_key["values-top-bottom"].type == "markdown" and "Most valuable" in by_key["values-top-bottom"].data
    report = by_key["pointscale-report"].data
    assert "data:image/png;base64," in report and "](figures/" not in report
    # One readable outputs artifact instead of a link card per file.
    outputs = by_key["run-outputs"].data
    for name in ("report.md", "values.parquet", "run.json"):
        assert f"| {name} |" in outputs, outputs
    assert "file://" not in outputs and not [a for a in artifacts if not a.key]
    # A name that says what ran, and the flows' own lines in the API (INFO).
    assert pipeline_run.name == f"cancer-{MODEL}-{SAMPLES_PER_POINT}spp"
    messages = _log_messages(pipeline_run.id)
    assert any("pool" in m and "validation" in m for m in messages), messages


def _flow_runs(ids: list[UUID]) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client() as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))


def _log_messages(flow_run_id: UUID) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with _client() as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs]


def test_appended_rows_are_revalued_incrementally(first_run, served):
    run_dir = first_run["run_dir"]
    before = Ledger(run_dir / "samples").read()
    dropped = time.time()
    fingerprint = _put_atomically(first_run["path"], _cancer_rows(FIRST_ROWS, FIRST_ROWS + ADDED_ROWS),
                                  append=True)
    run = wait_for(lambda: _triggered_run(fingerprint), timeout=RUN_TIMEOUT,
                   what="the revaluation triggered by appended rows", on_timeout=lambda: tail(served["log"]))
    _report("appended rows", dropped, run)
    assert run.state.is_completed(), f"{run.state.type}: {run.state.message}"

    manifest = read_json(run_dir / "run.json")
    assert manifest["kind"] == "revalue" and manifest["status"] == "completed"
    assert manifest["revalue"]["event_fingerprint"] == fingerprint
    # Every appended row joins the training pool; only those points are sampled.
    assert manifest["revalue"]["new_points"] == ADDED_ROWS
    counts = manifest["counts"]
    assert counts["samples_new"] == ADDED_ROWS * SAMPLES_PER_POINT
    assert counts["samples_reused"] == len(before) > 0
    after = Ledger(run_dir / "samples").read()
    new_ids = set(_cancer_rows(FIRST_ROWS, FIRST_ROWS + ADDED_ROWS)["row_id"])
    added = after[~after["sample_id"].isin(before["sample_id"])]
    assert set(added["point_id"]) == new_ids
    assert added.groupby("point_id").size().eq(SAMPLES_PER_POINT).all()
    # The before/after view in the UI.
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with _client() as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=_flow_run_tree(run.id))))
    change = [a for a in artifacts if a.key == "values-change"]
    assert len(change) == 1 and "Values before and after" in change[0].data
    assert f"new points: {ADDED_ROWS}" in change[0].data
    # The earlier samples are untouched.
    kept = after[after["sample_id"].isin(before["sample_id"])].sort_values("sample_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(kept[before.columns], before.sort_values("sample_id").reset_index(drop=True))
