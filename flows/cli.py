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
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence

from .runtime import configure_environment

EXIT_USAGE = 2
EXIT_FAILED = 1


def _points(value: str) -> int | str:
    if value == "all":
        return "all"
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--points must be a positive integer or 'all', not {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"--points must be a positive integer or 'all', not {n}")
    return n


def _kv(items: Sequence[str] | None) -> dict[str, Any]:
    """``--model-param max_depth=3`` pairs; values parsed as JSON when they can be."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"pointscale: error: --model-param {item!r} must look like name=value")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="breast_cancer",
                   help="built-in name (breast_cancer, digits, diabetes; after `make data`: adult, magic, "
                        "california) or a CSV/Parquet file or folder (default: %(default)s)")
    p.add_argument("--target", help="target column (required for files)")
    p.add_argument("--id-column", help="column with stable point ids (default: ids from row content)")
    p.add_argument("--task", choices=["classification", "regression"], help="default: inferred from the target")
    p.add_argument("--seed", type=int, default=0, help="root seed of every random draw (default: %(default)s)")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="logreg", help="model registry name (default: %(default)s)")
    p.add_argument("--model-param", action="append", metavar="NAME=VALUE",
                   help="extra model setting, repeatable (e.g. n_estimators=100)")
    p.add_argument("--metric", help="utility: neg_log_loss, accuracy, paper_ce (classification), neg_mse "
                                    "(regression); default by task")
    p.add_argument("--points", type=_points, default="all", help="N points drawn with the seed, or all")
    p.add_argument("--samples-per-point", type=int, default=100, help="(default: %(default)s)")
    p.add_argument("--k-min", type=int, help="smallest subset size (default: 100, or less if the data is small)")
    p.add_argument("--k-max", type=int, help="largest subset size (default: 1000, or the largest the data allows)")
    p.add_argument("--block-size", type=int, default=32, help="points sharing one base subset (default: %(default)s)")
    p.add_argument("--shard-size", type=int,
                   help="blocks per task (default: about 2 s of fits per task, >= 4 tasks per worker)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pointscale",
        description="How much is each training example worth, and how does that change as the dataset grows?",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the whole pipeline as a Prefect flow",
                       description="Ingest, sample marginal contributions on Dask, fit the laws, value and "
                                   "select points, write the report. Rerun the same command after a crash.")
    _add_data_args(p)
    _add_sampling_args(p)
    p.add_argument("--workers", type=int, help="local Dask workers (default: one per core)")
    p.add_argument("--dask-address", help="run sampling on an existing Dask cluster, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--out", help="run folder (default: runs/<dataset>-<fingerprint[:8]>)")
    p.add_argument("--no-amortized", action="store_true", help="skip the amortized estimator")
    p.add_argument("--no-removal", action="store_true", help="skip the removal curve")
    p.add_argument("--select", type=int, default=50, dest="select_m", help="points to select (default: %(default)s)")
    p.add_argument("--target-sizes", type=int, nargs="+", help="sizes to value at (default: pool size and 10x)")
    p.add_argument("--wait", action="store_true", help="wait if another run holds the run folder")

    p = sub.add_parser("revalue", help="extend a run with new data and revalue incrementally",
                       description="Reuse every sample of the run's points, sample only new points, refit.")
    p.add_argument("--run-dir", required=True, help="run folder of an earlier `pointscale run`")
    p.add_argument("--dataset", required=True, help="the new data file or folder (a superset of the old rows)")
    p.add_argument("--workers", type=int)
    p.add_argument("--dask-address")

    p = sub.add_parser("ingest", help="validate and store a dataset version, print its report")
    _add_data_args(p)
    p.add_argument("--out", help="run folder (default: runs/<dataset>-<fingerprint[:8]>)")

    p = sub.add_parser("sample", help="sample in-process with a progress bar (no orchestrator)",
                       description="Runs the same sampling code as the flow, in this process, into a ledger.")
    _add_data_args(p)
    _add_sampling_args(p)
    p.add_argument("--out", help="run folder (default: runs/<dataset>-<fingerprint[:8]>)")

    p = sub.add_parser("addition", help="point-addition experiment on a finished run",
                       description="Rank candidates by predicted value at a small and a large size, by a "
                                   "Shapley value and at random; add the top m; report test-accuracy change.")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--n-small", type=int, default=500)
    p.add_argument("--n-large", type=int, default=5000)
    p.add_argument("--m", type=int, default=100)
    p.add_argument("--repeats", type=int, default=20)

    p = sub.add_parser("server", help="start a Prefect server and UI on 127.0.0.1")
    p.add_argument("--port", type=int, default=4200)

    p = sub.add_parser("serve", help="serve the deployments against PREFECT_API_URL",
                       description="The pipeline on a cron schedule, a data watcher on an interval, and the "
                                   "event-triggered revaluation.")
    p.add_argument("--data-dir", required=True, help="folder watched for new or changed datasets")
    p.add_argument("--watch-interval", type=float, default=60.0, help="seconds between scans (default: 60)")
    p.add_argument("--cron", default="0 3 * * *", help="pipeline schedule (default: %(default)s)")
    p.add_argument("--runs-dir", default="runs", help="where revaluation run folders live")
    p.add_argument("--target", help="target column of the watched files")
    p.add_argument("--dataset", default="breast_cancer", help="dataset of the scheduled pipeline run")
    p.add_argument("--id-column", help="column with stable point ids in the watched files "
                                       "(default: ids from row content)")
    p.add_argument("--points", type=_points, default="all", help="N points drawn with the seed, or all")
    p.add_argument("--samples-per-point", type=int, default=100, help="(default: %(default)s)")
    p.add_argument("--k-min", type=int, help="smallest subset size (default: 100, or less if the data is small)")
    p.add_argument("--k-max", type=int, help="largest subset size (default: 1000, or the largest the data allows)")
    p.add_argument("--seed", type=int, default=0, help="root seed of every random draw (default: %(default)s)")
    p.add_argument("--workers", type=int, help="local Dask workers per run (default: one per core)")
    p.add_argument("--dask-address", help="run sampling on an existing Dask cluster, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--no-amortized", action="store_true", help="skip the amortized estimator")
    p.add_argument("--no-removal", action="store_true", help="skip the removal curve")
    p.add_argument("--min-age", type=float, default=1.0, dest="min_age_seconds",
                   help="seconds a file must be unchanged before the watcher reports it (default: %(default)s)")
    p.add_argument("--limit", type=int, help="flow runs served at once (default: Prefect's runner limit)")

    p = sub.add_parser("reproduce", help="reproduce the paper's findings; writes docs/results.md")
    p.add_argument("--quick", action="store_true", help="every protocol at a small scale")
    p.add_argument("--out", default="runs/reproduce")
    p.add_argument("--results", default="docs/results.md")
    p.add_argument("--datasets", nargs="+", help="default: adult and magic (if installed), else breast_cancer")
    p.add_argument("--models", nargs="+", help="a subset of the scale's models (default: all)")
    p.add_argument("--gt-per-size", type=int, default=None,
                   help="logistic regression's ground-truth samples per size (e.g. the scale a resumed ledger "
                        "reached); default: the scale's")
    p.add_argument("--page-only", action="store_true",
                   help="re-render the page from the tables already under --out (no compute)")
    return parser


# --------------------------------------------------------------------------- commands


def _validate(args) -> tuple[Any, Any]:
    """Load the data and resolve the sampling config before any compute."""
    from pointscale.data import load_dataset
    from pointscale.pipeline import choose_points, resolve_sampling

    ds = load_dataset(args.dataset, target=args.target, id_column=args.id_column, task=args.task, seed=args.seed)
    chosen = choose_points(ds, args.points, args.seed)
    cfg = resolve_sampling(ds, model=args.model, metric=args.metric, k_min=args.k_min, k_max=args.k_max,
                           samples_per_point=args.samples_per_point, seed=args.seed, block_size=args.block_size,
                           shard_size=args.shard_size, n_points=len(chosen), model_params=_kv(args.model_param),
                           workers=getattr(args, "workers", None))
    return ds, cfg


def _server(stack: ExitStack) -> None:
    """Use PREFECT_API_URL if set; else start a local server for this command."""
    if os.environ.get("PREFECT_API_URL"):
        return
    from .runtime import local_prefect_server

    print("starting a local Prefect server on 127.0.0.1 ...", file=sys.stderr)
    url = stack.enter_context(local_prefect_server())
    print(f"Prefect API at {url} (UI: {url[:-4]})", file=sys.stderr)


def cmd_run(args) -> int:
    ds, cfg = _validate(args)
    with ExitStack() as stack:
        _server(stack)
        from flows.pipeline import pipeline_flow

        start = time.perf_counter()
        result = pipeline_flow(
            dataset=args.dataset, target=args.target, id_column=args.id_column, task=args.task, model=args.model,
            model_params=_kv(args.model_param), metric=args.metric, points=args.points, samples_per_point=args.samples_per_point,
            k_min=cfg.k_min, k_max=cfg.k_max, seed=args.seed, block_size=args.block_size,
            shard_size=args.shard_size, workers=args.workers, dask_address=args.dask_address, out=args.out,
            amortized=not args.no_amortized, select_m=args.select_m, target_sizes=args.target_sizes,
            removal=not args.no_removal, wait_for_lock=args.wait,
        )
    print(result["summary"])
    print(f"\nresults in {result['run_dir']}  (report: {result['report']}; {time.perf_counter() - start:.0f} s)")
    return 0


def cmd_revalue(args) -> int:
    with ExitStack() as stack:
        _server(stack)
        from flows.pipeline import revalue_flow

        result = revalue_flow(source=args.dataset, run_dir=args.run_dir, workers=args.workers,
                              dask_address=args.dask_address)
    if not result.get("changed", True):
        print(f"dataset unchanged; nothing to do ({result['run_dir']})")
        return 0
    print(result["summary"])
    print(f"\n{result['new_points']} new points; values change: {result.get('values_change')}")
    print(f"results in {result['run_dir']}")
    return 0


def cmd_ingest(args) -> int:
    from pointscale import pipeline

    data = {"source": args.dataset, "target": args.target, "id_column": args.id_column, "task": args.task,
            "seed": args.seed}
    info = pipeline.ingest(data, args.out)
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_sample(args) -> int:
    from pointscale import pipeline
    from pointscale.data import open_dataset
    from pointscale.runs import RunFolder
    from pointscale.sampling import Ledger, sample_marginals

    ds, cfg = _validate(args)
    data = {"source": args.dataset, "target": args.target, "id_column": args.id_column, "task": args.task,
            "seed": args.seed}
    info = pipeline.ingest(data, args.out)
    run = RunFolder(info["run_dir"])
    stored = open_dataset(info["path"])
    points = pipeline.choose_points(stored, args.points, args.seed)
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
    result = point_addition_experiment(ds, laws, model=manifest["config"]["sampling"]["model"],
                                       n_small=args.n_small, n_large=args.n_large, m=args.m,
                                       repeats=args.repeats, seed=manifest["config"]["data"]["seed"])
    frame = result.to_frame() if hasattr(result, "to_frame") else pd.DataFrame(result)
    atomic_write_parquet(run.file("addition.parquet"), frame)
    print(result)
    return 0


def cmd_server(args) -> int:
    from .runtime import local_prefect_server

    with local_prefect_server(port=args.port, timeout=120) as url:
        print(f"Prefect UI at {url[:-4]}  (API: {url}); export PREFECT_API_URL={url}")
        print("Ctrl-C to stop.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_serve(args) -> int:
    from flows.deployments import serve_all

    serve_all(data_dir=args.data_dir, watch_interval=args.watch_interval, cron=args.cron,
              runs_dir=args.runs_dir, target=args.target, dataset=args.dataset, limit=args.limit,
              id_column=args.id_column, points=args.points, samples_per_point=args.samples_per_point,
              k_min=args.k_min, k_max=args.k_max, seed=args.seed, workers=args.workers,
              dask_address=args.dask_address, amortized=not args.no_amortized, removal=not args.no_removal,
              min_age_seconds=args.min_age_seconds)
    return 0


def cmd_reproduce(args) -> int:
    from flows.reproduce import main as reproduce_main

    return reproduce_main(quick=args.quick, out=args.out, results=args.results, datasets=args.datasets,
                          models=args.models, gt_per_size=args.gt_per_size, page_only=args.page_only)


COMMANDS = {
    "run": cmd_run, "revalue": cmd_revalue, "ingest": cmd_ingest, "sample": cmd_sample,
    "addition": cmd_addition, "server": cmd_server, "serve": cmd_serve, "reproduce": cmd_reproduce,
}


def main(argv: Sequence[str] | None = None) -> int:
    configure_environment()
    args = build_parser().parse_args(argv)
    from pointscale.errors import PointscaleError

    try:
        return COMMANDS[args.command](args)
    except PointscaleError as exc:
        print(f"pointscale: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("pointscale: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
