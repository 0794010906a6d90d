"""The pipeline's stages as plain functions over a run folder.

Each stage reads exactly the inputs it is given (the files the previous
stages produced, named by argument, never "whatever is in the folder"),
writes its outputs there atomically, and returns a small JSON-able summary
whose ``files`` lists what it wrote. The Prefect tasks in ``tasks/`` are thin
wrappers around these; the CLI, a Dask worker or a notebook can call them just
the same.

Which outputs are current is recorded in ``run.json`` under ``outputs``:
``outputs[stage]`` holds the stage's key (a hash of everything that changes
its result: inputs, settings and code), the sha256 of each file it wrote and
its summary; a stage switched off is recorded as ``None``. A stage whose
record matches its key and whose files are intact is up to date
(:func:`current_output`) and need not run again; any other record is stale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .data import DataConfig, Dataset, load_from_config, open_dataset, too_little_data
from .errors import ConfigError, DataError
from . import partitions
from .config import stable_hash
from .laws.amortized import MAX_TRAIN_POINTS as _AMORTIZED_BUDGET
from .partitions import PART_POINTS, SERIAL
from .runs import RunFolder, read_point_groups
from .storage import Store, join as storage_join, parent as storage_parent
from .sampling.config import default_k_range
from .seeding import STREAM_POINT_CHOICE, rng

#: Bumped when a stage's output format or meaning changes; part of every cache key.
PIPELINE_VERSION = "1"


def code_version(*packages: str | Path) -> str:
    """Hash of the source of the core package and of ``packages`` (folders of ``.py`` files).

    A cache-key part that changes whenever code that computes a result does:
    the orchestration layer passes its own folders (``tasks/``, ``flows/``).
    """
    roots = (Path(__file__).parent, *(Path(p).resolve() for p in packages))
    if roots not in _CODE_VERSIONS:
        h = hashlib.sha256(PIPELINE_VERSION.encode())
        for root in roots:
            h.update(root.name.encode() + b"\0")
            for path in sorted(root.rglob("*.py")):
                h.update(str(path.relative_to(root)).encode())
                h.update(path.read_bytes())
        _CODE_VERSIONS[roots] = h.hexdigest()[:16]
    return _CODE_VERSIONS[roots]


_CODE_VERSIONS: dict[tuple[Path, ...], str] = {}


# --------------------------------------------------------------------------- which outputs are current


def current_output(run_dir: str | Path, stage: str, key: str) -> dict[str, Any] | None:
    """The recorded summary of ``stage`` if it is up to date for ``key``, else None.

    Up to date: ``run.json`` records ``stage`` with this key, and every file it
    wrote still has the recorded sha256 (a file rewritten by a run with other
    settings, or deleted, makes the record stale).
    """
    from .io import sha256_file

    run = RunFolder(run_dir)
    record = (run.read_manifest().get("outputs") or {}).get(stage)
    if not record or record.get("key") != key:
        return None
    for name, digest in record.get("files", {}).items():
        path = run.file(name)
        if not path.is_file() or sha256_file(path) != digest:
            return None
    return dict(record["result"], output=record["files"])


def record_output(run_dir: str | Path, stage: str, key: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """Record ``result`` (a stage summary listing its ``files``) as the current output of ``stage``.

    Returns the summary with ``output`` = ``{file name: sha256}``, the
    reference downstream stages take (and key their own records on).
    """
    from .io import sha256_file

    run = RunFolder(run_dir)
    files = {name: sha256_file(run.file(name)) for name in result.get("files", ())}
    run.update_manifest(outputs={stage: {"key": key, "files": files, "result": dict(result)}})
    return dict(result, output=files)


def clear_output(run_dir: str | Path, stage: str) -> None:
    """Record that ``stage`` has no current output (it was switched off for this run)."""
    RunFolder(run_dir).update_manifest(outputs={stage: None})


# --------------------------------------------------------------------------- ingest


def default_run_dir(name: str, fingerprint: str, root: str | Path = "runs") -> Path:
    """``runs/<dataset>-<first 8 of fingerprint>``."""
    return Path(root) / f"{name}-{fingerprint[:8]}"


def ingest(data: Mapping[str, Any], run_dir: str | Path | None = None, base_path: str | None = None,
           runs_root: str | Path = "runs") -> dict[str, Any]:
    """Load, validate, split and store a dataset version under ``<run>/datasets``.

    ``run_dir`` None means the default folder named by the dataset and its
    fingerprint under ``runs_root``.
    """
    cfg = DataConfig.from_dict(dict(data))
    base = open_dataset(base_path) if base_path else None
    ds = load_from_config(cfg, base=base)
    run = RunFolder(run_dir or default_run_dir(ds.name, ds.fingerprint, runs_root))
    folder = ds.save(run.datasets)
    run.push()  # a run folder at a URL: the version is there before any worker needs it
    return {
        "run_dir": run.location(),
        "path": run.location("datasets", folder.name),
        "fingerprint": ds.fingerprint,
        "name": ds.name,
        "task": ds.task,
        "n_pool": ds.n_pool,
        "n_val": int(ds.X_val.shape[0]),
        "n_test": int(ds.X_test.shape[0]),
        "n_features": ds.n_features,
        "report": dict(ds.report),
    }


def base_version(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset version a revaluation of this run extends (its ``run.json`` entry)."""
    if manifest.get("kind") == "revalue" and manifest.get("status") != "completed" \
            and manifest.get("previous_dataset"):
        # An interrupted revaluation: extend the version it started from again.
        return dict(manifest["previous_dataset"])
    return dict(manifest["dataset"])


def check_extension(run_dir: str | Path, source: str) -> None:
    """Before any compute: ``source`` must extend the run's dataset version.

    Same columns and classes, and -- with given splits -- the same validation
    and test rows. Raises the DataError the revaluation would raise inside
    the flow, so the command line can say it in one line first.
    """
    manifest = RunFolder(run_dir).stored_manifest()
    if not manifest.get("config"):
        raise ConfigError(f"{run_dir} holds no completed pipeline run to extend; run `pointscale run` first")
    data = DataConfig.from_dict(dict(manifest["config"]["data"], source=str(source)))
    load_from_config(data, base=open_dataset(base_version(manifest)["path"]))


def read_point_ids(path: str | Path) -> list[str]:
    """Point ids from a file, one per line (blank lines and ``#`` comments skipped, duplicates dropped)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--points {path}: no such file; pass N, all, or a file with one point id per line")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"--points file {path} is not UTF-8 text; write one point id per line") from None
    ids = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not ids:
        raise ConfigError(f"--points file {path} lists no point ids; write one point id per line")
    return list(dict.fromkeys(ids))


def choose_points(dataset: Dataset, points: int | str | None, seed: int) -> list[str]:
    """The point ids to value: all, ``points`` drawn from the pool with the seed, or those a file lists.

    ``points`` is None or ``"all"``, a count (int or digits), or the path of
    a file with one point id per line; unknown ids are an error naming the first few.
    """
    ids = [str(p) for p in dataset.point_ids.tolist()]
    if points in (None, "all"):
        return ids
    if isinstance(points, str) and not points.strip().isdigit():
        wanted = read_point_ids(points)
        pool = set(ids)
        unknown = [p for p in wanted if p not in pool]
        if unknown:
            shown = ", ".join(repr(p) for p in unknown[:5])
            raise ConfigError(f"{len(unknown)} point id(s) in {points} are not in the training pool of "
                              f"{dataset.name}: {shown}{' ...' if len(unknown) > 5 else ''}; ids are the "
                              "--id-column values (or content ids, see points.json of a run)")
        chosen = set(wanted)
        return [p for p in ids if p in chosen]  # pool order, as for the other choices
    n = int(points)
    if n < 1:
        raise ConfigError(f"--points {n} must be at least 1 (or 'all')")
    if n > len(ids):
        raise ConfigError(f"--points {n} exceeds the training pool of {dataset.name} ({len(ids)} points)")
    chosen = rng(seed, STREAM_POINT_CHOICE).choice(len(ids), size=n, replace=False)
    return [ids[i] for i in np.sort(chosen)]


# --------------------------------------------------------------------------- sampling



#: Rough single-core seconds per model fit at k ~ 100-1000 (20-60 features), measured
#: on the 2-core development machine; only used to size shards, never for results.
FIT_SECONDS = {
    "logreg": 0.0003, "ridge": 0.0001, "linear": 0.0001,  # batched exact fast paths
    "knn": 0.008, "decision_tree": 0.006, "svm": 0.02, "xgboost": 0.05, "mlp": 0.1, "mlp_batched": 0.02,
    "hist_gbm": 0.1, "random_forest": 0.1,
}
#: Seconds of fitting per shard: ~20x a Prefect task's overhead on Dask (~85 ms),
#: so orchestration stays well under 10 % of the time.
SHARD_SECONDS = 2.0


def auto_shard_size(model: str, block_size: int, n_points: int, n_rounds: int, workers: int | None = None,
                    fast_path: bool = True) -> int:
    """Blocks per shard: about :data:`SHARD_SECONDS` of fits per task, but at least
    four shards per worker so the work spreads evenly."""
    import math
    import os

    per_fit = FIT_SECONDS.get(model, 0.01)
    if not fast_path and model in ("logreg", "ridge", "linear"):
        per_fit = 0.004
    blocks_for_time = math.ceil(SHARD_SECONDS / (per_fit * (block_size + 1)))
    n_blocks = math.ceil(n_points / block_size) * n_rounds
    spread = max(1, n_blocks // (4 * (workers or os.cpu_count() or 1)))
    return int(max(1, min(blocks_for_time, spread)))


def resolve_sampling(dataset, *, model: Any, metric: str | None, k_min: int | None, k_max: int | None,
                     samples_per_point: int, seed: int, block_size: int, shard_size: int | None,
                     n_points: int, model_params: Mapping[str, Any] | None = None,
                     workers: int | None = None, device: str = "cpu", warn: bool = True):
    """The validated sampling config of a run on ``dataset``.

    Unset k bounds follow :func:`pointscale.sampling.config.default_k_range`:
    the paper's [100, 1000] with ``k_max`` at most a third of the pool (so the base
    subsets stay random) and ``k_min = k_max // 10`` on small pools. Bounds
    that are set are validated (an error names the largest k the pool allows;
    a k_max beyond a third of the pool is accepted with a ``FinitePoolWarning``).
    ``shard_size`` None means :func:`auto_shard_size` (an execution setting:
    it never changes a sample), as is ``device``. ``warn=False`` checks the
    same things without the warning (a pre-flight check before the run that
    resolves the config again and warns once).
    """
    from .sampling import SamplingConfig
    from .sampling.config import default_k_min
    from .sampling.devices import resolve_device
    from .sampling.models import default_model

    resolve_device(device)  # no GPU for device="cuda": one line, before anything runs
    if model is None:  # the default follows the task, as the metric's does
        model = default_model(dataset.task)
    common = dict(model=model, metric=metric, samples_per_point=samples_per_point, seed=seed,
                  block_size=block_size, model_params=dict(model_params or {}), device=device)
    if shard_size is None:
        shard_size = auto_shard_size(str(model), block_size, n_points, samples_per_point, workers)
    common["shard_size"] = shard_size
    largest = SamplingConfig(k_min=2, k_max=2, **common).largest_k(dataset, n_points)
    if k_max is None and not _default_range_fits(dataset.n_pool, dataset.n_classes, block_size, n_points):
        # Data too small for any default size range: say it in rows, never in k.
        all_points = n_points >= dataset.n_pool
        need = next(n for n in range(dataset.n_pool + 1, 10 ** 7) if _default_range_fits(
            n, dataset.n_classes, block_size, n if all_points else n_points))
        raise DataError(too_little_data(dataset, need, f"or, for this file, a smaller --block-size (now "
                                                       f"{block_size}) or fewer --points"))
    lo, hi = default_k_range(dataset.n_pool, dataset.n_classes)
    k_max = min(hi, largest) if k_max is None else k_max
    if k_min is None:
        k_min = lo if k_max >= hi else default_k_min(k_max, dataset.n_classes)
    return SamplingConfig(k_min=k_min, k_max=k_max, **common).resolved(dataset, n_points=n_points, warn=warn)


def _default_range_fits(n_pool: int, n_classes: int, block_size: int, n_points: int) -> bool:
    """Whether a pool of ``n_pool`` has a default size range with bases beside a block of valued points."""
    from .sampling.config import default_k_min

    try:
        lo, hi = default_k_range(n_pool, n_classes)
    except ConfigError:
        return False
    k_max = min(hi, n_pool - min(block_size, max(n_points, 1)))
    return k_max >= 2 and k_max >= (lo if k_max >= hi else default_k_min(k_max, n_classes))


def plan_sampling(dataset_path: str, sampling: Mapping[str, Any], point_groups: Sequence[Sequence[str]],
                  ledger_dir: str | Path, plan_dir: str | Path | None = None) -> dict[str, Any]:
    """Plan the shards still to run for every point group; write them to a plan file.

    Each point group is planned on its own (its plan key covers exactly its
    points), so points added later never disturb earlier points' samples.
    The shards go to ``<plan_dir>/plan-<sha256[:16]>.parquet`` (default: a
    ``plans`` folder beside the ledger), one row group per shard; the summary
    returned holds only counts and the file's path and hash, so it can cross
    any task boundary whatever the number of points (tasks read their shard
    by index with :func:`run_shard`).
    """
    from .sampling import Ledger, SamplingConfig, plan_blocks, shard_blocks
    from .sampling.plans import plan_file_bytes

    ds = open_dataset(dataset_path)
    cfg = SamplingConfig.from_dict(dict(sampling))
    ledger = Ledger(ledger_dir)
    done = set(ledger.completed_base_ids())
    shards, planned_samples, todo_samples = [], 0, 0
    for group in point_groups:
        # The run's entry (resolve_sampling) validated this config and warned once.
        all_blocks = plan_blocks(ds, cfg, list(group), warn=False)
        planned_samples += sum(b.n_samples for b in all_blocks)
        todo = [b for b in all_blocks if b.base_id not in done]
        todo_samples += sum(b.n_samples for b in todo)
        shards.extend(shard_blocks(todo, cfg.shard_size))
    # A plan file is named by its content (written whole, then the others go): on a local
    # disk or at an fsspec URL beside the ledger, where workers read it.
    folder = Store(plan_dir if plan_dir is not None else storage_join(storage_parent(ledger_dir), "plans"))
    data = plan_file_bytes(shards, ds)
    digest = hashlib.sha256(data).hexdigest()
    name = f"plan-{digest[:16]}.parquet"
    path = folder.write_bytes(name, data)
    for old in folder.list():  # one writer per run folder (its lock)
        if old.startswith("plan-") and old.endswith(".parquet") and old != name:
            folder.delete(old)
    return {
        "plan": str(path),
        "plan_hash": digest,
        "n_shards": len(shards),
        "samples_planned": planned_samples,
        "samples_todo": todo_samples,
        "samples_reused": planned_samples - todo_samples,
        "quarantined": [f"{name}: {reason}" for name, reason in ledger.quarantined],
    }


def plan_shard_names(plan: str | Path) -> list[str]:
    """Names of the shards in a plan file, in order (shard ``i`` is the ``i``-th)."""
    from .sampling.plans import plan_file_shards

    return plan_file_shards(plan)


def run_shard(dataset_path: str, sampling: Mapping[str, Any], plan: str | Path, shard_index: int,
              ledger_dir: str | Path) -> dict[str, Any]:
    """Sample shard ``shard_index`` of a plan file and append it to the ledger atomically.

    The shard's out-of-bag evidence is committed with it. Returns its counts
    (small: the rows went to the ledger).
    """
    from .sampling import Ledger, SamplingConfig, as_dataset, sample_blocks
    from .sampling.plans import read_plan_shard

    start = time.perf_counter()
    ds = as_dataset(dataset_path)  # memory-mapped once per worker process
    cfg = SamplingConfig.from_dict(dict(sampling))
    shard = read_plan_shard(plan, shard_index, ds)
    result = sample_blocks(ds, cfg, shard.blocks)
    frame = result.samples
    counts = {"fits": result.n_fits, "oob_predictions": result.n_oob_predictions}
    Ledger(ledger_dir).write_shard(shard.name, frame, oob=result.oob, counts=counts)
    n_failed = int(frame["failed"].sum()) if "failed" in frame else 0
    return {
        "name": shard.name,
        "samples": int(len(frame)),
        "failed": n_failed,
        # One fit per base plus one per point valued against it; the out-of-bag
        # evidence adds predictions only.
        **counts,
        "seconds": round(time.perf_counter() - start, 4),
    }


# --------------------------------------------------------------------------- points and samples


def save_point_groups(run_dir: str | Path, groups: Sequence[Sequence[str]]) -> None:
    """Record which point ids are valued, group by group (each group is one plan), where the run folder is."""
    Store(RunFolder(run_dir).location()).write_json("points.json", {"groups": [list(g) for g in groups]})


def prepare_points(run_dir: str, dataset_path: str, points: int | str | None, seed: int,
                   sampling_kwargs: Mapping[str, Any], workers: int | None = None) -> dict[str, Any]:
    """The run's points and sampling config, decided where the pool runs it (a worker of the run's cluster).

    Chooses the points (:func:`choose_points`), resolves the sampling config
    (:func:`resolve_sampling`, its warnings recorded and returned, for the
    caller to repeat where the user sees them) and writes ``points.json``
    where the run folder is when the chosen points differ from those already
    there. Returns the config, the number of points and the warnings: never
    the points themselves, so the caller's memory does not grow with them.
    """
    import warnings

    ds = open_dataset(dataset_path)
    chosen = choose_points(ds, points, seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = resolve_sampling(ds, n_points=len(chosen), workers=workers, **dict(sampling_kwargs))
    previous = load_point_groups(run_dir)
    if sorted(p for g in previous for p in g) != sorted(chosen):
        save_point_groups(run_dir, [chosen])
    return {"sampling": cfg.to_dict(), "sampling_hash": cfg.stable_hash(), "n_points": len(chosen),
            "warnings": [(str(w.message), w.category) for w in caught]}


def plan_run_sampling(run_dir: str, dataset_path: str, sampling: Mapping[str, Any], expected_hash: str
                      ) -> dict[str, Any]:
    """:func:`plan_sampling` for the points in the run folder's ``points.json``, read where the run folder is.

    ``expected_hash`` is the file's sha256 when the run started: a file
    changed since is an error (rerun the command) rather than a silent
    change of which points are sampled.
    """
    run = RunFolder(run_dir)
    groups, found = read_point_groups(run.location())
    if found != expected_hash:
        raise ConfigError(f"{run.location('points.json')} changed since the run started (content hash "
                          f"{expected_hash[:12]} expected); rerun the command")
    return plan_sampling(dataset_path, sampling, groups, run.samples)


def points_hash(run_dir: str | Path) -> str:
    """sha256 of ``points.json`` (empty string when there is none): the reference a flow passes."""
    from .io import sha256_file

    path = RunFolder(run_dir).file("points.json")
    return sha256_file(path) if path.exists() else ""


def load_point_groups(run_dir: str | Path) -> list[list[str]]:
    """The point groups of ``points.json``, read where the run folder is (a worker has no working copy)."""
    return read_point_groups(run_dir)[0]


#: The ledger columns the law fits and the values table need (the ledger has ~20).
SAMPLE_COLUMNS = ("point_id", "k", "delta", "failed")


def load_samples(run_dir: str | Path, sampling: Mapping[str, Any],
                 columns: Sequence[str] | None = SAMPLE_COLUMNS, points: Sequence[str] | None = None) -> pd.DataFrame:
    """The verified ledger rows of this run's points (or of ``points`` among them) under this sampling identity.

    Streams the ledger shard by shard (:meth:`Ledger.read_table`), reading
    only ``columns`` (None: every column) and filtering rows in Arrow, so
    memory holds the projected rows only.
    """
    from .sampling import Ledger, SamplingConfig

    run = RunFolder(run_dir)
    cfg = SamplingConfig.from_dict(dict(sampling))
    where: dict[str, Any] = {"config_hash": {cfg.identity_hash(), cfg.stable_hash()}}
    if cfg.mode == "uniform":
        where["k"] = (cfg.k_min, cfg.k_max)
    if points is not None:  # some of the run's points: points.json need not be read
        where["point_id"] = set(points)
    else:
        run_points = {p for g in load_point_groups(run_dir) for p in g}
        if run_points:
            where["point_id"] = run_points
    table = Ledger(run.samples).read_table(None if columns is None else list(columns), where=where)
    return table.to_pandas()


def ledger_hash(run_dir: str | Path) -> str:
    """Content hash of the verified ledger (a cache key for everything downstream)."""
    from .sampling import Ledger

    return Ledger(RunFolder(run_dir).samples).content_hash()


# --------------------------------------------------------------------------- laws


def fit_mle_laws(run_dir: str | Path, sampling: Mapping[str, Any], *, pool=SERIAL,
                 part_points: int = PART_POINTS) -> dict[str, Any]:
    """Per-point maximum-likelihood laws from the ledger -> ``laws_mle.parquet``.

    One candidate of :func:`choose_laws` (and a comparison column of the
    values table), not necessarily the laws the values come from. Fitted
    partition by partition of points (:mod:`.partitions`; ``part_points``
    per partition), each partition one call of ``pool.map``, then joined
    by one more call. The parts, committed by ``done.json`` in their folder
    (the summary's ``parts``), are what the later stages read (their ``laws_parts``).
    """
    run = RunFolder(run_dir)
    start = time.perf_counter()
    where = run.location()
    record = partitions.split(where, sampling, part_points=part_points, pool=pool)
    n = record["parts"]
    fitted = pool.map(partitions.fit_mle_part, [where] * n, [record] * n, range(n))
    names = [f["file"] for f in fitted if f["file"]]
    folder = f"{partitions.PARTS}/{record['key']}/laws_mle"
    Store(where).write_json(f"{folder}/done.json", {"split": record["key"], "parts": n, "files": names})
    joined = pool.map(partitions.join_laws, [where], [names], [LAWS_MLE])[0]
    run.fetch(LAWS_MLE, LAWS_MLE + ".json")
    return {"files": [LAWS_MLE], "points": joined["points"], "samples": int(sum(f["samples"] for f in fitted)),
            "flags": joined["flags"], "median_alpha": joined["median_alpha"], "partitions": n,
            "parts": {"folder": folder, "split": record["key"]}, "seconds": round(time.perf_counter() - start, 3)}


#: The amortized model's folder in the run folder (the revaluation's triage reads it).
AMORTIZED_MODEL = "amortized_model"
#: Points the amortized estimator trains on at most (the budget used is recorded
#: in the stage's summary; see :data:`pointscale.laws.amortized.MAX_TRAIN_POINTS`).
AMORTIZED_MAX_TRAIN_POINTS = _AMORTIZED_BUDGET


def fit_amortized(run_dir: str | Path, dataset_path: str, sampling: Mapping[str, Any],
                  params: Mapping[str, Any] | None = None,
                  max_train_points: int | None = AMORTIZED_MAX_TRAIN_POINTS, *, pool=SERIAL,
                  part_points: int = PART_POINTS) -> dict[str, Any]:
    """The amortized estimator trained on the samples -> ``laws_amortized.parquet``.

    Inputs are the points' features, labels and out-of-bag evidence. Laws are
    predicted for every point of the training pool, including points with no
    samples yet (e.g. rows that just arrived). With more than
    ``max_train_points`` sampled points, a seeded subsample of that many
    trains the model (None: all).

    By partitions of points (:mod:`.partitions`): one call of ``pool.map``
    trains the model on the training points' rows
    (:func:`~pointscale.partitions.train_amortized`; also to
    ``amortized_model/``, which the revaluation's triage reads), one call per
    partition predicts its points' laws
    (:func:`~pointscale.partitions.predict_amortized_part`), and one joins
    them. The parts live under ``parts/<split>/amortized-<key>/`` (``key``: a
    hash of the dataset version, the settings and the code), committed by
    its ``done.json``; the summary's ``parts`` names that folder, which the
    later stages read partition by partition (their ``laws_parts``).
    """
    run = RunFolder(run_dir)
    start = time.perf_counter()
    where = run.location()
    record = partitions.split(where, sampling, part_points=part_points, pool=pool)
    n = record["parts"]
    version = str(dataset_path).rstrip("/").rsplit("/", 1)[-1]  # the version's folder, named by its fingerprint
    key = stable_hash({"split": record["key"], "dataset": version,
                       "params": dict(params or {}), "max_train_points": max_train_points,
                       "code": code_version()})[:16]
    folder = f"{partitions.PARTS}/{record['key']}/amortized-{key}"
    trained = pool.map(partitions.train_amortized, [where], [dataset_path], [dict(sampling)], [record],
                       [dict(params or {})], [max_train_points], [folder], [[AMORTIZED_MODEL]])[0]
    store = Store(where)
    if store.exists(folder, "done.json"):
        names = store.read_json(folder, "done.json")["files"]
    else:
        predicted = pool.map(partitions.predict_amortized_part, [where] * n, [dataset_path] * n, [record] * n,
                             range(n), [folder] * n)
        names = [p["file"] for p in predicted if p["file"]]
        store.write_json(f"{folder}/done.json", {"split": record["key"], "parts": n, "files": names})
    joined = pool.map(partitions.join_laws, [where], [names], [LAWS_AMORTIZED])[0]
    model_files = [f"{AMORTIZED_MODEL}/{name}" for name in trained["model_files"]]
    run.fetch(LAWS_AMORTIZED, LAWS_AMORTIZED + ".json", *model_files)
    return {"files": [LAWS_AMORTIZED], "points_predicted": joined["points"],
            "points_trained": trained["points_trained"], "points_sampled": trained["points_sampled"],
            "max_train_points": max_train_points, "alpha_prior": trained["alpha_prior"],
            "hidden_layer_sizes": trained["hidden_layer_sizes"], "partitions": n,
            "parts": {"folder": folder, "split": record["key"]},
            "seconds": round(time.perf_counter() - start, 3)}


# --------------------------------------------------------------------------- values, selection, report


#: Output files of the stages (names inside the run folder).
LAWS_MLE, LAWS_AMORTIZED = "laws_mle.parquet", "laws_amortized.parquet"
#: The laws behind ``shapley`` (the choose-laws stage's choice) and the aggregate learning curve (value stage).
LAWS, LEARNING_CURVE = "laws.parquet", "learning_curve.json"
VALUES, SELECTION, REMOVAL, REPORT = "values.parquet", "selection.parquet", "removal.parquet", "report.md"
LABEL_ISSUES = "label_issues.csv"


def _load_laws(run: RunFolder, name: str | None):
    """The laws in ``name`` where the run folder is (None: none)."""
    return partitions.load_laws(Store(run.location()), name) if name else None


def _member(ids: np.ndarray, among) -> np.ndarray:
    """Mask of ``ids`` that are in ``among`` (a hash set lookup, linear in both)."""
    return pd.Index(np.asarray(among, dtype=object)).get_indexer(np.asarray(ids, dtype=object)) >= 0


def _run_laws(run: RunFolder, laws_mle: str | None, laws_amortized: str | None, split_record: Mapping[str, Any],
              laws_parts: Mapping[str, Any] | None, points: Sequence[str] | None):
    """The stored MLE and amortized laws of the run's points (None: not part of this run).

    The amortized laws cover the whole pool; they are cut to the run's points
    (or to ``points`` among them), read partition by partition when the
    amortized stage's parts (``laws_parts['amortized']``) are there for this split
    (hash lookups: np.isin on object arrays compares every pair).
    """
    mle = _load_laws(run, laws_mle)
    if laws_amortized is None:
        return mle, None
    where = run.location()
    folder = partitions.committed_parts(where, split_record, (laws_parts or {}).get("amortized"))
    if folder is not None:
        return mle, partitions.laws_of_points(where, split_record, folder, points)
    amortized = _load_laws(run, laws_amortized)
    wanted = points if points is not None else [p for g in load_point_groups(where) for p in g]
    if wanted:
        amortized = amortized.subset(_member(amortized.point_ids, list(dict.fromkeys(wanted))))
    return mle, amortized


#: Points whose samples the law choice reads at most: beyond, a seeded sample of this many
#: (:func:`pointscale.partitions.choice_points`) gives the evidence for the choice and the
#: population-level hyperparameters, which are then applied to every other point partition by
#: partition. Measured (docs/scale.md): the choice took 59 CPU-s at 10^4 points; on 5·10^4 (the
#: control variate applied, so the amortized candidates were refitted with their hyperparameter
#: search in every fold) it had not finished after 27 minutes. Runs at or below the cap are
#: computed as before, bit for bit.
CHOICE_POINTS = 20_000


def choose_laws(run_dir: str | Path, dataset_path: str, sampling: Mapping[str, Any], *,
                laws_mle: str = LAWS_MLE, laws_amortized: str | None = None,
                laws_parts: Mapping[str, Any] | None = None,
                method: str = "auto", control_variate: str = "auto", pool=SERIAL,
                part_points: int = PART_POINTS, choice_points: int = CHOICE_POINTS) -> dict[str, Any]:
    """The laws the values come from -> ``laws.parquet`` (the choice recorded in its ``meta['selection']``).

    :func:`pointscale.laws.auto.select_laws` with ``method`` ("auto": the
    registered estimator with the best held-out-sample likelihood). The laws
    in ``laws_mle`` and ``laws_amortized`` (None: no amortized laws in this
    run, whatever file the folder holds) are reused where a candidate needs
    them on all samples; without amortized laws auto chooses among mle,
    shrinkage and the law-free shrunk mean only. ``laws_parts`` (``{"mle":
    ..., "amortized": ...}``, each the stage's summary's ``partitions``):
    those laws by partitions, read so instead of the laws file whole. The held-out score targets
    the Shapley value over the sampled range when k is drawn uniformly from
    it; staggered sizes are scored by the law for psi_k itself.

    ``control_variate`` ("auto", "on" or "off"): whether the estimators fit
    the samples adjusted by the block-mean control variate
    (:func:`pointscale.laws.control.adjust`); "auto" adjusts where the run's
    own cross-fitted check says it lowers the error of the per-point means.
    Adjusted samples are fitted from scratch (the stored MLE and amortized
    laws were fitted to the raw ones). What it found and whether it was
    applied go to ``meta['selection']['control_variate']`` and the summary.

    The law diagnostic (:mod:`pointscale.laws.diagnostic`: does the law hold,
    how reliable the values are, in one sentence) goes to the laws'
    ``meta['law_diagnostic']``, the summary and ``run.json``'s ``law_diagnostic``
    (there with ``choice_points``: how many points the choice's evidence used,
    of ``points``); its ``control_variate`` names the control variate applied.

    Bounded memory whatever the number of points: the choice (the
    cross-validation, the law diagnostic, the reliability, the control
    variate's check and coefficient, the estimators' population-level
    hyperparameters) is one call of ``pool.map`` that reads the samples of
    at most ``choice_points`` points -- every point when the run has no more
    (then that call writes ``laws.parquet`` itself), else a seeded sample of
    them (:func:`pointscale.partitions.choice_points`). Then one call per
    partition of points (:mod:`.partitions`) fits the chosen estimator to the
    partition's other points with those hyperparameters fixed
    (:func:`pointscale.partitions.apply_laws_part`; each point's law is the
    one it would get in the choice's fit), and one call joins the laws
    (``meta['choice']`` says how many points the choice used). With a
    sample, the control variate's block totals and size curve come from
    every point's samples (one call per partition sums them).
    """
    from .io import sha256_file
    from .laws.control import CONTROL_SETTINGS

    if control_variate not in CONTROL_SETTINGS:
        raise ConfigError(f"control_variate={control_variate!r} must be one of {CONTROL_SETTINGS}")
    if int(choice_points) < 1:
        raise ConfigError(f"choice_points={choice_points} must be at least 1")
    run = RunFolder(run_dir)
    where = run.location()
    record = partitions.split(where, sampling, part_points=part_points, pool=pool)
    n = record["parts"]
    sampled = record["n_points"] > int(choice_points)
    totals = pool.map(partitions.base_totals_part, [where] * n, [record] * n, range(n)) if sampled else None
    key = None
    if sampled:  # names the choice's folder: the laws files are hashed only when it has one
        sources = {role: name for role, name in (("mle", laws_mle), ("amortized", laws_amortized)) if name}
        key = stable_hash({"split": record["key"], "method": method, "control_variate": control_variate,
                           "choice_points": int(choice_points),
                           "laws": {role: sha256_file(run.file(name)) for role, name in sources.items()}})[:16]
    summary = pool.map(compute_chosen_laws, [where], [dataset_path], [dict(sampling)], [laws_mle],
                       [laws_amortized], [method], [control_variate], [record], [int(choice_points)],
                       [totals], [key], [laws_parts])[0]
    plan = summary.pop("apply", None)
    if plan is not None:  # the choice used a sample of the points: apply it to the others
        from .laws.estimators import get_estimator

        needs = (plan["chosen"], *get_estimator(plan["chosen"]).requires)
        for role in ("mle", "amortized"):  # laws on all samples the choice reused, cut into the partitions
            if role in needs and plan[role] is not None and not plan["control"]["applied"]:
                cut = partitions.committed_parts(where, record, (laws_parts or {}).get(role))
                plan[f"{role}_parts"] = cut or pool.map(partitions.split_laws, [where], [record], [plan[role]],
                                                        [sha256_file(run.file(plan[role]))])[0]
        parts = pool.map(partitions.apply_laws_part, [where] * n, [dataset_path] * n, [record] * n, range(n),
                         [plan] * n)
        joined = pool.map(partitions.join_chosen_laws, [where], [plan], [[p["file"] for p in parts if p["file"]]],
                          [LAWS])[0]
        summary["points"] = joined["points"]
    run.fetch(LAWS, LAWS + ".json")
    run.update_manifest(law_diagnostic=summary["law_diagnostic"])
    return summary


def compute_chosen_laws(run_dir: str, dataset_path: str, sampling: Mapping[str, Any], laws_mle: str | None,
                        laws_amortized: str | None, method: str, control_variate: str,
                        split_record: Mapping[str, Any], choice_points: int,
                        totals: Sequence[str] | None, key: str | None,
                        laws_parts: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The choice of :func:`choose_laws`, run where the pool runs it: reads and writes only the run folder.

    On the samples of :func:`pointscale.partitions.choice_points` (all the
    run's when it has at most ``choice_points`` points: then the laws are
    written to ``laws.parquet``; else to the choice's folder, and the
    summary's ``apply`` says how the other points are fitted).
    ``totals``: the per-partition block totals of the control variate
    (:func:`pointscale.partitions.base_totals_part`) when sampled; ``key``
    then names the choice's folder (None: no sample). ``laws_parts``:
    as for :func:`choose_laws`.
    """
    from .laws.auto import select_laws
    from .laws.control import control_table, controlled, merge_totals
    from .laws.diagnostic import diagnostic_sentence
    from .laws.estimators import get_estimator, population_of
    from .sampling import SamplingConfig

    run = RunFolder(run_dir)
    store = Store(run.location())
    start = time.perf_counter()
    ds = open_dataset(dataset_path)
    cfg = SamplingConfig.from_dict(dict(sampling))
    subset = partitions.choice_points(run_dir, split_record, cfg.seed, choice_points)
    rows = load_samples(run_dir, sampling, columns=SAMPLE_COLUMNS + ("base_id", "sample_id"), points=subset)
    bases = None if subset is None else merge_totals(store.read_parquet(t).to_pandas() for t in totals)
    samples, control = controlled(rows, control_variate, seed=cfg.seed, columns=SAMPLE_COLUMNS + ("base_id",),
                                  bases=bases)
    applied = control["applied"]
    fitted = {}
    mle, amortized = _run_laws(run, laws_mle, laws_amortized, split_record, laws_parts, subset)
    if subset is not None and mle is not None:
        mle = mle.subset(_member(mle.point_ids, subset))
    if amortized is not None and not applied:
        fitted["amortized"] = amortized.subset(_member(amortized.point_ids, samples["point_id"].unique()))
    if mle is not None and not applied:
        fitted["mle"] = mle
    candidates = None if amortized is not None else ("shrinkage", "mle", "shrunk_mean")
    oob = partitions.evidence(run_dir, split_record, subset)
    laws, _ = select_laws(samples, ds, method=method, oob=oob, random_state=cfg.seed, fitted=fitted,
                          candidates=candidates, target="psi" if cfg.mode == "staggered" else "shapley",
                          k_range=(cfg.k_min, cfg.k_max))
    population = population_of(laws)
    selection = {**laws.meta["selection"], "control_variate": control}
    model = cfg.model if isinstance(cfg.model, str) else "this model"
    diagnostic = dict(laws.meta["law_diagnostic"], control_variate="block-mean" if applied else "none")
    diagnostic["sentence"] = diagnostic_sentence(diagnostic, model)
    meta = {k: v for k, v in laws.meta.items() if k != "population_state"}
    laws = dataclasses.replace(laws, meta={**meta, "selection": selection, "law_diagnostic": diagnostic})
    n_points, n_used = int(split_record["n_points"]), int(split_record["n_points"] if subset is None else len(subset))
    summary = {"files": [LAWS], "points": laws.n_points, "chosen": selection["chosen"], "estimator": selection,
               "control_variate": control,
               "law_diagnostic": {**diagnostic, "choice_points": n_used, "points": n_points}}
    if subset is None:
        partitions.save_laws(store, LAWS, laws)
    else:
        folder = f"{partitions.PARTS}/{split_record['key']}/choice-{key}"
        store.write_json(f"{folder}/points.json", list(subset))
        partitions.save_laws(store, f"{folder}/laws.parquet", laws)
        chosen = selection["chosen"]
        plan = {"folder": folder, "chosen": chosen, "seed": int(cfg.seed), "k_range": [cfg.k_min, cfg.k_max],
                "populations": {} if population is None else {chosen: population},
                "control": {"applied": bool(applied), "b": control.get("b"), "table": None},
                "mle": laws_mle, "amortized": laws_amortized if amortized is not None else None,
                "choice": {"points": n_used, "of": n_points, "seed": int(cfg.seed),
                           "rule": "a sample of the points keyed by a hash of their ids and the seed "
                                   "(pointscale.partitions.choice_points); every other point fitted with "
                                   "the population-level hyperparameters learned on it"}}
        if applied:
            plan["control"]["table"] = f"{folder}/control.parquet"
            store.write_parquet(plan["control"]["table"], control_table(bases))
            if "amortized" in (chosen, *get_estimator(chosen).requires):
                # The amortized laws were fitted to the adjusted samples: the other points need that model.
                plan["model"] = partitions.save_amortized_model(
                    store, f"{folder}/amortized_model", samples, ds, oob, cfg.seed, (cfg.k_min, cfg.k_max))
        store.write_json(f"{folder}/plan.json", plan)  # what the partitions apply (a record; tasks get it passed)
        summary["apply"] = plan
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary


def value(run_dir: str | Path, dataset_path: str, sampling: Mapping[str, Any],
          target_sizes: Sequence[int] | None = None, *, laws: str = LAWS, laws_mle: str | None = LAWS_MLE,
          laws_amortized: str | None = None, laws_parts: Mapping[str, Any] | None = None, pool=SERIAL,
          part_points: int = PART_POINTS) -> dict[str, Any]:
    """The values table -> ``values.parquet`` (and ``learning_curve.json``), from the chosen laws.

    ``laws`` names the laws behind ``shapley`` (:func:`choose_laws`' file);
    ``laws_mle`` and ``laws_amortized`` the laws of the comparison columns
    ``shapley_mle`` and ``shapley_amortized`` (None: not in this run,
    whatever file the folder holds; ``laws_parts``, ``{"mle": ...,
    "amortized": ...}`` with each stage's ``partitions``: those laws by
    partitions, read so); ``mc_mean`` and ``oob`` sit beside them.
    ``learning_curve.json``: the aggregate law of the base fits' utilities.
    ``value_now`` is the value at the dataset's current size (``size_now``),
    under the same name in every version of a revaluated run.
    Classification with out-of-bag evidence adds ``label_issue_score`` and
    ``label_issues.csv`` (the flagged rows of the whole pool,
    :mod:`pointscale.valuation.label_issues`); their count, estimated rate
    and threshold rule go to ``run.json`` under ``label_issues``.

    Computed partition by partition of points (:mod:`.partitions`), each
    partition one call of ``pool.map``; one more call joins the parts and
    does what needs every point (ranks, label issues, learning curve).
    """
    from .io import sha256_file
    from .laws import FittedScalingLaws
    from .sampling import SamplingConfig

    run = RunFolder(run_dir)
    n_pool = open_dataset(dataset_path, object_ids=False).n_pool
    cfg = SamplingConfig.from_dict(dict(sampling))
    sizes = list(target_sizes) if target_sizes else [n_pool, 10 * n_pool]
    # The value at the current size is always computed: it lives under one name across versions.
    computed = sizes if n_pool in sizes else [*sizes, n_pool]
    where = run.location()
    record = partitions.split(where, sampling, part_points=part_points, pool=pool)
    files = {role: name for role, name in (("laws", laws), ("mle", laws_mle), ("amortized", laws_amortized))
             if name}
    digests = {role: sha256_file(run.file(name)) for role, name in files.items()}
    key = stable_hash({"split": record["key"], "sizes": [int(k) for k in computed], "k": [cfg.k_min, cfg.k_max],
                       "laws": digests})[:16]
    out = f"{partitions.PARTS}/{record['key']}/values-{key}"
    n = record["parts"]
    # Each laws file cut once into the partitions' points (a task each), so a value task reads its own;
    # the MLE and amortized laws are by partitions already when their stage's parts are there.
    cut = {role: partitions.committed_parts(where, record, (laws_parts or {}).get(role))
           for role in files if role in ("mle", "amortized")}
    todo = [role for role in files if not cut.get(role)]
    folders = pool.map(partitions.split_laws, [where] * len(todo), [record] * len(todo),
                       [files[r] for r in todo], [digests[r] for r in todo])
    sources = {role: None for role in ("laws", "mle", "amortized")} | cut | dict(zip(todo, folders))
    parts = pool.map(partitions.value_part, [where] * n, [dataset_path] * n, [record] * n, range(n),
                     [sources] * n, [(cfg.k_min, cfg.k_max)] * n, [computed] * n, [out] * n)
    names = {"values": VALUES, "label_issues": LABEL_ISSUES, "learning_curve": LEARNING_CURVE}
    joined = pool.map(partitions.join_values, [where], [dataset_path], [dict(sampling)], [record], [parts],
                      [names])[0]
    run.fetch(*joined["files"])
    run.update_manifest(label_issues=joined["label_issues"])
    chosen = FittedScalingLaws.read_meta(run.file(laws))
    return {"files": joined["files"], "points": joined["points"], "by_estimator": joined["by_estimator"],
            "estimator": chosen.get("selection"), "negative_c": joined["negative_c"], "target_sizes": sizes,
            "learning_curve": joined["learning_curve"], "label_issues": joined["label_issues"], "partitions": n}


def select(run_dir: str | Path, dataset_path: str, m: int, n_current: int | None = None, *,
           laws: str = LAWS, pool=SERIAL) -> dict[str, Any]:
    """The m most valuable points at the current size, ranked by the laws in ``laws`` -> ``selection.parquet``.

    The default is :func:`choose_laws`' ``laws.parquet``: the laws behind
    ``shapley``. One call of ``pool.map`` (on a worker of the flow's
    cluster: it reads every point's law) writes it where the run folder is.
    """
    run = RunFolder(run_dir)
    summary = pool.map(compute_selection, [run.location()], [dataset_path], [int(m)],
                       [None if n_current is None else int(n_current)], [laws])[0]
    run.fetch(SELECTION)
    return summary


def compute_selection(run_dir: str, dataset_path: str, m: int, n_current: int | None, laws: str) -> dict[str, Any]:
    """The body of :func:`select`, run where the pool runs it: reads and writes only the run folder."""
    from .valuation import select_points

    run = RunFolder(run_dir)
    store = Store(run.location())
    ds = open_dataset(dataset_path)
    source = _load_laws(run, laws)
    n_current = int(n_current or ds.n_pool)
    labels = None
    if ds.task == "classification":
        labels = pd.Series(np.asarray(ds.y_train), index=ds.point_ids.astype(str))
    finite = np.isfinite(source.c) & np.isfinite(source.alpha)
    source = source.subset(finite)
    m = min(int(m), source.n_points)
    if m < 1:
        # Nothing to rank (e.g. every point has fewer than 3 samples): say so, do not invent.
        chosen = pd.DataFrame({"point_id": pd.Series(dtype=str), "predicted_value": pd.Series(dtype=float)})
        store.write_parquet(SELECTION, chosen)
        return {"files": [SELECTION], "selected": 0, "n_current": n_current,
                "note": "no point has a finite fitted law"}
    chosen = select_points(source, n_current, m, labels=labels, balanced=labels is not None)
    chosen["estimator"] = source.estimator
    store.write_parquet(SELECTION, chosen)
    return {"files": [SELECTION], "selected": int(len(chosen)), "n_current": n_current,
            "estimator": source.estimator}


#: Pool points the removal curve refits on at most (7 fits per fraction): beyond
#: this the curve uses a seeded subsample and says so (``n_pool_used``).
REMOVAL_MAX_TRAIN = 20_000


def removal(run_dir: str | Path, dataset_path: str, sampling: Mapping[str, Any], *, values: str = VALUES,
            max_train: int | None = REMOVAL_MAX_TRAIN, pool=SERIAL) -> dict[str, Any]:
    """Removal curve (lowest-valued first vs random), from the values in ``values`` -> ``removal.parquet``.

    On pools above ``max_train`` points the curve is computed on a seeded
    subsample of that many (see :func:`~pointscale.valuation.removal_curve`).
    One call of ``pool.map`` (on a worker of the flow's cluster: it reads
    every point's value) writes it where the run folder is.
    """
    run = RunFolder(run_dir)
    summary = pool.map(compute_removal, [run.location()], [dataset_path], [dict(sampling)], [values],
                       [max_train])[0]
    run.fetch(*summary["files"])
    return summary


def compute_removal(run_dir: str, dataset_path: str, sampling: Mapping[str, Any], values: str,
                    max_train: int | None) -> dict[str, Any]:
    """The body of :func:`removal`, run where the pool runs it: reads and writes only the run folder."""
    from .sampling import SamplingConfig
    from .valuation import removal_curve

    store = Store(RunFolder(run_dir).location())
    ds = open_dataset(dataset_path)
    cfg = SamplingConfig.from_dict(dict(sampling))
    if ds.X_test.shape[0] == 0:
        # Given splits without a test file: scoring on the validation rows the values
        # were computed against would flatter them, so there is no curve.
        return {"files": [], "rows": 0, "skipped": "no test split (pass --test to get a removal curve)"}
    table = store.read_parquet(values, columns=["point_id", "shapley"]).to_pandas()
    curve = removal_curve(ds, table, model=cfg.model, model_params=cfg.model_params, seed=cfg.seed,
                          max_train=max_train)
    store.write_parquet(REMOVAL, curve)
    return {"files": [REMOVAL], "rows": int(len(curve)), "n_pool_used": int(curve["n_pool_used"].iloc[0]),
            "n_pool": int(ds.n_pool)}


def report(run_dir: str | Path, dataset_path: str, *, laws: str | None = LAWS_MLE, values: str = VALUES,
           selection: str | None = SELECTION, removal: str | None = None, chosen_laws: str | None = None,
           learning_curve: str | None = None, label_issues: str | None = None, pool=SERIAL) -> dict[str, Any]:
    """``report.md`` and its figures from the named outputs; returns the path and a short summary text.

    Only the files named here are reported (None: that output is not part of
    this run), so a rerun with other switches never reports a stale file.
    ``chosen_laws`` (:func:`choose_laws`' ``laws.parquet``) adds which
    estimator was chosen and why; ``learning_curve`` the aggregate learning curve;
    ``label_issues`` the flagged rows (with run.json's count and rate).
    One call of ``pool.map`` (on a worker of the flow's cluster: it reads the
    laws and values tables whole) writes the report where the run folder is;
    this process copies it (and its figures) into the working copy. Also
    returns ``values_view``, the most and least valuable points as Markdown.
    """
    run = RunFolder(run_dir)
    names = {"laws": laws, "values": values, "selection": selection, "removal": removal,
             "chosen_laws": chosen_laws, "learning_curve": learning_curve, "label_issues": label_issues}
    out = pool.map(compute_report, [run.location()], [dataset_path], [names])[0]
    run.fetch(*out["files"])
    return {"path": str(run.file(REPORT)), "summary": out["summary"], "values_view": out["values_view"]}


def compute_report(run_dir: str, dataset_path: str, names: Mapping[str, str | None]) -> dict[str, Any]:
    """The body of :func:`report`, run where the pool runs it: reads and writes only the run folder."""
    import io
    import tempfile

    from .report import report_summary, write_report
    from .report.views import values_view

    run = RunFolder(run_dir)
    store = Store(run.location())

    def frame(name: str) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(store.read_bytes(name)))

    ds = open_dataset(dataset_path)
    law_table = _load_laws(run, names["laws"])
    table = frame(names["values"])
    chosen = frame(names["selection"]) if names["selection"] else None
    experiments = {"removal": frame(names["removal"])} if names["removal"] else None
    # The report lists the run's facts; the stage records (keys, hashes) are for the pipeline.
    # The law diagnostic has its own section.
    manifest = {k: v for k, v in run.stored_manifest().items() if k not in ("outputs", "law_diagnostic")}
    picked = _load_laws(run, names["chosen_laws"])
    curve = store.read_json(names["learning_curve"]) if names["learning_curve"] else None
    if not names["label_issues"]:  # not part of this run: neither its list nor its count
        manifest.pop("label_issues", None)
    flagged = (pd.read_csv(io.BytesIO(store.read_bytes(names["label_issues"])), dtype={"point_id": str})
               if names["label_issues"] else None)
    choice = None if picked is None else picked.meta.get("selection")
    diagnostic = None if picked is None else picked.meta.get("law_diagnostic")
    with tempfile.TemporaryDirectory() as tmp:
        write_report(tmp, dataset=ds, laws=picked if picked is not None else law_table, values=table,
                     selection=chosen, experiments=experiments, manifest=manifest,
                     estimator_choice=choice, learning_curve=curve, law_diagnostic=diagnostic,
                     label_issues=flagged)
        written = sorted(p.relative_to(tmp).as_posix() for p in Path(tmp).rglob("*") if p.is_file())
        files = [f for f in written if f != REPORT] + [REPORT]  # the figures first: report.md commits them
        for name in files:
            store.write_bytes(name, (Path(tmp) / name).read_bytes())
    summary = report_summary(dataset=ds, laws=law_table, values=table, manifest=manifest,
                             law_diagnostic=diagnostic, estimator_choice=choice)
    return {"files": files, "summary": summary, "values_view": values_view(table)}
