"""Settling the paper's findings for every model class: sampling, tables, verdicts.

One resumable computation (``pointscale reproduce --settle``), every sample in
a ledger under ``out``:

* **Non-linear ground truth with common random numbers**: 32 points per
  dataset, all in one block, so one base subset D per (size, round) serves
  every point (B + 1 fits give B samples, and every Δ of a cell shares D's
  noise); the ten staggered sizes 100..1000 plus 2,000; ``mlp_batched`` (the
  paper's MLP), ``svm`` (RBF, Platt), ``xgboost`` with the registry's
  defaults and, named as such, the monotone booster. Depth is raised in
  passes so every model reaches the same depth before any goes deeper.
* **Logistic regression**: a staggered ground truth of 1,000 points (blocks
  of 128), 30 uniform samples per point for the default estimator's laws,
  and on adult 128 points at 2,000, 5,000 and 10,000 for extrapolation.
* **Point addition as the paper ran it** (logistic regression): initial sets
  of 500 and 5,000, 1,000 repeats, every ranking on the same initial set.

Every pass's new non-linear samples are also appended to the committed
archive (:mod:`reproduction.archive`): a machine's ledgers do not outlive
it, and these ground truths take more CPU hours than one session has.

:func:`tables` turns the ledgers and the archive into the small tables under ``docs/results/``
(the verdicts in ``verdicts.csv``); :mod:`reproduction.settle_page` writes the
page from those tables alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from pointscale.data import load_dataset
from pointscale.errors import ConfigError
from pointscale.io import atomic_write_json
from pointscale.laws import fit_laws, fit_log_ols, fit_mle
from pointscale.sampling import SamplingConfig, sample_marginals
from pointscale.sampling.ledger import Ledger
from pointscale.sampling.metrics import default_metric
from pointscale.valuation import point_addition_experiment

from .verdicts import (Z_FINDING, addition_table, addition_verdicts, cell_tables, lack_of_fit, law_verdict, needed_depth,
                       noise_corrected_r2)
from . import archive
from .config import MONOTONE_XGB
from .protocols import addition_candidates
from .run import point_order

DATASETS = ("adult", "magic")
GRID = (100, 129, 166, 215, 278, 359, 464, 599, 774, 1000)
NONLINEAR_SIZES = GRID + (2000,)
EXTRAP_SIZES = (2000, 5000, 10000)
#: (registry model, settings, label, what the page calls it)
NONLINEAR = (
    ("xgboost", {}, "xgboost", "registry defaults"),
    ("xgboost", dict(MONOTONE_XGB), "xgboost_monotone", "depth 2, lr 0.1, 50 trees (picked for a monotone ψ_k)"),
    ("mlp_batched", {}, "mlp_batched", "the paper's MLP"),
    ("svm", {}, "svm", "RBF, Platt probabilities"),
)
NONLINEAR_POINTS = 32
LOGREG_POINTS = 1000
EXTRAP_POINTS = 128


def _log_cost(out: Path, row: dict[str, Any]) -> None:
    path = out / "cost.jsonl"
    with open(path, "a") as fh:  # one line per finished phase; a torn last line is skipped on read
        fh.write(json.dumps(row) + "\n")


def read_cost(out: Path) -> pd.DataFrame:
    rows = []
    path = Path(out) / "cost.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return pd.DataFrame(rows)


def _sample(out: Path, ds: Any, cfg: SamplingConfig, points: Sequence[str], folder: Path, what: str,
            log: Callable[[str], Any]) -> pd.DataFrame:
    ledger = Ledger(folder)
    before = ledger.completed_base_ids() if folder.exists() else set()
    wall, cpu = time.perf_counter(), time.process_time()
    frame = sample_marginals(ds, cfg, list(points), ledger=ledger, columns=["point_id", "k", "delta"])
    new = int((~frame["base_id"].isin(before)).sum())
    row = {"phase": what, "dataset": ds.name, "samples": int(len(frame)), "new_samples": new,
           "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    if new:
        _log_cost(out, row)
    log(f"{ds.name}/{what}: {len(frame)} samples ({new} new), {row['wall_s']:.0f} s")
    return frame


def nonlinear_config(ds: Any, model: str, params: dict, depth: int, seed: int = 0) -> SamplingConfig:
    return SamplingConfig(model=model, model_params=dict(params), metric=default_metric(ds.task), mode="staggered",
                          sizes=NONLINEAR_SIZES, samples_per_size=depth, seed=seed, block_size=NONLINEAR_POINTS,
                          shard_size=4)


def nonlinear_ledger(out: Path, dataset: str, label: str, seed: int = 0) -> Path:
    """The ledger of one non-linear ground truth and seed (seed 0 keeps the original folder name)."""
    return Path(out) / "ledgers" / dataset / (label if seed == 0 else f"{label}-seed{seed}")


def nonlinear_ledgers(out: Path, dataset: str, label: str) -> dict[int, Path]:
    """Every seed's ledger of one ground truth present under ``out`` (seed → folder)."""
    base = Path(out) / "ledgers" / dataset
    found = {0: base / label} if (base / label).exists() else {}
    for folder in sorted(base.glob(f"{label}-seed*")) if base.exists() else []:
        tail = folder.name[len(label) + len("-seed"):]
        if tail.isdigit():
            found[int(tail)] = folder
    return found


def sample_nonlinear(out: Path, depths: Sequence[int], log: Callable = print,
                     labels: Sequence[str] | None = None, datasets: Sequence[str] = DATASETS, seed: int = 0,
                     checkpoint: bool = False, archive_root: Path = archive.ARCHIVE) -> None:
    """Raise every non-linear model's ground truth through ``depths`` (resumable).

    ``seed`` picks the ledger (a machine whose seed-0 ledger is gone adds
    independent rounds under another seed; see :mod:`reproduction.archive`);
    with ``checkpoint`` every pass's new samples are appended to the
    committed archive. Rounds of ``seed`` that the archive holds but this
    machine's ledger does not (another machine sampled them) would be drawn
    again as duplicates: that is refused before anything is sampled, naming
    the next free seed.
    """
    if checkpoint:
        for name in datasets:
            for label in [lab for _, _, lab, _ in NONLINEAR if not labels or lab in labels]:
                folder = nonlinear_ledger(out, name, label, seed)
                held = archive.read_parts(name, label, archive_root)
                n_held = int((held["seed"] == seed).sum())
                if n_held and not folder.exists():
                    raise ConfigError(
                        f"the archive holds {n_held} samples of {name}/{label} with seed {seed} that {folder} lacks "
                        f"(another machine sampled them); give --seed {int(held['seed'].max()) + 1} to add "
                        "independent rounds")
    data = {n: load_dataset(n) for n in datasets}
    for depth in depths:
        for name, ds in data.items():
            pts = list(point_order(ds, 0)[:NONLINEAR_POINTS])
            for model, params, label, _ in NONLINEAR:
                if labels and label not in labels:
                    continue
                folder = nonlinear_ledger(out, name, label, seed)
                _sample(out, ds, nonlinear_config(ds, model, params, depth, seed), pts, folder,
                        f"{label} ground truth", log)
                if checkpoint:
                    part = archive.checkpoint(archive.ledger_samples(folder, seed), name, label, archive_root)
                    if part is not None:
                        log(f"{name}/{label}: archived {part.name}")


def logreg_configs(ds: Any, depth: int) -> dict[str, tuple[SamplingConfig, int]]:
    metric = default_metric(ds.task)
    jobs = {"gt": (SamplingConfig(model="logreg", metric=metric, mode="staggered", sizes=GRID,
                                  samples_per_size=depth, block_size=128, shard_size=8), LOGREG_POINTS),
            "uniform": (SamplingConfig(model="logreg", metric=metric, samples_per_point=30, seed=1, block_size=32,
                                       shard_size=32), LOGREG_POINTS)}
    if ds.name == "adult":
        jobs["extrap"] = (SamplingConfig(model="logreg", metric=metric, mode="staggered", sizes=EXTRAP_SIZES,
                                         samples_per_size=3 * depth, block_size=128, shard_size=2), EXTRAP_POINTS)
    return jobs


def sample_logreg(out: Path, depth: int = 30, log: Callable = print) -> None:
    for name in DATASETS:
        ds = load_dataset(name)
        order = list(point_order(ds, 0))
        for label, (cfg, n) in logreg_configs(ds, depth).items():
            _sample(out, ds, cfg, order[:n], out / "logreg" / name / label, f"logreg {label}", log)


def run_addition(out: Path, repeats: int = 1000, log: Callable = print) -> None:
    """Point addition (sizes 500 and 5,000) with the paper's candidates and with the default estimator's laws."""
    folder = out / "addition"
    folder.mkdir(parents=True, exist_ok=True)
    for name in DATASETS:
        ds = load_dataset(name)
        gt = Ledger(out / "logreg" / name / "gt").read()
        uni = Ledger(out / "logreg" / name / "uniform").read()
        sources = {"paper": lambda: addition_candidates(gt, fit_log_ols)[0],
                   "default": lambda: fit_laws(uni[["point_id", "k", "delta"]], method="auto")}
        for src, make in sources.items():
            path = folder / f"{name}-{src}.parquet"
            if path.exists():
                continue
            laws = make()
            wall, cpu = time.perf_counter(), time.process_time()
            res = point_addition_experiment(ds, laws, candidates=list(laws.point_ids), model="logreg", n_small=500,
                                            n_large=5000, m=100, repeats=repeats, shapley_range=(100, 1000), seed=0)
            trials = res.trials.assign(dataset=name, source=src, metric=res.settings["metric"],
                                       candidates=res.settings["n_candidates"], m=res.settings["m"])
            tmp = path.with_suffix(".tmp")
            trials.to_parquet(tmp)
            tmp.rename(path)
            atomic_write_json(folder / f"{name}-{src}.json", {**dict(res.settings), "messages": list(res.messages),
                                                              "refused": dict(res.refused)})
            _log_cost(out, {"phase": f"point addition ({src})", "dataset": name, "samples": 0,
                            "new_samples": 0, "fits": int(len(trials)) + 2 * repeats,
                            "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu})
            log(f"{name}/addition {src}: {len(trials)} trials")


# --------------------------------------------------------------------------- tables


def _law_row(samples: pd.DataFrame, dataset: str, model: str, config: str, n_boot: int,
             rate: float = float("nan")) -> dict[str, Any]:
    r2 = noise_corrected_r2(samples, n_boot=n_boot)
    lof = lack_of_fit(samples, n_boot=max(50, n_boot // 10))
    verdict, reason = law_verdict(r2, lof)
    need = needed_depth(r2["samples_per_cell_half"], r2["ceiling"], by_size=r2.get("ceiling_by_size"))
    deeper = need is not None and need > r2["samples_per_cell_half"]
    if verdict == "not measurable" and deeper and np.isfinite(rate) and rate > 0:
        cells = samples.groupby(["point_id", "k"]).ngroups
        more = max(0, 2 * need * cells - len(samples))
        reason += f"; about {more / rate / 3600:.2f} more core-hours at the measured {rate:.0f} samples per CPU second"
    return {"finding": "law fit", "dataset": dataset, "model": model, "config": config,
            "statistic": "noise-corrected R² (out of sample, between points)", "value": r2["r2_nc"],
            "ceiling": r2["ceiling"], "ci_low": r2["ci_low"], "ci_high": r2["ci_high"], "verdict": verdict,
            "reason": reason, "paper_r2": r2["paper_r2"], "paper_ceiling": r2["paper_ceiling"],
            "size_mean_misfit": r2["size_mean_misfit"], "chi2_per_df": lof["chi2_per_df"],
            "lof_p": lof["p_value"], "share_points_fit": lof["share_points_fit"], "points": r2["n_points"],
            "samples_per_size": int(2 * r2["samples_per_cell_half"])}


def crn_row(samples: pd.DataFrame, dataset: str, model: str) -> dict[str, Any]:
    """What common random numbers bought: the between-point noise variance against the plain one."""
    t = cell_tables(samples)
    s = samples[["point_id", "k", "delta", "round"]].copy()
    grp = s.groupby(["k", "round"])["delta"]
    s["loo"] = (grp.transform("sum") - s["delta"]) / (grp.transform("count") - 1)
    corr = s.groupby(["point_id", "k"])[["delta", "loo"]].corr().xs("delta", level=2)["loo"]
    plain, dev = (t.se.to_numpy() ** 2).mean(), (t.se_dev.to_numpy() ** 2).mean()
    return {"dataset": dataset, "model": model, "corr_with_block_mean": float(np.nanmean(corr.to_numpy())),
            "between_point_noise_ratio": float(dev / plain), "variance_reduction": float(1 - dev / plain)}


def _rates(out: Path) -> dict[tuple[str, str], float]:
    """Samples per CPU second of each (dataset, phase), from the phases whose CPU was measured."""
    cost = read_cost(out)
    if cost.empty or "cpu_s" not in cost.columns:
        return {}
    c = cost[pd.to_numeric(cost["cpu_s"], errors="coerce") > 0]
    g = c.groupby(["dataset", "phase"])[["new_samples", "cpu_s"]].sum()
    return {k: float(r["new_samples"] / r["cpu_s"]) for k, r in g.iterrows()}


def law_tables(out: Path, n_boot: int = 1000,
               archive_root: Path = archive.ARCHIVE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Law-fit and common-random-number rows of every ground truth with samples (ledgers under ``out``, archive)."""
    rows, crn = [], []
    rates = _rates(out)
    for name in DATASETS:
        f = out / "logreg" / name / "gt"
        if f.exists():
            gt = Ledger(f).read(columns=["point_id", "k", "delta", "round"])
            rows.append(_law_row(gt, name, "logreg", "registry defaults", n_boot))
        for _, _, label, what in NONLINEAR:
            gt = archive.pooled_samples(nonlinear_ledgers(out, name, label), name, label, root=archive_root)
            if gt.empty:
                continue
            rows.append(_law_row(gt, name, label, what, n_boot, rates.get((name, f"{label} ground truth"), np.nan)))
            crn.append(crn_row(gt, name, label))
    return pd.DataFrame(rows), pd.DataFrame(crn)


def extrapolation_table(out: Path) -> pd.DataFrame:
    """Laws fitted on 100..1000 scored at 2,000..10,000 against the measured ψ_k (adult, logistic regression).

    Two fits: the per-point MLE on the staggered ground truth of these points,
    and the product's default (``fit_laws(method="auto")``) on their 30
    uniform samples -- what a user's run would extrapolate with.
    """
    f, g, u = (out / "logreg" / "adult" / x for x in ("extrap", "gt", "uniform"))
    if not (f.exists() and g.exists() and u.exists()):
        return pd.DataFrame()
    ex = Ledger(f).read(columns=["point_id", "k", "delta", "round"])
    pts = set(ex["point_id"])
    gt = Ledger(g).read(columns=["point_id", "k", "delta", "round"])
    uni = Ledger(u).read(columns=["point_id", "k", "delta"])
    ex_t = cell_tables(ex)
    sizes = [int(k) for k in ex_t.mean.columns]
    fits = {"MLE on the ground truth (100..1000)": fit_mle(gt[gt["point_id"].isin(pts)][["point_id", "k", "delta"]]),
            "default estimator on 30 uniform samples": fit_laws(uni, method="auto")}
    rows = []
    for name, laws in fits.items():
        pred = pd.DataFrame(laws.predict(sizes, warn_extrapolation=False), index=pd.Index(laws.point_ids),
                            columns=ex_t.mean.columns)
        for k in ex_t.mean.columns:
            T = ex_t.mean[k].to_numpy()
            P = pred[k].reindex(ex_t.mean.index).to_numpy()
            S = ex_t.se[k].to_numpy()
            ok = np.isfinite(T) & np.isfinite(P) & np.isfinite(S)
            T, P, S = T[ok], P[ok], S[ok]
            sst = ((T - T.mean()) ** 2).sum()
            rows.append({"dataset": "adult", "model": "logreg", "laws": name, "k": int(k), "points": int(ok.sum()),
                         "extrapolation_factor": float(k) / 1000, "r2": 1 - ((T - P) ** 2).sum() / sst,
                         "ceiling": 1 - (S ** 2).mean() / T.var(), "pearson": float(np.corrcoef(T, P)[0, 1]),
                         "samples_per_size": int(ex_t.n[k].median())})
    return pd.DataFrame(rows)


def addition_tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    folder = out / "addition"
    summary, verdicts = [], []
    for path in sorted(folder.glob("*.parquet")) if folder.exists() else []:
        trials = pd.read_parquet(path)
        name, src = str(trials["dataset"].iloc[0]), str(trials["source"].iloc[0])
        tab = addition_table(trials).assign(dataset=name, source=src, metric=str(trials["metric"].iloc[0]),
                                             candidates=int(trials["candidates"].iloc[0]))
        summary.append(tab)
        for v in addition_verdicts(trials):
            verdicts.append({"finding": f"point addition: {v['finding']}", "dataset": name, "model": "logreg",
                             "config": f"{src} laws", "statistic": v["statistic"], "value": v["value"],
                             "ceiling": np.nan, "ci_low": v["value"] - 1.96 * v["se"] if np.isfinite(v["se"]) else np.nan,
                             "ci_high": v["value"] + 1.96 * v["se"] if np.isfinite(v["se"]) else np.nan,
                             "verdict": v["verdict"], "reason": v["reason"]})
    return (pd.concat(summary, ignore_index=True) if summary else pd.DataFrame()), pd.DataFrame(verdicts)


VERDICT_COLUMNS = ["finding", "dataset", "model", "config", "statistic", "value", "ceiling", "ci_low", "ci_high",
                   "verdict"]


#: The estimator benchmark's committed table (``python -m benchmarks.estimators --part models --save``).
ESTIMATOR_TABLE = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "estimators" / \
    "estimators_models.csv"
#: The truth's reliability below which a Shapley comparison is not measurable.
TRUTH_RELIABILITY_MIN = 0.5
SHAPLEY_BUDGET = 10


def shapley_tables(table: str | Path = ESTIMATOR_TABLE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's Shapley finding for every model class: law values against Monte Carlo at 10 samples per point.

    From the estimator benchmark (uniform-k samples of seed 1 scored against
    this run's common-random-numbers truth): the noise-corrected explained
    variance of the shrinkage laws' values (fixed in advance: the first law
    estimator of auto's order, under the run's control-variate setting) minus
    the plain mean's, with the bootstrap standard error of the difference;
    the product's default (often the law-free shrunk mean) is stated beside. ``reproduced`` when the
    difference is > 2 s.e., ``not reproduced`` when it is < −2 s.e. or
    within ±2 s.e. with the truth reliable; ``not measurable`` when the truth's
    reliability is below :data:`TRUTH_RELIABILITY_MIN`.
    """
    path = Path(table)
    if not path.exists():
        return pd.DataFrame(), pd.DataFrame()
    t = pd.read_csv(path)
    summary = t[t["method"].isin(["default", "monte_carlo"]) & t["control"].isin(["auto", "off"])]
    summary = summary.pivot_table(index=["dataset", "model", "n"], columns="method", values="ev").reset_index()
    extra = t[t["method"] == "default"].set_index(["dataset", "model", "n"])[
        ["se_ev_vs_monte_carlo", "law_ev_vs_monte_carlo", "se_law_ev_vs_monte_carlo", "truth_reliability",
         "truth_depth", "auto_choice"]]
    summary = summary.join(extra, on=["dataset", "model", "n"])
    rows = []
    for r in summary[summary["n"] == SHAPLEY_BUDGET].itertuples():
        diff, se = r.law_ev_vs_monte_carlo, r.se_law_ev_vs_monte_carlo
        if r.truth_reliability < TRUTH_RELIABILITY_MIN:
            verdict, why = "not measurable", (f"the truth's reliability {r.truth_reliability:.2f} < "
                                              f"{TRUTH_RELIABILITY_MIN}: a deeper ground truth is needed")
        elif diff > Z_FINDING * se:
            verdict, why = "reproduced", f"shrinkage − Monte Carlo {diff:+.3f} ± {se:.3f} (> {Z_FINDING:g} s.e.)"
        else:
            verdict, why = "not reproduced", (f"shrinkage − Monte Carlo {diff:+.3f} ± {se:.3f} "
                                              f"(not > {Z_FINDING:g} s.e.)")
        why += (f"; the product's default ({r.auto_choice}) − Monte Carlo "
                f"{r.default - r.monte_carlo:+.3f} ± {r.se_ev_vs_monte_carlo:.3f}")
        rows.append({"finding": "Shapley: law values beat Monte Carlo at 10 samples per point", "dataset": r.dataset,
                     "model": r.model, "config": "shrinkage laws (the first law estimator of auto's order)",
                     "statistic": "explained variance, law − plain mean (noise-corrected, between points)",
                     "value": diff, "ceiling": r.truth_reliability, "ci_low": diff - 1.96 * se,
                     "ci_high": diff + 1.96 * se, "verdict": verdict, "reason": why})
    return summary, pd.DataFrame(rows)


def _merge_rows(existing: pd.DataFrame, fresh: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``existing`` with every row whose ``keys`` ``fresh`` has replaced in place; fresh rows new to it appended."""
    if existing.empty or not set(keys) <= set(existing.columns):
        return fresh
    if fresh.empty:
        return existing
    fresh_keys = pd.MultiIndex.from_frame(fresh[keys].astype(str))
    old_keys = pd.MultiIndex.from_frame(existing[keys].astype(str))
    rows, used = [], set()
    for i, key in enumerate(old_keys):
        if key in fresh_keys:
            j = fresh_keys.get_loc(key)
            j = j if isinstance(j, (int, np.integer)) else int(np.flatnonzero(np.atleast_1d(j))[0])
            rows.append(fresh.iloc[[j]])
            used.add(j)
        else:
            rows.append(existing.iloc[[i]].reindex(columns=fresh.columns))
    rows += [fresh.iloc[[j]] for j in range(len(fresh)) if j not in used]
    return pd.concat(rows, ignore_index=True)


def _committed(dest: Path, name: str) -> pd.DataFrame:
    path = dest / f"{name}.csv"
    return pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()


def tables(out: str | Path, dest: str | Path, n_boot: int = 1000,
           archive_root: Path = archive.ARCHIVE) -> dict[str, pd.DataFrame]:
    """Every table behind the page, written as CSV under ``dest`` (docs/results/).

    A row is recomputed wherever its samples are here (the ledgers under
    ``out``, the committed ground-truth archive); a row whose samples this
    machine does not hold (a ledger sampled on a machine since replaced) is
    kept as ``dest`` already has it, and so is a law-fit row whose samples
    here are shallower than the committed row's: regenerating on a new
    machine never drops or weakens a measured finding.
    """
    out, dest = Path(out), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    laws, crn = law_tables(out, n_boot, archive_root)
    committed_laws = _committed(dest, "laws")
    if not laws.empty and not committed_laws.empty:  # a shallower ground truth than the committed row's waits
        depth = committed_laws.set_index(["dataset", "model"])["samples_per_size"]
        have = [depth.get((d, m), 0) for d, m in zip(laws["dataset"], laws["model"])]
        keep = laws["samples_per_size"].to_numpy() >= np.asarray(have, dtype=float)
        laws = laws[keep].reset_index(drop=True)
        crn = crn.merge(laws[["dataset", "model"]], on=["dataset", "model"]) if not crn.empty else crn
    fresh = {(d, f"{m} ground truth") for d, m in zip(laws.get("dataset", []), laws.get("model", []))}
    laws = _merge_rows(committed_laws, laws, ["finding", "dataset", "model"])
    crn = _merge_rows(_committed(dest, "crn"), crn, ["dataset", "model"])
    add_summary, add_verdicts = addition_tables(out)
    if add_summary.empty:  # no point-addition trials here: keep the committed summary and verdicts
        add_summary = _committed(dest, "addition")
        old = _committed(dest, "verdicts")
        if not old.empty:
            reasons = _committed(dest, "verdict_reasons")
            old = old.merge(reasons, on=["finding", "dataset", "model", "config"], how="left")
            add_verdicts = old[old["finding"].astype(str).str.startswith("point addition")]
    extrap = extrapolation_table(out)
    if extrap.empty:
        extrap = _committed(dest, "extrapolation")
    cost = read_cost(out)
    if not cost.empty:
        cost["cpu_s"] = pd.to_numeric(cost["cpu_s"], errors="coerce")
        cost = cost.groupby(["dataset", "phase"], as_index=False).agg(
            new_samples=("new_samples", "sum"), wall_s=("wall_s", "sum"), cpu_s=("cpu_s", lambda x: x.sum(min_count=1)))
        # A ground truth's cost moves with its law row: a kept row keeps the cost of the samples behind it.
        gt = cost["phase"].str.endswith(" ground truth")
        cost = cost[~gt | pd.Series([k in fresh for k in zip(cost["dataset"], cost["phase"])], index=cost.index)]
    cost = _merge_rows(_committed(dest, "cost"), cost, ["dataset", "phase"])
    shapley, shapley_verdicts = shapley_tables()
    verdict_rows = pd.concat([laws.reindex(columns=VERDICT_COLUMNS + ["reason"]),
                              add_verdicts.reindex(columns=VERDICT_COLUMNS + ["reason"]),
                              shapley_verdicts.reindex(columns=VERDICT_COLUMNS + ["reason"])], ignore_index=True)
    out_tables = {"laws": laws, "crn": crn, "addition": add_summary, "extrapolation": extrap, "cost": cost,
                  "shapley": shapley,
                  "verdict_reasons": verdict_rows[["finding", "dataset", "model", "config", "reason"]],
                  "verdicts": verdict_rows[VERDICT_COLUMNS]}
    for key, frame in out_tables.items():
        frame.to_csv(dest / f"{key}.csv", index=False, float_format="%.6g")
    return out_tables
