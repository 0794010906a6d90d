"""Benchmark: which classification utility gives per-point values that transfer.

Run ``python -m benchmarks.utility`` (``--quick`` for a smaller run;
``--datasets adult magic breast_cancer`` by default, adult and magic need
``make data``).

A utility U(D) scores a model trained on D on the *validation* split. A value
is only worth having if it says something about the point, not about the
particular validation rows, so the candidates are compared by how well values
computed against one set of rows predict values computed against another set
from **the same fits**:

* **transfer** — Spearman between per-point Monte Carlo values (the mean of
  the point's Δ over k uniform in [k_min, k_max]) scored on the validation
  split and scored on the held-out test split;
* **split-half reliability** — the same between the two halves of the
  validation split (and its Spearman–Brown step-up ``2r / (1 + r)`` to the
  full split);
* **point addition** — laws fitted (MLE) on the validation-scored samples of
  the candidates, then :func:`pointscale.valuation.point_addition_experiment`
  with the outcome *test accuracy* (the same outcome for every utility):
  mean gain of the size-matched ranking over a class-balanced random
  selection, paired by initial set.

How "the same fits" is guaranteed (:func:`reproduction.protocols.transfer_samples`,
shared with ``pointscale reproduce``): every random draw of the sampler is
keyed by (seed, stream, base id, point id) and the dataset fingerprint, never
by the validation rows, so sampling the same pool with the scoring rows
swapped re-draws exactly the same subsets and trains exactly the same models;
(point, base, k) are checked to agree row by row across the variants. Every
utility here is a mean over rows, so Δ on the whole validation split is the
row-weighted mean of Δ on its two halves: only the halves and the test split
are sampled.

Settings: logistic regression (the registry's defaults), k uniform in
[100, 1000] on adult and magic (the paper's range), and on breast_cancer the
project's default range for its pool (:func:`pointscale.sampling.config.default_k_range`).
Point addition is refused where the test split has fewer than 500 rows (one
row would move accuracy by more than 0.2 pp) — breast_cancer.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from pointscale.data import load_dataset
from pointscale.laws import fit_mle
from pointscale.sampling import SamplingConfig, sample_marginals
from pointscale.seeding import STREAM_SELECTION, rng
from pointscale.sampling.config import default_k_range
from pointscale.valuation import point_addition_experiment
from pointscale.valuation.experiments import MIN_TEST_ROWS
from reproduction.protocols import transfer_samples, value_transfer

UTILITIES = ("paper_ce", "neg_brier", "neg_log_loss")
DATASETS = ("adult", "magic", "breast_cancer")


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def run_dataset(name: str, args) -> tuple[list[dict], dict]:
    ds = load_dataset(name)
    k_min, k_max = default_k_range(ds.n_pool, ds.n_classes)
    n_points = min(args.points, ds.n_pool)
    g = rng(args.seed, STREAM_SELECTION, "utility-points")
    ids = list(np.asarray(ds.point_ids)[np.sort(g.choice(ds.n_pool, size=n_points, replace=False))])
    info = {"dataset": name, "n_pool": int(ds.n_pool), "n_val": int(ds.y_val.size), "n_test": int(ds.y_test.size),
            "points": n_points, "samples_per_point": args.samples, "k_range": [k_min, k_max]}
    print(f"\n{name}: pool {ds.n_pool}, validation {ds.y_val.size} rows, test {ds.y_test.size}; {n_points} points "
          f"x {args.samples} samples, k uniform in [{k_min}, {k_max}]", flush=True)
    rows = []
    for util in UTILITIES:
        t0 = time.perf_counter()
        cfg = SamplingConfig(metric=util, k_min=k_min, k_max=k_max, samples_per_point=args.samples,
                             seed=args.seed)
        frames = transfer_samples(ds, lambda d, v, cfg=cfg: _quiet(sample_marginals, d, cfg, points=ids), args.seed)
        val, failed = frames["val"], frames["val"]["failed"].to_numpy(dtype=bool)
        row = {"dataset": name, "utility": util, **value_transfer(frames), "n_failed": int(failed.sum()),
               "sampling_seconds": round(time.perf_counter() - t0, 1)}
        r_half = row["split_half_spearman"]
        if ds.y_test.size < MIN_TEST_ROWS:
            row["addition"] = (f"refused: test split has {ds.y_test.size} rows (< {MIN_TEST_ROWS}); "
                               f"one row moves accuracy by {100 / ds.y_test.size:.2f} pp")
        elif args.repeats > 0:
            laws = _quiet(fit_mle, val.loc[~failed, ["point_id", "k", "delta"]])
            rest = ds.n_pool - n_points // 2
            res = _quiet(point_addition_experiment, ds, laws, n_small=500, n_large=min(5000, rest - 1),
                         m=100, repeats=args.repeats, metric="accuracy", seed=args.seed)
            s = res.summary.set_index(["regime", "ranking"])
            for regime in ("small", "large"):
                for ranking in ("size_small", "size_large", "shapley"):
                    key_ = f"{regime}.{ranking}"
                    row[f"add_{key_}_pp"] = 100 * float(s.loc[(regime, ranking), "mean_gain_vs_random"])
                    row[f"add_{key_}_se_pp"] = 100 * float(s.loc[(regime, ranking), "se_gain_vs_random"])
            row["addition"] = (f"initial {res.settings['n_small']}/{res.settings['n_large']}, m {res.settings['m']}, "
                               f"{res.settings['repeats']} repeats, outcome test {res.settings['metric']}")
        rows.append(row)
        msg = (f"  {util:<13} transfer {row['transfer_spearman']:.3f}  split-half {r_half:.3f} "
               f"(stepped up {row['split_half_stepped_up']:.3f})  value<0 {row['share_negative_value']:.0%}")
        if "add_small.size_small_pp" in row:
            msg += (f"  addition@500 size-matched vs random {row['add_small.size_small_pp']:+.2f} ± "
                    f"{row['add_small.size_small_se_pp']:.2f} pp")
        print(msg + f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
    return rows, info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer points, samples and repeats")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--points", type=int, default=None)
    p.add_argument("--samples", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the table here as JSON")
    args = p.parse_args(argv)
    args.points = args.points or (300 if args.quick else 1000)
    args.samples = args.samples or (20 if args.quick else 30)
    args.repeats = args.repeats if args.repeats is not None else (10 if args.quick else 30)
    start = time.perf_counter()
    rows, infos = [], []
    for name in args.datasets:
        try:
            r, info = run_dataset(name, args)
        except ModuleNotFoundError as exc:  # optional dataset packages (make data)
            print(f"\n{name}: skipped ({exc})")
            continue
        rows += r
        infos.append(info)
    table = pd.DataFrame(rows)
    print("\nper-point values, same fits scored on validation vs test (Spearman); higher transfers better")
    print(table.pivot(index="utility", columns="dataset", values="transfer_spearman")
          .to_string(float_format=lambda x: f"{x:.3f}"))
    mean = table.groupby("utility")["transfer_spearman"].mean().sort_values(ascending=False)
    print(f"\nmean transfer over datasets: {mean.round(3).to_dict()}; best bounded: {mean.index[0]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "datasets": infos, "rows": rows},
                                              indent=1, default=str))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
