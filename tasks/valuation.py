"""Valuation, selection and report tasks (cheap; cached on their inputs' content)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from pointscale import pipeline

from ._cache import content_key


@task(name="value", persist_result=True,
      cache_key_fn=content_key("run_dir", "ledger_hash", "dataset_fingerprint", "sampling", "target_sizes",
                               outputs=("values.parquet",)))
def value(run_dir: str, dataset_path: str, dataset_fingerprint: str, sampling: dict[str, Any],
          ledger_hash: str, target_sizes: list[int] | None = None) -> dict[str, Any]:
    """The values table -> values.parquet."""
    return pipeline.value(run_dir, dataset_path, sampling, target_sizes)


@task(name="select", persist_result=True,
      cache_key_fn=content_key("run_dir", "ledger_hash", "dataset_fingerprint", "m",
                               outputs=("selection.parquet",)))
def select(run_dir: str, dataset_path: str, dataset_fingerprint: str, ledger_hash: str, m: int) -> dict[str, Any]:
    """The m most valuable points at the current size -> selection.parquet."""
    return pipeline.select(run_dir, dataset_path, m)


@task(name="removal-curve", persist_result=True,
      cache_key_fn=content_key("run_dir", "ledger_hash", "dataset_fingerprint", "sampling",
                               outputs=("removal.parquet",)))
def removal(run_dir: str, dataset_path: str, dataset_fingerprint: str, sampling: dict[str, Any],
            ledger_hash: str) -> dict[str, Any]:
    """Removal curve: retrain without the lowest-valued points vs random ones."""
    return pipeline.removal(run_dir, dataset_path, sampling)


@task(name="report")
def report(run_dir: str, dataset_path: str) -> dict[str, Any]:
    """report.md with figures, plus the same summary as Prefect artifacts."""
    out = pipeline.report(run_dir, dataset_path)
    import pandas as pd

    from pointscale.report import top_bottom_points
    from pointscale.runs import RunFolder

    run = RunFolder(run_dir)
    values = pd.read_parquet(run.file("values.parquet"))
    create_table_artifact(top_bottom_points(values), key="values-top-bottom",
                          description="Most and least valuable points (Shapley over the sampled range)")
    with open(out["path"], encoding="utf-8") as fh:
        create_markdown_artifact(fh.read(), key="pointscale-report", description=f"Report of {run.root.name}")
    for name in ("values.parquet", "laws_mle.parquet", "laws_amortized.parquet", "selection.parquet",
                 "report.md", "run.json"):
        if run.file(name).exists():
            create_link_artifact(run.file(name).as_uri(), link_text=name, description=f"{name} of this run")
    return out
