"""Benchmark: the sampling engine (issue 3) against the paper's protocol.

Run ``python -m benchmarks.sampling`` (``--quick`` for a smaller run,
``--memory`` to add the peak-memory run of issue 8; ``--models`` runs only
the batched MLP, SVM and multinomial benchmark of :mod:`benchmarks.batched_models`).

What it measures, all in one run so the ratios compare like with like:

* **Speed, logistic regression, one worker**: samples per second of
  :func:`pointscale.sampling.run_blocks` (shared bases, batched exact Newton)
  against the paper's protocol -- per sample, draw k uniformly from the same
  range, a class-stratified D from the pool without z, and fit scikit-learn's
  default ``LogisticRegression()`` cold on D and on D ∪ {z} (two fits),
  sequentially. Same dataset, model, metric and k range (the largest the pool
  allows up to [100, 1000]). Datasets: breast_cancer, digits, and adult when
  ``make data`` has installed it. Both sides run single-threaded (BLAS held
  to one thread). Throughput is reported per CPU second (robust to other
  processes on a shared machine) and per wall second.
* **Fidelity**: for a random subset of our samples, U(D) and U(D ∪ {z}) are
  recomputed from scratch with cold, tightly converged fits (scikit-learn's
  Newton–Cholesky solver, tol 1e-12) on the subset that
  :func:`pointscale.sampling.subset_for` reconstructs from the ledger row.
  Reported: Pearson correlation and median relative error of Δ, and the
  largest absolute difference.
* **Scaling**: the same job mapped over shards on a process-based
  ``distributed.LocalCluster`` with 1 and then 2 workers (one thread each),
  the dataset passed by path and memory-mapped on the workers; wall-clock
  samples per second and the ratio. The two runs' samples are checked to be
  bit-identical.
* **Base sharing** alone (``fast_path=False``) for xgboost, hist_gbm,
  decision_tree and knn: our engine (one base fit per block of 32 points) vs
  the paper's two cold fits per sample, same registry model (xgboost's block
  solver on top of it: ``benchmarks/throughput.py``).

Targets (issue 3): ≥ 20× for logreg on one worker, fidelity r ≥ 0.999 and
median relative error ≤ 1 %, ≥ 1.7× from 1 to 2 workers, ≥ 1.8× from base
sharing.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import tempfile
import time

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from benchmarks.batched_models import run_models
from benchmarks.timing import Timing, clock, config_for, paper_protocol, since, value_points
from pointscale.data import load_dataset
from pointscale.sampling import (
    Ledger,
    SamplingConfig,
    plan_blocks,
    run_blocks,
    run_shard,
    sample_marginals,
    shard_blocks,
    sort_samples,
    subset_for,
    utility,
)


def ours(ds, cfg: SamplingConfig, points: list[str], max_blocks: int | None = None) -> tuple[Timing, pd.DataFrame]:
    blocks = plan_blocks(ds, cfg, points)
    if max_blocks is not None:
        blocks = blocks[:max_blocks]
    run_blocks(ds, cfg, blocks[:1])  # warm-up: imports, caches
    start = clock()
    frame = run_blocks(ds, cfg, blocks)
    return since(start, len(frame)), frame


# --------------------------------------------------------------------------- fidelity


def fidelity(ds, cfg: SamplingConfig, rows: pd.DataFrame, n: int) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression

    C = float(cfg.model_params.get("C", 1.0))
    pick = rows[~rows["failed"]].sample(min(n, int((~rows["failed"]).sum())), random_state=0)
    ours_d, exact_d = [], []
    with threadpool_limits(limits=1):
        for _, row in pick.iterrows():
            D = subset_for(row, ds, cfg)
            z = ds.index_of([row["point_id"]])[0]
            assert z not in D and len(D) == row["k"]

            def u(idx):
                est = LogisticRegression(C=C, solver="newton-cholesky", tol=1e-12, max_iter=1000)
                return utility(cfg.metric, est.fit(ds.X_train[idx], ds.y_train[idx]), ds.X_val, ds.y_val,
                               ds.n_classes)

            exact_d.append(u(np.append(D, z)) - u(D))
            ours_d.append(row["delta"])
    a, b = np.asarray(ours_d), np.asarray(exact_d)
    rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
    return {"n": len(a), "pearson": float(np.corrcoef(a, b)[0, 1]), "median_rel_err": float(np.median(rel)),
            "max_abs_err": float(np.max(np.abs(a - b))), "median_abs_delta": float(np.median(np.abs(b)))}


# --------------------------------------------------------------------------- scaling on Dask


def scaling(ds, cfg: SamplingConfig, points: list[str], shard_blocks_n: int, repeats: int) -> dict[str, object]:
    """Wall-clock samples/s on 1 and 2 workers; best of ``repeats`` alternating runs (shared machine)."""
    from distributed import Client, LocalCluster

    blocks = plan_blocks(ds, cfg, points)
    shards = shard_blocks(blocks, shard_blocks_n)
    n = sum(s.n_samples for s in shards)
    out: dict[str, object] = {"samples": n, "shards": len(shards)}
    best = {1: 0.0, 2: 0.0}
    frames = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = str(ds.save(tmp))
        fn = functools.partial(run_shard, path, cfg)
        for _ in range(repeats):
            for workers in (1, 2):
                with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", memory_limit=0) as cluster, Client(cluster) as client:
                    client.wait_for_workers(workers)
                    # Warm every worker (imports, the memory-mapped dataset) on a small shard.
                    client.gather(client.map(fn, shard_blocks(blocks[:workers], 1), pure=False))
                    start = time.perf_counter()
                    results = client.gather(client.map(fn, shards, pure=False))
                    best[workers] = max(best[workers], n / (time.perf_counter() - start))
                frames[workers] = sort_samples(pd.concat(results, ignore_index=True))
    pd.testing.assert_frame_equal(frames[1], frames[2], check_exact=True)
    out.update(identical=True, w1_per_s=best[1], w2_per_s=best[2], ratio=best[2] / best[1])
    return out


# --------------------------------------------------------------------------- memory


def memory_run(name: str, n_samples: int) -> dict[str, float]:
    ds = load_dataset(name)
    points = value_points(ds, 1000)
    spp = max(1, -(-n_samples // len(points)))
    cfg = config_for(ds, "logreg", samples_per_point=spp, shard_size=16)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        frame = sample_marginals(ds, cfg, points, ledger=Ledger(tmp))
        wall = time.perf_counter() - start
        size = sum(f.stat().st_size for f in (Ledger(tmp).shard_dir).iterdir())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"samples": len(frame), "seconds": wall, "peak_rss_mib": peak / 1024, "rss_before_mib": before / 1024,
            "ledger_mib": size / 2**20}


# --------------------------------------------------------------------------- main


def _available(name: str):
    try:
        return load_dataset(name)
    except Exception as exc:  # noqa: BLE001 -- optional datasets
        print(f"  ({name}: skipped, {str(exc).splitlines()[0]})")
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run (about a minute)")
    parser.add_argument("--memory", action="store_true", help="also the 10^5-sample peak-memory run")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--models", action="store_true",
                        help="only the batched MLP, precomputed-kernel SVM and multinomial logreg (issue 16)")
    args = parser.parse_args(argv)
    if args.models:
        print("== batched models, one worker: ours vs the paper's protocol (two cold registry fits per sample)")
        table = run_models(args.quick)
        print("\n== summary")
        cols = [c for c in ("model", "dataset", "k", "ratio (cpu)", "ratio (wall)", "acc diff pp", "U corr",
                            "max |Δ - Δ registry|", "max |Δ - Δ cold|") if c in table.columns]
        print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        return 0
    quick = args.quick
    budget = 6.0 if quick else 20.0
    n_fid = 100 if quick else 300

    print("== logreg, one worker: ours vs the paper's protocol (two cold default fits per sample)")
    rows = []
    for name, n_points, spp in (("breast_cancer", 314, 4 if quick else 10), ("digits", 989 if not quick else 320, 3),
                                ("adult", 640, 2 if quick else 4)):
        ds = _available(name)
        if ds is None:
            continue
        cfg = config_for(ds, "logreg", samples_per_point=spp)
        t_ours, frame = ours(ds, cfg, value_points(ds, n_points))
        t_paper = paper_protocol(ds, cfg, budget, 10_000, paper_default=True)
        fid = fidelity(ds, cfg, frame, n_fid)
        rows.append({
            "dataset": name, "k": f"{cfg.k_min}-{cfg.k_max}", "d": ds.n_features,
            "ours/s (cpu)": t_ours.per_cpu, "paper/s (cpu)": t_paper.per_cpu,
            "ratio (cpu)": t_ours.per_cpu / t_paper.per_cpu,
            "ours/s (wall)": t_ours.per_wall, "paper/s (wall)": t_paper.per_wall,
            "ratio (wall)": t_ours.per_wall / t_paper.per_wall,
            "samples ours/paper": f"{t_ours.samples}/{t_paper.samples}",
            "failed": int(frame["failed"].sum()),
            "fid r": fid["pearson"], "fid med rel err": fid["median_rel_err"],
            "fid max abs err": fid["max_abs_err"], "fid n": fid["n"],
        })
        print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print()

    if not args.skip_scaling:
        print("== 1 vs 2 Dask workers (process-based LocalCluster, dataset by path)")
        ds = load_dataset("digits")
        cfg = config_for(ds, "logreg", samples_per_point=2 if quick else 6)
        sc = scaling(ds, cfg, list(ds.point_ids), shard_blocks_n=8, repeats=1 if quick else 2)
        print(f"  samples {sc['samples']} in {sc['shards']} shards (best of alternating runs): 1 worker {sc['w1_per_s']:.0f}/s, "
              f"2 workers {sc['w2_per_s']:.0f}/s, ratio {sc['ratio']:.2f}x, bit-identical: {sc['identical']}")
        print(f"  (machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})")
        print()

    print("== base sharing (no batched solver): ours (blocks of 32) vs paper (two cold fits per sample),")
    print("   best of alternating repeats (the machine is shared)")
    share_rows = []
    ds = load_dataset("breast_cancer")
    repeats = 2 if quick else 3
    for model in ("xgboost", "hist_gbm", "decision_tree", "knn"):
        # fast_path=False: base sharing alone (xgboost's block solver is benchmarks.throughput's)
        cfg = config_for(ds, model, samples_per_point=1, fast_path=False)
        blocks = plan_blocks(ds, cfg, value_points(ds, 96 if quick else 160))
        run_blocks(ds, cfg, blocks[:1])  # warm-up
        best_ours, best_paper, failed = None, None, 0
        for _ in range(repeats):
            start = clock()
            frame = run_blocks(ds, cfg, blocks)
            t = since(start, len(frame))
            failed = int(frame["failed"].sum())
            best_ours = t if best_ours is None or t.per_cpu > best_ours.per_cpu else best_ours
            t = paper_protocol(ds, cfg, float("inf"), 48 if quick else 80, paper_default=False)
            best_paper = t if best_paper is None or t.per_cpu > best_paper.per_cpu else best_paper
        share_rows.append({"model": model, "ours/s (cpu)": best_ours.per_cpu, "paper/s (cpu)": best_paper.per_cpu,
                           "ratio (cpu)": best_ours.per_cpu / best_paper.per_cpu,
                           "ratio (wall)": best_ours.per_wall / best_paper.per_wall, "failed": failed})
    print(pd.DataFrame(share_rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print()

    if args.memory:
        print("== peak memory of 10^5 samples streamed to a ledger (digits, logreg)")
        mem = memory_run("digits", 100_000)
        print(f"  {mem['samples']} samples in {mem['seconds']:.0f} s; peak RSS {mem['peak_rss_mib']:.0f} MiB "
              f"(before: {mem['rss_before_mib']:.0f} MiB); ledger {mem['ledger_mib']:.1f} MiB on disk")
        print()

    print("== summary")
    table = pd.DataFrame(rows)
    if not table.empty:
        print(table[["dataset", "k", "ours/s (cpu)", "paper/s (cpu)", "ratio (cpu)", "ratio (wall)", "fid r",
                     "fid med rel err"]].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
