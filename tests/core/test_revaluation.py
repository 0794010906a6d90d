"""Revaluation after new data, without a server: the plain functions the revalue flow calls.

A run on 200 rows of breast_cancer (real fits, few samples), then 40 rows
appended: only the new rows become a new point group, the old values are kept
for the before/after comparison, and an interrupted revaluation resumes from
the same base version and the same "before" values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pointscale import pipeline
from pointscale.errors import ConfigError
from pointscale.io import read_json
from pointscale.revaluation import (VALUES_BEFORE, VALUES_CHANGE, finish_revaluation, revaluation_base,
                                    start_revaluation, values_change)
from pointscale.runs import RunFolder

FIRST, ADDED = 200, 40


def _rows(stop: int) -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})
    frame.insert(0, "row_id", [f"r{i:04d}" for i in range(len(frame))])
    return frame.iloc[:stop]


def _sample_fit_value(run_dir, info, sampling) -> None:
    """What the flow's stages do after ingest, in-process."""
    groups = pipeline.load_point_groups(run_dir)
    plan = pipeline.plan_sampling(info["path"], sampling, groups, RunFolder(run_dir).samples)
    for i in range(plan["n_shards"]):
        pipeline.run_shard(info["path"], sampling, plan["plan"], i, RunFolder(run_dir).samples)
    pipeline.fit_mle_laws(run_dir, sampling)
    pipeline.choose_laws(run_dir, info["path"], sampling)
    pipeline.value(run_dir, info["path"], sampling)


@pytest.fixture()
def finished_run(tmp_path):
    """A completed pipeline run on the first 200 rows, recorded as the flow records it."""
    path = tmp_path / "cancer.csv"
    _rows(FIRST).to_csv(path, index=False)
    data = {"source": str(path), "target": "label", "id_column": "row_id", "seed": 0}
    run_dir = tmp_path / "run"
    info = pipeline.ingest(data, run_dir)
    from pointscale.data import open_dataset

    ds = open_dataset(info["path"])
    points = pipeline.choose_points(ds, "all", 0)
    pipeline.save_point_groups(run_dir, [points])
    cfg = pipeline.resolve_sampling(ds, model="logreg", metric=None, k_min=20, k_max=60, samples_per_point=4,
                                    seed=0, block_size=16, shard_size=4, n_points=len(points))
    sampling = cfg.to_dict()
    _sample_fit_value(run_dir, info, sampling)
    RunFolder(run_dir).update_manifest(kind="pipeline", config={"data": data, "sampling": sampling},
                                       dataset=info, status="completed")
    return {"path": path, "run_dir": run_dir, "info": info, "sampling": sampling, "points": points}


def _append(path) -> None:
    _rows(FIRST + ADDED).to_csv(path, index=False)


def _ingest_on_base(run_dir, base, path):
    return pipeline.ingest(dict(base["config"]["data"], source=str(path)), run_dir,
                           base_path=base["dataset"]["path"])


def test_only_new_rows_are_new_points_and_values_are_compared(finished_run):
    run_dir, path = finished_run["run_dir"], finished_run["path"]
    before = pd.read_parquet(run_dir / "values.parquet")
    _append(path)
    base = revaluation_base(run_dir)
    assert base["dataset"]["fingerprint"] == finished_run["info"]["fingerprint"]
    info = _ingest_on_base(run_dir, base, path)
    plan = start_revaluation(run_dir, info, base, source=str(path), event_fingerprint="abc")
    assert plan["changed"]
    new_ids = {f"r{i:04d}" for i in range(FIRST, FIRST + ADDED)}
    assert set(plan["new_points"]) == new_ids
    # The earlier points keep their group (and so their plan and samples); the new ones get their own.
    assert plan["groups"] == [finished_run["points"], sorted(new_ids)]
    manifest = read_json(run_dir / "run.json")
    assert manifest["kind"] == "revalue" and manifest["status"] == "running"
    assert manifest["previous_dataset"]["fingerprint"] == finished_run["info"]["fingerprint"]
    assert manifest["revalue"] == {"source": str(path), "event_fingerprint": "abc", "new_points": ADDED}
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / VALUES_BEFORE), before)

    ledger_before = pipeline.plan_sampling(info["path"], finished_run["sampling"], plan["groups"],
                                           RunFolder(run_dir).samples)
    # Every sample of the earlier points is reused; only the new points are to be sampled.
    assert ledger_before["samples_reused"] == len(finished_run["points"]) * 4
    assert ledger_before["samples_todo"] == ADDED * 4
    _sample_fit_value(run_dir, info, finished_run["sampling"])
    summary = finish_revaluation(run_dir)
    assert summary["points_compared"] == len(before) and summary["points_new"] == ADDED
    assert -1 <= summary["spearman_before_after"] <= 1
    change = pd.read_parquet(run_dir / VALUES_CHANGE)
    assert set(change["point_id"]) == set(before["point_id"])
    np.testing.assert_allclose(change["change"], change["shapley_after"] - change["shapley_before"])
    assert not (run_dir / VALUES_BEFORE).exists()
    assert read_json(run_dir / "run.json")["values_change"] == summary
    # The first version's outputs stay, listed in run.json.
    versions = read_json(run_dir / "run.json")["versions"]
    assert [v["version"] for v in versions] == ["v1"] and versions[0]["n_pool"] == finished_run["info"]["n_pool"]
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "versions" / "v1" / "values.parquet"), before)
    assert {"laws.parquet", "values.parquet"} <= set(versions[0]["files"])
    # The points whose rank moved most are named, the largest shift first.
    shift = (change["rank_after"] - change["rank_before"]).abs()
    moved = summary["moved_most"]
    assert len(moved) == 5 and abs(moved[0]["rank_after"] - moved[0]["rank_before"]) == shift.max()
    # The change of the value at the current size splits into its causes exactly; the
    # earlier points got no new samples, so nothing is put down to new samples.
    parts = change["size"] + change["new_samples"] + change["prior"]
    np.testing.assert_allclose(parts, change["value_now_after"] - change["value_now_before"], rtol=1e-9, atol=1e-15)
    assert (change["new_samples"] == 0).all() and (change["size"] != 0).any()
    assert set(summary["by_cause"]) == {"size", "new_samples", "prior"}
    from pointscale.report.views import values_change_view

    view = values_change_view(change, summary)
    assert f"({summary['sizes']['before']} → {summary['sizes']['after']} rows) by cause" in view
    assert "| rank_before | rank_after | size | prior | new_samples |" in view


def test_an_interrupted_revaluation_resumes_from_the_same_base_and_values(finished_run):
    run_dir, path = finished_run["run_dir"], finished_run["path"]
    before = pd.read_parquet(run_dir / "values.parquet")
    _append(path)
    base = revaluation_base(run_dir)
    info = _ingest_on_base(run_dir, base, path)
    start_revaluation(run_dir, info, base, source=str(path))
    # The attempt dies after its value stage rewrote values.parquet.
    _sample_fit_value(run_dir, info, finished_run["sampling"])
    assert read_json(run_dir / "run.json")["status"] == "running"

    again = revaluation_base(run_dir)
    assert again["dataset"]["fingerprint"] == finished_run["info"]["fingerprint"]  # not the half-done version
    info2 = _ingest_on_base(run_dir, again, path)
    assert info2["fingerprint"] == info["fingerprint"]
    plan = start_revaluation(run_dir, info2, again, source=str(path))
    assert plan["changed"] and len(plan["new_points"]) == 0  # the group was already added
    assert len(plan["groups"]) == 2
    # Still compared against the values from before the first attempt.
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / VALUES_BEFORE), before)
    summary = finish_revaluation(run_dir)
    assert summary["points_compared"] == len(before)


def test_the_same_data_again_changes_nothing(finished_run):
    run_dir, path = finished_run["run_dir"], finished_run["path"]
    base = revaluation_base(run_dir)
    info = _ingest_on_base(run_dir, base, path)
    plan = start_revaluation(run_dir, info, base, source=str(path))
    assert plan == {"changed": False, "new_points": [], "groups": [finished_run["points"]]}
    assert read_json(run_dir / "run.json")["kind"] == "pipeline"
    assert not (run_dir / VALUES_BEFORE).exists()


def test_a_folder_without_a_run_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no completed pipeline run"):
        revaluation_base(tmp_path)


def test_values_change_compares_shared_points_only():
    before = pd.DataFrame({"point_id": ["a", "b", "c", "d"], "shapley": [1.0, 2.0, 3.0, np.nan]})
    after = pd.DataFrame({"point_id": ["a", "b", "c", "d", "e"], "shapley": [1.5, 2.5, 3.5, 1.0, 9.0]})
    moved = values_change(before, after)
    assert moved["summary"]["points_compared"] == 3 and moved["summary"]["points_new"] == 1
    assert moved["summary"]["spearman_before_after"] == pytest.approx(1.0)
    assert moved["summary"]["median_abs_change"] == pytest.approx(0.5)


def test_new_rows_are_triaged_before_they_are_sampled_and_the_forecast_is_graded(finished_run):
    from sklearn.metrics import roc_auc_score

    from pointscale.revaluation import TRIAGE, grade_triage, triage
    from pointscale.sampling import Ledger

    run_dir, path, sampling = finished_run["run_dir"], finished_run["path"], finished_run["sampling"]
    info0 = finished_run["info"]
    # The forecast needs the run's amortized model; its interval, the earlier amortized values.
    pipeline.fit_amortized(run_dir, info0["path"], sampling)
    pipeline.value(run_dir, info0["path"], sampling, laws_amortized=pipeline.LAWS_AMORTIZED)
    # 40 new rows, 8 of them with flipped labels.
    rows = _rows(FIRST + ADDED)
    flipped = [f"r{i:04d}" for i in range(FIRST, FIRST + ADDED, 5)]
    rows.loc[rows["row_id"].isin(flipped), "label"] = 1 - rows.loc[rows["row_id"].isin(flipped), "label"]
    rows.to_csv(path, index=False)
    base = revaluation_base(run_dir)
    info = _ingest_on_base(run_dir, base, path)
    plan = start_revaluation(run_dir, info, base, source=str(path))
    summary = triage(run_dir, info["path"], sampling, plan["new_points"])
    # Written before any sample of a new row exists: the ledger holds none of them yet.
    assert (run_dir / TRIAGE).exists()
    assert not Ledger(RunFolder(run_dir).samples).read()["point_id"].isin(plan["new_points"]).any()
    table = pd.read_parquet(run_dir / TRIAGE)
    assert set(table["point_id"]) == set(plan["new_points"]) and summary["points"] == ADDED
    assert summary["forecast"] and table["forecast_value"].notna().all()
    assert (table["forecast_low"] <= table["forecast_value"]).all()
    assert (table["forecast_value"] <= table["forecast_high"]).all()
    # Every new row is out of bag for all 32 triage models; the flipped ones score high
    # (breast_cancer is nearly separable by logistic regression, 8 of 40 flipped: 0.85 leaves room).
    assert (table["n_oob"] == 32).all()
    assert roc_auc_score(table["point_id"].isin(flipped), table["label_issue_score"]) > 0.85
    assert read_json(run_dir / "run.json")["triage"]["most_suspicious"][0]["point_id"] == table["point_id"][0]
    _sample_fit_value(run_dir, info, sampling)
    grades = grade_triage(run_dir)
    assert grades["points"] == ADDED
    # The triage's label score and the run's (from every base model) agree on the new rows.
    assert grades["spearman_label_score_vs_run"] > 0.5
    assert -1 <= grades["spearman_forecast_vs_sampled"] <= 1
    recorded = read_json(run_dir / "run.json")["triage"]
    assert recorded["spearman_forecast_vs_sampled"] == grades["spearman_forecast_vs_sampled"]
    assert recorded["points"] == ADDED and "seconds" in recorded


def test_the_terminal_says_what_moved_in_words():
    from pointscale.revaluation import revaluation_sentence

    text = revaluation_sentence(100, {"points_compared": 1000, "spearman_before_after": 0.934567891234,
                                      "median_abs_change": 0.000123456789, "points_new": 100},
                                {"points": 100, "spearman_forecast_vs_sampled": 0.41234,
                                 "spearman_label_score_vs_run": 0.87654})
    assert text == ("100 new points valued. The 1,000 earlier points kept their order with Spearman 0.93 "
                    "before/after; their values moved by 0.00012 (median absolute change). Triage of the new "
                    "rows before sampling: its value forecast ranked them with Spearman 0.41 against the sampled "
                    "values; its label-issue score agreed with the run's at Spearman 0.88.")
    assert revaluation_sentence(1, None) == "1 new point valued."
    moved = revaluation_sentence(2, {"points_compared": 3, "spearman_before_after": 1.0, "median_abs_change": 0.0,
                                     "moved_most": [{"point_id": "a", "rank_before": 1, "rank_after": 3}],
                                     "by_cause": {"size": 0.0012345, "prior": 0.00061, "new_samples": 0.0}})
    assert moved.endswith("Moved most: a (rank 1 → 3). Median change of the value at the current size by cause: "
                          "new dataset size 0.0012, refitted prior 0.00061, new samples 0.")
