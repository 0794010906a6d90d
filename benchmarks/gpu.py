"""Benchmark: the batched solvers on a GPU against one CPU core (issue 16).

Run on a machine with a CUDA GPU and torch (or CuPy), numpy, scipy,
scikit-learn, pandas and pyarrow -- nothing else is needed (no Prefect, Dask
or XGBoost; a test checks that this module imports none of them):

    PYTHONPATH=. python -m benchmarks.gpu            # about 3-4 minutes
    PYTHONPATH=. python -m benchmarks.gpu --quick    # about 1 minute

Without a GPU it prints one line and exits with status 2
(``--cpu-dry-run`` runs the same code on the CPU through torch, or numpy,
with tiny budgets: a smoke test of the script, not a measurement).

What it measures, all in one run, on a synthetic binary problem shaped like
Adult (21,000 rows, 100 features; no data files needed) with base subsets of
k = 100..1000 and blocks of B points (one base and B models D ∪ {z} per
block):

* **Logistic regression** (L2, C = 1, float64): fits per second of the
  batched exact Newton on the GPU (:mod:`pointscale.sampling.solvers.device_logistic`)
  against one CPU core running the registry's ``LogisticRegression``
  (Newton–Cholesky, tol 1e-10) cold, and against our CPU batched solver;
  agreement: largest |Δ_GPU − Δ_CPU| against the CPU fast path on the same
  blocks, and the largest difference of U.
* **MLP** (the paper's: 32 hidden, 200 full-batch Adam steps): models per
  second of ``mlp_batched`` on the GPU in float32 and float64 against one
  CPU core running the registry's ``MLPClassifier`` cold; agreement with the
  CPU ``mlp_batched`` of the same dtype on the same block and seed.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from pointscale.data import load_dataset
from pointscale.errors import PointscaleError
from pointscale.sampling import SamplingConfig, make_estimator, plan_blocks, utility
from pointscale.sampling.devices import Device, resolve_device
from pointscale.sampling.plans import draw_subset, pool_info
from pointscale.sampling.solvers.device_logistic import DeviceLogisticSolver
from pointscale.sampling.solvers.logistic import LogisticBinarySolver
from pointscale.sampling.solvers.mlp import MLPBlockSolver
from pointscale.seeding import STREAM_MODEL, int_seed


def adult_like(n: int = 21_000, d: int = 100):
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n, n_features=d, n_informative=20, n_redundant=10, flip_y=0.1,
                               weights=[0.76], class_sep=0.8, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(d)]).assign(y=y)
    return load_dataset("adult_like", frame=frame, target="y", task="classification", val_size=1000)


def _blocks(ds, block_size: int, n_blocks: int, seed: int = 0):
    cfg = SamplingConfig(k_min=100, k_max=1000, samples_per_point=1, block_size=block_size, seed=seed).resolved(ds)
    blocks = plan_blocks(ds, cfg, list(ds.point_ids[: block_size * n_blocks]))[:n_blocks]
    info = pool_info(ds)
    out = []
    for b in blocks:
        Z = info.indices(b.point_ids)
        D = draw_subset(info, cfg.seed, b.base_id, b.k, Z)
        out.append((D, Z, int_seed(cfg.seed, STREAM_MODEL, b.base_id)))
    return out


def _args(ds, D, Z):
    return ds.X_train[D], ds.y_train[D], ds.X_train[Z], ds.y_train[Z]


def _timed(device: Device, fn, blocks, budget: float) -> tuple[int, float, list]:
    """Run ``fn`` over blocks until the budget is spent: (models fitted, seconds, results)."""
    fn(*blocks[0])  # warm-up: kernels, caches
    device.synchronize()
    n, results = 0, []
    start = time.perf_counter()
    for block in blocks:
        results.append(fn(*block))
        device.synchronize()
        n += len(block[1]) + 1
        if time.perf_counter() - start > budget:
            break
    return n, time.perf_counter() - start, results


def cpu_cold_fits(ds, model: str, blocks, budget: float) -> float:
    """Registry model fitted cold on one CPU core: fits per second."""
    n = 0
    with threadpool_limits(limits=1):
        start = time.perf_counter()
        for D, Z, seed in blocks:
            for rows in (D, np.append(D, Z[0])):
                est = make_estimator(model, ds.task, seed).fit(ds.X_train[rows], ds.y_train[rows])
                utility("neg_log_loss", est, ds.X_val, ds.y_val, ds.n_classes)
                n += 1
            if time.perf_counter() - start > budget:
                break
        return n / (time.perf_counter() - start)


def logreg_section(ds, device: Device, block_size: int, budget: float) -> dict:
    blocks = _blocks(ds, block_size, 400)
    gpu = DeviceLogisticSolver(1.0, True, ds.X_val, ds.y_val, "neg_log_loss", device)
    cpu = LogisticBinarySolver(1.0, True, ds.X_val, ds.y_val, "neg_log_loss")
    n_gpu, t_gpu, fits = _timed(device, lambda D, Z, s: gpu(*_args(ds, D, Z)), blocks, budget)
    with threadpool_limits(limits=1):
        n_cpu, t_cpu, ref = _timed(Device(), lambda D, Z, s: cpu(*_args(ds, D, Z)), blocks, budget / 2)
    m = min(len(fits), len(ref))
    d_err = max(float(np.max(np.abs((a.u_with - a.u_base) - (b.u_with - b.u_base)))) for a, b in zip(fits[:m], ref[:m]))
    u_err = max(float(np.max(np.abs(np.r_[a.u_base, a.u_with] - np.r_[b.u_base, b.u_with])))
                for a, b in zip(fits[:m], ref[:m]))
    sk = cpu_cold_fits(ds, "logreg", blocks, budget / 2)
    return {"model": "logreg (float64)", "block": block_size, "device fits/s": n_gpu / t_gpu,
            "cpu core sklearn fits/s": sk, "ratio vs sklearn core": n_gpu / t_gpu / sk,
            "cpu core batched fits/s": n_cpu / t_cpu, "max |dDelta| vs CPU": d_err, "max |dU| vs CPU": u_err,
            "blocks compared": m, "all converged": bool(all(f.converged.all() for f in fits))}


def mlp_section(ds, device: Device, dtype: str, block_size: int, budget: float, sk: float) -> dict:
    blocks = _blocks(ds, block_size, 100, seed=1)
    params = {"dtype": dtype}
    gpu = MLPBlockSolver(params, "classification", 2, ds.X_val, ds.y_val, "neg_log_loss", device)
    n_gpu, t_gpu, fits = _timed(device, lambda D, Z, s: gpu(*_args(ds, D, Z), seed=s), blocks, budget)
    # Agreement with the CPU path on the first block's first 16 points (same rows, same seed).
    D, Z, seed = blocks[0]
    Z = Z[:16]
    with threadpool_limits(limits=1):
        cpu = MLPBlockSolver(params, "classification", 2, ds.X_val, ds.y_val, "neg_log_loss")(*_args(ds, D, Z), seed=seed)
    dev = gpu(*_args(ds, D, Z), seed=seed)
    a, b = dev.u_with - dev.u_base, cpu.u_with - cpu.u_base
    return {"model": f"mlp_batched ({dtype})", "block": block_size, "device fits/s": n_gpu / t_gpu,
            "cpu core sklearn fits/s": sk, "ratio vs sklearn core": n_gpu / t_gpu / sk,
            "max |dDelta| vs CPU": float(np.max(np.abs(a - b))), "corr Delta vs CPU": float(np.corrcoef(a, b)[0, 1]),
            "max |dU| vs CPU": float(abs(dev.u_base - cpu.u_base)), "k of compared block": len(D)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter budgets (about a minute)")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="run the script on the CPU (torch if installed, else numpy): a smoke test only")
    args = parser.parse_args(argv)
    if args.cpu_dry_run:
        try:
            import torch  # noqa: F401

            device = Device("torch", "cpu")
        except ImportError:
            device = Device()
        budget, lr_block, mlp_block = 1.0, 16, 8
    else:
        try:
            device = resolve_device("cuda")
        except PointscaleError as exc:
            print(f"benchmarks.gpu: {exc}", file=sys.stderr)
            return 2
        budget = 15.0 if args.quick else 45.0
        lr_block, mlp_block = 511, 255
    print(f"device: {device.backend} {device.name}", flush=True)
    if device.backend == "torch" and device.is_gpu:
        import torch

        print(f"  {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    ds = adult_like(3000 if args.cpu_dry_run else 21_000)
    rows = [logreg_section(ds, device, lr_block, budget)]
    print(pd.DataFrame(rows[-1:]).T.to_string(header=False), flush=True)
    sk_mlp = cpu_cold_fits(ds, "mlp", _blocks(ds, 4, 20, seed=1), budget / 2)
    for dtype in ("float32", "float64"):
        rows.append(mlp_section(ds, device, dtype, mlp_block, budget, sk_mlp))
        print(pd.DataFrame(rows[-1:]).T.to_string(header=False), flush=True)
    print("\n== summary (fits per second; CPU figures are one core of this machine, measured in this run)")
    cols = ["model", "block", "device fits/s", "cpu core sklearn fits/s", "ratio vs sklearn core",
            "max |dDelta| vs CPU", "max |dU| vs CPU"]
    print(pd.DataFrame(rows)[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
