"""Benchmark: finding flipped labels, pointscale's ``label_issue_score`` against the peers users know.

Run ``python -m benchmarks.label_issues`` (``--quick``: breast_cancer, one
seed, logreg, 10 % flips). Needs the benchmark extras
(``pip install -e '.[bench]'``: cleanlab and pyDVL; never product
dependencies) and, for adult and magic, ``make data``. Rows are appended to
``--csv`` (default ``benchmarks/results/label_issues.csv``) as each setting
finishes, so a long run can be read while it goes; a rerun skips the settings
already in the file. ``--markdown`` prints the table of a finished file.

Setting
    A training pool of 1,000 rows (all of it when smaller) and a clean
    validation split of 500 rows, both drawn with the seed
    (:func:`benchmarks.estimators.flip_pool`); ``rate`` of the pool's labels
    flipped with the same seed. Seeds 0, 1, 2; rates 5 %, 10 %, 20 %; models
    ``logreg`` and ``xgboost`` (pointscale's registry settings, also for every
    peer that trains the model).

Methods (each a score, higher = more likely flipped)
    * ``pointscale``: :func:`pointscale.valuation.label_issues.label_issues`
      on the run's own evidence -- 10 samples per point at the pipeline's
      default k range (the base fits' out-of-bag predictions) and the law
      values of ``fit_laws(method="auto")``. Its CPU seconds are those of the
      sampling and the law fit: the score itself is free.
    * ``pointscale_oob``: 1 − the mean out-of-bag probability of the given
      label alone; ``pointscale_value`` and ``pointscale_mc_mean``: minus the
      law value and minus the plain mean of Δ.
    * ``cleanlab``: self-confidence (1 − p(given label)) on 5-fold
      out-of-fold probabilities of the same model; its flagged set is
      ``cleanlab.filter.find_label_issues`` on the same probabilities.
    * ``own_loss``: the log-loss of each row under the model trained on all rows.
    * ``data_oob``: pyDVL's Data-OOB (Kwon & Zou 2023), bagging of the same
      model (``--oob-estimators`` fits, 200 by default), minus the value.
    * ``knn_shapley``: pyDVL's exact KNN-Shapley (k = 5 neighbours on the
      standardised features, the clean validation split as utility), minus
      the value (no model fits; the same for both models).

Scores
    ``auc`` (ROC AUC of the score for the flipped rows), ``p_at_true``
    (precision among the top true-count rows), ``flag_precision`` and
    ``flag_recall`` of the method's flagged set (pointscale and cleanlab
    flag; the others give a ranking only), ``est_rate`` (their estimated
    noise rate) and ``cpu_s`` (process CPU seconds of the method).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

DATASETS = ("adult", "magic", "breast_cancer", "digits")
MODELS = ("logreg", "xgboost")
RATES = (0.05, 0.1, 0.2)
SEEDS = (0, 1, 2)
SAMPLES_PER_POINT = 10
CACHE = Path(".cache/benchmarks/label_issues")


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


class _cpu:
    """Process CPU seconds spent inside the block (all threads)."""

    def __enter__(self):
        self.t0 = time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.process_time() - self.t0


# ------------------------------------------------------------------ pointscale's evidence
def pointscale_evidence(ds, model: str, seed: int, laws: bool = True) -> dict:
    """Samples, out-of-bag evidence and law values of a 10-samples-per-point run on ``ds``.

    Cached per dataset fingerprint, model and seed (the sampling only; the
    law fit is repeated, it is part of what the score costs).
    """
    from pointscale import pipeline
    from pointscale.laws.auto import select_laws
    from pointscale.sampling import Ledger, oob_evidence, sample_marginals
    from pointscale.valuation import distributional_shapley, monte_carlo_values

    ids = [str(p) for p in ds.point_ids]
    cfg = pipeline.resolve_sampling(ds, model=model, metric=None, k_min=None, k_max=None,
                                    samples_per_point=SAMPLES_PER_POINT, seed=seed, block_size=32,
                                    shard_size=None, n_points=len(ids), warn=False)
    folder = CACHE / f"{ds.fingerprint[:16]}-{model}-{seed}"
    ledger = Ledger(folder)
    timing = folder / "sampling_cpu_seconds.txt"
    with _cpu() as t_sample:
        samples = _quiet(sample_marginals, ds, cfg, ids, ledger=ledger)
    if not timing.exists():  # the first (uncached) run's CPU time is the sampling's cost
        timing.write_text(f"{t_sample.seconds:.3f}\n")
    sample_s = float(timing.read_text())
    oob = oob_evidence(ledger)
    if not laws:
        return {"oob": oob, "samples": samples, "config": cfg}
    with _cpu() as t_laws:
        fitted, _ = _quiet(select_laws, samples, ds, method="auto", oob=oob, random_state=seed,
                         k_range=(cfg.k_min, cfg.k_max))
        value = distributional_shapley(fitted, cfg.k_min, cfg.k_max)
    mc = monte_carlo_values(samples, k_min=cfg.k_min, k_max=cfg.k_max)["mc_mean"]
    frame = value.to_frame("shapley").set_index("point_id")
    frame["c"] = pd.Series(fitted.c, index=fitted.point_ids)
    if fitted.has_intervals:
        ci = fitted.conf_int()
        for col in ci.columns:
            if col.startswith("c_"):
                frame[col] = ci[col]
    frame["mc_mean"] = mc
    frame = frame.reindex(ids)
    return {"oob": oob, "values": frame, "samples": samples, "config": cfg,
            "estimator": fitted.meta.get("selection", {}).get("chosen"),
            "cpu_s": sample_s + t_laws.seconds}


def settings(datasets=DATASETS, models=MODELS, rates=RATES, seeds=SEEDS) -> list[tuple[str, str, float, int]]:
    """(dataset, model, rate, seed) in the order they run: the 10 % settings of adult and magic
    first (the issue's done-when line), logistic regression before xgboost."""
    out = []
    for first in (True, False):
        for model in models:
            for rate in rates:
                for name in datasets:
                    if (rate == 0.1 and name in ("adult", "magic")) != first:
                        continue
                    out += [(name, model, rate, seed) for seed in seeds]
    return out


def sample_all(todo, log=print) -> None:
    """Only the sampling of each setting (cached), so the scores can be computed later."""
    from benchmarks.estimators import flip_pool

    for name, model, rate, seed in todo:
        t0 = time.perf_counter()
        ds, _ = flip_pool(name, seed, rate)
        pointscale_evidence(ds, model, seed, laws=False)
        log(f"sampled {name} {model} {rate} {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
