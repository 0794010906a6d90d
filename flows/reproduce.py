"""``pointscale reproduce``: the paper's findings on real data, written to docs/results.md.

A thin wrapper around :func:`reproduction.run_reproduction`: it picks the
scale, runs the sampling on a local process pool (the dataset travels by
path; every sample lands in a ledger under ``--out``, so rerunning the same
command resumes), then writes the page and its figures. No Prefect flow: the
work is one long, resumable computation on one machine, and the ledgers are
its record.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor


def _workers() -> int:
    value = os.environ.get("POINTSCALE_REPRODUCE_WORKERS")
    if value:
        return max(1, int(value))
    return max(1, min(2, os.cpu_count() or 1))


def main(quick: bool, out: str, results: str, datasets: list[str] | None = None, *, scale: str | None = None,
         workers: int | None = None, models: list[str] | None = None, gt_per_size: int | None = None,
         page_only: bool = False, with_runs: list[str] | None = None) -> int:
    """Run the reproduction and write ``results`` (Markdown) and its figures.

    Parameters
    ----------
    quick : bool
        The ``--quick`` scale; otherwise the full one.
    out : str
        Working folder (datasets, sample ledgers, tables, manifest).
    results : str
        The Markdown page, e.g. ``docs/results.md``; figures go to ``figures/`` beside it.
    datasets : list of str, optional
    scale : {"tiny", "quick", "full"}, optional
        Overrides ``quick`` (``tiny`` is the test suite's smoke scale).
    workers : int, optional
        Sampling processes; default ``POINTSCALE_REPRODUCE_WORKERS`` or min(2, cores). 1 runs in-process.
    models : list of str, optional
        A subset of the scale's models.
    gt_per_size : int, optional
        Logistic regression's ground-truth samples per size.
    page_only : bool, default=False
        Re-render the page from the tables under ``out``.
    with_runs : list of str, optional
        With ``page_only``: also the tables of these run folders (the same scale run over other
        datasets side by side), merged into one page.
    """
    from pointscale.errors import ConfigError
    from reproduction import SCALES, ReproductionResult, run_reproduction, verdicts, write_results
    from reproduction.estimators import saved_section

    name = scale or ("quick" if quick else "full")
    if name not in SCALES:
        raise ConfigError(f"scale {name!r} must be one of {', '.join(SCALES)}")
    command = "pointscale reproduce" + (" --quick" if name == "quick" else "" if name == "full" else f" (scale {name})")
    if datasets:
        command += " --datasets " + " ".join(shlex.quote(d) for d in datasets)
    if models:
        command += " --models " + " ".join(shlex.quote(m) for m in models)
    if gt_per_size:
        command += f" --gt-per-size {gt_per_size}"
    if page_only:
        command += f" --out {shlex.quote(out)} --page-only"
    if with_runs:
        command += " --with-runs " + " ".join(shlex.quote(d) for d in with_runs)
    if with_runs and not page_only:
        raise ConfigError("--with-runs only applies with --page-only")
    if page_only:
        result = ReproductionResult.merge([ReproductionResult.load(f) for f in [out, *(with_runs or [])]])
    else:
        config = SCALES[name]()
        if models:
            unknown = sorted(set(models) - {m.model for m in config.models})
            if unknown:
                raise ConfigError(f"--models {' '.join(unknown)}: not in the {name} scale "
                                  f"({', '.join(m.model for m in config.models)})")
            config = dataclasses.replace(config, models=tuple(m for m in config.models if m.model in models))
        if gt_per_size:
            config = config.with_gt_per_size("logreg", gt_per_size)
        n_workers = workers or _workers()
        start = time.perf_counter()

        def log(msg: str) -> None:
            print(f"[{time.perf_counter() - start:7.1f}s] {msg}", file=sys.stderr, flush=True)

        log(f"reproduce: scale {name}, {n_workers} worker(s), working folder {out}")
        if n_workers == 1:
            result = run_reproduction(config, out, datasets=datasets, log=log)
        else:
            # spawn: workers start clean (no forked BLAS/XGBoost thread state)
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
                result = run_reproduction(config, out, datasets=datasets, map=pool.map, workers=n_workers, log=log)
    # The estimator comparison (issue 13) runs apart (benchmarks/estimators.py --save DIR); its saved
    # tables, when committed under benchmarks/results/estimators, are a section of the same page.
    appendix = saved_section()
    page = write_results(result, results, command=command, appendix=appendix)
    print(f"wrote {page} and its figures; tables in {result.folder / 'tables'}", file=sys.stderr)
    for line in verdicts(result):
        print(line)
    return 0


def settle_main(out: str, results: str, depths: list[int], repeats: int, page_only: bool = False,
                datasets: list[str] | None = None, models: list[str] | None = None, seed: int = 0) -> int:
    """``pointscale reproduce --settle``: sample (resumable), tabulate, write the page; or only the page.

    ``models`` (labels of :data:`reproduction.settle.NONLINEAR`, or ``logreg``)
    and ``datasets`` narrow the sampling; every non-linear pass's new samples
    are appended to the committed ground-truth archive
    (:mod:`reproduction.archive`).
    """
    from pathlib import Path

    from pointscale.errors import ConfigError
    from reproduction import settle, settle_page

    labels = [label for _, _, label, _ in settle.NONLINEAR]
    unknown = sorted(set(models or []) - set(labels) - {"logreg"}) + sorted(set(datasets or []) - set(settle.DATASETS))
    if unknown:
        raise ConfigError(f"--settle knows the models {', '.join(['logreg', *labels])} and the datasets "
                          f"{', '.join(settle.DATASETS)}, not {', '.join(unknown)}; name those instead")
    tables_dir = Path(results).with_suffix("")  # docs/results.md -> docs/results/
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {msg}", file=sys.stderr, flush=True)

    if not page_only:
        root = Path(out)
        with_logreg = not models or "logreg" in models
        log(f"settle: working folder {root}, non-linear depths {depths} (seed {seed})"
            + (f", {repeats} point-addition repeats" if with_logreg else ""))
        if with_logreg:
            settle.sample_logreg(root, log=log)
            settle.run_addition(root, repeats=repeats, log=log)
        nonlinear = [m for m in (models or labels) if m != "logreg"]
        if nonlinear:
            settle.sample_nonlinear(root, depths, log=log, labels=nonlinear, datasets=datasets or settle.DATASETS,
                                    seed=seed, checkpoint=True)
        settle.tables(root, tables_dir)
    page = settle_page.write_page(tables_dir, results)
    print(f"wrote {page} from {tables_dir}", file=sys.stderr)
    return 0
