"""The ``pointscale`` command.

Subcommands: ``run`` (the pipeline flow), ``revalue`` (extend a run with new
data), ``ingest``, ``sample`` (in-process sampling with a progress bar, no
orchestrator), ``addition`` (the point-addition experiment), ``server`` (a
local Prefect server and UI), ``serve`` (deployments: schedule, data watcher,
event-triggered revaluation) and ``reproduce`` (the paper's findings).

Errors a user can fix (bad data, bad configuration, a locked run folder) end
with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence

from .options import (DataOptions, ExecutionOptions, PipelineOptions, SamplingOptions, ServeOptions,
                      add_options, options_from_args)
from .runtime import configure_environment, terminate_on_sigterm

EXIT_USAGE = 2
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pointscale",
        description="How much is each training example worth, and how does that change as the dataset grows?",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the whole pipeline as a Prefect flow",
                       description="Ingest, sample marginal contributions on Dask, fit the laws, value and "
                                   "select points, write the report. Rerun the same command after a crash.")
    add_options(p, PipelineOptions, title="pipeline options (the same for `serve`)")
    p.add_argument("--out", help="run folder: a path or an fsspec URL such as s3://bucket/runs/x "
                                 "(default: runs/<dataset>-<fingerprint[:8]>)")
    p.add_argument("--wait", action="store_true", help="wait if another run holds the run folder")

    p = sub.add_parser("revalue", help="extend a run with new data and revalue incrementally",
                       description="Reuse every sample of the run's points, sample only new points, refit. "
                                   "The run's own options (model, metric, ...) apply.")
    p.add_argument("--run-dir", required=True, help="run folder of an earlier `pointscale run`")
    p.add_argument("--dataset", required=True, help="the new data file or folder (a superset of the old rows)")
    add_options(p, ExecutionOptions, title="where the fits run")

    p = sub.add_parser("ingest", help="validate and store a dataset version, print its report")
    add_options(p, DataOptions, title="data options")
    p.add_argument("--out", help="run folder: a path or an fsspec URL such as s3://bucket/runs/x "
                                 "(default: runs/<dataset>-<fingerprint[:8]>)")

    p = sub.add_parser("sample", help="sample in-process with a progress bar (no orchestrator)",
                       description="Runs the same sampling code as the flow, in this process, into a ledger.")
    add_options(p, SamplingOptions, title="sampling options")
    p.add_argument("--out", help="run folder: a path or an fsspec URL such as s3://bucket/runs/x "
                                 "(default: runs/<dataset>-<fingerprint[:8]>)")

    p = sub.add_parser("addition", help="point-addition experiment on a finished run",
                       description="Rank candidates by predicted value at a small and a large size, by a "
                                   "Shapley value and at random; add the top m; report test-accuracy change.")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--n-small", type=int, default=500)
    p.add_argument("--n-large", type=int, default=5000)
    p.add_argument("--m", type=int, default=100, help="points added (class-balanced; default: %(default)s)")
    p.add_argument("--repeats", type=int, default=200,
                   help="initial sets per regime, each redrawn (default: %(default)s; the paper: 1000)")

    p = sub.add_parser("server", help="start a Prefect server and UI on 127.0.0.1")
    p.add_argument("--port", type=int, default=4200)

    p = sub.add_parser("serve", help="serve the deployments against PREFECT_API_URL",
                       description="The pipeline on a cron schedule, a data watcher on an interval, and the "
                                   "event-triggered revaluation. Every pipeline option of `run` applies to "
                                   "the scheduled and the triggered runs.")
    add_options(p, ServeOptions, title="watcher and schedule")
    add_options(p, PipelineOptions, title="pipeline options (the same as `run`)")

    p = sub.add_parser("reproduce", help="reproduce the paper's findings; --settle writes docs/results.md")
    p.add_argument("--settle", action="store_true",
                   help="settle the findings per model class: ground truth with common random numbers, point "
                        "addition at 500 and 5,000, extrapolation; writes docs/results/*.csv and docs/results.md")
    p.add_argument("--depth", type=int, nargs="+", default=None,
                   help="with --settle: non-linear ground-truth samples per size, raised in these passes "
                        "(default 16 32 64)")
    p.add_argument("--repeats", type=int, default=1000, help="with --settle: point-addition initial sets per regime")
    p.add_argument("--seed", type=int, default=0,
                   help="with --settle: the non-linear ground truths' seed; on a machine without the seed-0 ledgers "
                        "another seed adds independent rounds to the committed archive (default 0)")
    p.add_argument("--quick", action="store_true", help="every protocol at a small scale")
    p.add_argument("--out", default=None, help="working folder (default runs/settle with --settle, else "
                                               "runs/reproduce)")
    p.add_argument("--results", default=None,
                   help="the page (default docs/results.md with --settle, else OUT/results.md)")
    p.add_argument("--datasets", nargs="+", help="default: adult and magic (if installed), else breast_cancer")
    p.add_argument("--models", nargs="+", help="a subset of the scale's models (default: all)")
    p.add_argument("--gt-per-size", type=int, default=None,
                   help="logistic regression's ground-truth samples per size (e.g. the scale a resumed ledger "
                        "reached); default: the scale's")
    p.add_argument("--page-only", action="store_true",
                   help="re-render the page from the tables already under --out (no compute)")
    p.add_argument("--with-runs", nargs="+", metavar="DIR",
                   help="with --page-only: merge the tables of these runs of the same scale (other datasets)")
    return parser


# --------------------------------------------------------------------------- commands


def check_run_folder(path: str | None, flag: str = "--out") -> None:
    """The run folder is a folder (or can be created as one) and this user can write in it.

    Checked before anything starts (no server, no data read), by writing and
    removing a probe file: one line naming the path, the problem and the fix.
    Without ``path`` the default root ``runs/`` is checked. An fsspec URL
    (``s3://bucket/runs/x``) is never taken for a local folder name: its
    protocol's package must be installed, the bucket must exist and the
    credentials must allow writing there (:func:`pointscale.storage.open_store`).
    """
    from pointscale.errors import ConfigError
    from pointscale.storage import is_url, open_store

    if path and is_url(path):
        store = open_store(path)
        if store.remote:
            return
        path = store.path  # file://
    target = Path(path if path else "runs").absolute()
    said = f"{flag} {path}" if path else "the default run folder runs/"
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == target else f"cannot be created: {existing} is a file"
        raise ConfigError(f"{said}: {target} {where}; give a folder path (new or existing) for the run")
    try:
        fd, probe = tempfile.mkstemp(prefix=".pointscale-write-check-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{said}: cannot write in {existing} ({exc.strerror or exc}); give a folder you can "
                          "write to, or fix its permissions") from None


def _validate(options: SamplingOptions, workers: int | None = None) -> tuple[Any, Any]:
    """Load the data and resolve the sampling config before any compute."""
    from pointscale.data import load_dataset

    data = options.data_config()
    ds = load_dataset(data.pop("source"), **data)
    # Imported after the data is read: a bad file is said before the model code loads (seconds).
    from pointscale.pipeline import choose_points, resolve_sampling

    chosen = choose_points(ds, options.points, options.seed)
    # The flow resolves the config again at its entry and warns there, once per run.
    cfg = resolve_sampling(ds, n_points=len(chosen), workers=workers, warn=False, **options.sampling_kwargs())
    # What reading the data did to it (rows or columns dropped, dates converted, values imputed).
    for line in ds.report.get("data_preparation", ()):
        print(f"data: {line}", file=sys.stderr)
    return ds, cfg


def _preflight(options: PipelineOptions, workers: int | None) -> str:
    """:func:`_validate` for ``pointscale run``: the model's name, with the data read in a child process.

    The command's own process runs the flow; reading the data here would
    leave its peak memory at the size of the data (1.5 GB at 10^6 points),
    while the flow reads it only on a worker. A forked child reads and
    checks it and exits (its errors come back as they are: one line, exit
    2); where processes cannot be forked it is read here.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if "fork" not in multiprocessing.get_all_start_methods():
        return _model_name(options, workers)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as child:
        return child.submit(_model_name, options, workers).result()


def _model_name(options: PipelineOptions, workers: int | None) -> str:
    _, cfg = _validate(options, workers)
    return cfg.model if isinstance(cfg.model, str) else "custom"


def _server(stack: ExitStack) -> None:
    """Use PREFECT_API_URL if set; else start a local server for this command."""
    if os.environ.get("PREFECT_API_URL"):
        return
    from .runtime import local_prefect_server

    print("starting a local Prefect server on 127.0.0.1 ...", file=sys.stderr)
    url = stack.enter_context(local_prefect_server())
    print(f"Prefect API at {url} (UI: {url[:-4]})", file=sys.stderr)


def cmd_run(args) -> int:
    from pointscale.storage import set_storage_options

    options = options_from_args(PipelineOptions, args)
    set_storage_options(options.storage_options)
    check_run_folder(args.out)
    model = _preflight(options, options.workers)
    from .sampling import check_dask_address

    check_dask_address(options.dask_address)
    with ExitStack() as stack:
        _server(stack)
        from flows.pipeline import _name, pipeline_flow

        from .progress import reporting, terminal_reporter

        # The model is known now: the flow run gets its final name from the start (its
        # log lines and its title agree; a served run is renamed once it knows it).
        flow = pipeline_flow.with_options(flow_run_name=_name(options.model_dump(), model))
        start = time.perf_counter()
        with reporting(terminal_reporter()):
            result = flow(options=options, out=args.out, wait_for_lock=args.wait)
    print(result["summary"])
    print(f"\nresults in {result['run_dir']}  (report: {result['report']}; {time.perf_counter() - start:.0f} s)")
    return 0


def cmd_revalue(args) -> int:
    from pointscale.pipeline import check_extension

    from .sampling import check_dask_address

    check_run_folder(args.run_dir, "--run-dir")
    execution = options_from_args(ExecutionOptions, args)
    check_extension(args.run_dir, args.dataset)  # bad new data: one line, before any server or fit
    check_dask_address(execution.dask_address)
    with ExitStack() as stack:
        _server(stack)
        from flows.pipeline import revalue_flow

        from .progress import reporting, terminal_reporter

        with reporting(terminal_reporter()):
            result = revalue_flow(source=args.dataset, run_dir=args.run_dir, execution=execution)
    if not result.get("changed", True):
        print(f"dataset unchanged; nothing to do ({result['run_dir']})")
        return 0
    from pointscale.revaluation import revaluation_sentence

    print(result["summary"])
    print("\n" + revaluation_sentence(result["new_points"], result.get("values_change"), result.get("triage")))
    print(f"results in {result['run_dir']}")
    return 0


def cmd_ingest(args) -> int:
    check_run_folder(args.out)
    from pointscale import pipeline

    options = options_from_args(DataOptions, args)
    info = pipeline.ingest(options.data_config(), args.out)
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_sample(args) -> int:
    from pointscale import pipeline
    from pointscale.data import open_dataset
    from pointscale.runs import RunFolder
    from pointscale.sampling import Ledger, sample_marginals

    check_run_folder(args.out)
    options = options_from_args(SamplingOptions, args)
    ds, cfg = _validate(options)
    info = pipeline.ingest(options.data_config(), args.out)
    run = RunFolder(info["run_dir"])
    stored = open_dataset(info["path"])
    points = pipeline.choose_points(stored, options.points, options.seed)
    with run.lock():
        pipeline.save_point_groups(run.root, [points])
        start = time.perf_counter()
        frame = sample_marginals(stored, cfg, points, ledger=Ledger(run.samples), progress=_progress_bar())
    print(f"\n{len(frame)} samples in {run.samples} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0


def _progress_bar():
    def show(done: int, total: int) -> None:
        width = 40
        filled = int(width * done / max(total, 1))
        sys.stderr.write(f"\rsampling [{'#' * filled}{'.' * (width - filled)}] {done}/{total} samples")
        sys.stderr.flush()

    return show


def cmd_addition(args) -> int:
    import pandas as pd

    from pointscale.data import open_dataset
    from pointscale.io import atomic_write_parquet
    from pointscale.laws import FittedScalingLaws
    from pointscale.runs import RunFolder
    from pointscale.valuation import point_addition_experiment

    run = RunFolder(args.run_dir)
    manifest = run.read_manifest()
    if "dataset" not in manifest:
        from pointscale.errors import ConfigError

        raise ConfigError(f"{args.run_dir} holds no finished run (run.json missing)")
    ds = open_dataset(manifest["dataset"]["path"])
    laws = FittedScalingLaws.load(run.file("laws_mle.parquet"))
    sampling = manifest["config"]["sampling"]
    result = point_addition_experiment(ds, laws, model=sampling["model"], model_params=sampling["model_params"],
                                       n_small=args.n_small, n_large=args.n_large, m=args.m,
                                       repeats=args.repeats, seed=manifest["config"]["data"]["seed"])
    frame = result.to_frame() if hasattr(result, "to_frame") else pd.DataFrame(result)
    atomic_write_parquet(run.file("addition.parquet"), frame)
    print(result)
    return 0


def cmd_server(args) -> int:
    from .runtime import local_prefect_server

    with local_prefect_server(port=args.port, timeout=120) as url:
        print(f"Prefect UI at {url[:-4]}  (API: {url}); export PREFECT_API_URL={url}", flush=True)
        print("Ctrl-C to stop.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_serve(args) -> int:
    from flows.deployments import serve_all

    serve_all(options_from_args(ServeOptions, args), options_from_args(PipelineOptions, args))
    return 0


def cmd_reproduce(args) -> int:
    from flows.reproduce import main as reproduce_main

    if args.settle:
        from flows.reproduce import settle_main

        return settle_main(out=args.out or "runs/settle", results=args.results or "docs/results.md",
                           depths=args.depth or [16, 32, 64], repeats=args.repeats, page_only=args.page_only,
                           datasets=args.datasets, models=args.models, seed=args.seed)
    out = args.out or "runs/reproduce"
    return reproduce_main(quick=args.quick, out=out, results=args.results or str(Path(out) / "results.md"),
                          datasets=args.datasets,
                          models=args.models, gt_per_size=args.gt_per_size, page_only=args.page_only,
                          with_runs=args.with_runs)


COMMANDS = {
    "run": cmd_run, "revalue": cmd_revalue, "ingest": cmd_ingest, "sample": cmd_sample,
    "addition": cmd_addition, "server": cmd_server, "serve": cmd_serve, "reproduce": cmd_reproduce,
}


def main(argv: Sequence[str] | None = None) -> int:
    configure_environment()
    # SIGTERM ends the command like Ctrl-C does: a local Prefect server it started is stopped.
    terminate_on_sigterm()
    args = build_parser().parse_args(argv)
    from pointscale.errors import PointscaleError

    try:
        return COMMANDS[args.command](args)
    except PointscaleError as exc:
        print(f"pointscale: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_status", EXIT_USAGE)
    except KeyboardInterrupt:
        print("pointscale: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
