"""Benchmark: finding flipped labels in a training file against a clean validation file.

Run ``python -m benchmarks.own_data`` (``--seeds 0 1 2``, ``--samples-per-point 20``).

The user's situation the given-splits feature is for: a training file with
some wrong labels and a trusted, clean validation file. Per seed:

* binarised digits (digit < 5, as the built-in ``digits``), rows shuffled
  with the seed; the first 450 rows are the clean validation file, the other
  1347 the training file, in which 10 % of the labels (chosen with the seed)
  are flipped; a ``row_id`` column names the rows;
* the real command line, exactly as a user types it:
  ``pointscale run --dataset train.csv --valid valid.csv --target label
  --id-column row_id --samples-per-point 20`` (plus ``--workers``/``--out``);
* from ``values.parquet``: the AUC of ``-shapley`` (the law-based value)
  and of ``-mc_mean`` (the plain Monte Carlo mean of the same samples) for
  being flipped. The truth is the flip itself, independent of the method.

``--contrast`` adds the situation before this feature: the same flipped rows
and the validation rows (with their own 10 % flips) in *one* file, split by
the tool's seeded split, so wrong labels land in the validation split too.
Utility: the task's default unless ``--metric`` is given (printed, read
from ``run.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_VALID = 450
FLIP = 0.10


def make_files(folder: Path, seed: int) -> dict[str, object]:
    """``train.csv`` (flipped labels), ``valid.csv`` (clean) and the flipped ids."""
    from sklearn.datasets import load_digits

    X, digit = load_digits(return_X_y=True)
    frame = pd.DataFrame(X, columns=[f"pixel{i}" for i in range(X.shape[1])])
    frame.insert(0, "row_id", [f"d{i:04d}" for i in range(len(frame))])
    frame["label"] = (digit < 5).astype(int)
    gen = np.random.default_rng(seed)
    frame = frame.iloc[gen.permutation(len(frame))].reset_index(drop=True)
    valid, train = frame.iloc[:N_VALID].copy(), frame.iloc[N_VALID:].copy().reset_index(drop=True)
    flip = gen.choice(len(train), size=round(FLIP * len(train)), replace=False)
    train.loc[flip, "label"] = 1 - train.loc[flip, "label"]
    folder.mkdir(parents=True, exist_ok=True)
    train.to_csv(folder / "train.csv", index=False)
    valid.to_csv(folder / "valid.csv", index=False)
    # The situation before given splits: one file, wrong labels among the validation rows too.
    noisy_valid = valid.copy().reset_index(drop=True)
    vflip = gen.choice(len(noisy_valid), size=round(FLIP * len(noisy_valid)), replace=False)
    noisy_valid.loc[vflip, "label"] = 1 - noisy_valid.loc[vflip, "label"]
    pd.concat([train, noisy_valid], ignore_index=True).to_csv(folder / "one_file.csv", index=False)
    flipped = set(train.loc[flip, "row_id"])
    return {"flipped": flipped, "flipped_one_file": flipped | set(noisy_valid.loc[vflip, "row_id"])}


def run_cli(args: list[str], timeout: float) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", *args], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"pointscale run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def aucs(run_dir: Path, flipped: set[str]) -> dict[str, object]:
    from sklearn.metrics import roc_auc_score

    values = pd.read_parquet(run_dir / "values.parquet")
    manifest = json.loads((run_dir / "run.json").read_text())
    is_flipped = values["point_id"].astype(str).isin(flipped).to_numpy()
    out: dict[str, object] = {"metric": manifest["config"]["sampling"]["metric"],
                              "model": manifest["config"]["sampling"]["model"],
                              "valued": int(len(values)), "flipped_valued": int(is_flipped.sum()),
                              "estimators": values["estimator"].value_counts().to_dict()}
    for column in ("shapley", "mc_mean"):
        v = values[column].to_numpy(dtype=float)
        ok = np.isfinite(v)
        out[f"auc_{column}"] = float(roc_auc_score(is_flipped[ok], -v[ok]))
        out[f"nonfinite_{column}"] = int((~ok).sum())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--samples-per-point", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--metric", help="utility (default: the task's default)")
    parser.add_argument("--contrast", action="store_true", help="also the one-file seeded split")
    parser.add_argument("--out", help="folder for the files and runs (default: a temporary folder)")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp(prefix="pointscale-own-data-"))
    rows = []
    for seed in args.seeds:
        folder = root / f"seed{seed}"
        made = make_files(folder, seed)
        common = ["--target", "label", "--id-column", "row_id", "--samples-per-point",
                  str(args.samples_per_point), "--workers", str(args.workers)]
        if args.metric:
            common += ["--metric", args.metric]
        cases = [("given_valid", ["--dataset", str(folder / "train.csv"), "--valid", str(folder / "valid.csv")],
                  made["flipped"])]
        if args.contrast:
            cases.append(("one_file_seeded_split", ["--dataset", str(folder / "one_file.csv")],
                          made["flipped_one_file"]))
        for name, data, flipped in cases:
            run_dir = folder / f"run_{name}_{args.metric or 'default'}"
            seconds = run_cli([*data, *common, "--out", str(run_dir)], args.timeout)
            row = {"seed": seed, "case": name, "seconds": round(seconds, 1), **aucs(run_dir, flipped)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    print(table[["seed", "case", "metric", "valued", "flipped_valued", "auc_shapley", "auc_mc_mean",
                 "seconds"]].to_string(index=False))
    print(f"files and runs in {root} (samples per point {args.samples_per_point}, {os.cpu_count()} cores; "
          "measured under load on a shared machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
