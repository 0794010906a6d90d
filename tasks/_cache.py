"""Content-based cache keys for Prefect tasks.

Prefect's ``TASK_SOURCE`` policy hashes only a task's own body, not the core
code it calls, so every key here includes :func:`pointscale.pipeline.code_version`
(a hash of the core package) and the content hashes of the task's inputs
(dataset fingerprint, ledger content hash, config hash). A key is withheld
(no caching) when an output file the task promises is missing, so deleting an
output (or the ledger quarantining a corrupted shard) and re-running recomputes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from pointscale.config import stable_hash
from pointscale.pipeline import code_version


def content_key(*names: str, outputs: Sequence[str] = ()) -> Callable[[Any, dict[str, Any]], str | None]:
    """A ``cache_key_fn`` over the named parameters (plain JSON values).

    ``outputs`` are paths formatted with the task's parameters
    (``"{ledger_dir}/shards/{shard_name}.parquet.sha256"``); relative ones are
    taken under the ``run_dir`` parameter.
    """

    def key(context: Any, parameters: dict[str, Any]) -> str | None:
        for out in outputs:
            try:
                path = Path(out.format(**parameters))
            except (KeyError, IndexError):
                return None
            if not path.is_absolute():
                if parameters.get("run_dir") is None:
                    return None
                path = Path(parameters["run_dir"]) / path
            if not path.exists():
                return None
        payload = {n: parameters.get(n) for n in names}
        return f"{context.task.name}-{code_version()}-{stable_hash(payload)[:32]}"

    return key
