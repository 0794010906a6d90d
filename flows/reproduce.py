"""``pointscale reproduce``: the paper's findings on real data, written to docs/results.md.

A thin wrapper around :func:`pointscale.reproduce.run_reproduction`: it picks
the scale, runs the sampling on a local process pool (the dataset travels by
path; every sample lands in a ledger under ``--out``, so rerunning the same
command resumes), then writes the page, its figures and the tables as CSV.
No Prefect flow: the work is one long, resumable computation on one machine,
and the ledgers are its record.
"""

from __future__ import annotations

import multiprocessing
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

SCALES = ("tiny", "quick", "full")


def _workers() -> int:
    value = os.environ.get("POINTSCALE_REPRODUCE_WORKERS")
    if value:
        return max(1, int(value))
    return max(1, min(2, os.cpu_count() or 1))


def main(quick: bool, out: str, results: str, datasets: list[str] | None = None, *,
         scale: str | None = None, workers: int | None = None) -> int:
    """Run the reproduction and write ``results`` (Markdown) and its figures.

    Parameters
    ----------
    quick : bool
        The ``--quick`` scale (under 10 minutes); otherwise the full one.
    out : str
        Working folder (datasets, sample ledgers, tables as CSV).
    results : str
        The Markdown page, e.g. ``docs/results.md``; figures go to ``figures/`` beside it.
    datasets : list of str, optional
        Default: breast_cancer, and adult when installed.
    scale : {"tiny", "quick", "full"}, optional
        Overrides ``quick`` (``tiny`` is the test suite's smoke scale).
    workers : int, optional
        Sampling processes; default ``POINTSCALE_REPRODUCE_WORKERS`` or min(2, cores). 1 runs in-process.
    """
    from pointscale import reproduce as core

    name = scale or ("quick" if quick else "full")
    if name not in SCALES:
        raise SystemExit(f"pointscale: error: scale {name!r} must be one of {', '.join(SCALES)}")
    config = {"tiny": core.tiny_config, "quick": core.quick_config, "full": core.full_config}[name]()
    n_workers = workers or _workers()
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {msg}", file=sys.stderr, flush=True)

    log(f"reproduce: scale {name}, {n_workers} worker(s), working folder {out}")
    if n_workers == 1:
        result = core.run_reproduction(config, out, datasets=datasets, log=log)
    else:
        # spawn: workers start clean (no forked BLAS/XGBoost thread state)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
            result = core.run_reproduction(config, out, datasets=datasets, map=pool.map, log=log)
    command = "pointscale reproduce" + (" --quick" if quick and not scale else "")
    if scale and scale != ("quick" if quick else "full"):
        command += f"  (scale {scale})"
    if datasets:
        command += " --datasets " + " ".join(shlex.quote(d) for d in datasets)
    page = core.write_results(result, results, command=command)
    core.result_tables_to_files(result, Path(out) / "tables")
    log(f"wrote {page} and its figures; tables in {Path(out) / 'tables'}")
    for line in core.verdicts(result):
        print(line)
    return 0
