"""Benchmark: the amortized estimator (issue 5) against per-point MLE.

Run ``python -m benchmarks.amortized`` (``--quick`` for a smaller run,
``--no-real`` to skip the real-data section).

Synthetic
    Features x ~ N(0, I₄); the clean label is 1[x₀ > 0] and 10 % of the labels
    are flipped. Laws are smooth in x: |c| = 0.4·exp(0.4x₁ − 0.3x₂),
    α = 1.25 + 0.25·tanh x₀ + 0.15·tanh x₂, β = 2.8 + 0.2·tanh x₁; flipped
    points have c = −|c| (the "harmful" group). σ gives a per-sample
    signal-to-noise ratio of ~1 at k = √(100·1000) (as
    :func:`pointscale.laws.simulate.draw_parameters` does, SPEC §1), times
    exp(0.2x₃). 10 samples per point, k uniform in [100, 1000]. 10 % of the
    points get no samples ("new points"). The amortized model and the
    per-point MLE (:func:`pointscale.laws.fit_mle`) see the same samples.
    Targets (issue 5): squared error of ψ_k against the truth at k = 100,
    359, 1000 at most half the MLE's; sign of c right for ≥ 90 % of points;
    ≥ 70 % of the negative-c group found; explained variance of ψ_k for the
    new points ≥ 0.5. Alternatives are measured on the same data: the signed
    parametrisation of c, XGBoost as the learner.

Timing
    Training time for 50,000 points × 30 samples (``--quick``: 10,000 × 30).

Real (only if the sampling engine imports)
    Logistic regression, amortized with 10 and 30 samples per point and MLE
    (and the plain Monte Carlo mean) with 10, 30 and 100, against a staggered
    ground truth: explained variance, Pearson and Spearman of ψ_k at the
    staggered sizes (mean over sizes; EV also at the smallest and largest).
    The ground truth is itself a Monte Carlo mean, so its noise caps every
    score. breast_cancer: k in [30, 250] (the pool has 314 points), every
    point, 100 samples per size (30 with ``--quick``). adult (when installed,
    not with ``--quick``): k in [100, 1000], the amortized model trained on
    4000 points, everything scored on 400 of them with 50 samples per size.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from pointscale.laws import AmortizedScalingLaws, fit_mle

EVAL_K = np.array([100, 359, 1000])
TARGETS = {"mse_ratio_max": 0.5, "sign_min": 0.9, "negative_found_min": 0.7, "ev_new_min": 0.5}


# ------------------------------------------------------------------ synthetic data
def simulate_synthetic(n_points: int, n_samples: int, *, n_features: int = 4, flip_rate: float = 0.1,
                       seed: int = 0, k_range: tuple[int, int] = (100, 1000)) -> dict:
    """Features, labels, planted laws and samples (see the module docstring)."""
    g = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(5,)))
    X = g.normal(size=(n_points, n_features))
    flipped = g.random(n_points) < flip_rate
    y = ((X[:, 0] > 0) ^ flipped).astype(np.int64)
    c = np.where(flipped, -1.0, 1.0) * 0.4 * np.exp(0.4 * X[:, 1] - 0.3 * X[:, 2])
    alpha = 1.25 + 0.25 * np.tanh(X[:, 0]) + 0.15 * np.tanh(X[:, 2])
    beta = 2.8 + 0.2 * np.tanh(X[:, 1])
    k_ref = np.sqrt(k_range[0] * k_range[1])
    sigma = np.abs(c) * k_ref ** (beta / 2 - alpha) * np.exp(0.2 * X[:, 3])
    ids = np.array([f"s{i:06d}" for i in range(n_points)], dtype=object)
    point = np.repeat(np.arange(n_points), n_samples)
    k = g.integers(k_range[0], k_range[1] + 1, size=point.size)
    delta = c[point] * k ** (-alpha[point]) + sigma[point] * k ** (-beta[point] / 2) * g.normal(size=point.size)
    samples = pd.DataFrame({"point_id": ids[point], "k": k, "delta": delta})
    return {"X": X, "y": y, "ids": ids, "flipped": flipped, "c": c, "alpha": alpha,
            "sigma": sigma, "beta": beta, "samples": samples}


def true_psi(sim: dict, ks: np.ndarray) -> np.ndarray:
    return sim["c"][:, None] * ks[None, :] ** (-sim["alpha"][:, None])


def _ev(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return 1.0 - np.mean((pred - truth) ** 2, axis=0) / np.var(truth, axis=0)


def synthetic(quick: bool) -> dict:
    n_points = 3000
    seeds = (0,) if quick else (0, 1, 2)
    print(f"\n-- synthetic: {n_points} points x 10 samples, 10% flipped labels, "
          f"10% new points; seeds {list(seeds)}")
    rows, failures = [], []
    variants = {
        "amortized (mlp, mixture sign)": {},
        "alt: mlp, signed c": {"sign_model": "signed"},
        "alt: xgboost, mixture sign": {"learner": "xgboost"},
    }
    if quick:
        variants = {k: v for k, v in variants.items() if not k.startswith("alt: xgboost")}
    for seed in seeds:
        sim = simulate_synthetic(n_points, 10, seed=seed)
        g = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(6,)))
        new = g.random(n_points) < 0.1
        old = ~new
        train_samples = sim["samples"][~sim["samples"]["point_id"].isin(sim["ids"][new])]
        truth = true_psi(sim, EVAL_K)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            mle = fit_mle(train_samples).subset(sim["ids"][old])
            t_mle = time.perf_counter() - t
        mle_psi = mle.predict(EVAL_K)
        mle_se = (mle_psi - truth[old]) ** 2
        mle_mse = mle_se.mean(axis=0)
        print(f"seed {seed}: MLE {t_mle:.1f} s; EV of psi_k at k={EVAL_K.tolist()}: "
              f"{np.round(_ev(mle_psi, truth[old]), 3).tolist()}")
        for name, params in variants.items():
            t = time.perf_counter()
            model = AmortizedScalingLaws(random_state=seed, **params).fit(
                sim["X"][old], sim["y"][old], train_samples, sim["ids"][old])
            seconds = time.perf_counter() - t
            laws = model.predict_laws(sim["X"], sim["y"], sim["ids"])
            psi = laws.predict(EVAL_K)
            se = (psi[old] - truth[old]) ** 2
            ratio = se.mean(axis=0) / mle_mse
            median_ratio = np.median(se, axis=0) / np.median(mle_se, axis=0)
            sign = float(np.mean(np.sign(laws.c[old]) == np.sign(sim["c"][old])))
            found = float(np.mean(laws.c[sim["flipped"]] < 0))
            ev_new = _ev(psi[new], truth[new])
            row = {"seed": seed, "variant": name, "seconds": round(seconds, 1),
                   "epochs": model.best_iteration_,
                   **{f"mse_ratio_k{k}": float(r) for k, r in zip(EVAL_K, ratio)},
                   **{f"median_se_ratio_k{k}": float(r) for k, r in zip(EVAL_K, median_ratio)},
                   "sign_right": sign, "negative_found": found,
                   **{f"ev_new_k{k}": float(e) for k, e in zip(EVAL_K, ev_new)}}
            rows.append(row)
            print(f"  {name:31s} {seconds:5.1f} s  MSE/MLE {np.round(ratio, 3).tolist()}  "
                  f"(median SE ratio {np.round(median_ratio, 3).tolist()})  sign {sign:.3f}  "
                  f"neg found {found:.3f}  EV new {np.round(ev_new, 3).tolist()}")
            if name.startswith("amortized"):
                checks = {
                    "mse ratio <= 0.5 at every k": bool(np.all(ratio <= TARGETS["mse_ratio_max"])),
                    "sign >= 0.9": sign >= TARGETS["sign_min"],
                    "negative group found >= 0.7": found >= TARGETS["negative_found_min"],
                    "EV new points >= 0.5": bool(np.all(ev_new >= TARGETS["ev_new_min"])),
                }
                for what, ok in checks.items():
                    if not ok:
                        failures.append(f"seed {seed}: {what}")
    print("targets:", "all met" if not failures else "MISSED: " + "; ".join(failures))
    return {"rows": rows, "failures": failures}


def timing(quick: bool) -> dict:
    n_points = 10_000 if quick else 50_000
    sim = simulate_synthetic(n_points, 30, seed=7)
    t = time.perf_counter()
    model = AmortizedScalingLaws(random_state=0).fit(sim["X"], sim["y"], sim["samples"], sim["ids"])
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    laws = model.predict_laws(sim["X"], sim["y"], sim["ids"])
    pred_s = time.perf_counter() - t
    ev = _ev(laws.predict(EVAL_K), true_psi(sim, EVAL_K))
    print(f"\n-- timing: {n_points} points x 30 samples: fit {fit_s:.1f} s "
          f"({model.best_iteration_} epochs, 1 thread), predict {pred_s:.2f} s; "
          f"EV of psi_k {np.round(ev, 4).tolist()}")
    return {"n_points": n_points, "fit_seconds": fit_s, "predict_seconds": pred_s,
            "epochs": model.best_iteration_}


# ----------------------------------------------------------------------- real data
def _scores(pred: np.ndarray, truth: np.ndarray) -> dict:
    ev = _ev(pred, truth)
    pear = [stats.pearsonr(pred[:, j], truth[:, j])[0] for j in range(truth.shape[1])]
    spear = [stats.spearmanr(pred[:, j], truth[:, j])[0] for j in range(truth.shape[1])]
    return {"ev": float(np.mean(ev)), "ev_small_k": float(ev[0]), "ev_large_k": float(ev[-1]),
            "pearson": float(np.mean(pear)), "spearman": float(np.mean(spear))}


def _real_dataset(ds, name: str, *, k_min: int, k_max: int, gt_points: np.ndarray,
                  train_points: np.ndarray, per_size: int) -> dict:
    """Amortized (10, 30 samples/point, trained on ``train_points``) and MLE (10, 30,
    100) against a staggered ground truth on ``gt_points``."""
    from pointscale.sampling import SamplingConfig, sample_marginals

    def usable(frame):
        return frame[~frame["failed"].fillna(False).astype(bool)]

    t = time.perf_counter()
    gt = usable(sample_marginals(ds, SamplingConfig(mode="staggered", samples_per_size=per_size,
                                                    k_min=k_min, k_max=k_max, seed=101),
                                 points=list(gt_points)))
    truth_frame = gt.groupby(["point_id", "k"])["delta"].mean().unstack("k").reindex(gt_points)
    sizes = truth_frame.columns.to_numpy()
    truth = truth_frame.to_numpy()
    print(f"{name}: ground truth {len(gt)} samples for {len(gt_points)} points in "
          f"{time.perf_counter() - t:.0f} s; sizes {sizes.tolist()}")
    t = time.perf_counter()
    uniform = usable(sample_marginals(ds, SamplingConfig(samples_per_point=30, k_min=k_min,
                                                         k_max=k_max, seed=202),
                                      points=list(train_points)))
    many = usable(sample_marginals(ds, SamplingConfig(samples_per_point=100, k_min=k_min,
                                                      k_max=k_max, seed=303),
                                   points=list(gt_points)))
    print(f"{name}: {len(uniform)} training samples for {len(train_points)} points and "
          f"{len(many)} for MLE-100 in {time.perf_counter() - t:.0f} s")
    rows = pd.Index(np.asarray(ds.point_ids, dtype=object)).get_indexer(train_points)
    X, y = np.asarray(ds.X_train)[rows], np.asarray(ds.y_train)[rows]
    results = {}
    for n in (10, 30, 100):
        # Rounds are independent draws: the first n rounds are the n-sample budget.
        part = many if n == 100 else uniform[uniform["round"] < n]
        own = part[part["point_id"].isin(gt_points)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = fit_mle(own).subset(gt_points).predict(sizes, warn_extrapolation=False)
        ok = np.all(np.isfinite(pred), axis=1)
        results[f"mle_{n}"] = _scores(pred[ok], truth[ok])
        mc = own.groupby("point_id")["delta"].mean().reindex(gt_points).to_numpy()
        results[f"monte_carlo_{n}"] = _scores(np.repeat(mc[:, None], len(sizes), axis=1), truth)
        if n <= 30:
            t = time.perf_counter()
            model = AmortizedScalingLaws(random_state=0).fit(X, y, part, train_points)
            gt_rows = pd.Index(train_points).get_indexer(gt_points)
            laws = model.predict_laws(X[gt_rows], y[gt_rows], gt_points)
            pred = laws.predict(sizes, warn_extrapolation=False)
            results[f"amortized_{n}"] = {**_scores(pred, truth), "seconds": time.perf_counter() - t}
    for key, sc in results.items():
        extra = f"  ({sc['seconds']:.0f} s)" if "seconds" in sc else ""
        print(f"  {key:16s} EV {sc['ev']:7.3f} (k={sizes[0]}: {sc['ev_small_k']:7.3f}, "
              f"k={sizes[-1]}: {sc['ev_large_k']:7.3f})  Pearson {sc['pearson']:.3f}  "
              f"Spearman {sc['spearman']:.3f}{extra}")
    return results


def real(quick: bool) -> dict | None:
    try:
        from pointscale.data import load_dataset
        from pointscale.sampling import sample_marginals  # noqa: F401
    except ImportError as exc:  # the sampling engine is another issue's work
        print(f"\n-- real data: skipped (sampling engine not importable: {exc})")
        return None
    out = {}
    per_size = 30 if quick else 100
    print(f"\n-- real: breast_cancer, logistic regression, k in [30, 250] (the pool has 314 "
          f"points), ground truth {per_size} samples x 10 sizes for every point")
    ds = load_dataset("breast_cancer")
    ids = np.asarray(ds.point_ids, dtype=object)
    out["breast_cancer"] = _real_dataset(ds, "breast_cancer", k_min=30, k_max=250, gt_points=ids,
                                         train_points=ids, per_size=per_size)
    if quick:
        print("-- real: adult skipped with --quick")
        return out
    try:
        ds = load_dataset("adult")
    except Exception as exc:  # optional dataset (make data)
        print(f"-- real: adult skipped ({type(exc).__name__}: {exc})")
        return out
    print("\n-- real: adult, logistic regression, k in [100, 1000]; amortized trained on 4000 "
          "points, scored on 400 of them (ground truth 50 samples x 10 sizes)")
    ids = np.asarray(ds.point_ids, dtype=object)
    g = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(7,)))
    train_points = np.sort(g.choice(ids, size=4000, replace=False))
    gt_points = np.sort(g.choice(train_points, size=400, replace=False))
    out["adult"] = _real_dataset(ds, "adult", k_min=100, k_max=1000, gt_points=gt_points,
                                 train_points=train_points, per_size=50)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run")
    parser.add_argument("--no-real", action="store_true", help="skip the real-data section")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    # One BLAS thread: the MLP's matrices are small and the machine is shared.
    with threadpool_limits(limits=1, user_api="blas"):
        syn = synthetic(args.quick)
        tim = timing(args.quick)
        if not args.no_real:
            real(args.quick)
    if tim["n_points"] == 50_000 and tim["fit_seconds"] > 120:
        print(f"timing target (<= 120 s) missed: {tim['fit_seconds']:.0f} s")
    return 1 if syn["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
