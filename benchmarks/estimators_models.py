"""Benchmark part ``models``: the default estimator against the plain and the fair shrunk mean, per model class.

Run ``python -m benchmarks.estimators --part models --settle-dir DIR`` (issue 24).
For ``mlp_batched``, ``svm`` and ``xgboost`` (registry defaults) on adult and
magic:

* **Ground truth** (seed 0): the common-random-numbers ledgers of
  ``pointscale reproduce --settle`` (``DIR/ledgers/<dataset>/<model>``), 32
  points, one base subset per (size, round) shared by all of them, at the ten
  staggered sizes 100..1000. The truth of a point is the mean of ψ_k over
  k uniform in [100, 1000]: the trapezoid rule over those sizes applied to
  its per-size means (:func:`truth_from_cells`). Its noise variance per point
  is Σ_j w_j² se_j² (full) and Σ_j w_j² se_dev,j² (the part that differs
  between points; the rest is the round's shared noise, the same for every
  point).
* **Estimation samples** (seed 1, independent of the truth): 128 points
  (``--model-points``) -- the 32 truth points first, then the rest of the same seeded order -- k
  uniform in [100, 1000], one sample per point and round, blocks of 32
  (``--models-out``, a resumable ledger; sampled when missing). Replicate r
  at n samples per point (n in ``--model-grid``) takes rounds [r·n, (r+1)·n):
  ``--replicates`` R disjoint sample sets of the same points, so a score is
  the mean over R independent estimates, not one draw of the estimators'
  noise; the ledger holds R·max(n) rounds.
* **Estimators**, each without and with the block-mean control variate
  (:func:`pointscale.laws.control.controlled`, "off" and "on"): the plain
  mean (Monte Carlo), the fair shrunk mean (``shrunk_mean``: normal–normal
  empirical Bayes of the plain means), per-point MLE, shrinkage, amortized and
  ``fit_laws(method="auto")``; and **the default** -- what ``pointscale run``
  does: auto, with the control variate where the run's own cross-fitted check
  says it helps (``control_variate="auto"``).
* **The pool's truth** (``--pool-truth DIR``, optional): the same protocol
  (staggered sizes 100..1000, seed 0, blocks of 32) on the pool's other 96
  points, ``DIR/<dataset>/<model>`` (:func:`pool_truth_samples`; sampled to
  ``--pool-truth-depth`` where that is given, else read as it is). The 32
  truth points are a random quarter of the pool, and where the values are
  heavy-tailed a quarter's spread is often a fraction of the pool's (adult
  MLP: between-point variance 3.4–4.6e-8 on the 32 against 1.3e-7 on the
  pool, split-half estimates): an estimator shrinking with the pool's
  spread, as it should, is then scored on points that happened to need more
  shrinkage. With the pool's truth the scores are on all 128 points.
* **Scores** on the truth's points (all 128 are fitted, as a run fits its
  pool): the between-point explained variance, noise-corrected,
  EV = 1 − (Var_i(e − t) − N) / (Var_i(t) − N), N = (1 − 1/n)·mean v_dev,i
  (the truth's between-point noise inflates both variances alike; a common
  offset of all estimates is not scored, see :func:`scores`), the
  uncorrected one and the level-including 1 − (MSE − mean v_i)/(Var_i(t) − N)
  beside it, and Spearman's ρ against the truth, each the mean over the
  replicates; the standard error of a difference is a bootstrap over the
  truth's points of the replicates' paired errors (:func:`paired_ev_se`).
  Replicates at n: ``--replicates`` R, or fewer where the estimation ledger's
  ``--rounds`` (default R·max n) hold fewer disjoint sets of n rounds.
  The truth's reliability (signal share of its between-point variance) is
  printed as ``truth_reliability``.

Nothing is tuned here: each estimator's settings are its own defaults or
chosen inside it by held-out likelihood.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

GT_GRID = (100, 129, 166, 215, 278, 359, 464, 599, 774, 1000)
K_RANGE = (100, 1000)
MODELS = ("mlp_batched", "svm", "xgboost")
#: Rows of the table: (method, control-variate setting).
ESTIMATORS = ("monte_carlo", "shrunk_mean", "mle", "shrinkage", "amortized", "auto")
TRUTH_POINTS, POINTS, BLOCK, EST_SEED = 32, 128, 32, 1


def trapezoid_weights(sizes) -> np.ndarray:
    """Weights of the mean of a smooth ψ_k over k uniform in [sizes[0], sizes[-1]] from its values at ``sizes``."""
    k = np.asarray(sizes, dtype=np.float64)
    w = np.zeros_like(k)
    gaps = np.diff(k)
    w[:-1] += gaps / 2.0
    w[1:] += gaps / 2.0
    return w / (k[-1] - k[0])


def truth_from_cells(samples: pd.DataFrame, sizes=GT_GRID) -> pd.DataFrame:
    """Per point: the truth ``t``, its noise variance ``v`` and between-point noise variance ``v_dev``."""
    from reproduction.verdicts import cell_tables

    s = samples[samples["k"].isin(sizes)]
    t = cell_tables(s)
    cols = [k for k in sizes if k in t.mean.columns]
    if list(cols) != list(sizes):
        raise ValueError(f"the ground truth lacks sizes {sorted(set(sizes) - set(cols))}")
    w = trapezoid_weights(sizes)
    mean, se, se_dev = (x[list(sizes)].to_numpy(dtype=np.float64) for x in (t.mean, t.se, t.se_dev))
    ok = np.isfinite(mean).all(axis=1)
    out = pd.DataFrame({"t": mean @ w, "v": (se ** 2) @ (w ** 2), "v_dev": (se_dev ** 2) @ (w ** 2),
                        "min_depth": t.n[list(sizes)].min(axis=1).to_numpy()}, index=t.mean.index)
    return out[ok]


def scores(est: pd.Series, truth: pd.DataFrame) -> dict[str, float]:
    """Explained variance of ``est`` on the truth's points: between-point, noise-corrected (``ev``), and others.

    ``ev`` = 1 − (Var_i(e − t) − N) / (Var_i(t) − N), N = (1 − 1/n)·mean v_dev,i:
    the truth's between-point noise inflates both variances alike. It ignores
    a common offset of all the estimates: under common random numbers the
    truth's level carries one shared draw of noise per size, so a level error
    cannot be scored from 32 points. ``ev_plain`` is scikit-learn's
    ``explained_variance_score`` (no noise correction), ``ev_mse`` the
    noise-corrected 1 − MSE/Var (levels included), ``spearman`` Spearman's ρ.
    """
    e = est.reindex(truth.index).to_numpy(dtype=np.float64)
    t, v, v_dev = (truth[c].to_numpy(dtype=np.float64) for c in ("t", "v", "v_dev"))
    ok = np.isfinite(e)
    e = np.where(ok, e, np.nanmean(e) if ok.any() else 0.0)
    n = t.size
    noise = (1.0 - 1.0 / n) * float(v_dev.mean())
    var_err, var_t = float(np.var(e - t)), float(np.var(t))
    mse = float(np.mean((e - t) ** 2))
    constant = bool(np.ptp(e) == 0)
    return {"ev": 1.0 - (var_err - noise) / (var_t - noise), "ev_plain": 1.0 - var_err / var_t,
            "ev_mse": 1.0 - (mse - float(v.mean())) / (var_t - noise),
            "spearman": float("nan") if constant else float(stats.spearmanr(e, t)[0])}


def mean_scores(ests: list[pd.Series], truth: pd.DataFrame) -> dict[str, float]:
    """:func:`scores` averaged over replicate estimates (independent sample sets) of the same points."""
    each = [scores(e, truth) for e in ests]
    return {key: float(np.mean([s[key] for s in each])) for key in each[0]}


def paired_ev_se(a: list[pd.Series], b: list[pd.Series], truth: pd.DataFrame, n_boot: int = 1000,
                 seed: int = 0) -> float:
    """Standard error of mean_r ev(a_r) − ev(b_r): a bootstrap over the truth's points of the paired errors.

    ``a`` and ``b`` hold one estimate per replicate (estimates from disjoint
    rounds of the same points); a bootstrap draw resamples the truth's points
    once for all replicates, so the interval carries both the points' and the
    estimates' noise. ev(a) − ev(b) = (Var(e_b − t) − Var(e_a − t)) / D with
    D = Var(t) − N the (noise-corrected) between-point variance of the truth;
    D is held at its full-sample value (resampling it makes the ratio explode
    where D is small), so the interval is that of the error difference, scaled.
    """
    t = truth["t"].to_numpy(dtype=np.float64)
    n = t.size
    noise = (1.0 - 1.0 / n) * float(truth["v_dev"].mean())
    denom = float(np.var(t)) - noise
    ea = np.stack([x.reindex(truth.index).to_numpy(dtype=np.float64) - t for x in a])
    eb = np.stack([x.reindex(truth.index).to_numpy(dtype=np.float64) - t for x in b])
    g = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        pick = g.integers(0, n, n)
        diffs[i] = float(np.mean(np.var(eb[:, pick], axis=1) - np.var(ea[:, pick], axis=1))) / denom
    return float(np.nanstd(diffs, ddof=1))


def _oob_of_rounds(ledger, base_ids: set) -> pd.DataFrame | None:
    """Out-of-bag evidence of the shards whose bases are all in ``base_ids`` (the first n rounds)."""
    from pointscale.sampling.ledger import summarize

    recs = [r for r in ledger.verify() if r.oob_sha256 is not None and set(r.base_ids) <= base_ids]
    tables = [t.to_pandas() for _, t in ledger.store.iter_parquet([r.oob_file for r in recs])
              if not isinstance(t, Exception)]
    return summarize(pd.concat(tables, ignore_index=True)) if tables else None


def pool_truth_samples(ds, model: str, folder: Path, depth: int, log: Callable) -> pd.DataFrame | None:
    """The ground truth of the pool's other 96 points (seed 0, staggered, blocks of 32), read or sampled to ``depth``.

    ``depth`` 0: read what the ledger holds (None when it holds nothing).
    """
    from pointscale.sampling import SamplingConfig, sample_marginals
    from pointscale.sampling.ledger import Ledger
    from pointscale.sampling.metrics import default_metric
    from reproduction.run import point_order

    ledger = Ledger(folder)
    if depth <= 0:
        if not folder.exists() or not ledger.completed_base_ids():
            return None
        return ledger.read(columns=["point_id", "k", "delta", "round"])
    pts = list(point_order(ds, 0)[TRUTH_POINTS:POINTS])
    cfg = SamplingConfig(model=model, metric=default_metric(ds.task), mode="staggered", sizes=GT_GRID,
                         samples_per_size=depth, seed=0, block_size=BLOCK, shard_size=4)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = sample_marginals(ds, cfg, pts, ledger=ledger, columns=["point_id", "k", "delta", "round"])
    log(f"  pool truth: {len(rows)} samples ({time.perf_counter() - t0:.0f} s)")
    return rows


def estimation_samples(ds, model: str, folder: Path, n_max: int, log: Callable, points: int = POINTS
                       ) -> tuple[pd.DataFrame, object]:
    """The first ``points`` points' uniform-k samples (seed 1, blocks of 32), sampled through the ledger where missing."""
    from pointscale.sampling import SamplingConfig, sample_marginals
    from pointscale.sampling.ledger import Ledger
    from pointscale.sampling.metrics import default_metric
    from reproduction.run import point_order

    pts = list(point_order(ds, 0)[:points])
    cfg = SamplingConfig(model=model, metric=default_metric(ds.task), samples_per_point=n_max, seed=EST_SEED,
                         block_size=BLOCK, shard_size=4)
    ledger = Ledger(folder)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = sample_marginals(ds, cfg, pts, ledger=ledger,
                                columns=["point_id", "k", "delta", "failed", "base_id", "sample_id", "round"])
    log(f"  estimation samples: {len(rows)} ({time.perf_counter() - t0:.0f} s)")
    return rows, ledger


def _shapley(laws) -> pd.Series:
    from pointscale.valuation import distributional_shapley

    return pd.Series(distributional_shapley(laws, *K_RANGE).value, index=laws.point_ids)


def estimates(rows: pd.DataFrame, ds, oob, seed: int = EST_SEED, only_auto: bool = False) -> tuple[dict, dict]:
    """Values by every estimator × control setting, the default's, and what auto and the check decided.

    ``only_auto``: the auto and default rows alone (the others are kept from an earlier run).
    """
    from pointscale.laws.auto import select_laws
    from pointscale.laws.control import controlled
    from pointscale.valuation import monte_carlo_values

    out, info = {}, {}
    for setting in ("off", "on"):
        samples, record = controlled(rows, setting, seed=seed)
        info[f"control_{setting}"] = record
        out[("monte_carlo", setting)] = monte_carlo_values(samples, k_min=K_RANGE[0], k_max=K_RANGE[1])["mc_mean"]
        cache: dict = {}
        for method in ESTIMATORS[1:-1] if not only_auto else ():
            try:
                laws, more = select_laws(samples, ds, method=method, oob=oob, random_state=seed, fitted=cache,
                                         k_range=K_RANGE, diagnose=False)
            except Exception as exc:  # noqa: BLE001 -- a failed estimator is a row of the table, not a crash
                info[f"{method}_{setting}"] = f"{type(exc).__name__}: {exc}"
                continue
            cache.update(more)
            cache[method] = laws
            out[(method, setting)] = _shapley(laws)
        t0 = time.perf_counter()
        laws, _ = select_laws(samples, ds, method="auto", oob=oob, random_state=seed, fitted=cache,
                              target="shapley", k_range=K_RANGE)
        out[("auto", setting)] = _shapley(laws)
        info[f"auto_{setting}"] = {"chosen": laws.meta["selection"]["chosen"],
                                   "verdict": laws.meta["law_diagnostic"].get("verdict"),
                                   "seconds": round(time.perf_counter() - t0, 1)}
    applied = info["control_off"]["available"] and info["control_off"]["helps"]
    default = "on" if applied else "off"
    out[("default", "auto")] = out[("auto", default)]
    info["default"] = {"control_applied": bool(applied), **info[f"auto_{default}"]}
    return out, info


def cached_estimates(stem: Path, rows: pd.DataFrame, ds, ledger, refresh_auto: bool = False) -> tuple[dict, dict]:
    """:func:`estimates`, kept beside the samples (``stem``.parquet/.json) so a deeper truth only rescores them.

    ``refresh_auto`` recomputes the auto and default rows only (after the
    selection rule changed); delete the two files to re-estimate everything.
    """
    import json

    from pointscale.io import atomic_write_json, atomic_write_parquet

    table, meta = stem.with_suffix(".parquet"), stem.with_suffix(".json")
    kept: dict = {}
    if table.exists() and meta.exists():
        frame = pd.read_parquet(table)
        kept = {(m, c): g.set_index("point_id")["value"] for (m, c), g in frame.groupby(["method", "control"])}
        info = json.loads(meta.read_text())
        if not refresh_auto:
            return kept, info
    oob = _oob_of_rounds(ledger, set(rows["base_id"].unique().tolist()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est, info = estimates(rows, ds, oob, only_auto=bool(kept) and refresh_auto)
    est = {**{k: v for k, v in kept.items() if k[0] not in ("auto", "default")}, **est}
    frame = pd.concat([pd.DataFrame({"method": m, "control": c, "point_id": v.index.astype(str),
                                     "value": v.to_numpy(dtype=np.float64)}) for (m, c), v in est.items()])
    atomic_write_parquet(table, frame.reset_index(drop=True))
    atomic_write_json(meta, info)
    return est, info


def models_part(args, log: Callable) -> pd.DataFrame:
    """Rows: dataset, model, n, method, control, ev, ev_plain, spearman, and the default's choices."""
    from pointscale.data import load_dataset
    from pointscale.sampling.ledger import Ledger

    settle, cache = Path(args.settle_dir), Path(args.models_out)
    rows = []
    for name in args.model_datasets:
        ds = load_dataset(name)
        for model in args.models:
            gt_folder = settle / "ledgers" / name / model
            if not gt_folder.exists():
                log(f"{name}/{model}: no ground truth at {gt_folder} (run `pointscale reproduce --settle`); skipped")
                continue
            truth = truth_from_cells(Ledger(gt_folder).read(columns=["point_id", "k", "delta", "round"]))
            if args.pool_truth:
                pool = pool_truth_samples(ds, model, Path(args.pool_truth) / name / model, args.pool_truth_depth, log)
                if pool is not None:  # separate ledgers, separate rounds: each tabulated on its own
                    truth = pd.concat([truth, truth_from_cells(pool).drop(truth.index, errors="ignore")])
            reliability = 1.0 - float(truth["v_dev"].mean()) / float(np.var(truth["t"]))
            log(f"\n{name}/{model}: truth on {len(truth)} points, {int(truth['min_depth'].min())} samples per size, "
                f"reliability {reliability:.3f}")
            rounds = args.rounds or args.replicates * max(args.model_grid)
            all_rows, ledger = estimation_samples(ds, model, cache / name / model, rounds, log, args.model_points)
            for n in args.model_grid:
                reps = min(args.replicates, rounds // n)
                t0 = time.perf_counter()
                runs = []
                for r in range(reps):  # replicate r: rounds [r·n, (r+1)·n), disjoint from the others
                    part = all_rows[(all_rows["round"] >= r * n) & (all_rows["round"] < (r + 1) * n)]
                    part = part.assign(round=part["round"] - r * n)
                    stem = cache / name / model / (f"estimates-n{n}" + (f"-r{r}" if r else ""))
                    runs.append(cached_estimates(stem, part, ds, ledger, refresh_auto=args.refresh_auto))
                est = {key: [e[key] for e, _ in runs] for key in runs[0][0]}
                infos = [info for _, info in runs]
                on = [bool(i["default"]["control_applied"]) for i in infos]
                chosen = pd.Series([i["default"]["chosen"] for i in infos]).value_counts()
                choice = (chosen.index[0] if len(chosen) == 1 else
                          ", ".join(f"{c} {k}/{reps}" for c, k in chosen.items()))
                verdicts = pd.Series([i["default"]["verdict"] for i in infos]).value_counts()
                verdict = (verdicts.index[0] if len(verdicts) == 1 else
                           ", ".join(f"{v} {k}/{reps}" for v, k in verdicts.items()))
                cv = {key: float(np.mean([i["control_off"].get(key) or 0.0 for i in infos]))
                      for key in ("correlation", "variance_reduction")}
                vs_mc = paired_ev_se(est[("default", "auto")], est[("monte_carlo", "off")], truth)
                free = {m: mean_scores(est[(m, "off")], truth)["ev"] for m in ("monte_carlo", "shrunk_mean")}
                best_free = max(free, key=free.get)
                vs_free = paired_ev_se(est[("default", "auto")], est[(best_free, "off")], truth)
                # The paper's finding names law values: shrinkage (the first law in auto's order), under each
                # replicate's default control-variate setting, against the plain mean.
                law = [e[("shrinkage", "on" if o else "off")] for (e, _), o in zip(runs, on)]
                law_vs_mc = (mean_scores(law, truth)["ev"] - free["monte_carlo"],
                             paired_ev_se(law, est[("monte_carlo", "off")], truth))
                log(f"  n={n} ({reps} replicates): default = auto {choice} (law {verdict}), control variate on in "
                    f"{sum(on)}/{reps} (corr {cv['correlation']:.2f}, variance removed "
                    f"{cv['variance_reduction']:.0%}); {time.perf_counter() - t0:.0f} s")
                for (method, setting), values in est.items():
                    auto = [i.get(f"auto_{setting}", {}).get("chosen") for i in infos] if method == "auto" else []
                    rows.append({"dataset": name, "model": model, "n": n, "replicates": reps, "method": method,
                                 "control": setting, **mean_scores(values, truth), "truth_reliability": reliability,
                                 "truth_depth": int(truth["min_depth"].min()), "truth_points": len(truth),
                                 "cv_correlation": cv["correlation"],
                                 "cv_variance_reduction": cv["variance_reduction"],
                                 "cv_helps": sum(on) / reps,
                                 "auto_choice": (choice if method == "default" else
                                                 ", ".join(sorted(set(map(str, auto)))) if auto else None),
                                 "law_verdict": verdict if method == "default" else None,
                                 "se_ev_vs_monte_carlo": vs_mc if method == "default" else None,
                                 "se_ev_vs_best_law_free": vs_free if method == "default" else None,
                                 "law_ev_vs_monte_carlo": law_vs_mc[0] if method == "default" else None,
                                 "se_law_ev_vs_monte_carlo": law_vs_mc[1] if method == "default" else None})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """The done-when table: the default against max(plain mean, fair shrunk mean), and each estimator's EV."""
    if table.empty:
        return ""
    lines = ["| dataset | model | n (replicates) | default (chose) | plain mean | fair shrunk mean | "
             "default − best of the two (± s.e.) | truth: points, reliability | "
             "control variate: corr, variance removed, on? |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (name, model, n), g in table.groupby(["dataset", "model", "n"], sort=False):
        ev = {(r.method, r.control): r.ev for r in g.itertuples()}
        d = g[g["method"] == "default"].iloc[0]
        best = max(ev[("monte_carlo", "off")], ev[("shrunk_mean", "off")])
        points = int(getattr(d, "truth_points", TRUTH_POINTS))
        lines.append(f"| {name} | {model} | {n} ({d.replicates}) | {ev[('default', 'auto')]:.3f} ({d.auto_choice}) | "
                     f"{ev[('monte_carlo', 'off')]:.3f} | {ev[('shrunk_mean', 'off')]:.3f} | "
                     f"{ev[('default', 'auto')] - best:+.3f} ± {d.se_ev_vs_best_law_free:.3f} | "
                     f"{points}, {d.truth_reliability:.2f} | {d.cv_correlation:.2f}, "
                     f"{d.cv_variance_reduction:.0%}, {_on_share(d.cv_helps, d.replicates)} |")
    return "\n".join(lines)


def _on_share(share: float, replicates: int) -> str:
    """'on', 'off' or 'on in k/R' for the default's control-variate setting over the replicates."""
    k = int(round(share * replicates))
    return "on" if k == replicates else "off" if k == 0 else f"on in {k}/{replicates}"


def detail_markdown(table: pd.DataFrame) -> str:
    """Every estimator's noise-corrected EV without / with the control variate."""
    lines = ["| dataset | model | n | " + " | ".join(ESTIMATORS) + " |", "|---" * (len(ESTIMATORS) + 3) + "|"]
    for (name, model, n), g in table.groupby(["dataset", "model", "n"], sort=False):
        ev = {(r.method, r.control): r.ev for r in g.itertuples()}
        cells = [f"{ev.get((m, 'off'), np.nan):.3f} / {ev.get((m, 'on'), np.nan):.3f}" for m in ESTIMATORS]
        lines.append(f"| {name} | {model} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
