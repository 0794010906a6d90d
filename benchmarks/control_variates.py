"""Benchmark: the block-mean control variate per model and dataset (issue 24, item 3).

Run ``python -m benchmarks.control_variates`` (``--quick``: magic, logreg
and xgboost, 64 points). Writes ``benchmarks/results/control_variates.csv``
and prints the Markdown table of ``docs/control_variates.md``.

For each dataset (adult, magic: their default splits and the engine's
default utility) and model (xgboost, mlp_batched, svm, logreg), one small
uniform run: ``--points`` points (128) drawn with ``--seed``, 10 samples per
point, blocks of 32, k uniform in [100, 1000]. Samples are cached under
``--out`` (default ``.cache/benchmarks/control_variates``). Columns:

* ``b``, ``b_se``, ``correlation``, ``variance_reduction``: what
  :func:`pointscale.laws.control.adjust` finds on the whole run (the
  within-point correlation of Δ with its control and the share of the
  within-point variance the adjustment removes);
* ``heldout_gain_z``, ``default_on``: the cross-fitted check by base (gain in
  squared error of the per-point means over its standard error) and whether
  ``control_variate="auto"`` -- the default of the choose-laws stage --
  applies it;
* ``reliability_plain``, ``reliability_adjusted``: split-half reliability of
  the per-point means (5 rounds against the other 5, each half adjusted on its
  own, the mean correlation over 10 seeded splits, Spearman–Brown corrected to
  10 samples): the share of the spread of the
  values that is signal, without and with the adjustment -- no ground truth
  needed, and both halves are independent;
* ``mean_heldout_gain``: that check's gain relative to the plain means'
  held-out squared error (which includes the held-out samples' own noise);
* ``<estimator>_heldout_gain``, ``<estimator>_heldout_gain_z``: the same
  cross-fitted check for the estimators of :data:`ESTIMATORS` registered in
  this version (``shrinkage``, the usual choice of ``auto``; ``shrunk_mean``,
  the fair law-free shrunk mean): Shapley values fitted to Δ̃ against fitted
  to Δ, the gain in held-out squared error relative to the latter's, and in
  standard errors;
* ``surrogate_correlation`` (models other than logreg): the within-point
  correlation of Δ with the logistic-regression Δ on the same (D, z) (the
  batched exact path, same bases), and ``surrogate_partial`` the same after
  both are adjusted by their block means: what a surrogate control variate
  could add beyond the block mean.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

MODELS = ("xgboost", "mlp_batched", "svm", "logreg")
DATASETS = ("adult", "magic")
K_MIN, K_MAX = 100, 1000
#: Estimators whose cross-fitted gain is measured (those registered in this version).
ESTIMATORS = ("shrinkage", "shrunk_mean")
RESULT = Path(__file__).parent / "results" / "control_variates.csv"


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def sample(ds, cfg, points, path: Path, blocks=None) -> tuple[pd.DataFrame, float]:
    """The run's samples (cached as Parquet) and the seconds its sampling took (NaN when cached)."""
    from pointscale.io import atomic_write_parquet
    from pointscale.sampling import plan_blocks, sample_blocks

    if path.exists():
        return pd.read_parquet(path), float("nan")
    t0 = time.perf_counter()
    plan = plan_blocks(ds, cfg, points) if blocks is None else blocks
    frame = _quiet(sample_blocks, ds, cfg, plan, oob=False).samples
    seconds = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(path, frame)
    return frame, seconds


def split_half_reliability(samples: pd.DataFrame, adjusted: bool, seed: int, n_splits: int = 10) -> float:
    """Spearman–Brown corrected correlation of the per-point means of two halves of the rounds.

    The mean correlation over ``n_splits`` seeded splits of the rounds into
    halves (one split alone is noisy at these sizes); each half is adjusted on
    its own, so the halves stay independent.
    """
    from pointscale.laws.control import adjust

    rounds = np.unique(samples["round"])
    g = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x5B,)))
    rs = []
    for _ in range(n_splits):
        first = g.choice(rounds, size=rounds.size // 2, replace=False)
        means = []
        for part in (samples[samples["round"].isin(first)], samples[~samples["round"].isin(first)]):
            if adjusted:
                part, _ = adjust(part, seed=seed, check=False)
            ok = ~part["failed"] & np.isfinite(part["delta"])
            means.append(part[ok].groupby("point_id")["delta"].mean())
        a, b = means[0].align(means[1], join="inner")
        rs.append(float(np.corrcoef(a, b)[0, 1]))
    r = float(np.mean(rs))
    return 2 * r / (1 + r)


def heldout_estimator_gain(samples: pd.DataFrame, method: str, seed: int) -> tuple[float, float]:
    """Cross-fitted gain of ``method`` fitted to Δ̃ over the same method fitted to Δ.

    Folds of bases (:func:`pointscale.laws.control.cross_fitted`): the
    estimator is fitted to the training folds' raw and adjusted samples, and
    both Shapley values over [K_MIN, K_MAX] are scored by squared error against
    the held-out folds' adjusted samples (the same target). Returns the mean
    gain per held-out sample relative to the raw fit's mean squared error, and
    the gain in standard errors (over points).
    """
    from pointscale.laws import fit_laws
    from pointscale.laws.control import cross_fitted
    from pointscale.valuation import distributional_shapley

    usable = samples[~samples["failed"] & np.isfinite(samples["delta"])].reset_index(drop=True)
    point = usable["point_id"].to_numpy()
    per_point: dict[str, float] = {}
    total_gain = total_raw = 0.0
    n = 0
    for held, adj in cross_fitted(usable, seed=seed):
        train = usable.loc[~held, ["point_id", "k", "delta", "sample_id"]]
        values = []
        for frame in (train, train.assign(delta=adj[~held])):
            laws = _quiet(fit_laws, frame, method=method, k_range=(K_MIN, K_MAX), random_state=seed)
            est = distributional_shapley(laws, K_MIN, K_MAX)
            values.append(pd.Series(est.value, index=est.point_ids))
        target = adj[held]
        raw_v = values[0].reindex(point[held]).to_numpy()
        adj_v = values[1].reindex(point[held]).to_numpy()
        ok = np.isfinite(raw_v) & np.isfinite(adj_v)
        e_raw, e_adj = (target - raw_v) ** 2, (target - adj_v) ** 2
        gains = pd.Series((e_raw - e_adj)[ok]).groupby(point[held][ok]).sum()
        for p, g in gains.items():
            per_point[p] = per_point.get(p, 0.0) + g
        total_gain += float(np.sum((e_raw - e_adj)[ok]))
        total_raw += float(np.sum(e_raw[ok]))
        n += int(ok.sum())
    g = np.array(list(per_point.values())) * len(per_point) / n
    return total_gain / total_raw, float(np.mean(g) / (np.std(g, ddof=1) / np.sqrt(g.size)))


def within_point_correlation(x: pd.Series, y: pd.Series, point: pd.Series) -> float:
    xc = x - x.groupby(point).transform("mean")
    yc = y - y.groupby(point).transform("mean")
    return float((xc * yc).sum() / np.sqrt((xc ** 2).sum() * (yc ** 2).sum()))


def measure(name: str, model: str, args, log) -> dict:
    from pointscale.data import load_dataset
    from pointscale.laws.control import adjust
    from pointscale.laws.estimators import registered
    from pointscale.sampling import SamplingConfig, default_metric, plan_blocks
    from pointscale.seeding import STREAM_SELECTION, rng

    ds = load_dataset(name)
    metric = default_metric(ds.task)
    g = rng(args.seed, STREAM_SELECTION, "control-variates-benchmark-points")
    points = [str(p) for p in np.asarray(ds.point_ids)[np.sort(g.choice(ds.n_pool, args.points, replace=False))]]
    cfg = SamplingConfig(model=model, metric=metric, k_min=K_MIN, k_max=K_MAX, samples_per_point=args.samples,
                         seed=args.seed, block_size=args.block, shard_size=8)
    folder = Path(args.out) / f"{name}-{metric}-s{args.seed}-p{args.points}-n{args.samples}-b{args.block}"
    raw, seconds = sample(ds, cfg, points, folder / f"{model}.parquet")
    t0 = time.perf_counter()
    _, record = adjust(raw, seed=args.seed)
    adjust_seconds = time.perf_counter() - t0
    row = {"dataset": name, "model": model, "metric": metric, "points": args.points, "samples_per_point": args.samples,
           "block_size": args.block, "failed": int(raw["failed"].sum()),
           "b": record["b"], "b_se": record["b_se"], "correlation": record["correlation"],
           "variance_reduction": record["variance_reduction"],
           "heldout_gain_z": record["heldout_gain"] / record["heldout_gain_se"],
           "default_on": bool(record["helps"]),
           "reliability_plain": split_half_reliability(raw, False, args.seed),
           "reliability_adjusted": split_half_reliability(raw, True, args.seed),
           "sampling_seconds": round(seconds, 1), "adjust_seconds": round(adjust_seconds, 3)}
    row["mean_heldout_gain"] = record["heldout_gain"] / record["heldout_mse_plain"]
    for method in ESTIMATORS:
        if method in registered():
            row[f"{method}_heldout_gain"], row[f"{method}_heldout_gain_z"] = \
                heldout_estimator_gain(raw, method, args.seed)
    if model != "logreg":
        # The logistic-regression Δ on the very same (D, z): the same blocks (base id,
        # size, members) and seed draw the same base subsets.
        blocks = plan_blocks(ds, cfg, points)
        sur, _ = sample(ds, cfg.replace(model="logreg"), points, folder / f"{model}-surrogate.parquet", blocks)
        both = raw.merge(sur[["sample_id", "delta", "failed"]], on="sample_id", suffixes=("", "_s"))
        both = both[~both["failed"] & ~both["failed_s"] & np.isfinite(both["delta"]) & np.isfinite(both["delta_s"])]
        row["surrogate_correlation"] = within_point_correlation(both["delta"], both["delta_s"], both["point_id"])
        adj, _ = adjust(both, seed=args.seed, check=False)
        adj_s, _ = adjust(both.assign(delta=both["delta_s"]), seed=args.seed, check=False)
        row["surrogate_partial"] = within_point_correlation(adj["delta"], adj_s["delta"], both["point_id"])
    log(f"{name}/{model}: correlation {row['correlation']:.2f}, variance reduction "
        f"{row['variance_reduction']:.2f}, held-out z {row['heldout_gain_z']:.1f}, default on {row['default_on']}, "
        f"reliability {row['reliability_plain']:.2f} -> {row['reliability_adjusted']:.2f}, held-out gain: mean "
        f"{100 * row['mean_heldout_gain']:.1f} %"
        + "".join(f", {m} {100 * row[m + '_heldout_gain']:.1f} % (z {row[m + '_heldout_gain_z']:.1f})"
                  for m in ESTIMATORS if m + "_heldout_gain" in row)
        + (f", surrogate {row['surrogate_correlation']:.2f} (partial {row['surrogate_partial']:.2f})"
           if "surrogate_correlation" in row else "") + ("" if np.isnan(seconds) else f" [{seconds:.0f} s sampling]"))
    return row


def markdown(table: pd.DataFrame) -> str:
    methods = [m for m in ESTIMATORS if f"{m}_heldout_gain" in table.columns]
    head = ("| dataset | model | correlation | b (± se) | variance reduction | on by default (z) "
            "| reliability plain → adjusted | held-out gain: mean | "
            + " | ".join(methods) + (" | " if methods else "") + "surrogate corr. (partial) |")
    lines = [head, "|" + "---|" * (9 + len(methods))]
    for r in table.to_dict("records"):
        sur = r.get("surrogate_correlation")
        sur = f"{sur:.2f} ({r['surrogate_partial']:.2f})" if isinstance(sur, float) and np.isfinite(sur) else "—"
        gains = "".join(f" {100 * r[m + '_heldout_gain']:+.1f} % ({r[m + '_heldout_gain_z']:.1f}) |"
                        for m in methods)
        lines.append(f"| {r['dataset']} | {r['model']} | {r['correlation']:.2f} | {r['b']:.2f} ± {r['b_se']:.2f} | "
                     f"{r['variance_reduction']:.2f} | {'yes' if r['default_on'] else 'no'} "
                     f"({r['heldout_gain_z']:.1f}) | {r['reliability_plain']:.2f} → {r['reliability_adjusted']:.2f} | "
                     f"{100 * r['mean_heldout_gain']:+.1f} % |{gains} {sur} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--points", type=int, default=128)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=".cache/benchmarks/control_variates")
    parser.add_argument("--save", default=str(RESULT), help="CSV to write ('' : none)")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets, args.models, args.points = ["magic"], ["logreg", "xgboost"], 64
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    rows = [measure(name, model, args, log) for name in args.datasets for model in args.models]
    table = pd.DataFrame(rows)
    log("\n" + markdown(table))
    if args.save and not args.quick:
        from pointscale.io import atomic_write_text

        atomic_write_text(Path(args.save), table.to_csv(index=False, float_format="%.6g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
