"""Valuation, selection, removal and report tasks, and what the UI shows of a run.

Each stage takes the results of the stages it depends on (so the run graph
draws the true order, and each stage reads exactly the files those stages
wrote) and reruns only when one of them, a setting or the code changed.
"""

from __future__ import annotations

from typing import Any, Optional

from prefect import task
from prefect.artifacts import create_markdown_artifact

from pointscale import pipeline
from pointscale.partitions import PART_POINTS

from ._cache import output_ref, run_stage
from .partitions import current_pool


@task(name="value")
def value(run_dir: str, dataset: dict[str, Any], sampling: dict[str, Any], samples: dict[str, Any],
          laws: dict[str, Any], laws_mle: dict[str, Any], laws_amortized: Optional[dict[str, Any]] = None,
          target_sizes: Optional[list[int]] = None, partition_points: int = PART_POINTS) -> dict[str, Any]:
    """The values table -> values.parquet, from the chosen laws (``laws``: the choose-laws result),
    partition by partition on the flow's cluster.

    The MLE and amortized laws give the comparison columns. ``partition_points`` sizes
    the partitions (never changes a value: not part of the key).
    """
    inputs = {"dataset": dataset["fingerprint"], "sampling": sampling, "ledger": samples["ledger_hash"],
              "points": samples["points_hash"], "laws": output_ref(laws), "laws_mle": output_ref(laws_mle),
              "laws_amortized": output_ref(laws_amortized), "target_sizes": target_sizes}
    return run_stage(run_dir, "values", inputs, lambda: pipeline.value(
        run_dir, dataset["path"], sampling, target_sizes, laws=pipeline.LAWS, laws_mle=pipeline.LAWS_MLE,
        laws_amortized=pipeline.LAWS_AMORTIZED if laws_amortized else None,
        laws_parts={"mle": laws_mle.get("parts"), "amortized": (laws_amortized or {}).get("parts")},
        pool=current_pool(),
        part_points=partition_points))


@task(name="select")
def select(run_dir: str, dataset: dict[str, Any], laws: dict[str, Any], values: dict[str, Any],
           m: int) -> dict[str, Any]:
    """The m most valuable points at the current size -> selection.parquet.

    Ranked by the chosen laws (``laws.parquet``, the choose-laws result: the
    laws behind ``shapley``); it follows the value stage.
    """
    inputs = {"dataset": dataset["fingerprint"], "laws": output_ref(laws), "values": output_ref(values), "m": m}
    return run_stage(run_dir, "selection", inputs,
                     lambda: pipeline.select(run_dir, dataset["path"], m, laws=pipeline.LAWS, pool=current_pool()))


@task(name="removal-curve")
def removal(run_dir: str, dataset: dict[str, Any], sampling: dict[str, Any],
            values: dict[str, Any]) -> dict[str, Any]:
    """Removal curve: retrain without the lowest-valued points vs random ones."""
    inputs = {"dataset": dataset["fingerprint"], "sampling": sampling, "values": output_ref(values)}
    return run_stage(run_dir, "removal", inputs,
                     lambda: pipeline.removal(run_dir, dataset["path"], sampling, values=pipeline.VALUES,
                                              pool=current_pool()))


@task(name="report")
def report(run_dir: str, dataset: dict[str, Any], laws_mle: dict[str, Any], laws: dict[str, Any],
           values: dict[str, Any], selection: Optional[dict[str, Any]],
           removal: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """report.md with figures from exactly these outputs (written on a worker); the report, values and
    outputs in the UI."""
    from pointscale.report import inline_figures
    from pointscale.report.views import outputs_view
    from pointscale.runs import RunFolder

    has_curve = bool(removal) and pipeline.REMOVAL in removal["output"]
    made = values["output"]  # the value stage's files: the learning curve too
    out = pipeline.report(run_dir, dataset["path"], laws=pipeline.LAWS_MLE, values=pipeline.VALUES,
                          selection=pipeline.SELECTION if selection else None,
                          removal=pipeline.REMOVAL if has_curve else None,
                          chosen_laws=pipeline.LAWS if pipeline.LAWS in laws["output"] else None,
                          learning_curve=pipeline.LEARNING_CURVE if pipeline.LEARNING_CURVE in made else None,
                          label_issues=pipeline.LABEL_ISSUES if pipeline.LABEL_ISSUES in made else None,
                          pool=current_pool())
    run = RunFolder(run_dir)
    with open(out["path"], encoding="utf-8") as fh:
        # The UI shows an artifact without the run folder: figures go inline.
        create_markdown_artifact(inline_figures(fh.read(), run.root), key="pointscale-report",
                                 description=f"Report of {run.root.name}")
    create_markdown_artifact(out.pop("values_view"), key="values-top-bottom",
                             description="Most and least valuable points (Shapley value over the sampled range)")
    create_markdown_artifact(outputs_view(run.root, run.read_manifest()), key="run-outputs",
                             description=f"Files of {run.root.name} and where they are")
    return out


@task(name="compare-values")
def compare_values(run_dir: str, values: dict[str, Any]) -> Optional[dict[str, Any]]:
    """After a revaluation: values_change.parquet and a before/after view in the UI."""
    import pandas as pd

    from pointscale.report.views import values_change_view
    from pointscale.revaluation import VALUES_CHANGE, finish_revaluation
    from pointscale.runs import RunFolder

    summary = finish_revaluation(run_dir)
    if summary is not None:
        table = pd.read_parquet(RunFolder(run_dir).file(VALUES_CHANGE))
        create_markdown_artifact(values_change_view(table, summary), key="values-change",
                                 description="How existing points' values moved with the new data")
    return summary


@task(name="triage-new-rows")
def triage(run_dir: str, dataset: dict[str, Any], sampling: dict[str, Any], new_points: list[str]) -> dict[str, Any]:
    """Before the new rows are sampled: triage.parquet and the most suspicious new rows in the UI."""
    import pandas as pd

    from pointscale.report import markdown_table
    from pointscale.revaluation import TRIAGE
    from pointscale.revaluation import triage as triage_rows
    from pointscale.runs import RunFolder

    summary = triage_rows(run_dir, dataset["path"], sampling, new_points)
    table = pd.read_parquet(RunFolder(run_dir).file(TRIAGE)).head(20)
    text = (f"{summary['points']} new rows scored in {summary['seconds']:.1f} s, before any is sampled: "
            "label_issue_score from models trained on the earlier rows (none has seen them)"
            + ("; forecast_value from the run's amortized estimator." if summary["forecast"] else ".")
            + "\n\n" + markdown_table(table, ["point_id", "label_issue_score", "forecast_value", "forecast_low",
                                              "forecast_high"]))
    create_markdown_artifact(text, key="triage", description="The most suspicious new rows, before sampling")
    return summary


@task(name="grade-triage")
def grade_triage(run_dir: str, values: dict[str, Any]) -> Optional[dict[str, Any]]:
    """After the value stage (``values``): the triage's forecast graded in run.json."""
    from pointscale.revaluation import grade_triage as grade

    return grade(run_dir)
