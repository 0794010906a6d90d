"""Issue 26's done-when, by hand: adult on a 2-worker cluster with the run folder on S3 equals the local run.

``python -m benchmarks.cluster_check [--points 5000] [--work DIR]`` starts what the flow test
``tests/flows/test_cluster_stages.py`` starts -- moto's S3 server on 127.0.0.1 (credentials and
endpoint through the standard AWS variables), a Prefect server, ``dask scheduler`` and two
``dask worker ADDRESS`` processes each in an empty folder of its own with nothing but PATH, a home
and the AWS variables in its environment -- and runs ``pointscale run --dataset adult --points N``
four times: to ``s3://`` and to a local folder, then the same with ``--dataset`` an ``s3://`` CSV of
the same data (and the local CSV). It writes the wall seconds of each run and the largest absolute
difference of the values tables (S3 vs local) to ``benchmarks/results/cluster-check.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results" / "cluster-check.json"
_AWS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@contextmanager
def _process(args: list[str], folder: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    from flows.runtime import stop_process_group

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "log.txt", "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(folder), start_new_session=True)
    try:
        yield proc
    finally:
        stop_process_group(proc, grace=10.0)


def bare_cluster(stack: ExitStack, root: Path, n_workers: int = 2) -> str:
    """``dask scheduler`` and ``dask worker ADDRESS`` processes in empty folders, bare environments."""
    from distributed import Client

    from flows.runtime import free_port

    dask = str(Path(sys.executable).with_name("dask"))
    address = f"tcp://127.0.0.1:{free_port()}"
    for i, args in enumerate([["scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                               "--no-dashboard"]] + [["worker", address]] * n_workers):
        folder = root / ("scheduler" if i == 0 else f"worker-{i}")
        env = {"PATH": os.environ["PATH"], "HOME": str(folder), "LANG": "C.UTF-8",
               **{k: os.environ[k] for k in _AWS if k in os.environ}}
        stack.enter_context(_process([dask, *args], folder, env))
    with Client(address, timeout=60) as client:
        client.wait_for_workers(n_workers, timeout=120)
    return address


def max_difference(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Largest absolute difference of the float columns of two values tables (NaN where both are NaN)."""
    a = a.sort_values("point_id").reset_index(drop=True)
    b = b.sort_values("point_id").reset_index(drop=True)
    if list(a["point_id"]) != list(b["point_id"]) or list(a.columns) != list(b.columns):
        return float("inf")
    diff = 0.0
    for c in (c for c in a.columns if pd.api.types.is_float_dtype(a[c])):
        x, y = a[c].to_numpy(), b[c].to_numpy()
        if (np.isnan(x) != np.isnan(y)).any():
            return float("inf")
        if (~np.isnan(x)).any():
            diff = max(diff, float(np.abs(x - y)[~np.isnan(x)].max()))
    return diff


def _facts(folder: Path) -> dict:
    """What a finished run folder (or a URL run's working copy) says of itself."""
    manifest = json.loads((folder / "run.json").read_text())
    return {"seconds": manifest.get("total_seconds"), "status": manifest.get("status"),
            "points": manifest["points"]["n"], "samples": manifest["counts"]["samples_planned"],
            "partitions": manifest["outputs"]["values"]["result"].get("partitions"),
            "stage_seconds": manifest.get("timings"), "dataset": manifest["config"]["options"].get("dataset"),
            "options": {k: manifest["config"]["options"].get(k) for k in ("samples_per_point", "partition_points")}}


def collect(work: Path) -> dict:
    """The record from the folders of a check stopped after its first two runs (``--collect``).

    The S3 run's values are read from the flow's working copy of its run folder
    (``flow-cache``: the flow copies every table it reports from there), so the
    record survives the in-memory S3 server.
    """
    copies = [p.parent for p in (work / "flow-cache" / "runs").glob("*/run.json")]
    remote = [c for c in copies if json.loads((c / "run.json").read_text())["config"]["options"]["dataset"]
              == "adult"]
    out: dict = {"runs": {}, "collected_from": "run folders (the check was stopped after its first two runs)"}
    pairs = (("s3", remote[0] if remote else None), ("local", work / "local"))
    for name, folder in pairs:
        if folder is None or not (folder / "values.parquet").exists():
            continue
        out["runs"][name] = _facts(folder)
    if len(out["runs"]) == 2:
        out["max_abs_difference_s3_vs_local"] = max_difference(pd.read_parquet(remote[0] / "values.parquet"),
                                                               pd.read_parquet(work / "local" / "values.parquet"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=5000)
    parser.add_argument("--samples-per-point", type=int, default=None)
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--collect", action="store_true",
                        help="no runs: write the record of a stopped check from the run folders under --work")
    parser.add_argument("--pairs", nargs="+", choices=("adult", "csv"), default=["adult", "csv"],
                        help="which pairs to run (adult: the registry's adult to s3:// and local; csv: the same "
                             "data as a CSV at an s3:// URL and a local one); the others' records are kept")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `pointscale run` options")
    args = parser.parse_args(argv)
    if args.collect:
        out = collect(Path(args.work))
        Path(args.results).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
        print(json.dumps(out, indent=1))
        return 0
    from benchmarks.s3server import local_s3_server, make_bucket
    from flows.runtime import local_prefect_server
    from pointscale.data.sources import _adult
    from pointscale.storage import Store

    work = Path(args.work or tempfile.mkdtemp(prefix="pointscale-cluster-check-"))
    work.mkdir(parents=True, exist_ok=True)
    csv = work / "adult.csv"
    _adult()[0].to_csv(csv, index=False)
    extra = list(args.extra)
    if args.samples_per_point:
        extra += ["--samples-per-point", str(args.samples_per_point)]
    out: dict = {"points": args.points, "extra_options": extra, "runs": {}, "machine": os.uname().nodename,
                 "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with ExitStack() as stack:
        stack.enter_context(local_s3_server())
        bucket = make_bucket(f"cluster-check-{int(time.time())}")
        Store(bucket).write_bytes("data/adult.csv", csv.read_bytes())
        stack.enter_context(local_prefect_server(log_path=work / "prefect.log"))
        address = bare_cluster(stack, work / "cluster")
        runs = {
            "s3": ["--dataset", "adult", "--out", f"{bucket}/runs/adult"],
            "local": ["--dataset", "adult", "--out", str(work / "local")],
            "s3-csv": ["--dataset", f"{bucket}/data/adult.csv", "--target", "income", "--out", f"{bucket}/runs/csv"],
            "local-csv": ["--dataset", str(csv), "--target", "income", "--out", str(work / "local-csv")],
        }
        wanted = {"adult": ("s3", "local"), "csv": ("s3-csv", "local-csv")}
        runs = {name: a for name, a in runs.items() if any(name in wanted[p] for p in args.pairs)}
        flow_dir = work / "flow"
        flow_dir.mkdir(exist_ok=True)
        for name, run_args in runs.items():
            cmd = [sys.executable, "-m", "flows.cli", "run", "--dask-address", address, "--points",
                   str(args.points), *extra, *run_args]
            started = time.monotonic()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=flow_dir,
                                  env=dict(os.environ, POINTSCALE_CACHE=str(work / "flow-cache")))
            seconds = round(time.monotonic() - started, 1)
            print(f"{name}: exit {proc.returncode} in {seconds} s", file=sys.stderr)
            if proc.returncode != 0:
                print(proc.stdout[-2000:] + proc.stderr[-4000:], file=sys.stderr)
                return 1
            where = run_args[-1]
            values = Store(where).read_parquet("values.parquet").to_pandas() if where.startswith("s3://") \
                else pd.read_parquet(Path(where) / "values.parquet")
            manifest = Store(where).read_json("run.json")
            out["runs"][name] = {"seconds": seconds, "points": int(len(values)),
                                 "partitions": manifest["outputs"]["values"]["result"].get("partitions"),
                                 "samples": manifest["counts"]["samples_planned"],
                                 "stage_seconds": manifest.get("timings")}
            out["runs"][name]["_values"] = values
        for remote, local in (("s3", "local"), ("s3-csv", "local-csv")):
            if remote not in runs:
                continue
            out[f"max_abs_difference_{remote}_vs_{local}"] = max_difference(out["runs"][remote]["_values"],
                                                                           out["runs"][local]["_values"])
    for run in out["runs"].values():
        run.pop("_values")
    results = Path(args.results)
    if results.exists() and set(args.pairs) != set(wanted):  # keep the other pair's record (its own date)
        earlier = json.loads(results.read_text())
        kept = {k: v for k, v in earlier.get("runs", {}).items() if k not in out["runs"]}
        out = {**{k: v for k, v in earlier.items() if k.startswith("max_abs") and k not in out},
               **out, "runs": {**kept, **out["runs"]}, "earlier_pairs": {k: earlier.get(k) for k in
                                                                        ("date", "collected_from") if earlier.get(k)}}
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k.startswith("max_abs")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
