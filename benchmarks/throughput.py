"""Benchmark: throughput of the non-linear models, each path against today's, with Δ agreement (issue 24).

Run ``python -m benchmarks.throughput`` (``--quick`` for a smaller run). Every
ratio compares two paths on the *same blocks* (the same bases D, points z and
model seeds), measured in the same run and interleaved (A, B, A, B; best of
each), one worker, one thread; throughput is samples per CPU second (robust to
other processes on a shared machine). Δ agreement is the largest
|Δ − Δ today| over the same samples.

* **xgboost** (adult, magic): today's path is the generic one (base
  sharing, the registry's ``XGBClassifier.fit`` per fit, whose training data
  is a ``QuantileDMatrix``); the new default is the block solver
  (:mod:`pointscale.sampling.solvers.xgb`, the same fits on a ``DMatrix``).
  Also measured, and *not* offered: histogram cuts shared across a block
  (sketched once on D ∪ {z₁ … z_B}, every fit's data binned with them through
  ``QuantileDMatrix(ref=...)``), which changes the models.
* **svm** (adult): today's path is already the block solver (one exact
  distance table per block, the registry's SVM bit for bit); the generic path
  (the registry's estimator per fit) is timed against it for reference. libsvm
  has no warm start, and with ``gamma="scale"`` every fit (each Platt fold
  too) has its own γ, so the kernel values themselves differ between the
  fits of a block: the distance table is the part that can be shared, and is.
* **mlp_batched** (adult, float32 and float64): the models a block trains
  at once. Today one call trains the base and all B = 32 points of a block;
  here the same 64 points on the same D are trained in calls of 8, 16, 32 and
  64 models, at k = 150, 500 and 1000 (200 steps), so "wider batches" is
  measured directly. Each model's Δ does not depend on which models share its
  call (bit-identical, ``tests/core/test_batched_models.py``).
* **mlp_batched, shared steps** (adult, float32, the engine's blocks): the
  option ``shared_steps=S`` trains the first S of the 200 steps once on D and
  branches every D ∪ {z} from there (:mod:`pointscale.sampling.solvers.mlp`):
  a different answer, so its Δ agreement with the default is reported
  (largest difference and Pearson r over the same samples) beside its speed.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from benchmarks.timing import Timing, clock, config_for, since, value_points
from pointscale.data import load_dataset
from pointscale.sampling import make_estimator, plan_blocks, run_blocks
from pointscale.sampling.metrics import METRICS
from pointscale.sampling.models import MODELS
from pointscale.sampling.plans import draw_subset, pool_info
from pointscale.sampling.solvers.base import solver_for
from pointscale.seeding import STREAM_MODEL, int_seed


def _interleaved(runs: dict, repeats: int) -> dict[str, tuple[Timing, pd.DataFrame]]:
    """Each ``name -> () -> DataFrame`` run ``repeats`` times, in turn; the fastest of each (CPU)."""
    best: dict[str, tuple[Timing, pd.DataFrame]] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            start = clock()
            frame = run()
            t = since(start, len(frame))
            if name not in best or t.per_cpu > best[name][0].per_cpu:
                best[name] = (t, frame)
    return best


def _agreement(frame: pd.DataFrame, today: pd.DataFrame) -> float:
    return float(np.nanmax(np.abs(frame["delta"].to_numpy() - today["delta"].to_numpy())))


def _row(model, data, path, t: Timing, t_today: Timing, diff, note="") -> dict:
    return {"model": model, "dataset": data, "path": path, "samples/s (cpu)": t.per_cpu,
            "ratio vs today (cpu)": t.per_cpu / t_today.per_cpu, "ratio (wall)": t.per_wall / t_today.per_wall,
            "max |Δ − Δ today|": diff, "samples": t.samples, "note": note}


# --------------------------------------------------------------------------- xgboost


def shared_bins_deltas(ds, cfg, blocks) -> pd.DataFrame:
    """Δ with histogram cuts sketched once per block on D ∪ {z₁ … z_B} (``QuantileDMatrix(ref=...)``).

    The option this benchmark measures and the package does not offer: the fits' own rows would
    sketch other cuts. Labels as float32 (``QuantileDMatrix`` stores integer labels slowly).
    """
    import xgboost

    assert ds.n_classes == 2
    est = make_estimator(cfg.model, ds.task, 0, cfg.model_params)
    info = pool_info(ds)
    rows = []
    for block in blocks:
        Z = block.members if block.members is not None else info.indices(block.point_ids)
        seed = int_seed(cfg.seed, STREAM_MODEL, block.base_id)
        est.set_params(random_state=seed)
        params, rounds = est.get_xgb_params(), est.get_num_boosting_rounds()
        D = draw_subset(info, cfg.seed, block.base_id, block.k, Z)
        y = ds.y_train.astype(np.float32)
        ref = xgboost.QuantileDMatrix(ds.X_train[np.concatenate([D, Z])], y[np.concatenate([D, Z])], nthread=1,
                                      max_bin=est.max_bin)

        def u(idx):
            dm = xgboost.QuantileDMatrix(ds.X_train[idx], y[idx], ref=ref, nthread=1)
            booster = xgboost.train(params, dm, num_boost_round=rounds)
            p = booster.inplace_predict(ds.X_val)
            proba = np.vstack((1.0 - p, p)).transpose()  # binary (adult, magic)
            return float(METRICS[cfg.metric].from_proba(np.asarray(proba, dtype=np.float64), ds.y_val))

        u0 = u(D)
        for z in Z:
            rows.append(u(np.append(D, z)) - u0)
    return pd.DataFrame({"delta": rows})


def xgboost_section(quick: bool) -> list[dict]:
    out = []
    for name in ("adult", "magic"):
        ds = load_dataset(name)
        cfg = config_for(ds, "xgboost", samples_per_point=1)
        blocks = plan_blocks(ds, cfg, value_points(ds, 64 if quick else 128))
        today = cfg.replace(fast_path=False)
        run_blocks(ds, cfg, blocks[:1])  # warm-up
        best = _interleaved({"today": lambda: run_blocks(ds, today, blocks),
                             "solver": lambda: run_blocks(ds, cfg, blocks),
                             "shared bins": lambda: shared_bins_deltas(ds, cfg, blocks)}, 2)
        t0, f0 = best["today"]
        k = ",".join(str(b.k) for b in blocks)
        out.append(_row("xgboost", name, "today: estimator per fit (QuantileDMatrix)", t0, t0, 0.0, f"k {k}"))
        t, f = best["solver"]
        out.append(_row("xgboost", name, "block solver, DMatrix (default)", t, t0, _agreement(f, f0)))
        t, f = best["shared bins"]
        out.append(_row("xgboost", name, "shared block bins (not offered)", t, t0, _agreement(f, f0),
                        f"share of Δ equal: {np.mean(f['delta'].to_numpy() == f0['delta'].to_numpy()):.2f}"))
    return out


# --------------------------------------------------------------------------- svm


def svm_section(quick: bool) -> list[dict]:
    ds = load_dataset("adult")
    cfg = config_for(ds, "svm", samples_per_point=1)
    blocks = plan_blocks(ds, cfg, value_points(ds, 64 if quick else 96))
    generic = cfg.replace(fast_path=False)
    run_blocks(ds, cfg, blocks[:1])
    best = _interleaved({"today": lambda: run_blocks(ds, cfg, blocks),
                         "generic": lambda: run_blocks(ds, generic, blocks)}, 1 if quick else 2)
    t0, f0 = best["today"]
    t, f = best["generic"]
    k = ",".join(str(b.k) for b in blocks)
    return [_row("svm", "adult", "today: block solver, one distance table (default)", t0, t0, 0.0, f"k {k}"),
            _row("svm", "adult", "estimator per fit (reference)", t, t0, _agreement(f, f0))]


# --------------------------------------------------------------------------- mlp


def mlp_section(quick: bool) -> list[dict]:
    ds = load_dataset("adult")
    rng = np.random.default_rng(0)
    widths = (8, 16, 32, 64)
    n_points = 64
    out = []
    for dtype in ("float32", "float64"):
        params = dict(make_estimator("mlp_batched", ds.task, 0, {"dtype": dtype}).get_params(deep=False))
        solver = solver_for(MODELS["mlp_batched"], params, ds.task, ds.n_classes, ds.X_val, ds.y_val, "paper_ce")
        for k in ((500,) if quick else (150, 500, 1000)):
            D = rng.choice(ds.n_pool, k, replace=False)
            Z = rng.choice(np.setdiff1d(np.arange(ds.n_pool), D), n_points, replace=False)

            def run(width, D=D, Z=Z):
                deltas = []
                for s in range(0, n_points, width):
                    fit = solver(ds.X_train[D], ds.y_train[D], ds.X_train[Z[s:s + width]], ds.y_train[Z[s:s + width]],
                                 seed=5)
                    deltas.append(fit.u_with - fit.u_base)
                return pd.DataFrame({"delta": np.concatenate(deltas)})

            with threadpool_limits(limits=1):
                best = _interleaved({w: (lambda w=w: run(w)) for w in widths}, 1 if quick else 2)
            t0, f0 = best[32]
            for w in widths:
                t, f = best[w]
                path = f"{w} models per call" + (" (today: a block of 32)" if w == 32 else "")
                out.append(_row(f"mlp_batched ({dtype})", "adult", path, t, t0, _agreement(f, f0), f"k {k}"))
    return out


def mlp_shared_section(quick: bool) -> list[dict]:
    """``shared_steps`` (an option that changes the answer) against the default on the engine's blocks."""
    ds = load_dataset("adult")
    cfg = config_for(ds, "mlp_batched", samples_per_point=1)
    blocks = plan_blocks(ds, cfg, value_points(ds, 64 if quick else 128))
    runs = {0: cfg}
    for S in SHARED_STEPS:
        runs[S] = cfg.replace(model_params={"shared_steps": S})
    run_blocks(ds, cfg, blocks[:1])
    best = _interleaved({S: (lambda c=c: run_blocks(ds, c, blocks)) for S, c in runs.items()}, 1 if quick else 2)
    t0, f0 = best[0]
    k = ",".join(str(b.k) for b in blocks)
    out = [_row("mlp_batched (float32)", "adult", "today: every model all 200 steps with its point", t0, t0, 0.0,
                f"k {k}")]
    d0 = f0["delta"].to_numpy()
    for S in SHARED_STEPS:
        t, f = best[S]
        d = f["delta"].to_numpy()
        out.append(_row("mlp_batched (float32)", "adult", f"shared_steps={S} (option)", t, t0, _agreement(f, f0),
                        f"Pearson r of Δ with today's {np.corrcoef(d, d0)[0, 1]:.3f}; "
                        f"max |U(D) − U(D) today| {np.abs(f['u_base'] - f0['u_base']).max():.2g}"))
    return out


#: The shared-steps settings measured: half, three quarters and nine tenths of the 200 steps.
SHARED_STEPS = (100, 150, 180)

SECTIONS = {"xgboost": xgboost_section, "svm": svm_section, "mlp": mlp_section, "mlp-shared": mlp_shared_section}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append",
                        help="run only this section (repeatable; default: all)")
    args = parser.parse_args(argv)
    rows = []
    for section in (SECTIONS[name] for name in (args.only or SECTIONS)):
        with threadpool_limits(limits=1):
            for row in section(args.quick):
                rows.append(row)
                print(pd.DataFrame([row]).to_string(index=False, header=len(rows) == 1,
                                                    float_format=lambda v: f"{v:.4g}"), flush=True)
    print("\n== summary")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
