"""Benchmark: law-based values against Monte Carlo, and the point-addition experiment.

Run ``python -m benchmarks.valuation`` (``--quick`` for a smaller run).

Part 1 -- accuracy against ground truth (the paper's Sec. 4.3), on
breast_cancer with logistic regression:

* ground truth: the staggered protocol on a subset of points (10 sizes,
  ``geomspace(k_min, k_max, 10)``, many samples per size); ψ_k(z) is the
  per-size mean and the Shapley value over [k_min, k_max] the mean of ψ
  interpolated linearly between the sizes (:func:`grid_shapley`, model-free,
  so the truth does not assume a power law);
* estimates from an independent uniform-k run (other seed), using the first
  n = 10, 20, 50, 100 samples of each point: the Monte Carlo mean (Shapley
  only: uniform-k samples say nothing about one size), per-point MLE laws
  (Shapley and ψ_k at the ground-truth sizes) and, when
  ``pointscale.laws.AmortizedScalingLaws`` exists, the amortized laws;
* explained variance, Pearson, Spearman and sign agreement of each.

Failed samples (the engine records failed fits) are dropped; their count is
printed, never replaced.

Part 2 -- point addition (the paper's Sec. 4.4) with laws fitted from
sampled Δ of the candidates; sizes scaled down to the 314-point pool.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from pointscale.data import load_dataset
from pointscale.laws import fit_mle
from pointscale.sampling import SamplingConfig, sample_marginals
from pointscale.seeding import STREAM_SELECTION, rng
from pointscale.valuation import (
    distributional_shapley,
    empirical_psi,
    evaluate_estimates,
    grid_shapley,
    monte_carlo_values,
    point_addition_experiment,
)

N_GRID = (10, 20, 50, 100)


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def _first_n(samples: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first n samples (in round order) of every point, failed ones included then dropped."""
    s = samples.sort_values(["point_id", "round"], kind="mergesort")
    s = s.groupby("point_id", sort=False).head(n)
    return s[~s["failed"]]


def _amortized_laws(ds, samples: pd.DataFrame, points, seed: int):
    """Amortized laws of ``points``, trained on every sampled point's samples; or (None, reason)."""
    try:
        from pointscale.laws import AmortizedScalingLaws
    except (ImportError, AttributeError, ModuleNotFoundError) as exc:
        return None, f"not available ({type(exc).__name__})"
    try:
        sampled = np.asarray(sorted(set(samples["point_id"])), dtype=object)
        idx = ds.index_of(sampled)
        X, y = np.asarray(ds.X_train), np.asarray(ds.y_train)
        model = AmortizedScalingLaws(random_state=seed)
        _quiet(model.fit, X[idx], y[idx], samples[["point_id", "k", "delta"]], sampled)
        pidx = ds.index_of(points)
        return model.predict_laws(X[pidx], y[pidx], np.asarray(points, dtype=object)), ""
    except Exception as exc:  # noqa: BLE001 -- a benchmark reports, it does not crash
        return None, f"failed: {type(exc).__name__}: {str(exc)[:200]}"


def accuracy_part(args) -> pd.DataFrame:
    ds = load_dataset("breast_cancer")
    g = rng(args.seed, STREAM_SELECTION, "benchmark-points")
    points = list(np.asarray(ds.point_ids)[np.sort(g.choice(ds.n_pool, size=args.points, replace=False))])
    k_min, k_max = args.k_min, args.k_max

    t0 = time.perf_counter()
    truth_cfg = SamplingConfig(mode="staggered", k_min=k_min, k_max=k_max, samples_per_size=args.truth_per_size,
                               seed=args.seed + 1)
    truth_s = _quiet(sample_marginals, ds, truth_cfg, points=points)
    t1 = time.perf_counter()
    # every pool point is sampled, so the amortized estimator can share strength
    # across points; Monte Carlo and MLE use the evaluated points' rows only.
    fit_cfg = SamplingConfig(k_min=k_min, k_max=k_max, samples_per_point=max(N_GRID), seed=args.seed + 2)
    fit_all = _quiet(sample_marginals, ds, fit_cfg)
    fit_s = fit_all[fit_all["point_id"].isin(set(points))]
    t2 = time.perf_counter()
    print(f"ground truth: {len(truth_s)} samples ({int(truth_s['failed'].sum())} failed) in {t1 - t0:.1f} s; "
          f"sizes {sorted(truth_s['k'].unique().tolist())}")
    print(f"fitting pool: {len(fit_all)} samples of {ds.n_pool} points ({int(fit_all['failed'].sum())} failed) "
          f"in {t2 - t1:.1f} s")

    psi = empirical_psi(truth_s)
    truth = psi.copy()
    truth["shapley"] = grid_shapley(psi, k_min, k_max)
    sizes = [c for c in psi.columns]
    # the ceiling: how well one half of the truth predicts the other half
    half = truth_s.sort_values(["point_id", "k", "round"], kind="mergesort")
    half = half.assign(_h=half.groupby(["point_id", "k"]).cumcount() % 2)
    a = grid_shapley(empirical_psi(half[half["_h"] == 0]), k_min, k_max)
    b = grid_shapley(empirical_psi(half[half["_h"] == 1]), k_min, k_max)
    split = evaluate_estimates(a, b).iloc[0]
    print(f"truth split-half (noise ceiling of the truth itself): Shapley EV {split['explained_variance']:.3f}, "
          f"Spearman {split['spearman']:.3f}")

    rows = []
    amort_note = ""
    for n in N_GRID:
        s = _first_n(fit_s, n)
        mc = monte_carlo_values(s, k_min=k_min, k_max=k_max)["mc_mean"].rename("shapley").to_frame()
        laws = _quiet(fit_mle, s[["point_id", "k", "delta"]])
        mle = pd.DataFrame(laws.predict(sizes, warn_extrapolation=False), index=laws.point_ids, columns=sizes)
        mle["shapley"] = distributional_shapley(laws, k_min, k_max).value
        est = {"monte_carlo": mc, "mle": mle}
        am, amort_note = _amortized_laws(ds, _first_n(fit_all, n), points, args.seed)
        if am is not None:
            amf = pd.DataFrame(am.predict(sizes, warn_extrapolation=False), index=am.point_ids, columns=sizes)
            amf["shapley"] = distributional_shapley(am, k_min, k_max).value
            est["amortized"] = amf
        ev = evaluate_estimates(est, truth)
        ev.insert(0, "n", n)
        rows.append(ev)
    out = pd.concat(rows, ignore_index=True)
    if amort_note:
        print(f"amortized estimator: {amort_note}")

    print(f"\nShapley value over [{k_min}, {k_max}], {args.points} points "
          "(EV = explained variance, 1 - MSE/Var(truth))")
    sh = out[out["target"] == "shapley"]
    print(sh[["n", "method", "n_points", "explained_variance", "pearson", "spearman", "sign_agreement"]]
          .to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    piv = sh.pivot(index="n", columns="method", values=["explained_variance", "spearman"])
    for law in [m for m in ("mle", "amortized") if m in sh["method"].unique()]:
        for metric in ("explained_variance", "spearman"):
            wins = [int(n) for n in piv.index if piv.loc[n, (metric, law)] > piv.loc[n, (metric, "monte_carlo")]]
            print(f"paper's finding, {law} beats Monte Carlo on {metric} at n = {wins or 'none'}")
    per_k = out[out["target"] != "shapley"]
    if not per_k.empty:
        print("\npsi_k at the ground-truth sizes (law-based only), mean over sizes / at the smallest, largest size")
        agg = per_k.groupby(["n", "method"])[["explained_variance", "pearson", "spearman", "sign_agreement"]].mean()
        lo = per_k[per_k["target"] == str(sizes[0])].set_index(["n", "method"])["explained_variance"]
        hi = per_k[per_k["target"] == str(sizes[-1])].set_index(["n", "method"])["explained_variance"]
        agg[f"EV@{sizes[0]}"] = lo
        agg[f"EV@{sizes[-1]}"] = hi
        print(agg.to_string(float_format=lambda x: f"{x:.3f}"))
    return out


def addition_part(args) -> None:
    ds = load_dataset("breast_cancer")
    g = rng(args.seed, STREAM_SELECTION, "benchmark-candidates")
    cand = list(np.asarray(ds.point_ids)[np.sort(g.choice(ds.n_pool, size=args.candidates, replace=False))])
    cfg = SamplingConfig(k_min=args.k_min, k_max=args.k_max, samples_per_point=args.addition_samples,
                         seed=args.seed + 3)
    t0 = time.perf_counter()
    s = _quiet(sample_marginals, ds, cfg, points=cand)
    laws = _quiet(fit_mle, s)
    t1 = time.perf_counter()
    print(f"\npoint addition: laws of {len(cand)} candidates from {len(s)} samples "
          f"({int(s['failed'].sum())} failed) in {t1 - t0:.1f} s")
    rest = ds.n_pool - len(cand)
    res = point_addition_experiment(ds, laws, n_small=args.n_small, n_large=min(args.n_large, rest),
                                    m=args.m, repeats=args.repeats, candidates=cand, seed=args.seed)
    print(res)
    print(f"({time.perf_counter() - t1:.1f} s)")


def addition_speed_part(args) -> dict:
    """Point addition's fits on adult (logreg, accuracy): the exact set solver against the estimator, same sets.

    Per repeat: a stratified initial set of n rows and four supersets with 100
    more (as the experiment draws them); the same sets through both paths,
    interleaved; the ratio of their times and the largest score difference.
    """
    from pointscale.valuation.experiments import _set_scores, _set_solver

    ds = load_dataset("adult")
    solver = _set_solver(ds, "logreg", "accuracy", None)
    out = {}
    for n in (500, 5000):
        t_fast = t_slow = 0.0
        diff = 0.0
        for r in range(args.speed_repeats):
            g = np.random.default_rng([args.seed, n, r])
            base = np.sort(g.choice(ds.n_pool, n, replace=False))
            rest = np.setdiff1d(np.arange(ds.n_pool), base)
            sets = [base] + [np.concatenate([base, g.choice(rest, 100, replace=False)]) for _ in range(4)]
            t0 = time.process_time()
            fast = _set_scores(ds, solver, sets, model="logreg", metric="accuracy", seed=0, params=None)
            t1 = time.process_time()
            slow = _set_scores(ds, None, sets, model="logreg", metric="accuracy", seed=0, params=None)
            t2 = time.process_time()
            t_fast, t_slow = t_fast + t1 - t0, t_slow + t2 - t1
            diff = max(diff, float(np.max(np.abs(np.subtract(fast, slow)))))
        out[n] = {"ratio": t_slow / t_fast, "exact_cpu_s": t_fast, "estimator_cpu_s": t_slow, "max_abs_diff": diff}
        print(f"point addition fits, adult n={n}: estimator {t_slow:.2f} CPU-s, exact set solver {t_fast:.2f} "
              f"CPU-s ({args.speed_repeats} repeats x 5 fits): {t_slow / t_fast:.1f}x; largest accuracy "
              f"difference {diff:.2g}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small scale (about two minutes on one core)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--addition-speed", action="store_true",
                   help="only the point-addition fit paths on adult (exact set solver vs the estimator)")
    p.add_argument("--speed-repeats", type=int, default=5)
    args = p.parse_args(argv)
    if args.addition_speed:
        addition_speed_part(args)
        return 0
    args.k_min, args.k_max = 20, 200
    if args.quick:
        args.points, args.truth_per_size = 60, 100
        args.candidates, args.addition_samples, args.repeats = 150, 50, 20
    else:
        args.points, args.truth_per_size = 150, 300
        args.candidates, args.addition_samples, args.repeats = 150, 200, 100
    args.n_small, args.n_large, args.m = 20, 150, 30
    start = time.perf_counter()
    accuracy_part(args)
    addition_part(args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
