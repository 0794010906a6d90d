"""Run a reproduction: sample every phase, run every protocol, save the tables and the manifest.

:func:`run_reproduction` loops over (dataset, model), calls the sampling
phases (:mod:`reproduction.phases`) and the protocols
(:mod:`reproduction.protocols`), adds the (dataset, model) key to each
protocol's table and writes ``<out>/tables/<name>.csv``, the per-point arrays
the figures need (``<out>/arrays/``) and ``<out>/manifest.json``: the config,
the machine (CPU count, platform, package versions), the workers, every
dataset's pool/validation/test sizes and the wall time. The page
(:mod:`reproduction.page`) reads facts from there, never from text typed
beside it.
"""

from __future__ import annotations

import builtins
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from pointscale.errors import ConfigError, DataError
from pointscale.io import atomic_write_json, atomic_write_parquet, read_json
from pointscale.seeding import STREAM_SELECTION, rng

from . import protocols as P
from .config import ModelScale, ReproduceConfig
from .phases import Phases, first_n, quiet, size_plan, usable

TABLES = ("sizes", "law_fit", "sign_changes", "point_r2", "alpha", "relations", "noisy", "accuracy", "shapley",
          "addition", "transfer", "cost")


@dataclass
class ReproductionResult:
    """Tables (one per protocol, keyed by dataset and model), the manifest and the working folder."""

    tables: dict[str, pd.DataFrame]
    manifest: dict[str, Any]
    folder: Path
    others: list[Path] = field(default_factory=list)

    @classmethod
    def load(cls, folder: str | Path) -> "ReproductionResult":
        """Read a finished run back from ``folder`` (tables as CSV, manifest)."""
        folder = Path(folder)
        tables = {}
        for name in TABLES:
            p = folder / "tables" / f"{name}.csv"
            tables[name] = pd.read_csv(p) if p.exists() and p.stat().st_size > 1 else pd.DataFrame()
        return cls(tables=tables, manifest=read_json(folder / "manifest.json"), folder=folder)

    @classmethod
    def merge(cls, results: Sequence["ReproductionResult"]) -> "ReproductionResult":
        """One result from runs of the same scale over different datasets (e.g. run side by side).

        Tables are concatenated; the manifest lists every run's datasets,
        models done, messages and wall time (the longest), and each run's folder.
        """
        first = results[0]
        if len(results) == 1:
            return first
        # Runs may differ in which models (and which ground-truth depth) they sampled -- each
        # (dataset, model) row states its own scale -- but not in what every number depends on.
        shared = ("name", "seed", "metric", "block_size")
        keys = {tuple(str(r.manifest["config"].get(k)) for k in shared) for r in results}
        if len(keys) > 1:
            raise ConfigError("runs to merge must share the scale, seed, utility and block size "
                              f"({', '.join(shared)}); got {sorted(keys)}")
        # A (dataset, model) in two runs would be reported twice, with no way to say which is right.
        seen: dict[str, Path] = {}
        for r in results:
            for done in r.manifest.get("models_done", []):
                if done in seen:
                    raise ConfigError(f"runs to merge must cover different datasets or models: {done} is in both "
                                      f"{seen[done]} and {r.folder}; pass each run folder once")
                seen[done] = r.folder
        tables = {name: pd.concat([r.tables.get(name, pd.DataFrame()) for r in results], ignore_index=True)
                  for name in TABLES}
        man = dict(first.manifest)
        man["config"] = dict(first.manifest["config"])
        models: dict[str, Any] = {}
        for r in results:
            for m in r.manifest["config"]["models"]:
                models.setdefault(m["model"], m)
        man["config"]["models"] = list(models.values())
        man["datasets"] = list({d["dataset"]: d for r in results for d in r.manifest["datasets"]}.values())
        man["models_done"] = [m for r in results for m in r.manifest.get("models_done", [])]
        man["messages"] = [m for r in results for m in r.manifest.get("messages", [])]
        man["finished"] = all(r.manifest.get("finished", True) for r in results)
        man["wall_seconds"] = max(r.manifest["wall_seconds"] for r in results)
        man["finished_utc"] = max(r.manifest["finished_utc"] for r in results)
        man["folders"] = [str(r.folder) for r in results]
        return cls(tables=tables, manifest=man, folder=first.folder, others=[r.folder for r in results[1:]])

    def arrays(self, dataset: str, model: str) -> dict[str, pd.DataFrame]:
        out = {}
        for folder in [self.folder, *self.others]:
            for name in ("psi", "se", "pred", "points"):
                p = folder / "arrays" / f"{dataset}_{model}_{name}.parquet"
                if p.exists():
                    out[name] = pd.read_parquet(p)
        return out


def _machine(workers: int) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("numpy", "scipy", "scikit-learn", "pandas", "xgboost"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "workers": workers, "versions": versions}


def _load(name: str, out: Path):
    from pointscale.data import load_dataset, open_dataset

    ds = load_dataset(name)
    return open_dataset(ds.save(out / "datasets"))


def _default_laws(samples: pd.DataFrame):
    """The project's default estimator on uniform samples: ``fit_laws(method="auto")``."""
    from pointscale.laws import fit_laws

    return quiet(fit_laws, samples, method="auto"), "fit_laws(method='auto')"


def point_order(ds: Any, seed: int) -> np.ndarray:
    """One seeded permutation of the pool per dataset: ground-truth points first, then the extra points."""
    return np.asarray(ds.point_ids, dtype=object)[rng(seed, STREAM_SELECTION, "reproduce", ds.fingerprint)
                                                  .permutation(ds.n_pool)]


def ground_truth_config(phases: Phases, ds: Any, scale: ModelScale, config: ReproduceConfig):
    """The staggered ground-truth sampling config of ``scale`` on ``ds`` (metric resolved, so it names the ledger)."""
    from pointscale.sampling.metrics import default_metric

    plan = size_plan(ds, scale.max_extrap_size if scale.extrap_per_size else 0)
    return phases.config(scale.model, dict(scale.model_params), config.metric or default_metric(ds.task),
                         mode="staggered", sizes=plan["grid"], samples_per_size=scale.gt_per_size, seed=config.seed,
                         block_size=scale.gt_block_size)


def _estimators(ds: Any, scale: ModelScale, uni: pd.DataFrame, extra: pd.DataFrame, index: pd.Index, lo: int,
                hi: int, seed: int) -> tuple[dict, dict]:
    """Per-point MLE (and amortized) laws and Shapley estimates from the first n uniform samples of each point."""
    from pointscale.laws import AmortizedScalingLaws, fit_laws, fit_mle
    from pointscale.valuation import distributional_shapley, monte_carlo_values

    estimates, shap_est = {}, {}
    for n in sorted(set(scale.fit_ns) | set(scale.shapley_ns)):
        part = first_n(uni, n)
        laws = quiet(fit_mle, part[["point_id", "k", "delta"]])
        if n in scale.fit_ns:
            estimates[("mle", n)] = laws
        shap_est[("mle", n)] = distributional_shapley(laws, lo, hi).to_series()
        if n in scale.shapley_ns:
            shap_est[("monte_carlo", n)] = monte_carlo_values(part)["mc_mean"]
            # The product's estimators (issue 13): shrinkage, and the one `pointscale run` reports
            # (`fit_laws(method="auto")`; here without out-of-bag inputs, which this phase's ledger
            # holds for all of its samples, not for the first n).
            for method in ("shrinkage", "auto"):
                fitted = quiet(fit_laws, part[["point_id", "k", "delta", *(["sample_id"] if "sample_id" in part
                                                                         else [])]], ds, method=method)
                if n in scale.fit_ns:
                    estimates[(method, n)] = fitted
                shap_est[(method, n)] = distributional_shapley(fitted, lo, hi).to_series()
    X, y = np.asarray(ds.X_train), np.asarray(ds.y_train)
    for n in scale.amortized_ns:
        # trained on every sampled point (ground-truth and extra), as the paper did; evaluated on the former
        train = pd.concat([first_n(uni, n), first_n(extra, n)], ignore_index=True)
        ids = np.asarray(sorted(train["point_id"].unique().tolist()), dtype=object)
        model = AmortizedScalingLaws(random_state=seed)
        quiet(model.fit, X[ds.index_of(ids)], y[ds.index_of(ids)], train[["point_id", "k", "delta"]], ids)
        pidx = ds.index_of(list(index))
        laws = quiet(model.predict_laws, X[pidx], y[pidx], np.asarray(list(index), dtype=object))
        estimates[("amortized", n)] = laws
        shap_est[("amortized", n)] = distributional_shapley(laws, lo, hi).to_series()
    return estimates, shap_est


def _addition(phases: Phases, ds: Any, scale: ModelScale, gt: pd.DataFrame, pool: pd.DataFrame, lo: int, hi: int,
              seed: int, log: Callable[[str], Any]) -> tuple[pd.DataFrame, list[str]]:
    """Point addition with the paper's candidate laws and with the project's default estimator."""
    from pointscale.laws import fit_log_ols

    paper_laws, kept, total = P.addition_candidates(gt, fit_log_ols)
    default_laws, default_name = _default_laws(pool[["point_id", "k", "delta"]])
    finite = np.isfinite(default_laws.c) & np.isfinite(default_laws.alpha)
    sources = {
        "log_ols, R²≥0.9": (paper_laws, f"log-space fit on the staggered ground truth, {kept} of {total} points "
                                        f"with R² ≥ {P.PAPER_R2_FILTER}"),
        "default": (default_laws.subset(finite), f"{default_name} on the uniform samples ({int(finite.sum())} "
                                                 "points)"),
    }
    log(f"  {ds.name}/{scale.label}: point addition, {scale.addition_repeats} repeats x {len(sources)} law sources")
    start = time.perf_counter()
    table, messages = P.point_addition(ds, sources, model=scale.model, model_params=dict(scale.model_params),
                                       sizes=scale.addition_sizes, m=scale.addition_m,
                                       repeats=scale.addition_repeats, shapley_range=(lo, hi), seed=seed,
                                       map=phases.map)
    fits = int(table.drop_duplicates("laws")["fits"].fillna(0).sum()) if "fits" in table else 0
    phases.experiment_cost(ds.name, scale.label, "point_addition", total, fits, 0,
                           ", ".join(map(str, scale.addition_sizes)), time.perf_counter() - start)
    return table, messages


def _transfer(phases: Phases, ds: Any, scale: ModelScale, config: ReproduceConfig, uni_cfg: Any, order: np.ndarray,
              metric: str, log: Callable[[str], Any]) -> pd.DataFrame:
    """Value transfer (validation vs test, same fits) for the utility used and the ones shown beside it."""
    t_ids = [str(p) for p in order[: min(scale.transfer_points, ds.n_pool)]]
    rows = []
    for util in dict.fromkeys([metric, *config.transfer_metrics]):
        cfg = uni_cfg.replace(metric=util, samples_per_point=scale.transfer_samples, seed=config.seed + 3)
        log(f"  {ds.name}/{scale.label}: value transfer, {util}, {len(t_ids)} points x {scale.transfer_samples}")

        def sample(variant_ds, variant, cfg=cfg, util=util):
            return phases.sample(variant_ds, cfg, t_ids, f"transfer_{util}_{variant}", scale.label,
                                 ledger_name=f"transfer-{util}-{variant}-{cfg.identity_hash()[:10]}")

        frames = P.transfer_samples(ds, sample, config.seed)
        rows.append({"utility": util, "used_for_sampling": util == metric, **P.value_transfer(frames)})
    return pd.DataFrame(rows)


def one_model(phases: Phases, ds: Any, scale: ModelScale, config: ReproduceConfig, order: np.ndarray,
              log: Callable[[str], Any]) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Every protocol for one (dataset, model): tables without the key, and the figure arrays."""
    from pointscale.data import open_dataset
    from pointscale.laws import fit_log_ols, fit_mle
    from pointscale.sampling.metrics import default_metric
    from pointscale.valuation import flip_labels, grid_shapley

    label, seed = scale.label, config.seed
    metric = config.metric or default_metric(ds.task)  # resolved: the ledger folders are named by it
    params = dict(scale.model_params)
    plan = size_plan(ds, scale.max_extrap_size if scale.extrap_per_size else 0)
    lo, hi, grid, extrap = plan["lo"], plan["hi"], plan["grid"], plan["extrap"]
    n_gt = min(scale.gt_points, ds.n_pool)
    gt_ids = [str(p) for p in order[:n_gt]]
    extra_ids = [str(p) for p in order[n_gt:n_gt + scale.extra_points]]
    index = pd.Index(sorted(gt_ids), name="point_id")
    T: dict[str, pd.DataFrame] = {}
    T["sizes"] = pd.DataFrame([{
        "fit_range": f"[{lo}, {hi}]", "grid": ", ".join(map(str, grid)), "extrapolation": ", ".join(map(str, extrap))
        or "none", "gt_points": n_gt, "gt_per_size": scale.gt_per_size,
        "gt_block": scale.gt_block_size or config.block_size,
        "extrap_per_size": scale.extrap_per_size if extrap else 0, "uniform_per_point": scale.n_uniform,
        "extra_points": len(extra_ids), "model_params": str(params or "registry defaults")}])

    # ---- sampling
    log(f"  {ds.name}/{label}: ground truth, {n_gt} points x {len(grid)} sizes x {scale.gt_per_size}")
    # Only what the protocols read: the paper-scale ground truth is 10^7 rows.
    gt = phases.sample(ds, ground_truth_config(phases, ds, scale, config), gt_ids, "ground_truth", label,
                       columns=["point_id", "k", "delta", "failed", "round", "method", "error"])
    ex = gt.iloc[:0]
    if extrap:
        ex = phases.sample(ds, phases.config(scale.model, params, metric, mode="staggered", sizes=extrap,
                                             samples_per_size=scale.extrap_per_size, seed=seed),
                           gt_ids, "extrapolation", label)
    uni_cfg = phases.config(scale.model, params, metric, mode="uniform", k_min=lo, k_max=hi, seed=seed + 1)
    log(f"  {ds.name}/{label}: uniform k in [{lo}, {hi}], {scale.n_uniform} samples x {n_gt} points")
    uni = usable(phases.sample(ds, uni_cfg.replace(samples_per_point=scale.n_uniform), gt_ids, "uniform", label))
    extra = uni.iloc[:0]
    if extra_ids:
        extra = usable(phases.sample(ds, uni_cfg.replace(samples_per_point=scale.extra_samples), extra_ids,
                                     "uniform_extra", label))

    # ---- 1. the law
    fitters = {"log_ols": fit_log_ols, "mle": fit_mle}
    T["law_fit"] = P.law_fit(gt, ex, grid, index, fitters)
    T["sign_changes"] = P.sign_changes(gt, index)
    gt_ok = usable(gt)[["point_id", "k", "delta"]]
    gt_laws = {name: quiet(fit, gt_ok) for name, fit in fitters.items()}
    T["point_r2"] = P.point_r2(gt_laws["log_ols"], index)
    psi, se = P.truth_tables(gt, ex, index)

    # ---- 2. alpha, c (estimators that impose no prior on alpha)
    uni_laws = quiet(fit_mle, uni[["point_id", "k", "delta"]])
    T["alpha"] = P.alpha_spread({"log_ols (ground truth)": gt_laws["log_ols"], "mle (ground truth)": gt_laws["mle"],
                                 f"mle ({scale.n_uniform} uniform samples)": uni_laws}, index)
    truth_shap = grid_shapley(psi[list(grid)], lo, hi)
    margin = P.full_model_margin(ds, scale.model, params, seed, index)
    T["relations"] = P.relations(gt_laws["mle"], truth_shap, margin, index)
    if scale.noisy_points:
        noisy_ids = [str(p) for p in order[: min(scale.noisy_points, ds.n_pool)]]
        noisy, flipped = flip_labels(ds, noisy_ids, scale.flip_fraction, seed=seed)
        noisy = open_dataset(noisy.save(phases.out / "datasets"))
        log(f"  {ds.name}/{label}: label noise, {len(noisy_ids)} points ({len(flipped)} flipped)")
        ns = phases.sample(noisy, uni_cfg.replace(samples_per_point=scale.noisy_samples, seed=seed + 2), noisy_ids,
                           "label_noise", label)
        T["noisy"] = P.label_noise(ns, [str(f) for f in flipped], noisy_ids, (lo, hi), fit_mle)

    # ---- 3. estimators against the ground truth
    estimates, shap_est = _estimators(ds, scale, uni, extra, index, lo, hi, seed)
    T["accuracy"] = P.estimator_accuracy(estimates, psi, se, extrap)
    T["shapley"] = P.shapley_accuracy(shap_est, truth_shap.reindex(index),
                                      P.shapley_ceiling(se[list(grid)], lo, hi, psi[list(grid)]))

    # ---- 4. point addition; 5. value transfer
    messages: list[str] = []
    if scale.addition_repeats:
        T["addition"], messages = _addition(phases, ds, scale, gt, pd.concat([uni, extra], ignore_index=True),
                                            lo, hi, seed, log)
    if scale.transfer_points:
        T["transfer"] = _transfer(phases, ds, scale, config, uni_cfg, order, metric, log)

    arrays = {"psi": psi, "se": se, "pred": P.law_predictions(gt_laws["mle"], index, list(psi.columns)),
              "points": pd.DataFrame({"alpha": P.by_id(gt_laws["mle"].alpha, gt_laws["mle"].point_ids, index),
                                      "c": P.by_id(gt_laws["mle"].c, gt_laws["mle"].point_ids, index),
                                      "log_ols_r2": P.by_id(gt_laws["log_ols"].extra["r2"],
                                                            gt_laws["log_ols"].point_ids, index),
                                      "margin": margin}, index=index)}
    phases.messages.extend(f"{ds.name}/{label}: {m}" for m in messages)
    return T, arrays


def run_reproduction(config: ReproduceConfig, out: str | Path, *, datasets: Sequence[str] | None = None,
                     map: Callable = builtins.map, workers: int = 1,
                     log: Callable[[str], Any] | None = None) -> ReproductionResult:
    """Run every protocol for every (dataset, model); write tables, arrays and the manifest under ``out``.

    Parameters
    ----------
    config : ReproduceConfig
    out : path
        Working folder: datasets, sample ledgers (a rerun resumes), tables, manifest.
    datasets : sequence of str, optional
        Overrides ``config.datasets``; default adult and magic when installed, else breast_cancer.
    map : callable, default=builtins.map
        ``map(fn, shards)`` for the sampling, e.g. a process pool's.
    workers : int, default=1
        How many processes ``map`` uses (recorded in the manifest).
    log : callable, optional
    """
    from pointscale.data import OPTIONAL_DATASETS

    log = log or (lambda _msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    explicit = datasets is not None or config.datasets is not None
    names = list(datasets or config.datasets or ("adult", "magic"))
    phases = Phases(out, map, log, config.block_size, config.shard_size)
    parts: dict[str, list[pd.DataFrame]] = {}
    done: list[str] = []
    ds_facts = []
    loaded = []
    for name in names:
        try:
            loaded.append(_load(name, out))
        except (DataError, ModuleNotFoundError) as exc:
            if name in OPTIONAL_DATASETS and not explicit:
                phases.messages.append(f"{name} skipped: {exc}")
                continue
            raise
    if not loaded:
        loaded.append(_load("breast_cancer", out))
        phases.messages.append("no optional dataset installed (make data): breast_cancer only")
    for ds in loaded:
        if ds.task != "classification" or ds.n_classes != 2:
            raise ConfigError(f"dataset {ds.name!r} must be a binary classification task for the reproduction")
        ds_facts.append({"dataset": ds.name, "n_pool": ds.n_pool, "n_val": int(np.asarray(ds.y_val).size),
                         "n_test": int(np.asarray(ds.y_test).size), "n_features": ds.n_features,
                         "minority_share": float(np.bincount(np.asarray(ds.y_train).astype(np.int64)).min()
                                                 / ds.n_pool), "fingerprint": ds.fingerprint})
        order = point_order(ds, config.seed)
        for scale in config.models:
            if scale.datasets is not None and ds.name not in scale.datasets:
                continue
            t0 = time.perf_counter()
            log(f"{ds.name} / {scale.label}")
            tables, arrays = one_model(phases, ds, scale, config, order, log)
            for k, frame in tables.items():
                frame = frame.copy()
                frame.insert(0, "model", scale.label)
                frame.insert(0, "dataset", ds.name)
                parts.setdefault(k, []).append(frame)
            for k, frame in arrays.items():
                atomic_write_parquet(out / "arrays" / f"{ds.name}_{scale.label}_{k}.parquet",
                                     frame.set_axis([str(c) for c in frame.columns], axis=1))
            log(f"{ds.name} / {scale.label}: done in {time.perf_counter() - t0:.0f} s")
            done.append(f"{ds.name}/{scale.label}")
            # written after every model, so a long run that is stopped still leaves a readable record
            _write(out, parts, phases, config, ds_facts, workers, start, done, finished=False)
    return _write(out, parts, phases, config, ds_facts, workers, start, done, finished=True)


def _write(out: Path, parts: dict[str, list[pd.DataFrame]], phases: Phases, config: ReproduceConfig,
           ds_facts: list[dict], workers: int, start: float, done: list[str], finished: bool) -> ReproductionResult:
    """Tables (CSV) and manifest of the models finished so far."""
    from pointscale.sampling.metrics import default_metric

    tables = {k: pd.concat(v, ignore_index=True) for k, v in parts.items()}
    tables["cost"] = pd.DataFrame(phases.cost_rows)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        frame = tables.get(name, pd.DataFrame())
        tables[name] = frame
        frame.to_csv(out / "tables" / f"{name}.csv", index=False)
    manifest = {"config": config.to_dict(), "config_hash": config.stable_hash(), "datasets": ds_facts,
                "metric": config.metric or default_metric("classification"),
                "machine": _machine(workers), "messages": list(phases.messages),
                "wall_seconds": time.perf_counter() - start, "finished": finished, "models_done": list(done),
                "finished_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    atomic_write_json(out / "manifest.json", manifest)
    return ReproductionResult(tables=tables, manifest=manifest, folder=out)
