"""The pipeline's stages as plain functions over a run folder.

Each stage reads its inputs from the run folder (or small plain arguments),
writes its outputs there atomically, and returns a small JSON-able summary.
The Prefect tasks in ``tasks/`` are thin wrappers around these; the CLI, a
Dask worker or a notebook can call them just the same.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .data import DataConfig, Dataset, load_from_config, open_dataset
from .errors import ConfigError, DataError
from .io import atomic_write_parquet
from .runs import RunFolder
from .seeding import STREAM_POINT_CHOICE, rng

#: Bumped when a stage's output format or meaning changes; part of every cache key.
PIPELINE_VERSION = "1"


def code_version() -> str:
    """Hash of the core package's source: a cache key part that changes with the code."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        root = Path(__file__).parent
        h = hashlib.sha256(PIPELINE_VERSION.encode())
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
        _CODE_VERSION = h.hexdigest()[:16]
    return _CODE_VERSION


_CODE_VERSION: str | None = None


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
    return {
        "run_dir": str(run.root),
        "path": str(folder),
        "fingerprint": ds.fingerprint,
        "name": ds.name,
        "task": ds.task,
        "n_pool": ds.n_pool,
        "n_val": int(ds.X_val.shape[0]),
        "n_test": int(ds.X_test.shape[0]),
        "n_features": ds.n_features,
        "report": dict(ds.report),
    }


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

DEFAULT_K_MIN = 100
DEFAULT_K_MAX = 1000


#: Rough single-core seconds per model fit at k ~ 100-1000 (20-60 features), measured
#: on the 2-core development machine; only used to size shards, never for results.
FIT_SECONDS = {
    "logreg": 0.0003, "ridge": 0.0001, "linear": 0.0001,  # batched exact fast paths
    "knn": 0.008, "decision_tree": 0.006, "svm": 0.02, "xgboost": 0.05, "mlp": 0.1,
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
                     workers: int | None = None):
    """The validated sampling config of a run on ``dataset``.

    Unset k bounds become the largest range the data allows up to
    [100, 1000] (on small pools, ``[k_max // 2, k_max]``); bounds that are set are validated, and an error names the
    largest k the pool allows. ``shard_size`` None means :func:`auto_shard_size`
    (an execution setting: it never changes a sample).
    """
    from .sampling import SamplingConfig
    from .sampling.models import default_model

    if model is None:  # the default follows the task, as the metric's does
        model = default_model(dataset.task)
    common = dict(model=model, metric=metric, samples_per_point=samples_per_point, seed=seed,
                  block_size=block_size, model_params=dict(model_params or {}))
    if shard_size is None:
        shard_size = auto_shard_size(str(model), block_size, n_points, samples_per_point, workers)
    common["shard_size"] = shard_size
    largest = SamplingConfig(k_min=2, k_max=2, **common).largest_k(dataset, n_points)
    k_max = min(DEFAULT_K_MAX, largest) if k_max is None else k_max
    # Small pools: keep a range (half of k_max) rather than a single size.
    k_min = min(DEFAULT_K_MIN, max(2, k_max // 2)) if k_min is None else k_min
    return SamplingConfig(k_min=k_min, k_max=k_max, **common).resolved(dataset, n_points=n_points)


def shard_to_dict(shard) -> dict[str, Any]:
    """A shard as plain JSON (what crosses task boundaries: ids and ints only)."""
    return {
        "name": shard.name,
        "blocks": [
            {"base_id": int(b.base_id), "round": int(b.round), "index": int(b.index), "k": int(b.k),
             "point_ids": list(b.point_ids), "plan_key": int(b.plan_key)}
            for b in shard.blocks
        ],
    }


def blocks_from_dict(shard: Mapping[str, Any]):
    from .sampling.plans import Block

    return [Block(base_id=int(b["base_id"]), round=int(b["round"]), index=int(b["index"]), k=int(b["k"]),
                  point_ids=tuple(b["point_ids"]), plan_key=int(b["plan_key"])) for b in shard["blocks"]]


def plan_sampling(dataset_path: str, sampling: Mapping[str, Any], point_groups: Sequence[Sequence[str]],
                  ledger_dir: str | Path) -> dict[str, Any]:
    """Shards still to run for every point group, and what the ledger already holds.

    Each point group is planned on its own (its plan key covers exactly its
    points), so points added later never disturb earlier points' samples.
    """
    from .sampling import Ledger, SamplingConfig, plan_blocks, shard_blocks

    ds = open_dataset(dataset_path)
    cfg = SamplingConfig.from_dict(dict(sampling))
    ledger = Ledger(ledger_dir)
    done = set(ledger.completed_base_ids())
    shards, planned_samples, todo_samples = [], 0, 0
    for group in point_groups:
        all_blocks = plan_blocks(ds, cfg, list(group))
        planned_samples += sum(b.n_samples for b in all_blocks)
        todo = [b for b in all_blocks if b.base_id not in done]
        todo_samples += sum(b.n_samples for b in todo)
        shards.extend(shard_blocks(todo, cfg.shard_size))
    return {
        "shards": [shard_to_dict(s) for s in shards],
        "samples_planned": planned_samples,
        "samples_todo": todo_samples,
        "samples_reused": planned_samples - todo_samples,
        "quarantined": [f"{name}: {reason}" for name, reason in ledger.quarantined],
    }


def run_shard(dataset_path: str, sampling: Mapping[str, Any], shard: Mapping[str, Any],
              ledger_dir: str | Path) -> dict[str, Any]:
    """Sample one shard and append it to the ledger atomically; return its counts."""
    from .sampling import Ledger, SamplingConfig, sample_blocks

    start = time.perf_counter()
    ds = open_dataset(dataset_path)
    cfg = SamplingConfig.from_dict(dict(sampling))
    blocks = blocks_from_dict(shard)
    result = sample_blocks(ds, cfg, blocks)
    frame = result.samples
    counts = {"fits": result.n_fits, "oob_predictions": result.n_oob_predictions}
    Ledger(ledger_dir).write_shard(shard["name"], frame, oob=result.oob, counts=counts)
    n_failed = int(frame["failed"].sum()) if "failed" in frame else 0
    return {
        "name": shard["name"],
        "samples": int(len(frame)),
        "failed": n_failed,
        # One fit per base plus one per point valued against it; the out-of-bag
        # evidence adds predictions only.
        **counts,
        "seconds": round(time.perf_counter() - start, 4),
    }


# --------------------------------------------------------------------------- points and samples


def save_point_groups(run_dir: str | Path, groups: Sequence[Sequence[str]]) -> None:
    """Record which point ids are valued, group by group (each group is one plan)."""
    from .io import atomic_write_json

    atomic_write_json(RunFolder(run_dir).file("points.json"), {"groups": [list(g) for g in groups]})


def load_point_groups(run_dir: str | Path) -> list[list[str]]:
    from .io import read_json

    path = RunFolder(run_dir).file("points.json")
    if not path.exists():
        return []
    return [list(g) for g in read_json(path)["groups"]]


def load_samples(run_dir: str | Path, sampling: Mapping[str, Any]) -> pd.DataFrame:
    """The verified ledger rows of this run's points under this sampling identity."""
    from .sampling import Ledger, SamplingConfig

    run = RunFolder(run_dir)
    cfg = SamplingConfig.from_dict(dict(sampling))
    frame = Ledger(run.samples).read()
    if frame.empty:
        return frame
    points = {p for g in load_point_groups(run_dir) for p in g}
    keep = frame["point_id"].isin(points) if points else np.ones(len(frame), bool)
    if "config_hash" in frame:
        keep &= frame["config_hash"].isin({cfg.identity_hash(), cfg.stable_hash()})
    if cfg.mode == "uniform":
        keep &= frame["k"].between(cfg.k_min, cfg.k_max)
    return frame.loc[keep].reset_index(drop=True)


def ledger_hash(run_dir: str | Path) -> str:
    """Content hash of the verified ledger (a cache key for everything downstream)."""
    from .sampling import Ledger

    return Ledger(RunFolder(run_dir).samples).content_hash()


# --------------------------------------------------------------------------- laws


def fit_laws(run_dir: str | Path, sampling: Mapping[str, Any]) -> dict[str, Any]:
    """Per-point maximum-likelihood laws from the ledger -> ``laws_mle.parquet``."""
    from .laws import fit_mle

    run = RunFolder(run_dir)
    start = time.perf_counter()
    samples = load_samples(run_dir, sampling)
    laws = fit_mle(samples)
    laws.save(run.file("laws_mle.parquet"))
    flags = {name: int(np.sum(v)) for name, v in laws.flags.items()}
    return {"points": laws.n_points, "samples": int(len(samples)), "flags": flags,
            "median_alpha": float(np.nanmedian(laws.alpha)) if laws.n_points else None,
            "seconds": round(time.perf_counter() - start, 3)}


def _oob(run_dir: str | Path):
    """The run's out-of-bag evidence (None when the ledger holds none)."""
    from .sampling import Ledger, oob_evidence

    oob = oob_evidence(Ledger(RunFolder(run_dir).samples))
    return None if oob.empty else oob


def fit_amortized(run_dir: str | Path, dataset_path: str, sampling: Mapping[str, Any],
                  params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The amortized estimator trained on all samples -> ``laws_amortized.parquet``.

    Inputs are the points' features, labels and out-of-bag evidence. Laws are
    predicted for every point of the training pool, including points with no
    samples yet (e.g. rows that just arrived).
    """
    from .laws import AmortizedScalingLaws
    from .sampling import SamplingConfig

    run = RunFolder(run_dir)
    start = time.perf_counter()
    ds = open_dataset(dataset_path)
    cfg = SamplingConfig.from_dict(dict(sampling))
    samples = load_samples(run_dir, sampling)
    oob = _oob(run_dir)
    sampled = sorted(set(samples["point_id"]))
    idx = ds.index_of(sampled)
    model = AmortizedScalingLaws(random_state=cfg.seed, **dict(params or {}))
    model.fit(np.asarray(ds.X_train)[idx], np.asarray(ds.y_train)[idx], samples, np.asarray(sampled, dtype=object),
              oob=oob)
    laws = model.predict_laws(np.asarray(ds.X_train), np.asarray(ds.y_train), ds.point_ids, oob=oob)
    laws.save(run.file("laws_amortized.parquet"))
    model.save(run.file("amortized_model"))
    return {"points_predicted": laws.n_points, "points_trained": len(sampled),
            "alpha_prior": model.alpha_prior_, "hidden_layer_sizes": list(model.hidden_layer_sizes_),
            "seconds": round(time.perf_counter() - start, 3)}


# --------------------------------------------------------------------------- values, selection, report


def _load_laws(path: Path):
    from .laws import FittedScalingLaws

    return FittedScalingLaws.load(path) if path.exists() else None


def value(run_dir: str | Path, dataset_path: str, sampling: Mapping[str, Any],
          target_sizes: Sequence[int] | None = None, method: str = "auto") -> dict[str, Any]:
    """The values table -> ``values.parquet`` (and ``laws.parquet``, ``learning_curve.json``).

    ``shapley`` comes from :func:`pointscale.laws.fit_laws` with ``method``
    ("auto": the estimator with the best held-out-sample likelihood; its
    choice and scores are returned and stored with ``laws.parquet``);
    ``shapley_mle``, ``shapley_amortized``, ``mc_mean`` and ``oob`` sit beside
    it for comparison. The amortized laws of the previous stage are reused
    when the chosen estimator needs them on all samples.
    """
    from .io import atomic_write_json
    from .laws.auto import select_laws
    from .sampling import SamplingConfig
    from .valuation import values_table
    from .valuation.learning_curve import fit_learning_curve

    run = RunFolder(run_dir)
    ds = open_dataset(dataset_path)
    cfg = SamplingConfig.from_dict(dict(sampling))
    mle = _load_laws(run.file("laws_mle.parquet"))
    amortized = _load_laws(run.file("laws_amortized.parquet"))
    samples = load_samples(run_dir, sampling)
    oob = _oob(run_dir)
    points = {p for g in load_point_groups(run_dir) for p in g}
    if amortized is not None and points:
        # Value the run's points (amortized covers the whole pool).
        keep = np.isin(amortized.point_ids.astype(str), np.asarray(sorted(points), dtype=str))
        amortized = amortized.subset(keep)
    fitted = {}
    if amortized is not None:
        sampled = np.isin(amortized.point_ids.astype(str), samples["point_id"].astype(str).unique())
        fitted["amortized"] = amortized.subset(sampled)
    if mle is not None:
        fitted["mle"] = mle
    laws, _ = select_laws(samples, ds, method=method, oob=oob, random_state=cfg.seed, fitted=fitted)
    laws.save(run.file("laws.parquet"))
    sizes = list(target_sizes) if target_sizes else [ds.n_pool, 10 * ds.n_pool]
    table = values_table(laws, ds, k_min=cfg.k_min, k_max=cfg.k_max, target_sizes=sizes,
                         samples=samples, amortized=amortized,
                         compare={"mle": mle, "amortized": amortized}, oob=oob)
    atomic_write_parquet(run.file("values.parquet"), table)
    curve = None
    try:
        curve = fit_learning_curve(samples, n_pool=ds.n_pool, seed=cfg.seed)
        curve["metric"] = cfg.metric
        atomic_write_json(run.file("learning_curve.json"), curve)
    except DataError as exc:  # too few base fits: say so, do not invent a curve
        curve = {"skipped": str(exc)}
    by_estimator = table["estimator"].value_counts().to_dict()
    return {"points": int(len(table)), "by_estimator": {str(k): int(v) for k, v in by_estimator.items()},
            "estimator": laws.meta["selection"],
            "negative_c": int(table["negative_c"].sum()) if "negative_c" in table else None,
            "target_sizes": sizes, "learning_curve": curve}


def select(run_dir: str | Path, dataset_path: str, m: int, n_current: int | None = None) -> dict[str, Any]:
    """The m most valuable points at the current size -> ``selection.parquet``."""
    from .valuation import select_points

    run = RunFolder(run_dir)
    ds = open_dataset(dataset_path)
    # The laws the value stage chose (fit_laws), else the MLE, else the amortized laws.
    source = _load_laws(run.file("laws.parquet"))
    if source is None:
        source = _load_laws(run.file("laws_mle.parquet"))
    if source is None:
        source = _load_laws(run.file("laws_amortized.parquet"))
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
        atomic_write_parquet(run.file("selection.parquet"), chosen)
        return {"selected": 0, "n_current": n_current, "note": "no point has a finite fitted law"}
    chosen = select_points(source, n_current, m, labels=labels, balanced=labels is not None)
    atomic_write_parquet(run.file("selection.parquet"), chosen)
    return {"selected": int(len(chosen)), "n_current": n_current}


def removal(run_dir: str | Path, dataset_path: str, sampling: Mapping[str, Any]) -> dict[str, Any]:
    """Removal curve (lowest-valued first vs random) -> ``removal.parquet``."""
    from .sampling import SamplingConfig
    from .valuation import removal_curve

    run = RunFolder(run_dir)
    ds = open_dataset(dataset_path)
    cfg = SamplingConfig.from_dict(dict(sampling))
    if ds.X_test.shape[0] == 0:
        # Given splits without a test file: scoring on the validation rows the values
        # were computed against would flatter them, so there is no curve.
        return {"rows": 0, "skipped": "no test split (pass --test to get a removal curve)"}
    values = pd.read_parquet(run.file("values.parquet"))
    curve = removal_curve(ds, values, model=cfg.model, model_params=cfg.model_params, seed=cfg.seed)
    atomic_write_parquet(run.file("removal.parquet"), curve)
    return {"rows": int(len(curve))}


def report(run_dir: str | Path, dataset_path: str) -> dict[str, Any]:
    """``report.md`` and its figures; returns the path and a short summary text."""
    from .io import read_json
    from .report import report_summary, write_report

    run = RunFolder(run_dir)
    ds = open_dataset(dataset_path)
    laws = _load_laws(run.file("laws_mle.parquet"))
    values = pd.read_parquet(run.file("values.parquet"))
    selection = pd.read_parquet(run.file("selection.parquet")) if run.file("selection.parquet").exists() else None
    experiments = {}
    if run.file("removal.parquet").exists():
        experiments["removal"] = pd.read_parquet(run.file("removal.parquet"))
    manifest = run.read_manifest()
    chosen = _load_laws(run.file("laws.parquet"))
    curve_path = run.file("learning_curve.json")
    curve = read_json(curve_path) if curve_path.exists() else None
    path = write_report(run.root, dataset=ds, laws=chosen if chosen is not None else laws, values=values,
                        selection=selection, experiments=experiments or None, manifest=manifest,
                        estimator_choice=None if chosen is None else chosen.meta.get("selection"),
                        learning_curve=curve)
    summary = report_summary(dataset=ds, laws=laws, values=values, manifest=manifest)
    return {"path": str(path), "summary": summary}


def values_change(before: pd.DataFrame, after: pd.DataFrame) -> dict[str, Any]:
    """How existing points' Shapley values moved between two values tables."""
    from scipy.stats import spearmanr

    merged = before[["point_id", "shapley"]].merge(after[["point_id", "shapley"]], on="point_id",
                                                    suffixes=("_before", "_after"))
    merged["change"] = merged["shapley_after"] - merged["shapley_before"]
    ok = np.isfinite(merged["shapley_before"]) & np.isfinite(merged["shapley_after"])
    rho = float(spearmanr(merged.loc[ok, "shapley_before"], merged.loc[ok, "shapley_after"])[0]) \
        if ok.sum() > 2 else float("nan")
    summary = {
        "points_compared": int(ok.sum()),
        "points_new": int(len(set(after["point_id"]) - set(before["point_id"]))),
        "spearman_before_after": rho,
        "median_abs_change": float(np.nanmedian(np.abs(merged["change"]))) if ok.any() else float("nan"),
    }
    return {"table": merged, "summary": summary}
