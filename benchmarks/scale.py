"""Benchmark: how each pipeline stage's cost grows with the number of points (issue 17).

Run ``nice -n 10 python -m benchmarks.scale`` (heavy: the 10^6 run samples 3·10^6
Δ; ``--sizes 10000 100000`` for a shorter run, ``--quick`` for 10^3..10^4).

What it measures, all through the same code path as ``pointscale run``:

* Synthetic classification data (``make_classification``, d = 20 features,
  10 informative, 1 % label noise) with n pool points (plus 1000 validation and
  1000 test rows), written as a Parquet file with an id column.
* For each n: the real CLI, ``pointscale run --dataset FILE --target label
  --id-column row_id --points all --samples-per-point S --workers 2`` (the
  default model, logistic regression, and the default metric), in a
  subprocess against one local Prefect server started here for all sizes (so
  the server's start-up is not charged to any size).
* **Per stage** (ingest, sample, fit_mle_laws, fit_amortized, choose_laws, value_select, removal,
  report): the wall time from the run's manifest (``run.json`` → ``timings``)
  and the **CPU time of the process tree** -- the command and every process it
  starts (its Dask workers), not the Prefect server -- from a monitor that
  polls the tree every 0.25 s and charges each process's CPU increments to
  the stage running then (the manifest's ``stage`` names the last one done).
  CPU seconds do not grow when other jobs share the machine; wall seconds do.
* **Peak RSS**: of the process tree (largest sum) and of its largest process.
* **Ledger bytes per sample** (everything under ``samples/`` / rows) and the
  scheduler's task count (shards = sampling task runs).
* **Growth exponent** of each stage between consecutive sizes, on CPU and on
  wall time: ``log(t2 / t1) / log(n2 / n1)`` (1.0 = linear). Target: ≤ 1.15
  between 10^5 and 10^6 for every stage. docs/scale.md quotes the CPU exponents
  (they do not depend on the machine's load) beside the wall ones.

**Resumable.** Each size's attempts are recorded in ``<work>/run-N-sS.attempts.json``
as they end. An attempt stopped by ``--timeout``, by SIGTERM (e.g. from
``timeout``) or by a crash leaves its run folder; the next invocation with the
same ``--work`` reruns the same command on it, the pipeline reuses every
committed sample, and each stage's wall and CPU are summed over the attempts
(so the sample stage counts the killed attempt's shards once). ``--fresh``
starts a size from scratch.

**On object storage** (``--s3``): the same runs with the run folder at
``s3://bench/...`` on a local S3-compatible server (moto's, started here on
127.0.0.1); the flow's working copy and the workers' dataset copies go under
``<work>/cache``. Each size starts afresh (the server keeps its buckets in
memory). Results go to ``benchmarks/results/scale-s3.json``; the object
store's bytes (``ledger_bytes``: everything under ``samples/``) are listed
from the server.

Results go to ``benchmarks/results/scale.json`` as each size finishes (a
rerun skips sizes already there with the same settings; ``--force`` redoes
them) and the table is printed in Markdown. The machine may be shared: each
size records the 1-minute load average at its start and its mean over the run.
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
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "scale.json"
STAGES = ("ingest", "sample", "fit_mle_laws", "fit_amortized", "choose_laws", "value_select", "removal", "report")
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


#: Where the monitor charges CPU before the first stage is done and after the last.
_BEFORE, _AFTER = "ingest", "teardown"


class TreeMonitor:
    """Peak RSS and per-stage CPU of a process and its descendants, polled in a thread.

    Each poll reads every process's CPU time (user + system) and charges its
    increase since the last poll to the stage running now: the one after the
    manifest's ``stage`` (the last stage done) in :data:`STAGES` order. A
    process that exits between polls loses at most one interval of CPU.
    Prefect server processes (started by the command when no API is given)
    are left out of the stage CPU and counted apart.
    """

    def __init__(self, pid: int, manifest: Path | None = None, interval: float = 0.25) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.manifest = manifest
        self.interval = interval
        self.peak_sum = 0
        self.peak_single = 0
        self.peak_root = 0
        self.peak_worker = 0  # a Dask worker or nanny (not the CLI, not a Prefect server)
        # Its private memory: RSS less the file-backed pages (the memory-mapped dataset and
        # libraries), which the page cache shares between processes and can evict.
        self.peak_worker_anon = 0
        self.cpu = {name: 0.0 for name in STAGES + (_AFTER,)}
        # Bytes through read/write system calls (files, pipes and sockets: an object store's traffic too).
        self.read = {name: 0 for name in STAGES + (_AFTER,)}
        self.written = {name: 0 for name in STAGES + (_AFTER,)}
        self._io: dict[int, tuple[int, int]] = {}
        self.wall = {name: 0.0 for name in STAGES + (_AFTER,)}
        self.server_cpu = 0.0
        self.loads: list[float] = []
        self._seen: dict[int, float] = {}
        self._kinds: dict[int, str] = {}
        self._stage = _BEFORE
        self._manifest_mtime = 0.0
        self._last = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _current_stage(self) -> str:
        """The stage running now, from the manifest's last finished stage."""
        if self.manifest is None:
            return _BEFORE
        try:
            mtime = self.manifest.stat().st_mtime
            if mtime != self._manifest_mtime:
                self._manifest_mtime = mtime
                doc = json.loads(self.manifest.read_text())
                done = doc.get("stage")
                if doc.get("status") == "completed" and done == STAGES[-1]:
                    self._stage = _AFTER
                elif done in STAGES:
                    self._stage = STAGES[STAGES.index(done) + 1] if done != STAGES[-1] else _AFTER
        except (OSError, ValueError):
            pass  # not written yet, or caught mid-replace: keep the last known stage
        return self._stage

    def _poll(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.Error:
                break
            stage = self._current_stage()
            now = time.perf_counter()
            self.wall[stage] += now - self._last
            self._last = now
            total = 0
            for p in procs:
                try:
                    with p.oneshot():
                        rss = p.memory_info().rss
                        t = p.cpu_times()
                except psutil.Error:
                    continue
                try:
                    io = p.io_counters()
                    chars = (int(io.read_chars), int(io.write_chars))
                except (psutil.Error, AttributeError):
                    chars = self._io.get(p.pid, (0, 0))
                seen = self._io.get(p.pid, (0, 0))
                self._io[p.pid] = chars
                used = t.user + t.system  # children_* would count reaped workers twice
                delta = used - self._seen.get(p.pid, 0.0)
                self._seen[p.pid] = used
                total += rss
                self.peak_single = max(self.peak_single, rss)
                kind = "root" if p.pid == self.root.pid else self._kind(p)
                if kind == "server":
                    self.server_cpu += delta
                else:
                    self.cpu[stage] += delta
                    self.read[stage] += max(chars[0] - seen[0], 0)
                    self.written[stage] += max(chars[1] - seen[1], 0)
                if kind == "root":
                    # The kernel's high-water mark: a peak between two polls counts too (a table
                    # copied into the flow's working copy peaked for less than a second).
                    self.peak_root = max(self.peak_root, rss, _status_bytes(p.pid, "VmHWM"))
                elif kind == "worker":
                    self.peak_worker = max(self.peak_worker, rss)
                    self.peak_worker_anon = max(self.peak_worker_anon, _anon_rss(p.pid))
            self.peak_sum = max(self.peak_sum, total)
            self.loads.append(os.getloadavg()[0])
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


def _status_bytes(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` in bytes (0 where unavailable)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _anon_rss(pid: int) -> int:
    """Anonymous (private) resident bytes of a process, from /proc (0 where unavailable)."""
    return _status_bytes(pid, "RssAnon")


class Interrupted(RuntimeError):
    """The benchmark itself was asked to stop (SIGTERM, e.g. from ``timeout``)."""


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Interrupted("SIGTERM")


def _run_cli(args: list[str], out: Path | str, log_path: Path, timeout: float, env: dict,
             kill_after_shards: int | None = None, manifest: Path | None = None) -> dict:
    """``pointscale run ARGS --out OUT`` in its own session; wall, per-stage CPU and peak RSS of its tree.

    With ``kill_after_shards``, the whole process group is SIGKILLed as soon as
    that many ledger shards are committed (the crash of a resume check). Past
    ``timeout`` or on SIGTERM to this process, the group is killed too and the
    partial record comes back with ``killed`` set and ``reason`` saying why.
    """
    import signal

    cmd = [sys.executable, "-m", "flows.cli", "run", *args, "--out", str(out)]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    reason = None
    with open(log_path, "a") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        mon = TreeMonitor(proc.pid, manifest or Path(out) / "run.json")
        try:
            deadline = started + timeout
            while proc.poll() is None:
                if time.perf_counter() > deadline:
                    reason = f"ran past --timeout {timeout:.0f} s"
                    break
                if kill_after_shards is not None:
                    shards = out / "samples" / "shards"
                    done = len(list(shards.glob("*.parquet.sha256"))) if shards.exists() else 0
                    if done >= kill_after_shards:
                        reason = f"SIGKILL after {done} committed shards (resume check)"
                        break
                time.sleep(0.2)
        except (Interrupted, KeyboardInterrupt) as exc:
            reason = f"benchmark interrupted ({exc or type(exc).__name__})"
        finally:
            try:  # the whole group: Dask workers can outlive the leader
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            mon.stop()
    wall = time.perf_counter() - started
    if reason is None and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode} after {wall:.0f} s:\n"
                           f"{log_path.read_text()[-3000:]}")
    return {"wall_s": round(wall, 2), "killed": reason is not None, "reason": reason,
            "stage_cpu_s": {k: round(v, 2) for k, v in mon.cpu.items()},
            "stage_wall_s": {k: round(v, 2) for k, v in mon.wall.items()},
            "stage_read_mb": {k: round(v / 2**20, 2) for k, v in mon.read.items()},
            "stage_written_mb": {k: round(v / 2**20, 2) for k, v in mon.written.items()},
            "cpu_s": round(sum(mon.cpu.values()), 1), "server_cpu_s": round(mon.server_cpu, 1),
            "peak_rss_tree_mb": round(mon.peak_sum / 2**20, 1),
            "peak_rss_process_mb": round(mon.peak_single / 2**20, 1),
            "peak_rss_cli_mb": round(mon.peak_root / 2**20, 1),
            "peak_rss_worker_mb": round(mon.peak_worker / 2**20, 1),
            "peak_anon_rss_worker_mb": round(mon.peak_worker_anon / 2**20, 1),
            "load_1min_at_start": round(load, 2),
            "load_1min_mean": round(float(np.mean(mon.loads)), 2) if mon.loads else None,
            "under_load": load > (os.cpu_count() or 1),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _run_facts(out: Path | str) -> dict:
    """Stage timings, counts and ledger size of a finished run folder (a path or a URL)."""
    from pointscale.sampling import Ledger
    from pointscale.storage import Store

    store = Store(out)
    manifest = store.read_json("run.json")
    stats = Ledger(store.child("samples")).stats()
    counts = manifest.get("counts", {})
    # Everything the ledger folder holds (sample shards, commit records, and any
    # evidence files recorded beside them), not only the sample Parquet bytes.
    samples = store.child("samples")
    on_disk = sum(samples.size(k) for k in samples.walk() if not k.startswith("quarantine/"))
    return {
        "n_pool": int(manifest["dataset"]["n_pool"]),
        "timings": {s: manifest.get("timings", {}).get(s) for s in STAGES},
        "counts": counts,
        "ledger_rows": stats["rows"],
        "ledger_bytes": on_disk,
        "ledger_sample_parquet_bytes": stats["bytes"],
        "ledger_bytes_per_sample": round(on_disk / max(stats["rows"], 1), 2),
        # Committed shards (a resumed run plans only the missing ones, so its counts say fewer).
        "shards": len(Ledger(store.child("samples")).shard_names()),
        "fits": counts.get("fits_executed"),
        "sample_seconds_per_sample": round((manifest["timings"].get("sample") or 0) / max(stats["rows"], 1), 8),
    }


def _interrupted_stage(attempt: dict) -> str | None:
    """The stage a stopped attempt was in (the last one it spent time in)."""
    if not attempt.get("killed"):
        return None
    busy = [s for s in STAGES if attempt["stage_wall_s"].get(s, 0.0) > 0.0]
    return busy[-1] if busy else None


def _combine(attempts: list[dict]) -> dict:
    """One record from a size's attempts: times and CPU summed, peaks the largest.

    The sample stage of a stopped attempt counts (its committed shards are
    reused); a later stage it was in when stopped does not (that stage starts
    again from scratch, so its partial time is work thrown away, recorded
    apart as ``discarded_s``).
    """
    last = attempts[-1]
    row = dict(last)
    row["attempts"] = len(attempts)
    discarded = []
    for key in ("stage_cpu_s", "stage_wall_s", "stage_read_mb", "stage_written_mb"):
        if key not in last:
            continue
        total = {s: 0.0 for s in last[key]}
        for a in attempts:
            cut = _interrupted_stage(a)
            for s, v in a[key].items():
                if s == cut and s != "sample":
                    if key == "stage_cpu_s":
                        discarded.append({"stage": s, "cpu_s": v, "wall_s": a["stage_wall_s"].get(s)})
                    continue
                total[s] = total.get(s, 0.0) + v
        row[key] = {s: round(v, 2) for s, v in total.items()}
    row["discarded_s"] = discarded
    row["wall_s"] = round(sum(a["wall_s"] for a in attempts) - sum(d["wall_s"] or 0.0 for d in discarded), 2)
    row["cpu_s"] = round(sum(a["cpu_s"] for a in attempts) - sum(d["cpu_s"] for d in discarded), 1)
    row["server_cpu_s"] = round(sum(a["server_cpu_s"] for a in attempts), 1)
    for key in ("peak_rss_tree_mb", "peak_rss_process_mb", "peak_rss_cli_mb", "peak_rss_worker_mb",
                "peak_anon_rss_worker_mb"):
        row[key] = max((a[key] for a in attempts if key in a), default=None)
    row["load_1min_at_start"] = attempts[0]["load_1min_at_start"]
    means = [(a["load_1min_mean"], a["wall_s"]) for a in attempts if a.get("load_1min_mean") is not None]
    row["load_1min_mean"] = round(sum(m * w for m, w in means) / max(sum(w for _, w in means), 1e-9), 2) \
        if means else None
    row["under_load"] = any(a["under_load"] for a in attempts)
    row["killed_attempts"] = [a["reason"] for a in attempts if a["killed"]]
    row.pop("killed", None)
    row.pop("reason", None)
    return row


def run_size(n_pool: int, spp: int, work: Path, workers: int, timeout: float, env: dict,
             fresh: bool = False) -> dict:
    """``pointscale run`` at ``n_pool`` synthetic points, resumed from earlier attempts; its record.

    Raises
    ------
    Interrupted
        When this attempt was stopped (timeout, SIGTERM): it is recorded, and
        rerunning the benchmark with the same ``--work`` resumes it.
    """
    import shutil

    data = make_data(n_pool, work / f"synthetic-{n_pool}.parquet")
    out = work / f"run-{n_pool}-s{spp}"
    record = work / f"run-{n_pool}-s{spp}.attempts.json"
    attempts = json.loads(record.read_text())["attempts"] if record.exists() and not fresh else []
    if not attempts and out.exists():  # nothing recorded about this folder: start afresh
        shutil.rmtree(out)
    if (out / "run.json").exists():
        # The stage marker of the stopped attempt must not be charged to this one's first seconds.
        manifest = json.loads((out / "run.json").read_text())
        manifest.pop("stage", None)
        tmp = out / "run.json.bench-tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, out / "run.json")
    args = ["--dataset", str(data), "--target", "label", "--id-column", "row_id", "--points", "all",
            "--samples-per-point", str(spp), "--workers", str(workers)]
    row = _run_cli(args, out, work / f"run-{n_pool}-s{spp}.log", timeout, env)
    attempts.append(row)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps({"attempts": attempts}, indent=1) + "\n")
    os.replace(tmp, record)
    if row["killed"]:
        raise Interrupted(f"n={n_pool:,}: {row['reason']}; {len(attempts)} attempt(s) recorded in {record}; "
                          "run the same command again to resume")
    row = _combine(attempts)
    row.update(_run_facts(out), samples_per_point=spp, workers=workers)
    return row


def run_size_s3(n_pool: int, spp: int, work: Path, workers: int, timeout: float, env: dict, bucket: str) -> dict:
    """``pointscale run`` at ``n_pool`` synthetic points with the run folder at ``bucket``; its record."""
    from pointscale.runs import working_copy

    data = make_data(n_pool, work / f"synthetic-{n_pool}.parquet")
    url = f"{bucket}/run-{n_pool}-s{spp}-{time.time_ns()}"
    env = dict(env, POINTSCALE_CACHE=str(work / "cache"))
    manifest = Path(env["POINTSCALE_CACHE"]) / "runs" / working_copy(url).name / "run.json"
    args = ["--dataset", str(data), "--target", "label", "--id-column", "row_id", "--points", "all",
            "--samples-per-point", str(spp), "--workers", str(workers)]
    row = _run_cli(args, url, work / f"run-{n_pool}-s{spp}-s3.log", timeout, env, manifest=manifest)
    if row["killed"]:
        raise Interrupted(f"n={n_pool:,}: {row['reason']} (an S3 size starts afresh: run it again)")
    row = _combine([row])
    row.update(_run_facts(url), samples_per_point=spp, workers=workers, storage="s3 (moto, 127.0.0.1)")
    return row


def resume_check(dataset: str, spp: int, work: Path, workers: int, timeout: float, env: dict,
                 kill_fraction: float, fresh: bool = False, clean_only: bool = False) -> dict:
    """A clean run, then a run SIGKILLed after ``kill_fraction`` of its shards and its rerun.

    Reports the clean run's wall time, CPU and peak RSS, how many samples were
    committed at the kill, how many the rerun reused and added (it must reuse
    every committed one), and whether the final ledgers are identical.

    Resumable by phase (``<work>/resume-<dataset>.state.json``): a finished
    clean run or crash is not redone; a clean run that was stopped is redone
    from scratch (its time is the measurement); a stopped rerun is rerun, and
    the check then compares what the last rerun reused with what the ledger
    held when it started. ``fresh`` starts over; ``clean_only`` stops after
    the clean run (a timed slot; the crash and rerun follow in a later call).
    """
    import shutil

    from pointscale.sampling import Ledger

    args = ["--dataset", dataset, "--points", "all", "--samples-per-point", str(spp), "--workers", str(workers)]
    clean = work / f"{dataset}-clean"
    crashed = work / f"{dataset}-crash"
    state_path = work / f"resume-{dataset}.state.json"
    key = {"dataset": dataset, "samples_per_point": spp, "workers": workers}
    result = json.loads(state_path.read_text()) if state_path.exists() and not fresh else {}
    if {k: result.get(k) for k in key} != key:
        result = dict(key)

    def save() -> None:
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, state_path)

    # As a user runs it: the CLI starts (and stops) its own local Prefect server.
    env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    if "clean" not in result:
        if clean.exists():
            shutil.rmtree(clean)
        row = _run_cli(args, clean, work / f"{dataset}-clean.log", timeout, env)
        if row["killed"]:
            raise Interrupted(f"the clean run of {dataset}: {row['reason']} (it is redone from scratch)")
        row.update(_run_facts(clean))
        result["clean"] = row
        save()
    if clean_only:
        return result
    if "crash" not in result:
        if crashed.exists():
            shutil.rmtree(crashed)
        kill_at = max(1, int(round(kill_fraction * result["clean"]["shards"])))
        row = _run_cli(args, crashed, work / f"{dataset}-crash.log", timeout, env, kill_after_shards=kill_at)
        if not (row["reason"] or "").startswith("SIGKILL after"):
            raise Interrupted(f"the crash run of {dataset} did not reach its kill point: {row['reason']}")
        row["committed_samples_at_kill"] = Ledger(crashed / "samples").read_table(["point_id"]).num_rows
        result["crash"] = row
        save()
    committed = Ledger(crashed / "samples").read_table(["point_id"]).num_rows
    row = _run_cli(args, crashed, work / f"{dataset}-rerun.log", timeout, env)
    row["committed_samples_at_start"] = committed
    result.setdefault("rerun_attempts", []).append(row)
    save()
    if row["killed"]:
        raise Interrupted(f"the rerun of {dataset}: {row['reason']}; run the same command again to resume")
    row.update(_run_facts(crashed))
    result["rerun"] = row
    counts = row["counts"]
    a = Ledger(clean / "samples").read().sort_values("sample_id").reset_index(drop=True)
    b = Ledger(crashed / "samples").read().sort_values("sample_id").reset_index(drop=True)
    result["rerun_reused_every_committed_sample"] = counts.get("samples_reused") == committed
    result["ledgers_identical"] = bool(a.drop(columns=["error"], errors="ignore").equals(
        b.drop(columns=["error"], errors="ignore")))
    save()
    return result


def _stage_seconds(row: dict, stage: str, kind: str) -> float | None:
    """A stage's CPU (``kind="cpu"``) or wall seconds of a record (None if not measured)."""
    if stage == "total":
        return row.get("cpu_s") if kind == "cpu" else row.get("wall_s")
    # Records made before the stage graph named the MLE stage for what it is call it fit_mle
    # (and have no choose_laws: the value stage chose the laws then).
    names = (stage, _OLD_STAGE_NAMES[stage]) if stage in _OLD_STAGE_NAMES else (stage,)
    if kind == "cpu":
        table = row.get("stage_cpu_s") or {}
    elif row.get("stage_wall_s"):
        # Wall: the monitor's (summed over attempts; ingest includes the command's start-up, as
        # its CPU does); the manifest's time for records made before the monitor.
        table = row["stage_wall_s"]
    else:
        table = row.get("timings") or {}
    return next((table[n] for n in names if n in table), None)


_OLD_STAGE_NAMES = {"fit_mle_laws": "fit_mle"}


def growth(rows: list[dict]) -> list[dict]:
    """Growth exponents of each stage (and the total) between consecutive sizes, on CPU and on wall time."""
    rows = sorted(rows, key=lambda r: r["n_pool"])
    out = []
    for a, b in zip(rows, rows[1:]):
        ratio = math.log(b["n_pool"] / a["n_pool"])
        entry = {"from": a["n_pool"], "to": b["n_pool"]}
        for kind in ("cpu", "wall"):
            exp = {}
            for s in STAGES + ("total",):
                ta, tb = _stage_seconds(a, s, kind), _stage_seconds(b, s, kind)
                exp[s] = round(math.log(tb / ta) / ratio, 3) if ta and tb else None
            entry["exponent_cpu" if kind == "cpu" else "exponent"] = exp
        # The flow's own process (the command): its memory must not grow with the points.
        ra, rb = a.get("peak_rss_cli_mb"), b.get("peak_rss_cli_mb")
        entry["exponent_peak_rss_flow"] = round(math.log(rb / ra) / ratio, 3) if ra and rb else None
        out.append(entry)
    return out


def _total(row: dict, key: str) -> float | None:
    """The sum over stages of a per-stage table of a record (None where not measured)."""
    table = row.get(key)
    return None if not table else float(sum(table.values()))


def markdown(rows: list[dict], exps: list[dict]) -> str:
    """The docs/scale.md table: per stage, CPU seconds of the process tree and wall seconds."""
    rows = sorted(rows, key=lambda r: r["n_pool"])
    head = ["n pool points", "samples"] + [f"{s} CPU / wall (s)" for s in STAGES] + \
        ["total CPU / wall (s)", "peak RSS tree / largest process (MB)", "peak RSS flow process (MB)",
         "read / written (MB)", "ledger B/sample", "shards", "load avg (start / mean)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    fmt = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
    for r in rows:
        cells = [f"{r['n_pool']:,}", f"{r['ledger_rows']:,}"] + \
            [f"{fmt(_stage_seconds(r, s, 'cpu'))} / {fmt(_stage_seconds(r, s, 'wall'))}" for s in STAGES] + \
            [f"{fmt(r.get('cpu_s'))} / {r['wall_s']:.0f}",
             f"{r['peak_rss_tree_mb']:.0f} / {r['peak_rss_process_mb']:.0f}",
             fmt(r.get("peak_rss_cli_mb")),
             f"{fmt(_total(r, 'stage_read_mb'))} / {fmt(_total(r, 'stage_written_mb'))}",
             f"{r['ledger_bytes_per_sample']:.1f}", str(r["shards"]),
             f"{r.get('load_1min_at_start')} / {r.get('load_1min_mean')}"]
        lines.append("| " + " | ".join(cells) + " |")
    efmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    for e in exps:
        cpu, wall = e.get("exponent_cpu") or {}, e["exponent"]
        cells = [f"exponent {e['from']:,} → {e['to']:,}", ""] + \
            [f"{efmt(cpu.get(s))} / {efmt(wall.get(s))}" for s in STAGES] + \
            [f"{efmt(cpu.get('total'))} / {efmt(wall.get('total', wall.get('wall_s')))}", "",
             efmt(e.get("exponent_peak_rss_flow")), "", "", "", ""]
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
    parser.add_argument("--fresh", action="store_true",
                        help="start each size from scratch (default: resume a size's stopped attempt in --work)")
    parser.add_argument("--quick", action="store_true", help="sizes 1000 and 10000")
    parser.add_argument("--s3", action="store_true",
                        help="the run folder on a local S3 server (moto); results to scale-s3.json")
    parser.add_argument("--resume-check", metavar="DATASET",
                        help="instead: a clean run of DATASET with --points all, then one SIGKILLed after "
                             "--kill-fraction of its shards and its rerun (e.g. adult)")
    parser.add_argument("--kill-fraction", type=float, default=0.5)
    parser.add_argument("--clean-only", action="store_true",
                        help="with --resume-check: stop after the clean (timed) run; rerun without it to continue")
    args = parser.parse_args(argv)
    if args.s3 and args.results == RESULTS:
        args.results = RESULTS.with_name("scale-s3.json")
    sizes = [1000, 10_000] if args.quick else args.sizes
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)  # `timeout` stops a size cleanly: recorded, resumable
    work = args.work or Path(tempfile.mkdtemp(prefix="pointscale-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.results.read_text()) if args.results.exists() else {"runs": []}
    key = lambda r: (r["n_pool_requested"], r["samples_per_point"], r["workers"])  # noqa: E731

    from flows.runtime import configure_environment, local_prefect_server

    os.environ.setdefault("PREFECT_HOME", str(work / ".prefect"))
    configure_environment()
    pythonpath = os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    if args.resume_check:  # as a user runs it: each command starts its own Prefect server
        try:
            out = resume_check(args.resume_check, args.samples_per_point, work, args.workers, args.timeout,
                               dict(os.environ, PYTHONPATH=pythonpath), args.kill_fraction, args.fresh,
                               args.clean_only)
        except Interrupted as exc:
            print(f"stopped: {exc}", flush=True)
            return 3
        path = args.results.with_name(f"resume-{args.resume_check}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(json.dumps(out, indent=1))
        return 0
    with ExitStack() as stack:
        url = stack.enter_context(local_prefect_server(timeout=180))
        bucket = None
        if args.s3:
            from benchmarks.s3server import local_s3_server, make_bucket

            stack.enter_context(local_s3_server())
            bucket = make_bucket("bench")
        env = dict(os.environ, PREFECT_API_URL=url, PYTHONPATH=pythonpath)
        for n in sizes:
            want = (n, args.samples_per_point, args.workers)
            if not args.force and any(key(r) == want for r in results["runs"]):
                print(f"n={n:,}: already measured (use --force to redo)", flush=True)
                continue
            print(f"n={n:,}: pointscale run --points all --samples-per-point {args.samples_per_point} ...",
                  flush=True)
            try:
                row = run_size_s3(n, args.samples_per_point, work, args.workers, args.timeout, env, bucket) \
                    if bucket else run_size(n, args.samples_per_point, work, args.workers, args.timeout, env,
                                            args.fresh)
            except Interrupted as exc:
                print(f"stopped: {exc}", flush=True)
                return 3
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
    worst = [(e["to"], kind, s, v) for e in exps if e["to"] >= 1_000_000
             for kind in ("exponent_cpu", "exponent") for s, v in (e.get(kind) or {}).items()
             if v is not None and v > 1.15]
    if worst:
        print(f"stages above exponent 1.15 up to 10^6 (to, kind, stage, exponent): {worst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
