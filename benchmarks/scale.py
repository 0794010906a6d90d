"""Benchmark: how each pipeline stage's cost grows with the number of points (issue 17).

Run ``nice -n 10 python -m benchmarks.scale`` (heavy: the 10^6 run samples 3·10^6
Δ and takes tens of minutes on 2 cores; ``--sizes 10000 100000`` for a
shorter run, ``--quick`` for 10^3..10^4).

What it measures, all through the same code path as ``pointscale run``:

* Synthetic classification data (``make_classification``, d = 20 features,
  10 informative, 1 % label noise) with n pool points (plus 1000 validation and
  1000 test rows), written as a Parquet file with an id column.
* For each n: the real CLI, ``pointscale run --dataset FILE --target label
  --id-column row_id --points all --samples-per-point S --workers 2`` (the
  default model, logistic regression, and the default metric), in a
  subprocess against one local Prefect server started here for all sizes (so
  the server's start-up is not charged to any size).
* **Wall time per stage** from the run's manifest (``run.json`` → ``timings``:
  ingest, sample, fit_mle, fit_amortized, value_select, removal, report) and the
  whole command's wall time.
* **Peak RSS**: the process tree of the command (the CLI and its Dask
  workers) polled every 0.25 s: the largest single process and the largest
  sum over the tree.
* **Ledger bytes per sample** (committed Parquet bytes / rows) and the
  scheduler's task count (shards = sampling task runs).
* **Growth exponent** of each stage between consecutive sizes:
  ``log(t2 / t1) / log(n2 / n1)`` (1.0 = linear). Target: ≤ 1.15 between
  10^5 and 10^6 for every stage.

Results go to ``benchmarks/results/scale.json`` as each size finishes (a
rerun skips sizes already there with the same settings; ``--force`` redoes
them) and the table is printed in Markdown. The machine may be shared: the
numbers say "measured under load" when the 1-minute load average exceeded
the cores at the start of a size (recorded per size).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "scale.json"
STAGES = ("ingest", "sample", "fit_mle", "fit_amortized", "value_select", "removal", "report")
N_FEATURES = 20
HOLDOUT_ROWS = 2000  # 1000 validation + 1000 test rows (the defaults' caps)


def make_data(n_pool: int, path: Path, seed: int = 0) -> Path:
    """Synthetic binary classification data with ``n_pool`` training-pool rows."""
    from sklearn.datasets import make_classification

    if path.exists():
        return path
    X, y = make_classification(n_samples=n_pool + HOLDOUT_ROWS, n_features=N_FEATURES, n_informative=10,
                               n_redundant=4, flip_y=0.01, random_state=seed)
    frame = pd.DataFrame(X.astype(np.float32), columns=[f"x{i:02d}" for i in range(N_FEATURES)])
    frame.insert(0, "row_id", [f"r{i:07d}" for i in range(len(frame))])
    frame["label"] = y
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


class TreeMemory:
    """Peak RSS of a process and its descendants, polled in a thread."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_sum = 0
        self.peak_single = 0
        self.peak_root = 0
        self.peak_worker = 0  # a Dask worker or nanny (not the CLI, not a Prefect server)
        self._kinds: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.Error:
                break
            total = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                self.peak_single = max(self.peak_single, rss)
                if p.pid == self.root.pid:
                    self.peak_root = max(self.peak_root, rss)
                elif self._kind(p) == "worker":
                    self.peak_worker = max(self.peak_worker, rss)
            self.peak_sum = max(self.peak_sum, total)
            self._stop.wait(self.interval)

    def _kind(self, proc) -> str:
        import psutil

        kind = self._kinds.get(proc.pid)
        if kind is None:
            try:
                cmd = " ".join(proc.cmdline())
            except psutil.Error:
                return "unknown"
            kind = self._kinds[proc.pid] = "server" if "prefect" in cmd and "server" in cmd else "worker"
        return kind

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _run_cli(args: list[str], out: Path, log_path: Path, timeout: float, env: dict,
             kill_after_shards: int | None = None) -> dict:
    """``pointscale run ARGS --out OUT`` in its own session; wall time and peak RSS of its tree.

    With ``kill_after_shards``, the whole process group is SIGKILLed as soon as
    that many ledger shards are committed (the crash of a resume check).
    """
    import signal

    import resource

    cmd = [sys.executable, "-m", "flows.cli", "run", *args, "--out", str(out)]
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        mem = TreeMemory(proc.pid)
        killed = False
        try:
            deadline = started + timeout
            while proc.poll() is None:
                if time.perf_counter() > deadline:
                    os.killpg(proc.pid, signal.SIGKILL)
                    raise RuntimeError(f"{' '.join(cmd)} ran past {timeout:.0f} s; see {log_path}")
                if kill_after_shards is not None:
                    shards = out / "samples" / "shards"
                    done = len(list(shards.glob("*.parquet.sha256"))) if shards.exists() else 0
                    if done >= kill_after_shards:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                        killed = True
                        break
                time.sleep(0.2)
        finally:
            mem.stop()
            try:  # Dask workers can outlive the leader in its group
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the command and every descendant it waited for (workers included):
    # on a shared machine, cpu / cores bounds what the wall time would be without the others.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if not killed and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode} after {wall:.0f} s:\n"
                           f"{log_path.read_text()[-3000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 1), "killed": killed,
            "peak_rss_tree_mb": round(mem.peak_sum / 2**20, 1),
            "peak_rss_process_mb": round(mem.peak_single / 2**20, 1),
            "peak_rss_cli_mb": round(mem.peak_root / 2**20, 1),
            "peak_rss_worker_mb": round(mem.peak_worker / 2**20, 1),
            "load_1min_at_start": round(load, 2), "under_load": load > (os.cpu_count() or 1),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _run_facts(out: Path) -> dict:
    """Stage timings, counts and ledger size of a finished run folder."""
    from pointscale.sampling import Ledger

    manifest = json.loads((out / "run.json").read_text())
    stats = Ledger(out / "samples").stats()
    counts = manifest.get("counts", {})
    # Everything the ledger folder holds (sample shards, commit records, and any
    # evidence files recorded beside them), not only the sample Parquet bytes.
    on_disk = sum(p.stat().st_size for p in (out / "samples").rglob("*")
                  if p.is_file() and "quarantine" not in p.parts)
    return {
        "n_pool": int(manifest["dataset"]["n_pool"]),
        "timings": {s: manifest.get("timings", {}).get(s) for s in STAGES},
        "counts": counts,
        "ledger_rows": stats["rows"],
        "ledger_bytes": on_disk,
        "ledger_sample_parquet_bytes": stats["bytes"],
        "ledger_bytes_per_sample": round(on_disk / max(stats["rows"], 1), 2),
        "shards": counts.get("shards_planned"),
        "fits": counts.get("fits_executed"),
        "sample_seconds_per_sample": round((manifest["timings"].get("sample") or 0) / max(stats["rows"], 1), 8),
    }


def run_size(n_pool: int, spp: int, work: Path, workers: int, timeout: float, env: dict) -> dict:
    """One ``pointscale run`` at ``n_pool`` synthetic points; its timings, memory and ledger facts."""
    data = make_data(n_pool, work / f"synthetic-{n_pool}.parquet")
    out = work / f"run-{n_pool}-s{spp}"
    if out.exists():  # a fresh run every time: nothing reused from an earlier attempt
        import shutil

        shutil.rmtree(out)
    args = ["--dataset", str(data), "--target", "label", "--id-column", "row_id", "--points", "all",
            "--samples-per-point", str(spp), "--workers", str(workers)]
    row = _run_cli(args, out, work / f"run-{n_pool}-s{spp}.log", timeout, env)
    row.update(_run_facts(out), samples_per_point=spp, workers=workers)
    return row


def resume_check(dataset: str, spp: int, work: Path, workers: int, timeout: float, env: dict,
                 kill_fraction: float) -> dict:
    """A clean run, then a run SIGKILLed after ``kill_fraction`` of its shards and its rerun.

    Reports the clean run's wall time and peak RSS, how many samples were
    committed at the kill, and how many the rerun reused and added (it must
    reuse every committed one), and whether the final ledgers are identical.
    """
    import shutil

    from pointscale.sampling import Ledger

    args = ["--dataset", dataset, "--points", "all", "--samples-per-point", str(spp), "--workers", str(workers)]
    clean = work / f"{dataset}-clean"
    crashed = work / f"{dataset}-crash"
    for folder in (clean, crashed):
        if folder.exists():
            shutil.rmtree(folder)
    # As a user runs it: the CLI starts (and stops) its own local Prefect server.
    env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    result = {"dataset": dataset, "samples_per_point": spp, "workers": workers}
    result["clean"] = _run_cli(args, clean, work / f"{dataset}-clean.log", timeout, env)
    result["clean"].update(_run_facts(clean))
    n_shards = result["clean"]["shards"]
    kill_at = max(1, int(round(kill_fraction * n_shards)))
    result["crash"] = _run_cli(args, crashed, work / f"{dataset}-crash.log", timeout, env, kill_after_shards=kill_at)
    committed = Ledger(crashed / "samples").read_table(["point_id"]).num_rows
    result["crash"]["committed_samples_at_kill"] = committed
    result["rerun"] = _run_cli(args, crashed, work / f"{dataset}-rerun.log", timeout, env)
    result["rerun"].update(_run_facts(crashed))
    counts = result["rerun"]["counts"]
    a = Ledger(clean / "samples").read().sort_values("sample_id").reset_index(drop=True)
    b = Ledger(crashed / "samples").read().sort_values("sample_id").reset_index(drop=True)
    result["rerun_reused_every_committed_sample"] = counts.get("samples_reused") == committed
    result["ledgers_identical"] = bool(a.drop(columns=["error"], errors="ignore").equals(
        b.drop(columns=["error"], errors="ignore")))
    return result


def growth(rows: list[dict]) -> list[dict]:
    """Growth exponents of each stage (and the total) between consecutive sizes."""
    rows = sorted(rows, key=lambda r: r["n_pool"])
    out = []
    for a, b in zip(rows, rows[1:]):
        ratio = math.log(b["n_pool"] / a["n_pool"])
        exp = {}
        for s in STAGES + ("wall_s",):
            ta = a["timings"].get(s) if s != "wall_s" else a["wall_s"]
            tb = b["timings"].get(s) if s != "wall_s" else b["wall_s"]
            exp[s] = round(math.log(tb / ta) / ratio, 3) if ta and tb else None
        out.append({"from": a["n_pool"], "to": b["n_pool"], "exponent": exp})
    return out


def markdown(rows: list[dict], exps: list[dict]) -> str:
    rows = sorted(rows, key=lambda r: r["n_pool"])
    head = ["n pool points", "samples"] + [f"{s} (s)" for s in STAGES] + \
        ["total (s)", "peak RSS tree / largest process (MB)", "ledger B/sample", "shards"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [f"{r['n_pool']:,}", f"{r['ledger_rows']:,}"] + \
            [f"{r['timings'][s]:.1f}" if r["timings"].get(s) is not None else "–" for s in STAGES] + \
            [f"{r['wall_s']:.0f}", f"{r['peak_rss_tree_mb']:.0f} / {r['peak_rss_process_mb']:.0f}",
             f"{r['ledger_bytes_per_sample']:.1f}", str(r["shards"])]
        lines.append("| " + " | ".join(cells) + " |")
    for e in exps:
        cells = [f"exponent {e['from']:,} → {e['to']:,}", ""] + \
            [f"{e['exponent'][s]:.2f}" if e["exponent"][s] is not None else "–" for s in STAGES] + \
            [f"{e['exponent']['wall_s']:.2f}", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--samples-per-point", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per size (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=None, help="data and run folders (default: a temp folder)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--force", action="store_true", help="redo sizes already in the results file")
    parser.add_argument("--quick", action="store_true", help="sizes 1000 and 10000")
    parser.add_argument("--resume-check", metavar="DATASET",
                        help="instead: a clean run of DATASET with --points all, then one SIGKILLed after "
                             "--kill-fraction of its shards and its rerun (e.g. adult)")
    parser.add_argument("--kill-fraction", type=float, default=0.5)
    args = parser.parse_args(argv)
    sizes = [1000, 10_000] if args.quick else args.sizes
    work = args.work or Path(tempfile.mkdtemp(prefix="pointscale-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.results.read_text()) if args.results.exists() else {"runs": []}
    key = lambda r: (r["n_pool_requested"], r["samples_per_point"], r["workers"])  # noqa: E731

    from flows.runtime import configure_environment, local_prefect_server

    os.environ.setdefault("PREFECT_HOME", str(work / ".prefect"))
    configure_environment()
    with local_prefect_server(timeout=180) as url:
        env = dict(os.environ, PREFECT_API_URL=url, PYTHONPATH=os.pathsep.join(
            [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        if args.resume_check:
            out = resume_check(args.resume_check, args.samples_per_point, work, args.workers, args.timeout, env,
                               args.kill_fraction)
            path = args.results.with_name(f"resume-{args.resume_check}.json")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(out, indent=1) + "\n")
            print(json.dumps(out, indent=1))
            return 0
        for n in sizes:
            want = (n, args.samples_per_point, args.workers)
            if not args.force and any(key(r) == want for r in results["runs"]):
                print(f"n={n:,}: already measured (use --force to redo)", flush=True)
                continue
            print(f"n={n:,}: pointscale run --points all --samples-per-point {args.samples_per_point} ...",
                  flush=True)
            row = run_size(n, args.samples_per_point, work, args.workers, args.timeout, env)
            row["n_pool_requested"] = n
            results["runs"] = [r for r in results["runs"] if key(r) != want] + [row]
            print(json.dumps(row, indent=1), flush=True)
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(json.dumps(results, indent=1) + "\n")
    rows = [r for r in results["runs"] if r["samples_per_point"] == args.samples_per_point
            and r["workers"] == args.workers]
    exps = growth(rows)
    results["growth"] = exps
    args.results.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(rows, exps))
    worst = [(e["to"], s, v) for e in exps if e["to"] >= 1_000_000 for s, v in e["exponent"].items()
             if v is not None and v > 1.15]
    if worst:
        print(f"stages above exponent 1.15 up to 10^6: {worst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
