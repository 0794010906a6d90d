"""Tasks called through ``.fn()``: each is a thin wrapper over one core function."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pointscale import pipeline
from pointscale.io import read_json, sha256_file
from pointscale.laws import FittedScalingLaws
from pointscale.valuation import distributional_shapley
from pointscale.sampling import Ledger
from tasks import ingest as ingest_tasks
from tasks import laws as law_tasks
from tasks import sampling as sampling_tasks
from tasks import valuation as value_tasks


@pytest.fixture(scope="module")
def sampled_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    info = ingest_tasks.ingest.fn({"source": "breast_cancer", "seed": 0}, str(run_dir))
    from pointscale.data import open_dataset

    ds = open_dataset(info["path"])
    points = pipeline.choose_points(ds, 40, 0)
    pipeline.save_point_groups(run_dir, [points])
    cfg = pipeline.resolve_sampling(ds, model="logreg", metric=None, k_min=None, k_max=None, samples_per_point=12,
                                    seed=0, block_size=8, shard_size=4, n_points=len(points))
    sampling = cfg.to_dict()
    plan = pipeline.plan_sampling(info["path"], sampling, [points], run_dir / "samples")
    plan["names"] = pipeline.plan_shard_names(plan["plan"])
    results = [
        sampling_tasks.sample_shard.fn(info["path"], info["fingerprint"], sampling, cfg.stable_hash(), plan["plan"],
                                       plan["plan_hash"], i, name, str(run_dir / "samples"))
        for i, name in enumerate(plan["names"])
    ]
    return run_dir, info, sampling, plan, results


def test_ingest_stores_a_version_once(tmp_path):
    info = ingest_tasks.ingest.fn({"source": "diabetes"}, str(tmp_path))
    assert info["task"] == "regression" and (tmp_path / "datasets" / info["fingerprint"] / "meta.json").exists()
    again = ingest_tasks.ingest.fn({"source": "diabetes"}, str(tmp_path))
    assert again["path"] == info["path"]


def test_shard_tasks_fill_the_ledger_and_count_fits(sampled_run):
    run_dir, info, sampling, plan, results = sampled_run
    ledger = Ledger(run_dir / "samples").read()
    assert len(ledger) == 40 * 12 == plan["samples_planned"]
    blocks = ledger["base_id"].nunique()
    assert sum(r["fits"] for r in results) == len(ledger) + blocks
    assert [r["name"] for r in results] == plan["names"]
    # A second plan finds everything done.
    again = pipeline.plan_sampling(info["path"], sampling, pipeline.load_point_groups(run_dir), run_dir / "samples")
    assert again["n_shards"] == 0 and again["samples_reused"] == 40 * 12
    assert pipeline.plan_shard_names(again["plan"]) == []


def test_fault_hook_fails_once_then_passes(sampled_run, monkeypatch):
    run_dir, info, sampling, plan, _ = sampled_run
    name = plan["names"][1]
    monkeypatch.setenv(sampling_tasks.FAULT_ENV, "#1")
    with pytest.raises(sampling_tasks.InjectedFault, match=name):
        sampling_tasks.maybe_inject_fault(name, 1, str(run_dir / "samples"))
    sampling_tasks.maybe_inject_fault(name, 1, str(run_dir / "samples"))  # the retry passes
    monkeypatch.setenv(sampling_tasks.FAULT_ENV, f"{name}:always")
    for _ in range(2):
        with pytest.raises(sampling_tasks.InjectedFault):
            sampling_tasks.maybe_inject_fault(name, 1, str(run_dir / "samples"))


def _samples_ref(run_dir):
    """What the sampling subflow returns to the stages after it."""
    return {"counts": {}, "ledger_hash": pipeline.ledger_hash(run_dir), "points_hash": pipeline.points_hash(run_dir)}


def test_task_names_say_what_each_stage_does():
    # The UI shows these: the MLE stage is named for what it is, and the laws behind the
    # values are chosen in a stage of their own.
    assert law_tasks.fit_mle_laws.name == "fit-mle-laws"
    assert law_tasks.choose_laws.name == "choose-laws"
    assert value_tasks.value.name == "value"


def test_fit_choose_value_select_tasks_write_their_files(sampled_run):
    run_dir, info, sampling, _, _ = sampled_run
    samples = _samples_ref(run_dir)
    mle = law_tasks.fit_mle_laws.fn(str(run_dir), sampling, samples)
    assert mle["points"] == 40 and mle["samples"] == 40 * 12 and set(mle["output"]) == {"laws_mle.parquet"}
    chosen_laws = law_tasks.choose_laws.fn(str(run_dir), info, sampling, samples, mle)
    assert set(chosen_laws["output"]) == {"laws.parquet"}
    values = value_tasks.value.fn(str(run_dir), info, sampling, samples, chosen_laws, mle)
    table = pd.read_parquet(run_dir / "values.parquet")
    assert values["points"] == len(table) == 40 and table["point_id"].is_unique
    # shapley comes from the estimator choose-laws chose by held-out likelihood; the
    # comparison columns and the out-of-bag evidence sit beside it.
    choice = chosen_laws["estimator"]
    assert values["estimator"] == choice
    scores, se = choice["heldout_nll"], choice["se_of_difference_to_best"]
    best = min((v, k) for k, v in scores.items() if v is not None)
    assert choice["method"] == "auto" and choice["best"] == best[1]
    # The one-standard-error rule among the candidates not set aside (none overridden here);
    # one that did not converge is used only where it scores best of all, and that is said.
    eligible = [c for c in choice["candidates"] if c not in choice["excluded"] and scores[c] is not None]
    low = min(scores[c] for c in eligible)
    assert choice["overridden"] is None
    if choice["used_anyway"] is None:
        assert choice["chosen"] == next(c for c in eligible if scores[c] - low <= se[c])
    else:
        assert scores[choice["chosen"]] == low and "did not converge" in choice["used_anyway"]
    # The law diagnostic rides with the choice, and run.json has it.
    diagnostic = chosen_laws["law_diagnostic"]
    assert diagnostic["verdict"] in ("holds", "does not hold", "undecided")
    assert diagnostic["estimator"] == choice["chosen"] and diagnostic["sentence"].endswith(".")
    assert json.loads((run_dir / "run.json").read_text())["law_diagnostic"] == diagnostic
    assert set(table["estimator"]) == {choice["chosen"]}
    assert {"shapley_mle", "shapley_amortized", "mc_mean", "oob", "n_oob"} <= set(table.columns)
    assert (table["n_oob"] > 0).all() and table["oob"].between(0, 1).all()
    mle_laws = FittedScalingLaws.load(run_dir / "laws_mle.parquet")
    expected = distributional_shapley(mle_laws, sampling["k_min"], sampling["k_max"]).to_series()
    np.testing.assert_allclose(table.set_index("point_id")["shapley_mle"], expected.reindex(table["point_id"]))
    assert "epsilon" in values["learning_curve"] and (run_dir / "learning_curve.json").exists()
    sel = value_tasks.select.fn(str(run_dir), info, chosen_laws, values, 10)
    chosen = pd.read_parquet(run_dir / "selection.parquet")
    assert sel["selected"] == len(chosen) == 10
    # Selected points are the highest predicted values c·n^(−α) at the pool size, 5 per class
    # (class-balanced), recomputed here from the laws fit_laws chose (the laws behind
    # `shapley`, laws.parquet) and the labels -- not from the MLE laws.
    from pointscale.data import open_dataset

    ds = open_dataset(info["path"])

    def top(laws):
        pred = pd.Series(laws.c * float(ds.n_pool) ** (-laws.alpha), index=laws.point_ids.astype(str)).dropna()
        labels = pd.Series(np.asarray(ds.y_train), index=ds.point_ids.astype(str)).reindex(pred.index)
        expected = set()
        for _, part in pred.groupby(labels):
            expected |= set(part.sort_values(ascending=False, kind="mergesort").index[:5])
        return expected, pred

    laws = FittedScalingLaws.load(run_dir / "laws.parquet")
    assert laws.estimator == choice["chosen"] != "mle" and set(chosen["estimator"]) == {laws.estimator}
    expected, pred = top(laws)
    assert set(chosen["point_id"].astype(str)) == expected
    # The MLE laws would choose other points here, so this checks which laws rank.
    assert top(mle_laws)[0] != expected
    np.testing.assert_allclose(chosen["predicted_value"].to_numpy(),
                               pred.reindex(chosen["point_id"].astype(str)).to_numpy(), rtol=1e-12)
    # run.json records which outputs are current, with the sha256 of each file.
    record = read_json(run_dir / "run.json")
    outputs = record["outputs"]
    assert outputs["values"]["files"] == {name: sha256_file(run_dir / name) for name in
                                          ("values.parquet", "learning_curve.json", "label_issues.csv")}
    # Label issues: the score is 1 - the out-of-bag probability of the given label (the
    # `oob` column, read from the ledger by values_table); the csv lists the flagged pool
    # rows, as many as run.json counts, and none scores below an unflagged valued point.
    np.testing.assert_allclose(table["label_issue_score"], 1.0 - table["oob"], rtol=1e-12)
    issues = record["label_issues"]
    flagged = pd.read_csv(run_dir / "label_issues.csv", dtype={"point_id": str})
    assert list(flagged.columns) == ["point_id", "label_issue_score", "given_label", "suggested_label"]
    assert len(flagged) == issues["n_flagged"] and issues["n_points"] == ds.n_pool
    assert issues["noise_rate"] == pytest.approx(len(flagged) / ds.n_pool, abs=1e-4) and "confident joint" in issues["rule"]
    unflagged = table[~table["point_id"].astype(str).isin(flagged["point_id"])]
    assert flagged["label_issue_score"].min() >= unflagged["label_issue_score"].max()
    assert (flagged["given_label"] != flagged["suggested_label"]).all()
    assert values["label_issues"] == dict(issues)
    # The value at the current size under its fixed name, with the size beside it.
    assert (table["size_now"] == ds.n_pool).all()
    np.testing.assert_array_equal(table["value_now"], table[f"value_at_{ds.n_pool}"])
    assert outputs["laws"]["files"] == {"laws.parquet": sha256_file(run_dir / "laws.parquet")}


def test_a_stage_reruns_exactly_when_its_inputs_code_or_files_change(sampled_run, monkeypatch):
    run_dir, info, sampling, _, _ = sampled_run
    from tasks import _cache

    samples = _samples_ref(run_dir)
    calls = []

    def compute():
        calls.append(1)
        return pipeline.fit_mle_laws(str(run_dir), sampling)

    def run(inputs):
        return _cache.run_stage(str(run_dir), "laws_mle", inputs, compute)

    pipeline.clear_output(run_dir, "laws_mle")  # an earlier test fitted these laws
    inputs = {"sampling": sampling, "ledger": samples["ledger_hash"], "points": samples["points_hash"]}
    first = run(inputs)
    assert not first["reused"] and len(calls) == 1
    again = run(dict(inputs))
    assert again["reused"] and len(calls) == 1 and again["output"] == first["output"]
    # Another setting, another key.
    run({**inputs, "points": "other"})
    assert len(calls) == 2
    run(inputs)
    assert len(calls) == 3  # the record now holds the other key: not current for these inputs
    run(inputs)
    assert len(calls) == 3
    # The file rewritten behind the record's back (another run's switches): stale.
    (run_dir / "laws_mle.parquet").write_bytes(b"not the laws")
    run(inputs)
    assert len(calls) == 4
    # Deleted: stale.
    (run_dir / "laws_mle.parquet").unlink()
    run(inputs)
    assert len(calls) == 5
    # Code of tasks/ or flows/ changed: a new key.
    monkeypatch.setattr(_cache, "code_version", lambda: "edited")
    run(inputs)
    assert len(calls) == 6


def test_code_version_covers_the_orchestration_code(tmp_path):
    from tasks._cache import code_version

    for version in ("1", "2"):
        (tmp_path / version / "flows").mkdir(parents=True)
        (tmp_path / version / "flows" / "x.py").write_text(f"a = {version}\n")
    one, two = (pipeline.code_version(tmp_path / v / "flows") for v in ("1", "2"))
    assert len({one, two, pipeline.code_version()}) == 3  # an edit in an added package changes the key
    assert code_version() != pipeline.code_version()  # tasks/ and flows/ are part of it


def test_choose_laws_applies_the_block_mean_control_variate_as_asked(sampled_run):
    from pointscale.errors import ConfigError
    from pointscale.laws.control import adjust

    run_dir, info, sampling, _, _ = sampled_run
    found = {}
    for setting in ("off", "on"):
        out = pipeline.choose_laws(run_dir, info["path"], sampling, laws_amortized=None, control_variate=setting)
        laws = FittedScalingLaws.load(run_dir / pipeline.LAWS)
        record = laws.meta["selection"]["control_variate"]
        assert record == out["control_variate"] and record["setting"] == setting
        assert record["applied"] is (setting == "on")
        found[setting] = (laws, record)
    # The record is adjust()'s on the run's ledger rows (blocks of 8 share each base).
    rows = pipeline.load_samples(run_dir, sampling, columns=pipeline.SAMPLE_COLUMNS + ("base_id", "sample_id"))
    _, expected = adjust(rows, seed=sampling["seed"])
    assert found["on"][1]["b"] == pytest.approx(expected["b"]) and found["on"][1]["n_bases"] == rows["base_id"].nunique()
    # Applied, the laws were fitted to other samples.
    assert not np.allclose(found["on"][0].c, found["off"][0].c)
    with pytest.raises(ConfigError, match="control_variate"):
        pipeline.choose_laws(run_dir, info["path"], sampling, control_variate="always")
