"""Revaluation after new data: extend a finished run with a new dataset version.

A run folder that holds a completed run can take a new version of its data
(rows appended, a file added to a folder). Rows already in the run keep their
ids, split and features (the new version is ingested on top of the old one),
so every ledger sample of the existing points stays valid and is reused. What
changes:

* new pool rows become a new *point group*, planned on its own, so sampling
  them never disturbs the plan (and the samples) of the earlier points;
* the laws are refitted and every stage after sampling reruns;
* ``values_change.parquet`` compares each existing point's Shapley value
  before and after (Spearman correlation and median absolute change in
  ``run.json``), names the points whose rank moved most, and splits each
  point's change of ``value_now`` (its value at the dataset's current size)
  by cause: the new dataset size (the earlier law at the new size minus at
  the old), and the refit (the new law minus the earlier one at the new
  size) -- due to new samples where the point got more, else to the
  refitted prior;
* every version stays: before a revaluation changes anything, the run's
  values, laws, report and label issues are copied to ``versions/v<N>/``
  (N = 1 for the first run's), listed in ``run.json`` under ``versions``.

Recovery: the manifest records the version a revaluation started from
(``previous_dataset``) and the values table from before it is kept as
``values_before.parquet`` until the revaluation completes. A revaluation
interrupted at any point and started again extends the *same* base version
and compares against the *same* earlier values, never against a half-updated
table.

Triage: before the new rows are sampled, :func:`triage` scores them with
models trained on the earlier pool and forecasts their values with the
run's amortized estimator (:mod:`pointscale.valuation.triage`) ->
``triage.parquet`` and ``run.json`` ``triage``; :func:`grade_triage` grades
that forecast against the sampled values once the stages have run.

The steps are plain functions over the run folder; the flow
(``flows.pipeline.revalue_flow``) calls them around its ingest task and stages:
:func:`revaluation_base`, then ingest, then :func:`start_revaluation`,
:func:`triage`, the pipeline's stages, :func:`finish_revaluation` and
:func:`grade_triage`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .data import open_dataset
from .errors import ConfigError
from .io import atomic_write_bytes, atomic_write_parquet
from .pipeline import AMORTIZED_MODEL, VALUES, base_version, load_point_groups, save_point_groups
from .runs import RunFolder

VALUES_BEFORE = "values_before.parquet"
VALUES_CHANGE = "values_change.parquet"
TRIAGE = "triage.parquet"
#: Folder of the earlier versions' outputs, and the files each keeps.
VERSIONS = "versions"
VERSION_FILES = ("values.parquet", "laws.parquet", "laws.parquet.json", "report.md", "label_issues.csv",
                 "values_change.parquet",
                 "triage.parquet")

def revaluation_base(run_dir: str | Path) -> dict[str, Any]:
    """What a revaluation of ``run_dir`` extends: its data config and base dataset version.

    Returns
    -------
    dict
        ``config`` (the run's config from ``run.json``) and ``dataset`` (the
        ingest info of the base version: the run's current version, or, when
        an earlier revaluation was interrupted, the version *it* started from).

    Raises
    ------
    ConfigError
        If the folder holds no pipeline run to extend.
    """
    run = RunFolder(run_dir)
    manifest = run.stored_manifest()
    if not manifest.get("config") or not manifest.get("dataset"):
        raise ConfigError(f"{run.location()} holds no completed pipeline run to extend; run `pointscale run` first")
    return {"config": manifest["config"], "dataset": base_version(manifest)}


def start_revaluation(run_dir: str | Path, ds_info: Mapping[str, Any], base: Mapping[str, Any], *,
                      source: str, event_fingerprint: str | None = None) -> dict[str, Any]:
    """Record the new version, add its new points as a group, keep the values from before.

    Parameters
    ----------
    run_dir : path
    ds_info : mapping
        Ingest info of the new version (``pointscale.pipeline.ingest`` with
        ``base_path`` = the base version's path).
    base : mapping
        :func:`revaluation_base` of the run.
    source : str
        The new data file or folder (recorded).
    event_fingerprint : str, optional
        Fingerprint from the watcher's event (recorded for traceability).

    Returns
    -------
    dict
        ``changed`` (False when the new version is the base version: nothing
        to do), ``new_points`` (ids), ``groups`` (the point groups now valued).
    """
    run = RunFolder(run_dir)
    old_info = base["dataset"]
    groups = load_point_groups(run.root)
    if ds_info["fingerprint"] == old_info["fingerprint"]:
        return {"changed": False, "new_points": [], "groups": groups}
    ds = open_dataset(ds_info["path"])
    old = open_dataset(old_info["path"])
    known = {p for g in groups for p in g}
    old_pool = set(old.point_ids.astype(str).tolist())
    new_points = sorted(p for p in ds.point_ids.astype(str).tolist() if p not in old_pool and p not in known)
    # A version built on the base has a fingerprint of its own (it names the base) even
    # when the file brought no row the base lacks: then there is nothing to revalue.
    same_rows = all(ds_info[k] == old_info[k] for k in ("n_pool", "n_val", "n_test"))
    if same_rows and not new_points and run.read_manifest().get("status") == "completed":
        return {"changed": False, "new_points": [], "groups": groups}
    if new_points:
        # "all points" runs value every new row; a run on N drawn points keeps its N
        # and adds the new rows (they are the reason for the revaluation).
        groups = groups + [new_points]
    save_point_groups(run.root, groups)
    # Keep the values from before the first attempt: a resumed revaluation must not
    # compare against a table an interrupted attempt already rewrote.
    manifest = run.read_manifest()
    resuming = manifest.get("kind") == "revalue" and manifest.get("status") != "completed" \
        and run.file(VALUES_BEFORE).exists()
    if not resuming:
        if run.file(VALUES).exists():
            atomic_write_bytes(run.file(VALUES_BEFORE), run.file(VALUES).read_bytes())
        else:
            run.file(VALUES_BEFORE).unlink(missing_ok=True)
        keep_version(run.root, old_info)
    run.update_manifest(kind="revalue", dataset=dict(ds_info), previous_dataset=dict(old_info), status="running",
                        timings=None, counts=None, values_change=None,
                        revalue={"source": str(source), "event_fingerprint": event_fingerprint,
                                 "new_points": len(new_points)})
    return {"changed": True, "new_points": new_points, "groups": groups}


def keep_version(run_dir: str | Path, dataset_info: Mapping[str, Any]) -> dict[str, Any] | None:
    """Copy the run's current outputs to ``versions/v<N>/`` and list it in run.json ``versions``.

    Returns the version's entry (None when the run has no values yet).
    """
    run = RunFolder(run_dir)
    if not run.file(VALUES).exists():
        return None
    versions = list(run.read_manifest().get("versions") or [])
    name = f"v{len(versions) + 1}"
    folder = run.root / VERSIONS / name
    kept = []
    for file in VERSION_FILES:
        if run.file(file).exists():
            atomic_write_bytes(folder / file, run.file(file).read_bytes())
            kept.append(file)
    entry = {"version": name, "folder": f"{VERSIONS}/{name}", "fingerprint": dataset_info.get("fingerprint"),
             "n_pool": dataset_info.get("n_pool"), "files": kept}
    run.update_manifest(versions=versions + [entry])
    return entry


def triage(run_dir: str | Path, dataset_path: str, sampling: Mapping[str, Any],
           new_points: list[str]) -> dict[str, Any]:
    """Score and forecast the new rows before any is sampled -> ``triage.parquet``; run.json ``triage``.

    Uses the run's amortized estimator and the earlier values table when the
    run has them (the forecast is NaN otherwise). Returns the summary recorded
    in run.json: ``points``, ``seconds``, ``forecast`` (whether values were
    forecast) and ``most_suspicious`` (the five highest label-issue scores).
    """
    import time

    from .laws import AmortizedScalingLaws
    from .sampling import SamplingConfig
    from .valuation.triage import triage_points

    start = time.perf_counter()
    run = RunFolder(run_dir)
    ds = open_dataset(dataset_path)
    cfg = SamplingConfig.from_dict(dict(sampling))
    model_dir = run.file(AMORTIZED_MODEL)
    amortized = AmortizedScalingLaws.load(model_dir) if model_dir.exists() else None
    before = run.file(VALUES_BEFORE) if run.file(VALUES_BEFORE).exists() else run.file(VALUES)
    values = pd.read_parquet(before) if before.exists() else None
    table = triage_points(ds, cfg, new_points, amortized=amortized, values=values)
    atomic_write_parquet(run.file(TRIAGE), table)
    top = table.head(5)
    summary = {"points": int(len(table)), "seconds": round(time.perf_counter() - start, 3),
               "forecast": amortized is not None,
               "most_suspicious": [{"point_id": str(r.point_id), "label_issue_score": round(float(r.label_issue_score), 4)}
                                   for r in top.itertuples()]}
    run.update_manifest(triage=summary)
    return summary


def grade_triage(run_dir: str | Path) -> dict[str, Any] | None:
    """After the stages: grade ``triage.parquet`` against the sampled values (run.json ``triage``)."""
    from .valuation.triage import grade_triage as grade

    run = RunFolder(run_dir)
    if not run.file(TRIAGE).exists():
        return None
    grades = grade(pd.read_parquet(run.file(TRIAGE)), pd.read_parquet(run.file(VALUES)))
    run.update_manifest(triage=grades)
    return grades


def finish_revaluation(run_dir: str | Path) -> dict[str, Any] | None:
    """Compare the values from before with the new table -> ``values_change.parquet``.

    Returns the summary (also recorded in ``run.json`` as ``values_change``),
    or None when the run had no values table before.
    """
    run = RunFolder(run_dir)
    before_path = run.file(VALUES_BEFORE)
    summary = None
    if before_path.exists():
        manifest = run.read_manifest()
        laws = _laws_change(run, manifest)
        moved = values_change(pd.read_parquet(before_path), pd.read_parquet(run.file(VALUES)), **laws)
        atomic_write_parquet(run.file(VALUES_CHANGE), moved["table"])
        summary = moved["summary"]
        run.update_manifest(values_change=summary)
        before_path.unlink()
    return summary


def _laws_change(run: RunFolder, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The earlier and the new laws and pool sizes, when both laws files exist (else empty)."""
    from .laws import FittedScalingLaws

    versions = manifest.get("versions") or []
    if not versions or not run.file("laws.parquet").exists():
        return {}
    old = run.root / versions[-1]["folder"] / "laws.parquet"
    if not old.exists():
        return {}
    return {"laws_before": FittedScalingLaws.load(old), "laws_after": FittedScalingLaws.load(run.file("laws.parquet")),
            "n_before": int(versions[-1]["n_pool"]), "n_after": int(manifest["dataset"]["n_pool"])}


def change_by_cause(laws_before: Any, laws_after: Any, n_before: int, n_after: int) -> pd.DataFrame:
    """Each earlier point's change of ψ at the current size, split by cause.

    ``size``: the earlier law at the new size minus at the old (the dataset
    grew); ``new_samples``: the new law minus the earlier one at the new size,
    for points with more samples than before; ``prior``: the same refit
    difference for points without new samples (the refitted shrinkage prior
    or law choice moved them). ``value_now_before`` + the three = ``value_now_after``.
    """
    ids = pd.Index(laws_before.point_ids.astype(str))
    after_ids = pd.Index(laws_after.point_ids.astype(str))
    shared = ids.intersection(after_ids)
    bi, ai = ids.get_indexer(shared), after_ids.get_indexer(shared)
    with np.errstate(invalid="ignore", over="ignore"):
        old_now = laws_before.predict(float(n_before), warn_extrapolation=False)[bi, 0]
        old_new = laws_before.predict(float(n_after), warn_extrapolation=False)[bi, 0]
        new_new = laws_after.predict(float(n_after), warn_extrapolation=False)[ai, 0]
    more = np.asarray(laws_after.n_samples)[ai] > np.asarray(laws_before.n_samples)[bi]
    refit = new_new - old_new
    return pd.DataFrame({"point_id": shared.to_numpy(dtype=object), "value_now_before": old_now,
                         "value_now_after": new_new, "size": old_new - old_now,
                         "new_samples": np.where(more, refit, 0.0), "prior": np.where(more, 0.0, refit)})


def values_change(before: pd.DataFrame, after: pd.DataFrame, *, laws_before: Any = None, laws_after: Any = None,
                  n_before: int | None = None, n_after: int | None = None, n_moved: int = 5) -> dict[str, Any]:
    """How existing points' Shapley values moved between two values tables.

    With the earlier and new laws and pool sizes, the change of each point's
    value at the current size is split by cause (:func:`change_by_cause`).

    Returns
    -------
    dict
        ``table``: per point present in both, ``shapley_before``,
        ``shapley_after``, ``change``, ``rank_before``, ``rank_after`` (1 =
        most valuable) and, with laws, the causes; ``summary``: points
        compared, new points, Spearman correlation before/after, the median
        absolute change, ``moved_most`` (the ``n_moved`` points whose rank
        moved most) and, with laws, ``by_cause`` (median absolute change per cause).
    """
    from scipy.stats import spearmanr

    merged = before[["point_id", "shapley"]].merge(after[["point_id", "shapley"]], on="point_id",
                                                    suffixes=("_before", "_after"))
    merged["change"] = merged["shapley_after"] - merged["shapley_before"]
    ok = np.isfinite(merged["shapley_before"]) & np.isfinite(merged["shapley_after"])
    rho = float(spearmanr(merged.loc[ok, "shapley_before"], merged.loc[ok, "shapley_after"])[0]) \
        if ok.sum() > 2 else float("nan")
    merged["rank_before"] = merged["shapley_before"].rank(ascending=False, method="min")
    merged["rank_after"] = merged["shapley_after"].rank(ascending=False, method="min")
    shift = (merged["rank_after"] - merged["rank_before"]).abs()
    top = merged.assign(shift=shift).sort_values(["shift", "point_id"], ascending=[False, True]).head(n_moved)
    summary = {
        "points_compared": int(ok.sum()),
        "points_new": int(len(set(after["point_id"]) - set(before["point_id"]))),
        "spearman_before_after": rho,
        "median_abs_change": float(np.nanmedian(np.abs(merged["change"]))) if ok.any() else float("nan"),
        "moved_most": [{"point_id": str(r.point_id), "rank_before": int(r.rank_before), "rank_after": int(r.rank_after),
                        "shapley_before": float(r.shapley_before), "shapley_after": float(r.shapley_after)}
                       for r in top.itertuples() if np.isfinite(r.shift)],
    }
    if laws_before is not None and laws_after is not None:
        causes = change_by_cause(laws_before, laws_after, int(n_before), int(n_after))
        merged = merged.merge(causes, on="point_id", how="left")
        summary["by_cause"] = {c: float(np.nanmedian(np.abs(causes[c]))) if len(causes) else float("nan")
                               for c in ("size", "new_samples", "prior")}
        summary["sizes"] = {"before": int(n_before), "after": int(n_after)}
    return {"table": merged, "summary": summary}


def revaluation_sentence(new_points: int, change: Mapping[str, Any] | None,
                         triage: Mapping[str, Any] | None = None) -> str:
    """What a revaluation did, in words with sensible digits (the terminal's last lines)."""
    parts = [f"{new_points:,} new point{'s' if new_points != 1 else ''} valued."]
    if change and change.get("points_compared"):
        rho, med = change.get("spearman_before_after"), change.get("median_abs_change")
        parts.append(f"The {change['points_compared']:,} earlier points kept their order with Spearman "
                     f"{rho:.2f} before/after; their values moved by {med:.2g} (median absolute change).")
        moved = change.get("moved_most") or []
        if moved:
            parts.append("Moved most: " + ", ".join(f"{m['point_id']} (rank {m['rank_before']} → {m['rank_after']})"
                                                    for m in moved[:3]) + ".")
        causes = change.get("by_cause")
        if causes:
            parts.append("Median change of the value at the current size by cause: "
                         f"new dataset size {causes['size']:.2g}, refitted prior {causes['prior']:.2g}, "
                         f"new samples {causes['new_samples']:.2g}.")
    if triage and triage.get("points"):
        bits = []
        if triage.get("spearman_forecast_vs_sampled") is not None:
            bits.append(f"its value forecast ranked them with Spearman {triage['spearman_forecast_vs_sampled']:.2f} "
                        "against the sampled values")
        if triage.get("spearman_label_score_vs_run") is not None:
            bits.append(f"its label-issue score agreed with the run's at Spearman "
                        f"{triage['spearman_label_score_vs_run']:.2f}")
        if bits:
            parts.append("Triage of the new rows before sampling: " + "; ".join(bits) + ".")
    return " ".join(parts)
