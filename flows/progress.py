"""Progress a person can see: on the pipeline's flow run in the UI, and in the terminal.

:class:`RunProgress` is the pipeline's one progress bar: a Prefect progress
artifact on the pipeline flow run itself (the sampling subflow updates the
same artifact by id) whose description says in words what is happening
("starting 2 Dask workers", "sampling: 12/40 shards, 7 reused"), and the
same events sent to the terminal reporter of this process, if one is
installed (``pointscale run`` installs :func:`terminal_reporter`; served runs
have none).

The terminal reporter draws a ``rich`` progress bar with rate and ETA when
stderr is a terminal, and prints a plain line every ``interval`` seconds
otherwise (logs, CI, ``nohup``).

Every stage line also goes to the log of the flow run it happens in (the UI
shows what the terminal says), and :func:`claim_run_folder` marks the flow run
that held a run folder before and died (SIGKILL, power loss) Crashed, so the
UI does not show it Running forever.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Optional, TextIO

if TYPE_CHECKING:
    from pointscale.runs import RunFolder

#: Where each stage starts on the pipeline's progress bar (percent). Sampling
#: fills the span up to the next stage by the fraction of shards done.
STAGE_START = {"dask": 0.0, "ingest": 1.0, "triage": 3.0, "sample": 5.0, "fit-mle-laws": 85.0, "fit-amortized": 88.0,
               "choose-laws": 91.0, "value": 93.0, "select": 95.0, "removal": 96.0, "report": 98.0,
               "done": 100.0}


#: Least seconds between two updates of the progress artifact while sampling.
UPDATE_SECONDS = 1.0


class Reporter:
    """Receives progress events; the base class ignores them (served runs, tests)."""

    def run_url(self, url: str) -> None: ...

    def stage(self, name: str, words: str) -> None: ...

    def sampling_started(self, shards: int, samples: int, reused: int) -> None: ...

    def shard_done(self, samples: int, attempt: int) -> None: ...

    def close(self) -> None: ...


_reporter: Reporter = Reporter()


def reporter() -> Reporter:
    return _reporter


@contextmanager
def reporting(to: Reporter) -> Iterator[Reporter]:
    """Send this process's progress events to ``to`` for the duration of the block."""
    global _reporter
    previous, _reporter = _reporter, to
    try:
        yield to
    finally:
        to.close()
        _reporter = previous


class PlainReporter(Reporter):
    """One line per stage and, while sampling, one line every ``interval`` seconds."""

    def __init__(self, stream: TextIO = sys.stderr, interval: float = 10.0):
        self.stream, self.interval = stream, interval
        self.total = self.done = self.samples_total = self.samples_done = 0
        self.started = self.last = 0.0

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def run_url(self, url: str) -> None:
        self._print(f"flow run: {url}")

    def stage(self, name: str, words: str) -> None:
        self._print(f"[{time.strftime('%H:%M:%S')}] {words}")

    def sampling_started(self, shards: int, samples: int, reused: int) -> None:
        self.total, self.samples_total, self.done, self.samples_done = shards, samples, 0, 0
        self.started = self.last = time.monotonic()

    def shard_done(self, samples: int, attempt: int) -> None:
        self.done += 1
        self.samples_done += samples
        now = time.monotonic()
        if now - self.last >= self.interval or self.done == self.total:
            self.last = now
            self._print(f"[{time.strftime('%H:%M:%S')}] sampling: {progress_words(self)}")


def progress_words(p: Any) -> str:
    """``12/40 shards (30%), 1,520 samples/s, ETA 2:10`` from done/total counts and a start time."""
    elapsed = max(time.monotonic() - p.started, 1e-9)
    rate = p.samples_done / elapsed
    pct = 100.0 * p.done / max(p.total, 1)
    text = f"{p.done}/{p.total} shards ({pct:.0f}%), {rate:,.0f} samples/s"
    if p.done >= p.total:
        return f"{text}, took {clock(elapsed)}"
    # Time left from the shards still to run (shards are of equal size).
    eta = clock(elapsed / p.done * (p.total - p.done)) if p.done else "?"
    return f"{text}, ETA {eta}"


def clock(seconds: float) -> str:
    """``1:02:03`` or ``2:03`` (minutes:seconds under an hour)."""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class RichReporter(Reporter):
    """A live ``rich`` progress bar (stage, shards, samples/s, ETA) on a terminal."""

    def __init__(self, stream: TextIO = sys.stderr):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.console = Console(file=stream)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TextColumn("elapsed"), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=False)
        self.task: Optional[int] = None
        self.left = 0
        self.started = 0.0
        self.samples = 0

    def run_url(self, url: str) -> None:
        self.console.print(f"flow run: [link={url}]{url}[/link]")

    def stage(self, name: str, words: str) -> None:
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {words}")

    def sampling_started(self, shards: int, samples: int, reused: int) -> None:
        self.started, self.samples, self.left = time.monotonic(), 0, shards
        if shards:
            self.progress.start()
            self.task = self.progress.add_task("sampling shards", total=shards, rate="")

    def shard_done(self, samples: int, attempt: int) -> None:
        if self.task is None:
            return
        self.samples += samples
        self.left -= 1
        rate = self.samples / max(time.monotonic() - self.started, 1e-9)
        self.progress.update(self.task, advance=1, rate=f"{rate:,.0f} samples/s")
        if self.left <= 0:  # the bar stays as the last line of the sampling; stages print below it
            self.progress.stop()
            self.task = None

    def close(self) -> None:
        self.progress.stop()


def terminal_reporter(stream: TextIO = sys.stderr) -> Reporter:
    """A :class:`RichReporter` on a terminal, a :class:`PlainReporter` otherwise."""
    return RichReporter(stream) if stream.isatty() else PlainReporter(stream)


class RunProgress:
    """The pipeline run's progress artifact, and the terminal, told the same things.

    ``artifact_id`` (a string, it crosses into the sampling subflow as a
    parameter) is the progress artifact on the pipeline flow run.
    """

    def __init__(self, artifact_id: Optional[str]):
        self.artifact_id = artifact_id
        self.total_shards = 0
        self.done_shards = 0
        self.reused = 0
        self.last_update = 0.0

    @classmethod
    def create(cls, words: str) -> "RunProgress":
        from prefect.artifacts import create_progress_artifact

        artifact = create_progress_artifact(0.0, key="pipeline-progress", description=words)
        return cls(str(artifact) if artifact else None)

    def _update(self, percent: float, words: str) -> None:
        if not self.artifact_id:
            return
        from uuid import UUID

        from prefect.artifacts import update_progress_artifact

        try:
            update_progress_artifact(UUID(self.artifact_id), min(100.0, percent), description=words)
        except Exception as exc:  # never fail a run for a progress bar
            from prefect import get_run_logger

            get_run_logger().debug("progress update failed: %s", exc)

    def stage(self, name: str, words: str) -> None:
        """Entering stage ``name`` (a key of :data:`STAGE_START`), described in ``words``."""
        self._update(STAGE_START[name], words)
        log_line(words)
        reporter().stage(name, words)

    def sampling_started(self, shards: int, samples: int, reused: int) -> None:
        self.total_shards, self.done_shards, self.reused = shards, 0, reused
        words = f"sampling: {shards} shards ({samples:,} samples) to run, {reused:,} samples reused from the ledger"
        self._update(STAGE_START["sample"], words)
        log_line(words)
        reporter().stage("sample", words)
        reporter().sampling_started(shards, samples, reused)

    def shard_done(self, samples: int, attempt: int) -> None:
        self.done_shards += 1
        reporter().shard_done(samples, attempt)
        now = time.monotonic()
        if now - self.last_update < UPDATE_SECONDS and self.done_shards < self.total_shards:
            return  # one API call per second at most, whatever the number of shards
        self.last_update = now
        span = STAGE_START["fit-mle-laws"] - STAGE_START["sample"]
        fraction = self.done_shards / max(self.total_shards, 1)
        self._update(STAGE_START["sample"] + span * fraction,
                     f"sampling: {self.done_shards}/{self.total_shards} shards done"
                     + (f", {self.reused:,} samples reused" if self.reused else ""))


def log_line(words: str) -> None:
    """``words`` to the log of the current flow run (the UI), if there is one."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        get_run_logger().info("%s", words)
    except MissingContextError:
        pass


def claim_run_folder(run: "RunFolder") -> None:
    """Record this flow run in ``run.json``; mark the flow run that held the folder before and died Crashed.

    Call it holding the run folder's lock: a manifest still saying
    ``status: running`` then belongs to a process that is gone (killed, or its
    machine lost), whose flow run the server would otherwise show as Running
    for ever. Its sampling subflows and unfinished task runs are marked too.
    """
    from prefect.runtime import flow_run

    manifest = run.read_manifest()
    before, now = manifest.get("flow_run_id"), flow_run.id
    if manifest.get("status") == "running" and before and before != now:
        try:
            marked = mark_crashed(before, f"its process died; flow run {flow_run.name!r} ({now}) resumed "
                                          f"the run folder {run.root}")
        except Exception as exc:  # the UI's bookkeeping is not worth failing a run for
            log_line(f"could not mark the earlier flow run {before} Crashed: {exc}")
        else:
            if marked:
                log_line(f"marked {marked} earlier run(s) of this folder Crashed (their process died): {before}")
    if now:
        run.update_manifest(flow_run_id=str(now))


def mark_crashed(flow_run_id: str, message: str) -> int:
    """Set a flow run still Pending/Running, its subflows and their unfinished task runs, to Crashed.

    Returns how many flow runs were marked.
    """
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterParentFlowRunId, TaskRunFilter,
                                                TaskRunFilterFlowRunId)
    from prefect.states import Crashed

    marked = 0
    with get_client(sync_client=True) as client:
        pending = [UUID(str(flow_run_id))]
        while pending:
            run_id = pending.pop()
            if not client.read_flow_run(run_id).state.is_final():
                client.set_flow_run_state(run_id, Crashed(message=message), force=True)
                marked += 1
            tasks = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(
                any_=[run_id])))
            for task in tasks:
                if task.state is not None and not task.state.is_final():
                    client.set_task_run_state(task.id, Crashed(message=message), force=True)
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))
            pending.extend(child.id for child in children)
    return marked
