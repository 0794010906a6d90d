"""Benchmark: finding flipped labels, pointscale's ``label_issue_score`` against the peers users know.

Run ``python -m benchmarks.label_issues`` (``--quick``: breast_cancer, one
seed, logreg, 10 % flips). Needs the benchmark extras
(``pip install -e '.[bench]'``: cleanlab and pyDVL; never product
dependencies) and, for adult and magic, ``make data``. Rows are appended to
``--csv`` (default ``benchmarks/results/label_issues.csv``) as each setting
finishes, so a long run can be read while it goes; a rerun skips the settings
already in the file. ``--markdown`` prints the table of a finished file.

Setting
    A training pool of 1,000 rows (all of it when smaller) and a clean
    validation split of 500 rows, both drawn with the seed
    (:func:`benchmarks.estimators.flip_pool`); ``rate`` of the pool's labels
    flipped with the same seed. Seeds 0, 1, 2; rates 5 %, 10 %, 20 %; models
    ``logreg`` and ``xgboost`` (pointscale's registry settings, also for every
    peer that trains the model).

Methods (each a score, higher = more likely flipped)
    * ``pointscale``: :func:`pointscale.valuation.label_issues.label_issues`
      on the run's own evidence -- 10 samples per point at the pipeline's
      default k range (the base fits' out-of-bag predictions) and the law
      values of ``fit_laws(method="auto")``. Its CPU seconds are those of the
      sampling and the law fit: the score itself is free.
    * ``pointscale_oob``: 1 − the mean out-of-bag probability of the given
      label alone; ``pointscale_value`` and ``pointscale_mc_mean``: minus the
      law value and minus the plain mean of Δ.
    * ``cleanlab``: self-confidence (1 − p(given label)) on 5-fold
      out-of-fold probabilities of the same model; its flagged set is
      ``cleanlab.filter.find_label_issues`` on the same probabilities.
    * ``own_loss``: the log-loss of each row under the model trained on all rows.
    * ``data_oob``: pyDVL's Data-OOB (Kwon & Zou 2023), bagging of the same
      model (``--oob-estimators`` fits, 200 by default), minus the value.
    * ``knn_shapley``: pyDVL's exact KNN-Shapley (k = 5 neighbours on the
      standardised features, the clean validation split as utility), minus
      the value (no model fits; the same for both models).

Scores
    ``auc`` (ROC AUC of the score for the flipped rows), ``p_at_true``
    (precision among the top true-count rows), ``flag_precision`` and
    ``flag_recall`` of the method's flagged set (pointscale and cleanlab
    flag; the others give a ranking only), ``est_rate`` (their estimated
    noise rate) and ``cpu_s`` (process CPU seconds of the method).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

DATASETS = ("adult", "magic", "breast_cancer", "digits")
MODELS = ("logreg", "xgboost")
RATES = (0.05, 0.1, 0.2)
SEEDS = (0, 1, 2)
SAMPLES_PER_POINT = 10
CACHE = Path(".cache/benchmarks/label_issues")


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


class _cpu:
    """Process CPU seconds spent inside the block (all threads)."""

    def __enter__(self):
        self.t0 = time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.process_time() - self.t0


# ------------------------------------------------------------------ pointscale's evidence
def pointscale_evidence(ds, model: str, seed: int, laws: bool = True) -> dict:
    """Samples, out-of-bag evidence and law values of a 10-samples-per-point run on ``ds``.

    Cached per dataset fingerprint, model and seed (the ledger, and the law
    values with the CPU seconds of their first computation).
    """
    from pointscale import pipeline
    from pointscale.laws.auto import select_laws
    from pointscale.sampling import Ledger, oob_evidence, sample_marginals
    from pointscale.valuation import distributional_shapley, monte_carlo_values

    ids = [str(p) for p in ds.point_ids]
    cfg = pipeline.resolve_sampling(ds, model=model, metric=None, k_min=None, k_max=None,
                                    samples_per_point=SAMPLES_PER_POINT, seed=seed, block_size=32,
                                    shard_size=None, n_points=len(ids), warn=False)
    folder = CACHE / f"{ds.fingerprint[:16]}-{model}-{seed}"
    ledger = Ledger(folder)
    timing = folder / "sampling_cpu_seconds.txt"
    with _cpu() as t_sample:
        samples = _quiet(sample_marginals, ds, cfg, ids, ledger=ledger)
    if not timing.exists():  # the first (uncached) run's CPU time is the sampling's cost
        timing.write_text(f"{t_sample.seconds:.3f}\n")
    sample_s = float(timing.read_text())
    oob = oob_evidence(ledger)
    if not laws:
        return {"oob": oob, "samples": samples, "config": cfg}
    values_file, laws_timing = folder / "law_values.parquet", folder / "laws_cpu_seconds.txt"
    if values_file.exists() and laws_timing.exists():  # the law fit of this evidence, done before
        return {"oob": oob, "values": pd.read_parquet(values_file).reindex(ids), "samples": samples,
                "config": cfg, "cpu_s": sample_s + float(laws_timing.read_text())}
    with _cpu() as t_laws:
        fitted, _ = _quiet(select_laws, samples, ds, method="auto", oob=oob, random_state=seed,
                           k_range=(cfg.k_min, cfg.k_max))
        value = distributional_shapley(fitted, cfg.k_min, cfg.k_max)
    mc = monte_carlo_values(samples, k_min=cfg.k_min, k_max=cfg.k_max)["mc_mean"]
    frame = value.to_frame("shapley").set_index("point_id")
    frame["c"] = pd.Series(fitted.c, index=fitted.point_ids)
    if fitted.has_intervals:
        ci = fitted.conf_int()
        for col in ci.columns:
            if col.startswith("c_"):
                frame[col] = ci[col]
    frame["mc_mean"] = mc
    frame = frame.reindex(ids)
    frame.to_parquet(values_file)
    laws_timing.write_text(f"{t_laws.seconds:.3f}\n")
    return {"oob": oob, "values": frame, "samples": samples, "config": cfg, "cpu_s": sample_s + t_laws.seconds}


def settings(datasets=DATASETS, models=MODELS, rates=RATES, seeds=SEEDS) -> list[tuple[str, str, float, int]]:
    """(dataset, model, rate, seed) in the order they run: the 10 % settings of adult and magic
    first (the issue's done-when line), logistic regression before xgboost."""
    out = []
    for first in (True, False):
        for model in models:
            for rate in rates:
                for name in datasets:
                    if (rate == 0.1 and name in ("adult", "magic")) != first:
                        continue
                    out += [(name, model, rate, seed) for seed in seeds]
    return out


# ------------------------------------------------------------------ the peers
def _model(model: str, ds, seed: int):
    from pointscale.sampling.models import make_estimator

    return make_estimator(model, ds.task, seed)


def peer_cleanlab(ds, model: str, seed: int) -> dict:
    """Self-confidence on 5-fold out-of-fold probabilities; flagged: ``find_label_issues``."""
    from cleanlab.filter import find_label_issues
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    X, y = np.asarray(ds.X_train), np.asarray(ds.y_train).astype(np.int64)
    with _cpu() as t:
        cv = StratifiedKFold(5, shuffle=True, random_state=seed)
        proba = _quiet(cross_val_predict, _model(model, ds, seed), X, y, cv=cv, method="predict_proba")
        flagged = find_label_issues(labels=y, pred_probs=proba)
    return {"score": 1.0 - proba[np.arange(y.size), y], "flagged": flagged, "cpu_s": t.seconds}


def peer_own_loss(ds, model: str, seed: int) -> dict:
    """Log-loss of each row under the model trained on all rows."""
    X, y = np.asarray(ds.X_train), np.asarray(ds.y_train).astype(np.int64)
    with _cpu() as t:
        est = _quiet(_model(model, ds, seed).fit, X, y)
        proba = est.predict_proba(X)
    return {"score": -np.log(np.clip(proba[np.arange(y.size), y], 1e-12, 1.0)), "cpu_s": t.seconds}


def _pydvl_values(valuation, data, n: int) -> np.ndarray:
    result = valuation.values()
    out = np.full(n, np.nan)
    out[np.asarray(result.indices, dtype=np.int64)] = np.asarray(result.values, dtype=np.float64)
    return out


def peer_data_oob(ds, model: str, seed: int, n_estimators: int) -> dict:
    """pyDVL's Data-OOB on a bagging ensemble of the same model (bootstrap samples, accuracy)."""
    from pydvl.valuation.dataset import Dataset as DvlDataset
    from pydvl.valuation.methods import DataOOBValuation
    from sklearn.ensemble import BaggingClassifier

    X, y = np.asarray(ds.X_train), np.asarray(ds.y_train).astype(np.int64)
    with _cpu() as t:
        bag = _quiet(BaggingClassifier(_model(model, ds, seed), n_estimators=n_estimators,
                                       random_state=seed).fit, X, y)
        data = DvlDataset(X, y)
        val = _quiet(DataOOBValuation(bag).fit, data)
        v = _pydvl_values(val, data, y.size)
    return {"score": -v, "cpu_s": t.seconds}


def peer_knn_shapley(ds, seed: int) -> dict:
    """pyDVL's exact KNN-Shapley, 5 neighbours, the clean validation split as utility."""
    from pydvl.valuation.dataset import Dataset as DvlDataset
    from pydvl.valuation.methods import KNNShapleyValuation
    from sklearn.neighbors import KNeighborsClassifier

    X, y = np.asarray(ds.X_train), np.asarray(ds.y_train).astype(np.int64)
    with _cpu() as t:
        data = DvlDataset(X, y)
        test = DvlDataset(np.asarray(ds.X_val), np.asarray(ds.y_val).astype(np.int64))
        val = _quiet(KNNShapleyValuation(KNeighborsClassifier(5), test, progress=False).fit, data)
        v = _pydvl_values(val, data, y.size)
    return {"score": -v, "cpu_s": t.seconds}


def peer_pointscale(ds, model: str, seed: int) -> dict[str, dict]:
    """``label_issue_score`` and its flagged set, and the single signals it is compared with."""
    from pointscale.valuation.label_issues import label_issues

    ev = pointscale_evidence(ds, model, seed)
    ids = np.asarray([str(p) for p in ds.point_ids], dtype=object)
    with _cpu() as t:
        issues = label_issues(ev["oob"], ids, np.asarray(ds.y_train), ds.n_classes)
    table = issues.table
    values = ev["values"].reindex(ids)
    p = ev["oob"].set_index("point_id")["oob_score"].reindex(ids).to_numpy(dtype=np.float64)
    cpu = ev["cpu_s"] + t.seconds
    return {
        "pointscale": {"score": table["label_issue_score"].to_numpy(dtype=np.float64),
                       "flagged": table["flagged"].to_numpy(dtype=bool), "est_rate": issues.noise_rate,
                       "cpu_s": cpu},
        "pointscale_oob": {"score": 1.0 - p, "cpu_s": cpu},
        "pointscale_value": {"score": -values["shapley"].to_numpy(dtype=np.float64), "cpu_s": cpu},
        "pointscale_mc_mean": {"score": -values["mc_mean"].to_numpy(dtype=np.float64), "cpu_s": cpu},
    }


def score_rows(truth: np.ndarray, methods: dict[str, dict]) -> list[dict]:
    """AUC, precision at the true count, flagged-set precision/recall of each method."""
    from sklearn.metrics import roc_auc_score

    rows = []
    m = int(truth.sum())
    for name, out in methods.items():
        s = np.asarray(out["score"], dtype=np.float64)
        s = np.where(np.isfinite(s), s, np.nanmin(s))  # no evidence: least suspicious
        top = np.argsort(-s, kind="stable")[:m]
        row = {"method": name, "auc": roc_auc_score(truth, s), "p_at_true": float(truth[top].mean()),
               "cpu_s": round(out["cpu_s"], 2)}
        if "flagged" in out:
            f = np.zeros(truth.size, dtype=bool)
            f[np.asarray(out["flagged"])] = True
            row.update(n_flagged=int(f.sum()), flag_precision=float(truth[f].mean()) if f.any() else np.nan,
                       flag_recall=float(truth[f].sum() / max(1, m)), est_rate=out.get("est_rate", f.mean()))
        rows.append(row)
    return rows


def run_setting(name: str, model: str, rate: float, seed: int, oob_estimators: int) -> list[dict]:
    from benchmarks.estimators import flip_pool

    ds, flipped = flip_pool(name, seed, rate)
    ids = np.asarray([str(p) for p in ds.point_ids], dtype=object)
    truth = np.isin(ids, flipped)
    methods = peer_pointscale(ds, model, seed)
    methods["cleanlab"] = peer_cleanlab(ds, model, seed)
    methods["own_loss"] = peer_own_loss(ds, model, seed)
    methods["data_oob"] = peer_data_oob(ds, model, seed, oob_estimators)
    methods["knn_shapley"] = peer_knn_shapley(ds, seed)
    return [dict(dataset=name, model=model, rate=rate, seed=seed, n_pool=int(ids.size),
                 n_flipped=int(truth.sum()), **row) for row in score_rows(truth, methods)]


def sample_all(todo, log=print) -> None:
    """Only the sampling of each setting (cached), so the scores can be computed later."""
    from benchmarks.estimators import flip_pool

    for name, model, rate, seed in todo:
        t0 = time.perf_counter()
        ds, _ = flip_pool(name, seed, rate)
        pointscale_evidence(ds, model, seed, laws=False)
        log(f"sampled {name} {model} {rate} {seed}: {time.perf_counter() - t0:.0f} s", flush=True)


# ------------------------------------------------------------------ the table
METHOD_NAMES = {
    "pointscale": "pointscale `label_issue_score`",
    "pointscale_oob": "pointscale out-of-bag 1 − p alone",
    "pointscale_value": "pointscale law value (`shapley`)",
    "pointscale_mc_mean": "pointscale plain mean of Δ",
    "cleanlab": "cleanlab self-confidence, 5-fold",
    "own_loss": "own loss, model trained on all rows",
    "data_oob": "pyDVL Data-OOB",
    "knn_shapley": "pyDVL KNN-Shapley",
}


def _md(frame: pd.DataFrame, digits: int) -> str:
    """A Markdown table of ``frame`` with its index as the first column, numbers to ``digits`` decimals."""
    from pointscale.report import markdown_table

    out = frame.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = [f"{v:.{digits}f}" if np.isfinite(v) else "–" for v in out[c]]
    out.columns = [str(c) for c in out.columns]
    return markdown_table(out.reset_index().rename(columns={"index": ""}))


def markdown(table: pd.DataFrame) -> str:
    """AUC per method (mean over seeds) for each dataset × model × rate, then the flagged sets and CPU."""
    parts = []
    t = table.assign(setting=table["dataset"] + " " + table["model"])
    for rate, frame in t.groupby("rate", sort=True):
        auc = frame.pivot_table(index="method", columns="setting", values="auc", aggfunc="mean")
        n = frame.groupby("setting")["seed"].nunique()
        auc = auc.reindex([m for m in METHOD_NAMES if m in auc.index]).rename(index=METHOD_NAMES)
        auc.columns = [f"{c} ({n[c]})" for c in auc.columns]
        parts.append(f"**ROC AUC, {rate:.0%} flipped** (mean over seeds; seeds in brackets)\n\n"
                     + _md(auc, 3))
    flag = t[t["method"].isin(["pointscale", "cleanlab"])]
    if not flag.empty:
        g = flag.groupby(["rate", "method"])[["p_at_true", "flag_precision", "flag_recall", "est_rate"]].mean()
        parts.append("**Flagged sets** (mean over datasets, models and seeds; P@true: precision among the "
                     "true-count top rows)\n\n" + _md(g, 3))
    p_at = t.pivot_table(index="method", columns="rate", values="p_at_true", aggfunc="mean")
    p_at = p_at.reindex([m for m in METHOD_NAMES if m in p_at.index]).rename(index=METHOD_NAMES)
    parts.append("**Precision at the true count** (mean over datasets, models and seeds)\n\n"
                 + _md(p_at, 3))
    cpu = t.pivot_table(index="method", columns="model", values="cpu_s", aggfunc="median")
    cpu = cpu.reindex([m for m in METHOD_NAMES if m in cpu.index]).rename(index=METHOD_NAMES)
    parts.append("**CPU seconds** (median per setting; pointscale: the 10-samples-per-point run's sampling "
                 "and law fit, which the values need anyway)\n\n" + _md(cpu, 1))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--rates", type=float, nargs="+", default=list(RATES))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--oob-estimators", type=int, default=200)
    parser.add_argument("--csv", default="benchmarks/results/label_issues.csv")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="print the table of --csv and stop")
    args = parser.parse_args(argv)
    csv = Path(args.csv)
    if args.markdown:
        print(markdown(pd.read_csv(csv)))
        return 0
    if args.quick:
        args.datasets, args.models, args.rates, args.seeds = ["breast_cancer"], ["logreg"], [0.1], [0]
    done = pd.read_csv(csv) if csv.exists() else pd.DataFrame(columns=["dataset", "model", "rate", "seed"])
    have = {(d, m, round(r, 4), int(s)) for d, m, r, s in done[["dataset", "model", "rate", "seed"]].itertuples(
        index=False)}
    for name, model, rate, seed in settings(args.datasets, args.models, args.rates, args.seeds):
        if (name, model, round(rate, 4), seed) in have:
            continue
        t0 = time.perf_counter()
        rows = pd.DataFrame(run_setting(name, model, rate, seed, args.oob_estimators))
        done = pd.concat([done, rows], ignore_index=True) if len(done) else rows
        csv.parent.mkdir(parents=True, exist_ok=True)
        tmp = csv.with_suffix(".tmp")
        done.to_csv(tmp, index=False)
        tmp.replace(csv)
        auc = ", ".join(f"{m} {a:.3f}" for m, a in zip(rows["method"], rows["auc"]))
        print(f"{name} {model} {rate:.0%} seed {seed} ({time.perf_counter() - t0:.0f} s): {auc}", flush=True)
    print(markdown(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
