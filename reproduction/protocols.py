"""The paper's protocols, one function each, every one returning a DataFrame.

Inputs are samples (ledger rows), fitted laws and the dataset; outputs are
tables without the (dataset, model) key, which :mod:`reproduction.run` adds.
Nothing here samples: :mod:`reproduction.phases` does.

1. :func:`law_fit` — does ψ_k ≈ c·k^(−α) hold? The paper's statistic (mean of
   the per-size R², ``sklearn.metrics.r2_score`` on points × sizes) beside the
   pooled R², per-size noise ceilings, in sample (laws fitted on the ground
   truth itself, as the paper did) and out of sample (fitted on one half of
   the ground-truth samples, scored against the other half's means).
2. :func:`point_r2` — per-point log-log R² (the paper's filter statistic).
3. :func:`alpha_spread` — α and c from estimators that impose no prior on α.
4. :func:`relations` — α, c against the full model's margin; :func:`label_noise`.
5. :func:`estimator_accuracy`, :func:`shapley_accuracy` — against the ground truth.
6. :func:`point_addition` — the paper's Sec. 4.4 with test accuracy as outcome.
7. :func:`value_transfer` — per-point values scored on validation vs test, same fits.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from pointscale.errors import ConfigError, DataError
from pointscale.seeding import STREAM_MODEL, STREAM_SELECTION, int_seed, rng
from pointscale.valuation import (
    distributional_shapley,
    empirical_psi,
    empirical_psi_se,
    evaluate_estimates,
    grid_shapley,
    law_r2,
    monte_carlo_values,
    point_addition_experiment,
    score_pair,
    split_halves,
)

from .phases import quiet, usable

#: The paper's per-point filter for point addition (log-space R² of the staggered means).
PAPER_R2_FILTER = 0.9


# --------------------------------------------------------------------------- helpers


def law_predictions(laws: Any, index: pd.Index, sizes: Sequence[int]) -> pd.DataFrame:
    """c·k^(−α) of ``laws`` at ``sizes`` for the points of ``index`` (NaN where a point has no law)."""
    pos = pd.Series(np.arange(laws.n_points), index=pd.Index(laws.point_ids.astype(str)))
    take = pos.reindex(index.astype(str)).to_numpy()
    pred = np.full((len(index), len(sizes)), np.nan)
    have = np.isfinite(take)
    if have.any():
        pred[have] = laws.predict(list(sizes), warn_extrapolation=False)[take[have].astype(int)]
    return pd.DataFrame(pred, index=index, columns=list(sizes))


def by_id(values: np.ndarray, ids: np.ndarray, index: pd.Index) -> np.ndarray:
    return pd.Series(np.asarray(values, dtype=np.float64), index=pd.Index(np.asarray(ids).astype(str))) \
        .reindex(index.astype(str)).to_numpy()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    ra, rb = rankdata(a[ok]), rankdata(b[ok])
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def auc(positive: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    score = np.asarray(score, dtype=np.float64)
    ok = np.isfinite(score)
    if ok.sum() < 2 or positive[ok].all() or not positive[ok].any():
        return float("nan")
    return float(roc_auc_score(positive[ok], score[ok]))


def quantiles(x: np.ndarray, qs=(0.05, 0.25, 0.5, 0.75, 0.95)) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return {f"q{int(round(q * 100)):02d}": (float(np.quantile(x, q)) if x.size else float("nan")) for q in qs}


def truth_tables(gt: pd.DataFrame, extrap: pd.DataFrame, index: pd.Index) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Empirical ψ and its standard errors at every sampled size (grid and extrapolation)."""
    both = pd.concat([usable(gt), usable(extrap)], ignore_index=True)
    return empirical_psi(both).reindex(index), empirical_psi_se(both).reindex(index)


# --------------------------------------------------------------------------- 1. the law


def law_fit(gt: pd.DataFrame, extrap: pd.DataFrame, grid: Sequence[int], index: pd.Index,
            fitters: Mapping[str, Callable[[pd.DataFrame], Any]]) -> pd.DataFrame:
    """R² of laws against the empirical ψ, in sample and out of sample.

    Parameters
    ----------
    gt, extrap : DataFrame
        Staggered samples on the grid and at the extrapolation sizes.
    grid : sequence of int
    index : Index
        The ground-truth points.
    fitters : mapping of name to ``samples -> FittedScalingLaws``
        E.g. ``{"log_ols": fit_log_ols, "mle": fit_mle}``.

    Returns
    -------
    DataFrame
        ``law``, ``fit`` (``in-sample``: fitted on all ground-truth samples and
        scored against their means; ``out-of-sample``: fitted on one half,
        scored against the other half's means), ``target`` (a size, or
        ``mean_per_size`` — the paper's statistic — or ``pooled``),
        ``extrapolated``, ``r2``, ``noise_ceiling``, ``n_points``.
    """
    gt_ok = usable(gt)
    psi, se = truth_tables(gt, extrap, index)
    grid = list(grid)
    ex_sizes = [k for k in psi.columns if k not in set(grid)]
    half_a, half_b = split_halves(gt_ok)
    psi_b, se_b = empirical_psi(half_b).reindex(index), empirical_psi_se(half_b).reindex(index)
    rows = []
    for name, fit in fitters.items():
        for how, train, t_psi, t_se in (("in-sample", gt_ok, psi, se), ("out-of-sample", half_a, psi_b, se_b)):
            laws = quiet(fit, train[["point_id", "k", "delta"]])
            pred = law_predictions(laws, index, list(psi.columns))
            table = law_r2(t_psi[grid], pred[grid], t_se[grid])
            table.insert(0, "extrapolated", False)
            parts = [table]
            if how == "in-sample":
                for k in ex_sizes:  # never in the fit: out of sample by construction
                    ok = psi[k].notna() & pred[k].notna()
                    if ok.sum() > 2:
                        t = law_r2(psi.loc[ok, [k]], pred.loc[ok, [k]], se.loc[ok, [k]]).iloc[[0]]
                        t.insert(0, "extrapolated", True)
                        parts.append(t)
            part = pd.concat(parts, ignore_index=True)
            part.insert(0, "fit", how)
            part.insert(0, "law", name)
            rows.append(part)
    return pd.concat(rows, ignore_index=True)


def sign_changes(gt: pd.DataFrame, index: pd.Index) -> pd.DataFrame:
    """Share of points whose empirical ψ_k changes sign across the grid, and the share ψ > 0 per size."""
    psi = empirical_psi(usable(gt)).reindex(index)
    pos = (psi > 0).to_numpy()
    changes = pos.any(axis=1) & (~pos).any(axis=1)
    row = {"points": len(index), "sign_change_share": float(changes.mean())}
    row.update({f"psi>0@{k}": float((psi[k] > 0).mean()) for k in psi.columns})
    return pd.DataFrame([row])


def point_r2(log_ols_laws: Any, index: pd.Index) -> pd.DataFrame:
    """Quantiles of the per-point log-log R² (the paper's filter statistic), all points and without sign changes."""
    r2 = by_id(log_ols_laws.extra["r2"], log_ols_laws.point_ids, index)
    signs = by_id(log_ols_laws.flags["sign_changes"].astype(float), log_ols_laws.point_ids, index) > 0
    rows = []
    for subset, mask in (("all points", np.ones(len(index), bool)), ("no sign change", ~signs)):
        v = r2[mask & np.isfinite(r2)]
        rows.append({"points": subset, "n": int(v.size), **quantiles(v),
                     "share_r2>=0.8": float(np.mean(v >= 0.8)) if v.size else np.nan,
                     f"share_r2>={PAPER_R2_FILTER}": float(np.mean(v >= PAPER_R2_FILTER)) if v.size else np.nan})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- 2. alpha and c


def alpha_spread(laws_by_estimator: Mapping[str, Any], index: pd.Index) -> pd.DataFrame:
    """α and c quantiles per estimator (none imposes a prior on α); all points and well-fitted ones."""
    rows = []
    for name, laws in laws_by_estimator.items():
        alpha = by_id(laws.alpha, laws.point_ids, index)
        c = by_id(laws.c, laws.point_ids, index)
        bad = np.zeros(len(index), bool)
        for flag in ("alpha_at_bound", "poor_fit", "too_few_samples"):
            if flag in laws.flags:
                bad |= by_id(laws.flags[flag].astype(float), laws.point_ids, index) > 0
        for subset, mask in (("all", np.ones(len(index), bool)), ("well fitted", ~bad)):
            a = alpha[mask]
            row = {"estimator": name, "points": subset, "n": int(np.isfinite(a).sum())}
            row.update({f"alpha_{q}": v for q, v in quantiles(a).items()})
            row["alpha_in_[1,1.5]"] = float(np.mean((a >= 1) & (a <= 1.5))) if a.size else np.nan
            row["c<0"] = float(np.mean(c[mask] < 0)) if mask.any() else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


#: Rows the full model of :func:`full_model_margin` trains on, for models other than the linear ones:
#: an RBF SVM on adult's 46,842 rows needs a 17 GB kernel and hours of SMO on this machine.
MARGIN_MAX_ROWS = 5000


def full_model_margin(ds: Any, model: str, model_params: Mapping[str, Any], seed: int, index: pd.Index) -> np.ndarray:
    """Signed margin y·logit of the points under a model fitted on the whole pool.

    Linear models (``logreg``, ``ridge``, ``linear``) train on every pool row; the others on the
    ground-truth points plus a seeded sample of the rest, :data:`MARGIN_MAX_ROWS` rows in all.
    """
    from pointscale.sampling import make_estimator

    est = make_estimator(model, ds.task, int_seed(seed, STREAM_MODEL, "reproduce-full"), dict(model_params))
    rows = np.arange(ds.n_pool)
    if model not in ("logreg", "ridge", "linear") and ds.n_pool > MARGIN_MAX_ROWS:
        own = np.asarray(ds.index_of(list(index)))
        rest = np.setdiff1d(rows, own)
        pick = rng(seed, STREAM_SELECTION, "reproduce-margin").choice(rest, MARGIN_MAX_ROWS - own.size, replace=False)
        rows = np.sort(np.concatenate([own, pick]))
    quiet(est.fit, np.asarray(ds.X_train)[rows], np.asarray(ds.y_train)[rows])
    idx = ds.index_of(list(index))
    p = np.clip(est.predict_proba(np.asarray(ds.X_train)[idx])[:, 1], 1e-12, 1 - 1e-12)
    logit = np.log(p) - np.log1p(-p)
    y = np.asarray(ds.y_train)[idx]
    return np.where(y == 1, logit, -logit)


def relations(laws: Any, truth_shapley: pd.Series, margin: np.ndarray, index: pd.Index) -> pd.DataFrame:
    """Spearman of α, c and the Shapley value with the full model's signed margin."""
    alpha = by_id(laws.alpha, laws.point_ids, index)
    c = by_id(laws.c, laws.point_ids, index)
    wrong = margin < 0
    return pd.DataFrame([{
        "n": len(index), "misclassified": int(wrong.sum()),
        "spearman(alpha, |logit|)": spearman(alpha, np.abs(margin)),
        "spearman(c, margin)": spearman(c, margin),
        "spearman(shapley, margin)": spearman(truth_shapley.reindex(index).to_numpy(), margin),
        "c<0 | misclassified": float(np.mean(c[wrong] < 0)) if wrong.any() else np.nan,
        "c<0 | correct": float(np.mean(c[~wrong] < 0)) if (~wrong).any() else np.nan,
    }])


def label_noise(samples: pd.DataFrame, flipped: Sequence[str], points: Sequence[str], k_range: tuple[int, int],
                fit: Callable[[pd.DataFrame], Any]) -> pd.DataFrame:
    """ROC AUC of a low value (Shapley from the laws, c, Monte Carlo mean) for finding flipped labels."""
    s = usable(samples)
    laws = quiet(fit, s[["point_id", "k", "delta"]])
    idx = pd.Index(sorted(points))
    pos = idx.isin(set(flipped))
    shap = distributional_shapley(laws, *k_range).to_series().reindex(idx).to_numpy()
    c = by_id(laws.c, laws.point_ids, idx)
    mc = monte_carlo_values(s)["mc_mean"].reindex(idx).to_numpy()
    neg = c < 0
    return pd.DataFrame([{"points": len(idx), "flipped": int(pos.sum()),
                          "samples_per_point": int(s.groupby("point_id").size().median()),
                          "auc(-shapley)": auc(pos, -shap), "auc(-c)": auc(pos, -c), "auc(-monte carlo)": auc(pos, -mc),
                          "recall(c<0)": float(neg[pos].mean()) if pos.any() else np.nan,
                          "precision(c<0)": float(pos[neg].mean()) if neg.any() else np.nan}])


# --------------------------------------------------------------------------- 3. estimators


def shapley_ceiling(se: pd.DataFrame, lo: int, hi: int, psi: pd.DataFrame) -> float:
    """Noise ceiling of the grid Shapley truth: its variance from the per-size standard errors."""
    unit = pd.DataFrame(np.eye(len(psi.columns)), columns=psi.columns)
    w = grid_shapley(unit, lo, hi).to_numpy()  # grid_shapley is linear in ψ
    var_truth = (se.to_numpy() ** 2) @ (w**2)
    shap = grid_shapley(psi, lo, hi).to_numpy()
    ok = np.isfinite(shap) & np.isfinite(var_truth)
    v = float(np.var(shap[ok])) if ok.sum() > 1 else float("nan")
    return 1.0 - float(np.mean(var_truth[ok])) / v if v and v > 0 else float("nan")


def estimator_accuracy(estimates: Mapping[tuple[str, int], Any], psi: pd.DataFrame, se: pd.DataFrame,
                       extrap: Sequence[int]) -> pd.DataFrame:
    """ψ_k at every sampled size: explained variance etc. of each (estimator, n) against the empirical ψ."""
    rows = []
    ceilings = law_r2(psi.dropna(), psi.dropna(), se.reindex(psi.dropna().index)).set_index("target")["noise_ceiling"]
    for (name, n), laws in estimates.items():
        pred = law_predictions(laws, psi.index, list(psi.columns))
        for _, r in evaluate_estimates(pred, psi).iterrows():
            k = int(r["target"])
            rows.append({"estimator": name, "n": n, "k": k, "extrapolated": k in set(extrap),
                         **{m: r[m] for m in ("explained_variance", "pearson", "spearman", "sign_agreement")},
                         "noise_ceiling": float(ceilings.get(str(k), np.nan))})
    return pd.DataFrame(rows)


def shapley_accuracy(estimates: Mapping[tuple[str, int], pd.Series], truth: pd.Series, ceiling: float) -> pd.DataFrame:
    """Distributional Shapley estimates (laws or Monte Carlo) against the model-free grid truth."""
    rows = []
    for (name, n), values in estimates.items():
        s = score_pair(values.reindex(truth.index).to_numpy(dtype=np.float64), truth.to_numpy(dtype=np.float64))
        rows.append({"estimator": name, "n": n, **{m: s[m] for m in ("explained_variance", "pearson", "spearman",
                                                                     "sign_agreement")},
                     "noise_ceiling": ceiling})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- 4. point addition


def addition_candidates(gt: pd.DataFrame, fit_log_ols: Callable, threshold: float = PAPER_R2_FILTER):
    """The paper's candidates: log-space laws of the staggered ground truth, points with R² ≥ threshold."""
    laws = quiet(fit_log_ols, usable(gt)[["point_id", "k", "delta"]])
    r2 = np.asarray(laws.extra["r2"], dtype=np.float64)
    keep = np.isfinite(r2) & (r2 >= threshold) & np.isfinite(laws.c) & np.isfinite(laws.alpha)
    return laws.subset(keep), int(keep.sum()), laws.n_points


def _addition_one(job: tuple) -> tuple:
    """One law source's point addition (module level so a process pool can run it); opens the dataset by path."""
    from pointscale.data import open_dataset
    from pointscale.errors import DegenerateExperimentError

    path, laws, kw = job
    ds = open_dataset(path)
    try:
        return "ok", point_addition_experiment(ds, laws, candidates=list(laws.point_ids), **kw)
    except DegenerateExperimentError as exc:
        return "refused", str(exc)
    except (ConfigError, DataError) as exc:
        return "skipped", str(exc)


def point_addition(ds: Any, sources: Mapping[str, tuple[Any, str]], *, model: str, model_params: Mapping[str, Any],
                   sizes: tuple[int, int], m: int, repeats: int, shapley_range: tuple[int, int],
                   seed: int, map: Callable = map) -> tuple[pd.DataFrame, list[str]]:
    """Point addition for each source of candidate laws; refused regimes become rows with their reason.

    Parameters
    ----------
    ds : Dataset
        A saved dataset (``ds.path``): each source runs in ``map``'s worker, which opens it by path.
    sources : mapping of name to (laws, description)
        The candidates are the points of each ``laws``.
    map : callable, default=builtins.map
        Runs the sources (independent experiments), e.g. a process pool's ``map``.

    Returns
    -------
    (DataFrame, list of str)
        Rows per (laws, regime, ranking): ``metric`` (the outcome's name,
        read from the experiment), gains and paired gains vs random, their
        standard errors, ``refused`` (the reason, or empty). And messages.
    """
    kw = dict(model=model, model_params=dict(model_params), n_small=sizes[0], n_large=sizes[1], m=m,
              repeats=repeats, shapley_range=shapley_range, seed=seed)
    ref = str(ds.path) if getattr(ds, "path", None) is not None else ds
    jobs = [(ref, laws, kw) for laws, _ in sources.values()]
    rows, messages = [], []
    for (name, (laws, what)), (status, res) in zip(sources.items(), map(_addition_one, jobs)):
        if status == "refused":
            rows.append({"laws": name, "candidates": laws.n_points, "source": what, "regime": "both",
                         "refused": res})
            continue
        if status == "skipped":
            messages.append(f"point addition with {name} laws skipped: {res}")
            continue
        messages.extend(f"point addition ({name}): {msg}" for msg in res.messages)
        summ = res.summary.copy()
        summ.insert(0, "source", what)
        summ.insert(0, "candidates", res.settings["n_candidates"])
        summ.insert(0, "laws", name)
        summ["refused"] = ""
        summ["n_test"] = res.settings["n_test"]
        summ["fits"] = int(len(res.trials)) + 2 * repeats
        rows.extend(summ.to_dict("records"))
        for regime, why in res.refused.items():
            rows.append({"laws": name, "candidates": laws.n_points, "source": what, "regime": regime,
                         "n_initial": sizes[0] if regime == "small" else sizes[1], "refused": why})
    return pd.DataFrame(rows), messages


# --------------------------------------------------------------------------- 5. value transfer


def scored_on(ds: Any, X: np.ndarray, y: np.ndarray) -> Any:
    """The dataset with other scoring rows; pool and fingerprint (hence every random draw) unchanged."""
    return dataclasses.replace(ds, X_val=np.asarray(X), y_val=np.asarray(y), path=None)


def validation_halves(ds: Any, seed: int) -> np.ndarray:
    """A class-stratified random half of the validation rows (boolean mask)."""
    y = np.asarray(ds.y_val)
    g = rng(seed, STREAM_SELECTION, "utility-halves")
    first = np.zeros(y.size, dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        first[g.permutation(idx)[: idx.size // 2]] = True
    return first


def transfer_samples(ds: Any, sample: Callable[[Any, str], pd.DataFrame], seed: int) -> dict[str, pd.DataFrame]:
    """Δ of the same fits scored on validation halves A and B, the whole validation split, and test.

    ``sample(dataset_variant, variant_name)`` samples the variant (same
    config and points each time). Every draw of the sampler is keyed by the
    pool's fingerprint, seed and ids, never by the scoring rows, so the
    variants train exactly the same models; this is checked row by row. All
    utilities are means over rows, so Δ on the whole validation split is the
    row-weighted mean of Δ on its halves.
    """
    first = validation_halves(ds, seed)
    w = first.sum() / first.size
    variants = {"val_a": scored_on(ds, ds.X_val[first], ds.y_val[first]),
                "val_b": scored_on(ds, ds.X_val[~first], ds.y_val[~first]),
                "test": scored_on(ds, ds.X_test, ds.y_test)}
    frames = {v: sample(d, v).sort_values(["point_id", "round"]).reset_index(drop=True) for v, d in variants.items()}
    key = ["point_id", "base_id", "k"]
    for v, f in frames.items():
        if not f[key].equals(frames["test"][key]):
            raise AssertionError(f"variant {v} did not re-draw the same subsets")
    failed = np.zeros(len(frames["test"]), dtype=bool)
    for f in frames.values():
        failed |= f["failed"].to_numpy(dtype=bool)
    out = {v: f.assign(failed=failed) for v, f in frames.items()}
    out["val"] = frames["test"].assign(delta=w * frames["val_a"]["delta"] + (1 - w) * frames["val_b"]["delta"],
                                       failed=failed)
    return out


def value_transfer(frames: Mapping[str, pd.DataFrame]) -> dict[str, float]:
    """Spearman of per-point Monte Carlo values: validation vs test, and between validation halves."""
    mc = {v: monte_carlo_values(f)["mc_mean"] for v, f in frames.items()}

    def rho(a: str, b: str) -> float:
        both = pd.concat([mc[a], mc[b]], axis=1).dropna()
        return spearman(both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy())

    half = rho("val_a", "val_b")
    return {"transfer_spearman": rho("val", "test"), "split_half_spearman": half,
            "split_half_stepped_up": 2 * half / (1 + half) if np.isfinite(half) else float("nan"),
            "share_negative_value": float((mc["val"] < 0).mean()),
            "points": int(mc["val"].size)}
