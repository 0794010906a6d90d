"""Benchmark: law estimators against an independent ground truth, and finding flipped labels.

Run ``python -m benchmarks.estimators`` (``--quick``: 60 points, 100 truth
samples, magic only; ``--part values`` or ``--part flips`` for one half).
Sampled data are cached under ``--out`` (default ``.cache/benchmarks/estimators``,
keyed by dataset, utility and seeds), so a rerun only re-fits.

Values (issue 13)
    adult/logreg and magic/logreg, the datasets' default splits, the default
    utility of the sampling engine at run time (printed), 200 points chosen
    with seed ``--seed``, k uniform in [100, 1000].

    * Ground truth (seed + 1): 400 independent samples per point, k uniform;
      Shapley truth = their mean (an unbiased estimate of the Shapley value
      over [100, 1000]); ψ_k truth (seed + 3): 40 samples at each of the ten
      sizes ``geomspace(100, 1000, 10)``. The split-half explained variance
      of each truth is printed as its noise ceiling.
    * Estimates (seed + 2): the first n of 100 samples per point, n = 10, 20,
      30, 50, 100, and the out-of-bag evidence of the same bases. Methods:
      the plain mean (Monte Carlo), the fair shrunk mean (the registry's
      ``shrunk_mean``: normal–normal empirical Bayes of the plain means, pooled
      or per-point noise variances by held-out samples), per-point MLE, shrinkage, amortized,
      amortized-prior shrinkage and ``fit_laws(method="auto")``.
    * Scores: explained variance (1 − MSE / Var(truth)) and Spearman of the
      Shapley value; explained variance of ψ_k at each staggered size (law
      methods only; Monte Carlo and the shrunk mean give no ψ_k).

Flipped labels (issue 13)
    adult/logreg, a 1,000-point training pool, 10 % of its labels flipped, a
    clean 500-row validation split, the pipeline's default k range for that
    pool; 10 and 30 samples per point; pool, flips and samples drawn with each
    seed of ``--flip-seeds`` (0, 1, 2). AUC of a low value for the flipped
    points, for every column of ``values.parquet`` (``shapley`` from auto,
    ``shapley_mle``, ``shapley_amortized``, ``mc_mean``, ``oob``), shrinkage,
    amortized-prior shrinkage and the shrunk mean; per seed and their mean.

Selection rules (``--part rules``, not in "all")
    The rules ``fit_laws(method="auto")`` could select by, checked on data
    other than the reported runs: flipped-label pools of magic and digits
    (seeds 100, 101, 102), 10 samples per point, a ground truth of 200
    independent samples per point; see :func:`rules_part`.

No setting here is tuned on these data: every estimator setting is either a
library default or chosen by held-out likelihood inside the estimator.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from benchmarks.estimators_models import MODELS, detail_markdown, models_part
from benchmarks.estimators_models import markdown as models_markdown
from reproduction.estimators import METHODS, markdown, results_section  # noqa: F401 (docs call it from here)

N_GRID = (10, 20, 30, 50, 100)
K_MIN, K_MAX = 100, 1000


# ------------------------------------------------------------------ helpers
def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def ev(est: np.ndarray, truth: np.ndarray) -> float:
    ok = np.isfinite(truth)
    e = np.where(np.isfinite(est), est, 0.0)[ok]
    t = truth[ok]
    return float(1.0 - np.mean((e - t) ** 2) / np.var(t))


def spearman(est: np.ndarray, truth: np.ndarray) -> float:
    ok = np.isfinite(truth) & np.isfinite(est)
    return float(stats.spearmanr(est[ok], truth[ok])[0])


def _cache_key(*parts) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:12]


# ------------------------------------------------------------------ sampling (cached)
def sample_rounds(ds, points, cfg, folder: Path, n_rounds: int, log) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Samples and out-of-bag evidence tables round by round (each round cached as Parquet)."""
    from pointscale.io import atomic_write_parquet
    from pointscale.sampling import plan_blocks, sample_blocks

    folder.mkdir(parents=True, exist_ok=True)
    plan = plan_blocks(ds, cfg, points)
    frames, oobs = [], []
    t0 = time.perf_counter()
    for r in range(n_rounds):
        sp, op = folder / f"samples_{r:04d}.parquet", folder / f"oob_{r:04d}.parquet"
        if sp.exists() and op.exists():
            frames.append(pd.read_parquet(sp))
            oobs.append(pd.read_parquet(op))
            continue
        res = _quiet(sample_blocks, ds, cfg, [b for b in plan if b.round == r])
        atomic_write_parquet(op, res.oob)
        atomic_write_parquet(sp, res.samples)
        frames.append(res.samples)
        oobs.append(res.oob)
    log(f"  {len(frames)} rounds of {len(points)} points ({time.perf_counter() - t0:.0f} s)")
    return pd.concat(frames, ignore_index=True), oobs


def sample_cached(ds, points, cfg, folder: Path, log) -> pd.DataFrame:
    from pointscale.sampling import Ledger, sample_marginals

    t0 = time.perf_counter()
    out = _quiet(sample_marginals, ds, cfg, points, ledger=Ledger(folder))
    log(f"  {len(out)} samples ({int(out['failed'].sum())} failed) in {time.perf_counter() - t0:.0f} s")
    return out


# ------------------------------------------------------------------ estimates
def estimates(samples: pd.DataFrame, ds, oob: pd.DataFrame | None, sizes, seed: int) -> tuple[dict, dict]:
    """Shapley (and ψ_k at ``sizes``) by every method; plus what auto chose."""
    from pointscale.laws.auto import select_laws
    from pointscale.valuation import distributional_shapley, monte_carlo_values

    out: dict[str, tuple[pd.Series, pd.DataFrame | None]] = {}
    mc = monte_carlo_values(samples, k_min=K_MIN, k_max=K_MAX)["mc_mean"]
    out["monte_carlo"] = (mc, None)
    info = {}
    fitted: dict = {}
    # auto last, reusing the other methods' fits on all samples for its final refit.
    for method in METHODS[1:]:
        t0 = time.perf_counter()
        try:
            laws, more = _quiet(select_laws, samples, ds, method=method, oob=oob, random_state=seed,
                                fitted=fitted, k_range=(K_MIN, K_MAX))
        except Exception as exc:  # noqa: BLE001 -- report, do not hide
            info[method] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        if method != "auto":
            fitted.update(more)
            fitted[method] = laws
        sh = pd.Series(distributional_shapley(laws, K_MIN, K_MAX).value, index=laws.point_ids)
        psi = None if laws.meta.get("law_free") else pd.DataFrame(  # a law-free value has no ψ_k
            laws.predict(sizes, warn_extrapolation=False), index=laws.point_ids, columns=sizes)
        out[method] = (sh, psi)
        info[method] = {"seconds": round(time.perf_counter() - t0, 2)}
        if method == "auto":
            info[method].update(laws.meta["selection"])
    return out, info


def values_part(args, log) -> pd.DataFrame:
    from pointscale.data import load_dataset
    from pointscale.sampling import SamplingConfig, default_metric
    from pointscale.sampling.ledger import summarize
    from pointscale.seeding import STREAM_SELECTION, rng
    from pointscale.valuation import empirical_psi, monte_carlo_values

    rows = []
    for name in args.datasets:
        ds = load_dataset(name)
        metric = args.metric or default_metric(ds.task)
        log(f"\n{name}/logreg: pool {ds.n_pool}, validation {len(ds.y_val)}, utility {metric}")
        g = rng(args.seed, STREAM_SELECTION, "estimators-benchmark-points")
        points = [str(p) for p in np.asarray(ds.point_ids)[np.sort(g.choice(ds.n_pool, args.points, replace=False))]]
        root = Path(args.out) / f"{name}-{metric}-{_cache_key(args.seed, args.points)}"
        log("ground truth, uniform k:")
        gt_cfg = SamplingConfig(model="logreg", metric=metric, k_min=K_MIN, k_max=K_MAX,
                                samples_per_point=args.truth, seed=args.seed + 1, block_size=32, shard_size=8)
        gt = sample_cached(ds, points, gt_cfg, root / f"truth-uniform-{args.truth}", log)
        truth_mc = monte_carlo_values(gt, k_min=K_MIN, k_max=K_MAX)
        shap_truth = truth_mc["mc_mean"].reindex(points).to_numpy()
        half = gt.assign(h=gt.groupby("point_id").cumcount() % 2)
        h0 = monte_carlo_values(half[half["h"] == 0])["mc_mean"].reindex(points).to_numpy()
        h1 = monte_carlo_values(half[half["h"] == 1])["mc_mean"].reindex(points).to_numpy()
        # EV of one half against the other, corrected to the full truth's noise: the
        # truth's own reliability (its noise variance is half that of a half).
        ceiling_sh = 1.0 - 0.5 * np.mean((h0 - h1) ** 2) / 2.0 / np.var(shap_truth)
        log(f"  Shapley truth noise ceiling (EV of the truth against the true value): {ceiling_sh:.3f}")
        log("ground truth, staggered sizes:")
        st_cfg = SamplingConfig(model="logreg", metric=metric, mode="staggered", k_min=K_MIN, k_max=K_MAX,
                                samples_per_size=args.truth // 10, seed=args.seed + 3, block_size=32, shard_size=8)
        st = sample_cached(ds, points, st_cfg, root / f"truth-staggered-{args.truth // 10}", log)
        psi_truth = empirical_psi(st).reindex(points)
        sizes = list(psi_truth.columns)
        log("estimation samples:")
        est_cfg = SamplingConfig(model="logreg", metric=metric, k_min=K_MIN, k_max=K_MAX,
                                 samples_per_point=max(args.grid), seed=args.seed + 2, block_size=32)
        samples, oob_rounds = sample_rounds(ds, points, est_cfg, root / "estimation", max(args.grid), log)
        for n in args.grid:
            s = samples[samples["round"] < n]
            oob = summarize(pd.concat(oob_rounds[:n], ignore_index=True))
            est, info = estimates(s, ds, oob, sizes, args.seed)
            auto = info.get("auto", {})
            log(f"  n={n}: auto chose {auto.get('chosen')} (held-out NLL, target {auto.get('target')}: "
                f"{({k: round(v, 4) if v is not None else None for k, v in auto.get('heldout_nll', {}).items()})}"
                f"; of psi_k: {({k: round(v, 4) if v is not None else None for k, v in auto.get('heldout_nll_psi', {}).items()})})")
            for method in METHODS:
                if method not in est:
                    log(f"    {method}: {info.get(method)}")
                    continue
                sh, psi = est[method]
                e = sh.reindex(points).to_numpy(dtype=np.float64)
                row = {"dataset": name, "metric": metric, "n": n, "method": method,
                       "shapley_ev": ev(e, shap_truth), "shapley_spearman": spearman(e, shap_truth),
                       "shapley_ceiling": ceiling_sh,
                       "auto_choice": auto.get("chosen") if method == "auto" else None,
                       "seconds": info.get(method, {}).get("seconds")}
                if psi is not None:
                    p = psi.reindex(points)
                    evs = [ev(p[k].to_numpy(dtype=np.float64), psi_truth[k].to_numpy(dtype=np.float64)) for k in sizes]
                    row["psi_ev_mean"] = float(np.mean(evs))
                    for k, v in zip(sizes, evs):
                        row[f"psi_ev_{k}"] = v
                rows.append(row)
    return pd.DataFrame(rows)


def flip_pool(name: str, seed: int, rate: float = 0.1, full=None):
    """A 1,000-point training pool of ``name`` (all of it when smaller) with ``rate`` of its labels
    flipped, and a clean validation split of 500 rows (or all), drawn with ``seed``; ``full`` is
    the loaded dataset when ``name`` is not a built-in one."""
    from pointscale.data import load_dataset
    from pointscale.seeding import STREAM_SELECTION, rng
    from pointscale.valuation import flip_labels

    full = load_dataset(name) if full is None else full
    g = rng(seed, STREAM_SELECTION, "estimators-benchmark-flip-pool")
    pool = np.sort(g.choice(full.n_pool, min(1000, full.n_pool), replace=False))
    val = np.sort(g.choice(len(full.y_val), min(500, len(full.y_val)), replace=False))
    h = hashlib.sha256(f"{full.fingerprint}|pool1000|{seed}".encode()).hexdigest()
    ds = dataclasses.replace(full, X_train=np.asarray(full.X_train)[pool], y_train=np.asarray(full.y_train)[pool],
                             point_ids=np.asarray(full.point_ids)[pool], X_val=np.asarray(full.X_val)[val],
                             y_val=np.asarray(full.y_val)[val], val_ids=np.asarray(full.val_ids)[val],
                             fingerprint=h, path=None)
    return flip_labels(ds, list(ds.point_ids), rate, seed=seed)


def flips_part(args, log) -> pd.DataFrame:
    """AUC of a low value for the flipped points, per seed of ``args.flip_seeds``."""
    from sklearn.metrics import roc_auc_score

    from pointscale import pipeline
    from pointscale.laws.auto import select_laws
    from pointscale.sampling.ledger import summarize
    from pointscale.valuation import distributional_shapley, monte_carlo_values

    rows = []
    for seed in args.flip_seeds:
        noisy, flipped = flip_pool(args.flip_dataset, seed)
        ids = [str(p) for p in noisy.point_ids]
        is_flipped = np.isin(np.asarray(ids, dtype=object), flipped)
        n_max = max(args.flip_grid)
        cfg = pipeline.resolve_sampling(noisy, model="logreg", metric=args.metric, k_min=None, k_max=None,
                                        samples_per_point=n_max, seed=seed, block_size=32, shard_size=None,
                                        n_points=len(ids))
        log(f"\nflipped labels: {args.flip_dataset} {len(ids)}-point pool, seed {seed}, {int(is_flipped.sum())} "
            f"flipped, clean validation {len(noisy.y_val)} rows, k in [{cfg.k_min}, {cfg.k_max}], utility {cfg.metric}")
        tag = "" if args.flip_dataset == "adult" else f"{args.flip_dataset}-"
        root = Path(args.out) / f"flips-{tag}{cfg.metric}-{_cache_key(seed, cfg.k_min, cfg.k_max)}"
        samples, oob_rounds = sample_rounds(noisy, ids, cfg, root, n_max, log)

        def auc(values: pd.Series) -> float:
            v = values.reindex(ids).to_numpy(dtype=np.float64)
            ok = np.isfinite(v)
            return float(roc_auc_score(is_flipped[ok], -v[ok]))

        for n in args.flip_grid:
            s = samples[samples["round"] < n]
            oob = summarize(pd.concat(oob_rounds[:n], ignore_index=True))
            auto, fitted = _quiet(select_laws, s, noisy, method="auto", oob=oob, random_state=seed,
                                  k_range=(cfg.k_min, cfg.k_max))
            sel = auto.meta["selection"]
            log(f"  n={n}: auto chose {sel['chosen']} (held-out NLL, target {sel['target']}: "
                f"{({k: round(v, 4) if v is not None else None for k, v in sel['heldout_nll'].items()})}; "
                f"of psi_k: "
                f"{({k: round(v, 4) if v is not None else None for k, v in sel['heldout_nll_psi'].items()})})")
            cols = {"shapley (auto)": pd.Series(distributional_shapley(auto, cfg.k_min, cfg.k_max).value,
                                                index=auto.point_ids)}
            for method in ("shrunk_mean", "mle", "amortized", "shrinkage", "amortized_shrinkage"):
                laws, _ = _quiet(select_laws, s, noisy, method=method, oob=oob, random_state=seed)
                col = "shrunk_mean" if method == "shrunk_mean" else f"shapley_{method}"
                cols[col] = pd.Series(distributional_shapley(laws, cfg.k_min, cfg.k_max).value, index=laws.point_ids)
            cols["mc_mean"] = monte_carlo_values(s, k_min=cfg.k_min, k_max=cfg.k_max)["mc_mean"]
            cols["oob"] = oob.set_index("point_id")["oob_score"]
            n_pred = int(sum(t["n"].sum() for t in oob_rounds[:n]))
            for col, values in cols.items():
                rows.append({"dataset": args.flip_dataset, "seed": seed, "n": n, "column": col,
                             "auc": auc(values), "auto_choice": sel["chosen"], "oob_predictions": n_pred})
    return pd.DataFrame(rows)


def rules_part(args, log) -> pd.DataFrame:
    """The selection rules of ``fit_laws(method="auto")`` checked on flipped-label pools.

    For each seed of ``args.rule_seeds`` and dataset of ``args.rule_datasets``
    (data other than the reported runs: magic and digits), a flipped-label pool
    (:func:`flip_pool`), 10 samples per point and a ground truth of 200
    independent samples per point (seed + 1000). Every candidate is fitted on
    all samples (explained variance and AUC of its Shapley values against the
    truth), and on the training part of auto's held-out split, where each rule
    scores it: the ψ_k likelihood under each candidate's own noise model
    (``psi_own``) or under the shrinkage fit's (``psi_shared``, the earlier
    rule), and the likelihood of the Shapley value with one shared variance
    (``shapley``, the rule now used) or with a variance per point from the
    shrinkage fit (``shapley_per_point``); each by the lowest score (``best``)
    and by the one-standard-error rule (``1se``).
    """
    from sklearn.metrics import roc_auc_score

    from pointscale import pipeline
    from pointscale.laws.auto import (CANDIDATES, _one_se_choice, best_of, heldout_terms, usable_samples,
                                      heldout_terms_shapley, select_laws)
    from pointscale.laws.folds import holdout_mask
    from pointscale.laws.estimators import FitContext, fit_estimator
    from pointscale.laws.likelihood import LOG_2PI
    from pointscale.laws.power import power_mean
    from pointscale.sampling.ledger import summarize
    from pointscale.valuation import distributional_shapley, monte_carlo_values

    rows = []
    for name in args.rule_datasets:
        for seed in args.rule_seeds:
            noisy, flipped = flip_pool(name, seed)
            ids = [str(p) for p in noisy.point_ids]
            is_flipped = np.isin(np.asarray(ids, dtype=object), flipped)
            cfg = pipeline.resolve_sampling(noisy, model="logreg", metric=args.metric, k_min=None, k_max=None,
                                            samples_per_point=30, seed=seed, block_size=32, shard_size=None,
                                            n_points=len(ids))
            lo, hi = cfg.k_min, cfg.k_max
            root = Path(args.out) / f"rules-{name}-{seed}-{lo}-{hi}"
            log(f"\nrules: {name} pool of {len(ids)}, seed {seed}, k in [{lo}, {hi}], utility {cfg.metric}")
            samples, oob_rounds = sample_rounds(noisy, ids, cfg, root / "est", 30, log)
            gt, _ = sample_rounds(noisy, ids, dataclasses.replace(cfg, seed=seed + 1000, samples_per_point=200),
                                  root / "truth", 200, log)
            truth = monte_carlo_values(gt, k_min=lo, k_max=hi)["mc_mean"].reindex(ids).to_numpy()
            s = samples[samples["round"] < 10]
            oob = summarize(pd.concat(oob_rounds[:10], ignore_index=True))

            def shap(laws):
                return pd.Series(distributional_shapley(laws, lo, hi).value, index=laws.point_ids
                                 ).reindex(ids).to_numpy(dtype=np.float64)

            def auc(v):
                ok = np.isfinite(v)
                return float(roc_auc_score(is_flipped[ok], -v[ok]))

            full: dict = {}
            context = FitContext(dataset=noisy, oob=oob, random_state=seed, k_range=(lo, hi))
            row = {"dataset": name, "seed": seed, "truth_auc": auc(truth)}
            mc = monte_carlo_values(s, k_min=lo, k_max=hi)["mc_mean"].reindex(ids).to_numpy()
            row.update({"ev_mc_mean": ev(mc, truth), "auc_mc_mean": auc(mc)})
            for m in CANDIDATES:
                v = shap(_quiet(fit_estimator, m, s, context, full))
                row.update({f"ev_{m}": ev(v, truth), f"auc_{m}": auc(v)})
            u = usable_samples(s)
            mask = holdout_mask(u, 0.2, seed=seed)
            train, held = u.loc[~mask], u.loc[mask]
            cache: dict = {}
            cand = {m: _quiet(fit_estimator, m, train, context, cache) for m in CANDIDATES}
            sh = cand["shrinkage"]
            variance = float(np.var(train["delta"].to_numpy(dtype=np.float64)))
            d = held["delta"].to_numpy(dtype=np.float64)
            k = held["k"].to_numpy(dtype=np.float64)
            q = pd.Index(sh.point_ids).get_indexer(held["point_id"].to_numpy())
            # Per-point variance of a held-out delta (k unseen) under the shrinkage fit.
            c_s, a_s = sh.c[q], sh.alpha[q]
            s2 = (sh.sigma[q] ** 2 * power_mean(sh.beta[q], lo, hi)
                  + c_s ** 2 * np.maximum(power_mean(2 * a_s, lo, hi) - power_mean(a_s, lo, hi) ** 2, 0.0))

            def per_point(laws):
                p = pd.Index(laws.point_ids).get_indexer(held["point_id"].to_numpy())
                nu = np.where(laws.c == 0, 0.0, laws.c * power_mean(laws.alpha, lo, hi))[p]
                return 0.5 * LOG_2PI + 0.5 * np.log(s2) + 0.5 * (d - nu) ** 2 / s2

            def psi_shared(laws):
                p = pd.Index(laws.point_ids).get_indexer(held["point_id"].to_numpy())
                with np.errstate(all="ignore"):
                    mean = np.where(laws.c[p] == 0, 0.0, laws.c[p] * k ** (-laws.alpha[p]))
                    log_var = 2 * np.log(sh.sigma[q]) - sh.beta[q] * np.log(k)
                    return 0.5 * LOG_2PI + 0.5 * log_var + 0.5 * (d - mean) ** 2 * np.exp(-log_var)

            scorers = {"psi_own": heldout_terms, "psi_shared": psi_shared,
                       "shapley": lambda L: heldout_terms_shapley(L, held, variance, (lo, hi)),
                       "shapley_per_point": per_point}
            for rule, fn in scorers.items():
                terms = {m: (fn(cand[m], held) if rule == "psi_own" else fn(cand[m])) for m in CANDIDATES}
                sc = {m: float(np.mean(t)) if np.isfinite(t).all() else float("inf") for m, t in terms.items()}
                one_se, _ = _one_se_choice(list(CANDIDATES), sc, terms)
                for how, choice in (("best", best_of(sc, list(CANDIDATES))), ("1se", one_se)):
                    row[f"{rule}_{how}"] = choice
                    row[f"ev_{rule}_{how}"] = row[f"ev_{choice}"]
                    row[f"auc_{rule}_{how}"] = row[f"auc_{choice}"]
            # fit_laws(method="auto") itself (5-fold, one-standard-error rule), and the choice each
            # preference order makes from the same held-out scores.
            auto, _ = _quiet(select_laws, s, noisy, oob=oob, random_state=seed, k_range=(lo, hi), fitted=full)
            sel = auto.meta["selection"]
            for label, order in PREFERENCE_ORDERS.items():
                choice = order_choice(sel, order)
                row[f"auto_{label}"] = choice
                row[f"ev_auto_{label}"] = row[f"ev_{choice}"]
                row[f"auc_auto_{label}"] = row[f"auc_{choice}"]
            log("  " + ", ".join(f"{key} {val:.3f}" if isinstance(val, float) else f"{key} {val}"
                                 for key, val in row.items() if key.startswith(("ev_", "psi", "shapley", "auto"))))
            rows.append(row)
    return pd.DataFrame(rows)


#: Preference orders of the one-standard-error rule compared by ``--part rules`` (the registry's is the one used).
PREFERENCE_ORDERS = {
    "laws_first": ("shrinkage", "amortized_shrinkage", "mle", "amortized", "shrunk_mean"),
    "regularised_first": ("shrinkage", "amortized_shrinkage", "shrunk_mean", "mle", "amortized"),
    "law_free_second": ("shrinkage", "shrunk_mean", "amortized_shrinkage", "mle", "amortized"),
    "law_free_first": ("shrunk_mean", "shrinkage", "amortized_shrinkage", "mle", "amortized"),
}


def order_choice(selection: dict, order) -> str:
    """The candidate ``fit_laws``' one-standard-error rule picks from ``selection``'s scores under ``order``.

    The standard errors in the record are of each candidate's paired difference
    to the best one, which the order does not change; a choice the law
    diagnostic overrode (law-free where the law does not hold) stays.
    """
    from pointscale.laws.auto import first_within_se

    if selection.get("overridden"):
        return selection["chosen"]
    scores, se = selection["heldout_nll"], selection["se_of_difference_to_best"]
    pool = [c for c in order if c in scores and scores[c] is not None and c not in selection["excluded"]]
    return first_within_se(pool, scores, {c: float("inf") if se.get(c) is None else se[c] for c in pool})


def rules_markdown(rules: pd.DataFrame) -> str:
    """Which candidate each rule chose per pool, and the explained variance / AUC of its Shapley values."""
    from pointscale.laws.auto import CANDIDATES

    rule_cols = [f"{r}_{h}" for r in ("psi_own", "psi_shared", "shapley", "shapley_per_point") for h in ("best", "1se")]
    rule_cols += [f"auto_{label}" for label in PREFERENCE_ORDERS if f"auto_{label}" in rules.columns]
    parts = ["| pool | truth AUC | mc_mean EV (AUC) | " + " | ".join(f"{m} EV (AUC)" for m in CANDIDATES) + " |",
             "|---" * (len(CANDIDATES) + 3) + "|"]
    for _, r in rules.iterrows():
        parts.append(f"| {r['dataset']}/{r['seed']} | {r['truth_auc']:.3f} | {r['ev_mc_mean']:.3f} ({r['auc_mc_mean']:.3f}) | "
                     + " | ".join(f"{r[f'ev_{m}']:.3f} ({r[f'auc_{m}']:.3f})" for m in CANDIDATES) + " |")
    parts += ["", "| rule | " + " | ".join(f"{r['dataset']}/{r['seed']}" for _, r in rules.iterrows())
              + " | mean EV of the choice | mean AUC |", "|---" * (len(rules) + 3) + "|"]
    for rc in rule_cols:
        parts.append(f"| {rc} | " + " | ".join(str(v) for v in rules[rc]) + f" | {rules[f'ev_{rc}'].mean():.3f} | "
                     f"{rules[f'auc_{rc}'].mean():.3f} |")
    best = rules[[f"ev_{m}" for m in CANDIDATES]].max(axis=1).mean()
    parts.append(f"\nBest candidate per pool (oracle): mean EV {best:.3f}; plain mean {rules['ev_mc_mean'].mean():.3f}.")
    return "\n".join(parts)


def timing_part(args, log) -> pd.DataFrame:
    """Wall time of shrinkage vs the vectorised MLE (the baseline) on the same synthetic samples."""
    from pointscale.laws import fit_mle
    from pointscale.laws.shrinkage import fit_shrinkage
    from pointscale.laws.simulate import draw_parameters, simulate_samples

    P, n = (2_000, 100) if args.quick else (10_000, 100)
    s = simulate_samples(draw_parameters(P, 1), n, 2)
    rows = []
    for rep in range(2):
        w0, c0 = time.perf_counter(), time.process_time()
        _quiet(fit_mle, s)
        w1, c1 = time.perf_counter(), time.process_time()
        fit_shrinkage(s)
        w2, c2 = time.perf_counter(), time.process_time()
        rows.append({"points": P, "samples_per_point": n, "mle_wall_s": w1 - w0, "shrinkage_wall_s": w2 - w1,
                     "mle_cpu_s": c1 - c0, "shrinkage_cpu_s": c2 - c1, "cpu_ratio": (c2 - c1) / (c1 - c0)})
    out = pd.DataFrame(rows)
    best = out.loc[out["shrinkage_cpu_s"].idxmin()]
    log(f"\ntiming, {P} points x {n} samples (best of 2; CPU time, one thread): shrinkage "
        f"{best['shrinkage_cpu_s']:.2f} s CPU ({best['shrinkage_wall_s']:.2f} s wall), MLE {best['mle_cpu_s']:.2f} s "
        f"CPU ({best['mle_wall_s']:.2f} s wall); ratio {best['cpu_ratio']:.2f}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--part", choices=("all", "values", "flips", "timing", "rules", "models"), default="all",
                        help="models: the default estimator for mlp_batched, svm and xgboost against the plain "
                             "and the fair shrunk mean (benchmarks/estimators_models.py; not in 'all')")
    parser.add_argument("--settle-dir", default="runs/settle",
                        help="models: the `pointscale reproduce --settle --out` folder holding the ground truth")
    parser.add_argument("--models-out", default=".cache/benchmarks/estimators/models",
                        help="models: the estimation samples' ledgers (sampled where missing)")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--model-datasets", nargs="+", default=["adult", "magic"])
    parser.add_argument("--model-grid", type=int, nargs="+", default=[10, 20, 30, 100])
    parser.add_argument("--model-points", type=int, default=128,
                        help="models: points of the estimation pool (the 32 truth points first); give each size "
                             "its own --models-out")
    parser.add_argument("--replicates", type=int, default=3,
                        help="models: disjoint sample sets per n (replicate r takes rounds [r·n, (r+1)·n))")
    parser.add_argument("--rounds", type=int, default=0,
                        help="models: rounds of the estimation ledger (default replicates × the largest n); "
                             "n gets min(replicates, rounds // n) replicates")
    parser.add_argument("--pool-truth", default=None,
                        help="models: ledgers of the ground truth on the pool's other points, DIR/<dataset>/<model> "
                             "(used where present: the scores are then on every pool point)")
    parser.add_argument("--pool-truth-depth", type=int, default=0,
                        help="models: sample the pool's truth to this many samples per size (0: read it as it is)")
    parser.add_argument("--refresh-auto", action="store_true",
                        help="models: recompute only the auto and default rows of cached estimates")
    parser.add_argument("--datasets", nargs="+", default=["adult", "magic"])
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--truth", type=int, default=400)
    parser.add_argument("--grid", type=int, nargs="+", default=list(N_GRID))
    parser.add_argument("--flip-grid", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--flip-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rule-datasets", nargs="+", default=["magic", "digits"])
    parser.add_argument("--rule-seeds", type=int, nargs="+", default=[100, 101, 102])
    parser.add_argument("--flip-dataset", default="adult",
                        help="dataset of the flipped-label pool (adult is the reported one; magic and "
                             "digits served to check the selection rules)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metric", default=None,
                        help="utility (default: the engine's default for the task at run time)")
    parser.add_argument("--out", default=".cache/benchmarks/estimators")
    parser.add_argument("--save", help="write the result tables (CSV) and the Markdown here")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets, args.points, args.truth, args.grid, args.flip_grid = ["magic"], 60, 100, [10, 30], [10]
        args.flip_seeds = [0]
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    values = flips = None
    if args.part in ("all", "values"):
        values = values_part(args, log)
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            log("\n" + values[["dataset", "n", "method", "shapley_ev", "shapley_spearman", "psi_ev_mean",
                               "auto_choice"]].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.part in ("all", "timing"):
        timing_part(args, log)
    if args.part in ("all", "flips"):
        flips = flips_part(args, log)
        log("\n" + flips.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.part == "models":  # not part of "all": it reads the settle run's ground truth
        table = models_part(args, log)
        md = models_markdown(table) + "\n\n" + detail_markdown(table)
        log("\n" + md)
        if args.save:
            out = Path(args.save)
            out.mkdir(parents=True, exist_ok=True)
            table.to_csv(out / "estimators_models.csv", index=False)
            (out / "estimators_models.md").write_text(md + "\n", encoding="utf-8")
        return 0
    rules = None
    if args.part == "rules":  # not part of "all": it checks the rules on other data
        rules = rules_part(args, log)
    md = markdown(values, flips)
    if rules is not None:
        md += "\n\n" + rules_markdown(rules)
    log("\n" + md)
    if args.save:
        out = Path(args.save)
        out.mkdir(parents=True, exist_ok=True)
        if values is not None:
            values.to_csv(out / "estimators_values.csv", index=False)
        if flips is not None:
            flips.to_csv(out / "estimators_flips.csv", index=False)
        if rules is not None:
            rules.to_csv(out / "estimators_rules.csv", index=False)
        (out / "estimators.md").write_text(md + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
