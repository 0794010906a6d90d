"""Retraining on new data: a watcher flow over a data folder, and the flow its event triggers.

``pointscale-watch`` runs on an interval. It scans a folder for datasets (each
CSV/Parquet file is one dataset named by its stem; each sub-folder holding
such files is one dataset named by the folder), fingerprints each by content
(sha256), and compares with the state it saved at its last scan
(``<runs_dir>/watch-state.json``, written atomically). For every new or
changed dataset it emits the Prefect event ``pointscale.dataset.updated`` on
the resource ``pointscale.dataset.<name>`` with the payload
``{name, path, fingerprint, previous_fingerprint}``.

``pointscale-on-new-data`` is what a ``DeploymentEventTrigger`` on that event
runs (see :mod:`flows.deployments`). If ``<runs_dir>/<name>`` already holds a
completed run it revalues incrementally (:func:`flows.pipeline.revalue_flow`:
only new points are sampled); otherwise it runs the whole pipeline there.

Writers should put files in place atomically (write ``.name.csv.tmp``, then
rename): names starting with ``.`` or ``_`` and names ending in ``.tmp`` or
``.part`` are ignored, and a dataset modified less than ``min_age_seconds``
ago is left for the next scan. The state is saved only after the events are
emitted, so a scan that fails is simply repeated.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any, Optional

from prefect import flow, get_run_logger

from pointscale.errors import ConfigError, DataError
from pointscale.io import atomic_write_json, read_json, sha256_file
from pointscale.runs import RunFolder

from .options import PipelineOptions

DATASET_EVENT = "pointscale.dataset.updated"
RESOURCE_PREFIX = "pointscale.dataset."
STATE_FILE = "watch-state.json"
DATA_SUFFIXES = (".csv", ".parquet", ".pq")
_IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# --------------------------------------------------------------------------- scanning (plain functions)


def _is_data_file(path: Path) -> bool:
    name = path.name
    return (path.is_file() and not name.startswith((".", "_")) and not name.endswith(_IGNORED_SUFFIXES)
            and path.suffix.lower() in DATA_SUFFIXES)


def dataset_name(raw: str) -> str:
    """A folder- and resource-safe name: other characters become ``_``."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", raw).lstrip("._-")
    return name or "dataset"


def check_dataset_name(name: str) -> str:
    """Validate a name that becomes a run folder (it may come from any event)."""
    if not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"dataset name {name!r} must be letters, digits, '.', '_' or '-' "
                          "(it names the run folder)")
    return name


def fingerprint_files(files: list[Path]) -> str:
    """sha256 over the files' names and contents (order-independent of listing)."""
    if len(files) == 1:
        return sha256_file(files[0])
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.name):
        h.update(f.name.encode())
        h.update(b"\0")
        h.update(sha256_file(f).encode())
        h.update(b"\n")
    return h.hexdigest()


def scan_datasets(data_dir: str | Path, min_age_seconds: float = 0.0,
                  now: float | None = None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The datasets in ``data_dir``: ``{name: {path, fingerprint, files}}``, and names skipped as too fresh.

    Raises
    ------
    DataError
        If ``data_dir`` is not a folder.
    """
    root = Path(data_dir).resolve()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; create it, or point the watcher at an existing "
                        "folder (`pointscale serve --data-dir`, or data_dir in deployments/prefect.yaml)")
    now = time.time() if now is None else now
    found: dict[str, dict[str, Any]] = {}
    fresh: list[str] = []
    candidates: list[tuple[str, Path, list[Path]]] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_dir():
            files = sorted(p for p in entry.iterdir() if _is_data_file(p))
            if files:
                candidates.append((dataset_name(entry.name), entry, files))
        elif _is_data_file(entry):
            candidates.append((dataset_name(entry.stem), entry, [entry]))
    for name, path, files in candidates:
        if name in found:
            # ``x.csv`` next to a folder ``x/``: the first (sorted) wins; say so.
            fresh.append(f"{name} (name taken; rename {path.name})")
            continue
        if now - max(f.stat().st_mtime for f in files) < min_age_seconds:
            fresh.append(name)
            continue
        found[name] = {"path": str(path), "fingerprint": fingerprint_files(files),
                       "files": [f.name for f in files]}
    return found, fresh


def diff_datasets(current: dict[str, dict[str, Any]], previous: dict[str, dict[str, Any]]
                  ) -> tuple[list[str], list[str]]:
    """Names new or changed since ``previous``, and names gone."""
    updated = [n for n, info in current.items()
               if n not in previous or previous[n].get("fingerprint") != info["fingerprint"]]
    removed = [n for n in previous if n not in current]
    return updated, removed


def state_path(runs_dir: str | Path) -> Path:
    return Path(runs_dir).resolve() / STATE_FILE


def load_state(runs_dir: str | Path, data_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Last-seen datasets of ``data_dir`` (one state file serves several watched folders)."""
    path = state_path(runs_dir)
    if not path.exists():
        return {}
    try:
        state = read_json(path)
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"watch state {path} is unreadable ({exc}); delete it to rescan every dataset") from None
    return dict(state.get("folders", {}).get(str(Path(data_dir).resolve()), {}))


def save_state(runs_dir: str | Path, data_dir: str | Path, datasets: dict[str, dict[str, Any]]) -> Path:
    path = state_path(runs_dir)
    state = read_json(path) if path.exists() else {}
    folders = dict(state.get("folders", {}))
    folders[str(Path(data_dir).resolve())] = datasets
    return atomic_write_json(path, {"folders": folders,
                                    "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


# --------------------------------------------------------------------------- flows


def scan_once(data_dir: str, runs_dir: str, min_age_seconds: float, settling_seen: set[str]) -> dict[str, Any]:
    """One scan: emit ``pointscale.dataset.updated`` for each new or changed dataset, save the state.

    Logs one line per change (and per dataset that starts settling), nothing
    for a scan that finds nothing new.
    """
    from prefect.events import emit_event

    logger = get_run_logger()
    current, fresh = scan_datasets(data_dir, min_age_seconds)
    previous = load_state(runs_dir, data_dir)
    updated, removed = diff_datasets(current, previous)
    for name in sorted(set(fresh) - settling_seen):
        logger.info("%s is still being written; it is reported once it has not changed for %g s",
                    name, min_age_seconds)
    settling_seen.clear()
    settling_seen.update(fresh)
    for name in updated:
        info = current[name]
        prev = previous.get(name, {}).get("fingerprint")
        emit_event(
            event=DATASET_EVENT,
            resource={"prefect.resource.id": f"{RESOURCE_PREFIX}{name}", "prefect.resource.name": name},
            payload={"name": name, "path": info["path"], "fingerprint": info["fingerprint"],
                     "previous_fingerprint": prev},
        )
        logger.info("%s dataset %s (%s) -> %s", "changed" if prev else "new", name, info["fingerprint"][:12],
                    DATASET_EVENT)
    if removed:
        logger.info("gone from %s: %s", data_dir, ", ".join(removed))
    # Datasets still settling keep their old state, so they are compared again next time.
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    state = {n: previous[n] for n in fresh if n in previous}
    for n, info in current.items():
        state[n] = {**info, "changed_at": now if n in updated else previous[n].get("changed_at", now)}
    save_state(runs_dir, data_dir, state)
    return {"datasets": sorted(current), "updated": updated, "removed": removed, "settling": fresh}


def _watch_run_name() -> str:
    from prefect.runtime import flow_run

    return f"watch-{Path(str(flow_run.parameters.get('data_dir', 'data'))).name}"


@flow(name="pointscale-watch", flow_run_name=_watch_run_name, validate_parameters=True)
def watch_flow(data_dir: str, runs_dir: str = "runs", min_age_seconds: float = 1.0, poll_seconds: float = 60.0,
               run_seconds: float = 0.0) -> dict[str, Any]:
    """Scan ``data_dir`` every ``poll_seconds`` for ``run_seconds``; emit an event per new or changed dataset.

    One flow run covers many scans (``run_seconds`` 0: a single scan), so the
    run list shows one watch run per period and one triggered run per
    change, not one run per poll. The run stops a little before
    ``run_seconds`` so that the next scheduled one never collides with it.
    """
    logger = get_run_logger()
    started = time.monotonic()
    stop = max(0.0, run_seconds - 2 * poll_seconds - 5.0) if run_seconds else 0.0
    if stop:
        logger.info("watching %s every %g s for %.0f min; one log line per new or changed dataset",
                    data_dir, poll_seconds, stop / 60)
    settling: set[str] = set()
    changes: dict[str, list[str]] = {"updated": [], "removed": []}
    while True:
        result = scan_once(data_dir, runs_dir, min_age_seconds, settling)
        changes["updated"] += result["updated"]
        changes["removed"] += result["removed"]
        if time.monotonic() - started + poll_seconds > stop:
            break
        time.sleep(poll_seconds)
    return {"datasets": result["datasets"], "updated": changes["updated"], "removed": changes["removed"],
            "settling": result["settling"]}


def _completed_run(run_dir: Path) -> bool:
    manifest = RunFolder(run_dir).read_manifest()
    return bool(manifest.get("config")) and manifest.get("status") == "completed"


def _new_data_run_name() -> str:
    from prefect.runtime import flow_run

    return f"new-data-{flow_run.parameters.get('name', 'dataset')}"


@flow(name="pointscale-on-new-data", flow_run_name=_new_data_run_name, validate_parameters=True)
def on_new_data_flow(
    name: str,
    path: str,
    fingerprint: Optional[str] = None,
    runs_dir: str = "runs",
    options: PipelineOptions = PipelineOptions(),
) -> dict[str, Any]:
    """Value a new or changed dataset: revalue incrementally if its run folder holds a completed run.

    ``name``, ``path`` and ``fingerprint`` come from the watcher's event;
    ``options`` are the deployment's pipeline settings (``pointscale serve``
    options; its ``dataset`` is replaced by ``path``). The run folder is
    ``<runs_dir>/<name>``.
    """
    from flows.pipeline import pipeline_flow, revalue_flow

    logger = get_run_logger()
    check_dataset_name(name)
    run_dir = Path(runs_dir).resolve() / name
    # Wait for a run already writing this folder, then decide: the decision
    # depends on what that run leaves behind.
    with RunFolder(run_dir).lock(wait=True):
        extend = _completed_run(run_dir)
    if extend:
        logger.info("%s: revaluing the run in %s with %s", name, run_dir, path)
        result = revalue_flow(source=path, run_dir=str(run_dir), fingerprint=fingerprint,
                              execution=options.execution(), wait_for_lock=True)
        action = "revalue"
    else:
        logger.info("%s: first run, whole pipeline into %s", name, run_dir)
        result = pipeline_flow(options=options.model_copy(update={"dataset": path}), out=str(run_dir),
                               wait_for_lock=True)
        action = "pipeline"
    return {"action": action, "name": name, "fingerprint": fingerprint, "run_dir": str(run_dir),
            **{k: result[k] for k in ("counts", "new_points", "changed") if k in result}}
