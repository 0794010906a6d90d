"""Benchmark: how far into a finite pool the size range may reach (the k_max / n rule).

Run ``python -m benchmarks.size_range`` (``--quick`` for a smaller run).

A base subset D of size k is drawn without replacement from a pool of n
points. When k approaches n, D stops being random: the spread of Δ over D
collapses faster than the noise model's k^(−β), and the fitted β piles up at
its bound. This benchmark chooses :data:`pointscale.sampling.config.MAX_POOL_FRACTION`
by measuring, for k_max = f · n with f in {0.3, 0.5, 0.7, 0.9} (k_min = k_max / 10):

* **β at a bound** — share of points whose per-point MLE β sits at its bound
  (``beta_at_bound``), from staggered samples on 5 sizes in [k_min, k_max];
* **finite-pool shrinkage** — the median over points of
  sd(Δ at k_min) / sd(Δ at k_max) on the small pool, divided by the same
  ratio when D is drawn from a pool that is effectively infinite (the full
  dataset, k_max ≤ 6 % of it). 1 means the finite pool adds no shrinkage.

The rule is *chosen* on MAGIC pools of n = 300 and 1,000 points (random
subsets of its training pool; the full 17,020-point pool is the "i.i.d."
reference) and *checked* on breast_cancer (n = 314), which the default
``make run`` reports on. Without MAGIC installed the choice runs on
breast_cancer alone (no i.i.d. reference: shrinkage is then not reported).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import time
import warnings

import numpy as np
import pandas as pd

from pointscale.data import load_dataset
from pointscale.laws import fit_mle
from pointscale.sampling import SamplingConfig, sample_marginals
from pointscale.seeding import STREAM_SELECTION, rng

FRACTIONS = (0.3, 0.5, 0.7, 0.9)


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def sub_pool(ds, n: int, seed: int):
    """The dataset with its training pool cut to ``n`` random points (new fingerprint)."""
    g = rng(seed, STREAM_SELECTION, "size-range-pool", n)
    idx = np.sort(g.choice(ds.n_pool, size=n, replace=False))
    fp = hashlib.sha256(f"{ds.fingerprint}|pool|{seed}|{n}".encode()).hexdigest()
    return dataclasses.replace(ds, X_train=np.asarray(ds.X_train)[idx], y_train=np.asarray(ds.y_train)[idx],
                               point_ids=np.asarray(ds.point_ids)[idx], fingerprint=fp, path=None), idx


def spread_ratio(samples: pd.DataFrame) -> float:
    """Median over points of sd(Δ | smallest k) / sd(Δ | largest k)."""
    s = samples[~samples["failed"]]
    sd = s.groupby(["point_id", "k"])["delta"].std(ddof=1).unstack("k")
    lo, hi = sd.columns.min(), sd.columns.max()
    r = (sd[lo] / sd[hi]).replace([np.inf, -np.inf], np.nan).dropna()
    return float(r.median()) if len(r) else float("nan")


def measure(ds, ids, f: float, args, reference=None) -> dict:
    hi = int(f * ds.n_pool)
    lo = max(hi // 10, ds.n_classes, 2)
    sizes = tuple(sorted(set(np.geomspace(lo, hi, 5).astype(int).tolist())))
    cfg = SamplingConfig(mode="staggered", sizes=sizes, samples_per_size=args.per_size, metric=args.metric,
                         block_size=args.block, seed=args.seed)
    s = _quiet(sample_marginals, ds, cfg, points=ids)
    laws = _quiet(fit_mle, s[~s["failed"]][["point_id", "k", "delta"]])
    row = {"n_pool": ds.n_pool, "fraction": f, "k_range": f"{lo}..{hi}",
           "beta_at_bound": float(np.mean(laws.flags["beta_at_bound"])),
           "median_beta": float(np.nanmedian(laws.beta)),
           "spread_ratio": spread_ratio(s)}
    if reference is not None:
        s_ref = _quiet(sample_marginals, reference, cfg, points=ids)
        row["spread_ratio_iid"] = spread_ratio(s_ref)
        row["finite_pool_shrinkage"] = row["spread_ratio"] / row["spread_ratio_iid"]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--metric", default=None, help="utility (default: the task's default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.points = 32 if args.quick else 64
    args.per_size = 20 if args.quick else 40
    args.block = 16
    start = time.perf_counter()
    rows = []
    try:
        magic = load_dataset("magic")
    except ModuleNotFoundError:
        magic = None
    if magic is not None:
        for n in (300, 1000):
            small, idx = sub_pool(magic, n, args.seed)
            ids = list(np.asarray(small.point_ids)[: args.points])
            for f in FRACTIONS:
                rows.append({"dataset": "magic", **measure(small, ids, f, args, reference=magic)})
                print(rows[-1], flush=True)
    cancer = load_dataset("breast_cancer")
    g = rng(args.seed, STREAM_SELECTION, "size-range-points")
    ids = list(np.asarray(cancer.point_ids)[np.sort(g.choice(cancer.n_pool, size=args.points, replace=False))])
    for f in FRACTIONS:
        rows.append({"dataset": "breast_cancer", **measure(cancer, ids, f, args)})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print("\nk_max = fraction x pool, k_min = k_max / 10; staggered, 5 sizes x "
          f"{args.per_size} samples, {args.points} points, metric {args.metric or 'default'}")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
