"""The partitioned stages' calls as Prefect tasks on the flow's Dask cluster.

The core stage functions (:mod:`pointscale.pipeline`) take a ``pool`` whose
``map`` runs their per-partition calls (:mod:`pointscale.partitions`).
:class:`TaskPool` runs each call as one task run (``fit-mle-part-3``,
``value-part-0``, ...) on a Dask task runner the flow started, so the work
and the memory of every stage after sampling are the cluster's, and the
flow only passes locations, hashes and the small summaries the calls return.
The stage tasks find the flow's pool with :func:`current_pool`
(:data:`~pointscale.partitions.SERIAL` outside a flow: ``.fn()`` calls, tests).
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from prefect import task
from prefect.cache_policies import NO_CACHE

from pointscale.partitions import SERIAL

_POOL: contextvars.ContextVar[Any] = contextvars.ContextVar("pointscale_pool", default=SERIAL)


@task(name="partition", task_run_name="{label}", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE,
      persist_result=False)
def partition_call(label: str, fn: Callable[..., Any], args: tuple) -> Any:
    """One call of a partitioned stage on a worker: ``fn(*args)`` (locations and indices in, a summary out)."""
    return fn(*args)


class TaskPool:
    """A pool whose ``map`` runs each call as a :func:`partition_call` task on ``runner`` (started)."""

    def __init__(self, runner) -> None:
        self.runner = runner

    def map(self, fn: Callable[..., Any], *iterables: Iterable) -> list:
        stem = fn.__name__.replace("_", "-")
        futures = [self.runner.submit(partition_call, {"label": f"{stem}-{i}", "fn": fn, "args": tuple(a)})
                   for i, a in enumerate(zip(*iterables))]
        return [f.result() for f in futures]


def current_pool():
    """The pool of the running flow (:func:`use_pool`), else the serial one."""
    return _POOL.get()


@contextmanager
def use_pool(pool) -> Iterator[None]:
    """Make ``pool`` the stage tasks' pool inside the block."""
    token = _POOL.set(pool)
    try:
        yield
    finally:
        _POOL.reset(token)
