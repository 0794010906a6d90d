"""The per-point stages by partitions of points give exactly the one-process results.

The reference is independent of the partitioned code: the ledger read whole
(:func:`pointscale.pipeline.load_samples`, :func:`pointscale.sampling.oob_evidence`)
and the laws fitted on all of it at once (:func:`pointscale.laws.fit_mle`).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pointscale import partitions, pipeline
from pointscale.data import open_dataset
from pointscale.errors import DataError
from pointscale.laws import FittedScalingLaws, fit_mle
from pointscale.runs import RunFolder
from pointscale.sampling import Ledger, oob_evidence
from pointscale.storage import Store


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    info = pipeline.ingest({"source": "breast_cancer", "seed": 0}, run_dir)
    ds = open_dataset(info["path"])
    points = pipeline.choose_points(ds, 48, 0)
    pipeline.save_point_groups(run_dir, [points])
    cfg = pipeline.resolve_sampling(ds, model="logreg", metric=None, k_min=None, k_max=None, samples_per_point=8,
                                    seed=0, block_size=8, shard_size=2, n_points=len(points))
    sampling = cfg.to_dict()
    plan = pipeline.plan_sampling(info["path"], sampling, [points], run_dir / "samples")
    for i in range(len(pipeline.plan_shard_names(plan["plan"]))):
        pipeline.run_shard(info["path"], sampling, plan["plan"], i, run_dir / "samples")
    return str(run_dir), info, sampling


def test_partition_of_a_point_is_the_same_in_every_process():
    ids = [f"pt-{i}" for i in range(50)]
    here = partitions.part_of(ids, 7).tolist()
    code = (f"from pointscale.partitions import part_of; print(part_of({ids!r}, 7).tolist())")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert here == eval(there)  # noqa: S307 - our own list literal
    assert len(set(here)) == 7  # the hash spreads the points over every partition


def test_partitions_hold_exactly_the_ledger_rows_and_evidence(sampled):
    run_dir, _, sampling = sampled
    record = partitions.split(run_dir, sampling, part_points=10)
    assert record["parts"] == 5
    whole = pipeline.load_samples(run_dir, sampling, columns=pipeline.SAMPLE_COLUMNS)
    parts = [partitions.part_samples(run_dir, record, p) for p in range(record["parts"])]
    assert sum(len(p) for p in parts) == len(whole)
    for p, frame in enumerate(parts):
        assert set(partitions.part_of(frame["point_id"], record["parts"])) <= {p}
        # The partition's rows are the whole ledger's rows of its points, in ledger order.
        expected = whole[whole["point_id"].isin(set(frame["point_id"]))].reset_index(drop=True)
        pd.testing.assert_frame_equal(frame, expected[frame.columns.tolist()])
    evidence = pd.concat([partitions.part_evidence(run_dir, record, p) for p in range(record["parts"])])
    reference = oob_evidence(Ledger(RunFolder(run_dir).samples))
    assert len(reference) > 48  # evidence of pool points beyond the valued ones too
    pd.testing.assert_frame_equal(evidence.sort_values("point_id").reset_index(drop=True),
                                  reference.sort_values("point_id").reset_index(drop=True), check_dtype=False)
    # Committed once: the same ledger and points reuse it.
    assert partitions.plan_split(run_dir, sampling, 10)["done"]


def test_mle_laws_and_values_by_partitions_equal_one_process(sampled):
    run_dir, info, sampling = sampled
    run = RunFolder(run_dir)
    reference = fit_mle(pipeline.load_samples(run_dir, sampling)).to_frame()
    out = {}
    for part_points in (10 ** 6, 7):
        mle = pipeline.fit_mle_laws(run_dir, sampling, part_points=part_points)
        assert mle["partitions"] == (1 if part_points > 48 else 7)
        pd.testing.assert_frame_equal(FittedScalingLaws.load(run.file(pipeline.LAWS_MLE)).to_frame(), reference)
        if part_points > 48:  # the chosen laws are the same input to both value stages
            pipeline.choose_laws(run_dir, info["path"], sampling, laws_mle=pipeline.LAWS_MLE)
        summary = pipeline.value(run_dir, info["path"], sampling, laws=pipeline.LAWS, part_points=part_points)
        out[part_points] = (pd.read_parquet(run.file(pipeline.VALUES)), summary)
    (one, s1), (many, s7) = out[10 ** 6], out[7]
    assert {"rank", "oob", "label_issue_score", "mc_mean", "shapley_mle"} <= set(one.columns)
    pd.testing.assert_frame_equal(one, many)  # exact: same rows, order, dtypes and values
    assert s1["label_issues"] == s7["label_issues"] and s1["learning_curve"] == s7["learning_curve"]
    assert one["rank"].min() == 1 and one["rank"].max() == one["shapley"].notna().sum()


@pytest.mark.parametrize("max_train", [None, 30])
def test_amortized_laws_by_partitions_equal_one_process(sampled, max_train):
    """Trained on the training points' rows read by partitions, predicted partition by partition: the laws
    of one model trained and predicting on the whole ledger at once (below and above the training budget).

    The model is the same (its training rows are put back in ledger order); a prediction is the same up
    to the last bit BLAS may round differently in a matrix product of another row count."""
    from pointscale.laws import AmortizedScalingLaws
    from pointscale.laws.amortized import training_points

    run_dir, info, sampling = sampled
    run = RunFolder(run_dir)
    ds = open_dataset(info["path"])
    rows = pipeline.load_samples(run_dir, sampling)
    oob = oob_evidence(Ledger(run.samples))
    _, train, train_rows = training_points(rows, sampling["seed"], max_train)
    assert train.size == (48 if max_train is None else 30)
    model = AmortizedScalingLaws(random_state=sampling["seed"], task=ds.task)
    idx = ds.index_of(train)
    model.fit(np.asarray(ds.X_train)[idx], np.asarray(ds.y_train)[idx], train_rows, train, oob=oob)
    whole = model.predict_laws(np.asarray(ds.X_train), np.asarray(ds.y_train), ds.point_ids, oob=oob)
    summary = pipeline.fit_amortized(run_dir, info["path"], sampling, None, max_train, part_points=10)
    assert summary["parts"]["folder"].startswith("parts/") and summary["points_trained"] == train.size
    assert summary["partitions"] == 5
    record = partitions.split(run_dir, sampling, part_points=10)
    assert record["parts"] == 5
    saved = AmortizedScalingLaws.load(run.file(pipeline.AMORTIZED_MODEL))  # the same model, bit for bit
    assert (saved.k0_, saved.delta_scale_, saved.selection_) == (model.k0_, model.delta_scale_, model.selection_)
    for mine, theirs in zip(saved.model_.weights, model.model_.weights, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    laws = FittedScalingLaws.load(run.file(pipeline.LAWS_AMORTIZED))
    assert laws.n_points == ds.n_pool  # the whole pool, the run's 48 points and the others
    order = np.argsort(whole.point_ids.astype(str))
    assert laws.point_ids.astype(str).tolist() == whole.point_ids.astype(str)[order].tolist()
    np.testing.assert_array_equal(laws.n_samples, np.asarray(whole.n_samples)[order])
    for name in ("c", "alpha", "sigma", "beta"):
        # The same model and inputs; BLAS may round a matrix product of fewer rows in the last bit.
        np.testing.assert_allclose(getattr(laws, name), np.asarray(getattr(whole, name))[order], rtol=1e-12,
                                   atol=0, err_msg=name)
    for name, flag in whole.flags.items():
        np.testing.assert_array_equal(laws.flags[name], np.asarray(flag)[order], err_msg=name)
    # Each partition's file holds the pool's points of that partition.
    for part in range(record["parts"]):
        part_laws = partitions.load_laws(Store(run_dir), f"{summary['parts']['folder']}/p{part:04d}.parquet")
        assert set(partitions.part_of(part_laws.point_ids, 5)) == {part}
    if max_train is None:  # the later stages read the parts: the values they get from the joined files
        assert partitions.committed_parts(run_dir, record, summary["parts"]) == summary["parts"]["folder"]
        mle = pipeline.fit_mle_laws(run_dir, sampling, part_points=10)
        assert partitions.committed_parts(run_dir, record, mle["parts"]) == mle["parts"]["folder"]
        pipeline.choose_laws(run_dir, info["path"], sampling, method="mle", control_variate="off", part_points=10)
        kwargs = dict(laws_amortized=pipeline.LAWS_AMORTIZED, part_points=10)
        pipeline.value(run_dir, info["path"], sampling, **kwargs)
        cut = pd.read_parquet(run.file(pipeline.VALUES))
        pipeline.value(run_dir, info["path"], sampling, laws_parts={"mle": mle["parts"], "amortized": summary["parts"]},
                       **kwargs)
        by_parts = pd.read_parquet(run.file(pipeline.VALUES))
        assert np.isfinite(by_parts[["shapley_amortized", "shapley_mle"]]).all().all() and len(by_parts) == 48
        pd.testing.assert_frame_equal(by_parts, cut)


def test_a_shard_changed_after_verification_is_never_read(sampled, tmp_path):
    run_dir, _, sampling = sampled
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    plan = partitions.plan_split(str(copy), sampling, 17)  # 3 partitions of the 48 points
    assert not plan["done"]  # another part count: a new split
    shard = plan["groups"][0][0]
    target = copy / "samples" / shard["file"]
    target.write_bytes(target.read_bytes()[:-10] + b"0123456789")  # torn after the ledger was verified
    with pytest.raises(DataError, match="does not match its checksum record"):
        partitions.split_group(str(copy), sampling, plan["key"], 3, 0, plan["groups"][0])
    assert not Store(str(copy)).exists("parts", plan["key"], "split.json")


def test_control_variate_of_some_points_counts_every_point_of_their_blocks(sampled):
    from pointscale.laws.control import adjust, apply_control, base_totals, control_table, merge_totals

    run_dir, _, sampling = sampled
    rows = pipeline.load_samples(run_dir, sampling, columns=pipeline.SAMPLE_COLUMNS + ("base_id", "sample_id"))
    some = rows["point_id"].isin(sorted(set(rows["point_id"]))[:20]).to_numpy()
    totals = merge_totals([base_totals(rows.loc[some]), base_totals(rows.loc[~some])])
    whole, record = adjust(rows, check=False)
    assert record["available"] and record["n_adjusted"] > 0
    # The table from the partitions' totals adjusts every row as adjust() does with all rows at hand.
    again = apply_control(rows, control_table(totals), record["b"])
    np.testing.assert_allclose(again["delta"], whole["delta"], rtol=0, atol=1e-12)
    # Some points' rows with the run's totals: their controls count the points outside them.
    part, rec = adjust(rows.loc[some], bases=totals, check=False)
    assert rec["n_bases"] == record["n_bases"]
    expected = apply_control(rows.loc[some], control_table(totals), rec["b"])
    np.testing.assert_allclose(part["delta"], expected["delta"], rtol=0, atol=1e-12)
    alone, _ = adjust(rows.loc[some], check=False)  # without the totals: other controls
    assert not np.allclose(alone["delta"], part["delta"])


@pytest.mark.parametrize("method, control_variate", [("auto", "off"), ("shrinkage", "on"), ("mle", "off"),
                                                     ("amortized_shrinkage", "on")])
def test_law_choice_on_a_sample_of_the_points_is_applied_to_the_others(sampled, method, control_variate):
    from pointscale.laws.auto import usable_samples
    from pointscale.laws.control import apply_control
    from pointscale.laws.estimators import FitContext, fit_estimator

    run_dir, info, sampling = sampled
    run = RunFolder(run_dir)
    store = Store(run_dir)
    parts = {"mle": pipeline.fit_mle_laws(run_dir, sampling, part_points=7)["parts"]}
    amortized = None
    if method.startswith("amortized"):
        parts["amortized"] = pipeline.fit_amortized(run_dir, info["path"], sampling, None, part_points=7)["parts"]
        amortized = pipeline.LAWS_AMORTIZED
    kwargs = dict(method=method, control_variate=control_variate, part_points=7, laws_amortized=amortized,
                  laws_parts=parts)
    full = pipeline.choose_laws(run_dir, info["path"], sampling, choice_points=48, **kwargs)  # every point
    whole = FittedScalingLaws.load(run.file(pipeline.LAWS))
    assert full["law_diagnostic"]["choice_points"] == full["law_diagnostic"]["points"] == 48
    assert "choice" not in whole.meta
    out = pipeline.choose_laws(run_dir, info["path"], sampling, choice_points=20, **kwargs)
    laws = FittedScalingLaws.load(run.file(pipeline.LAWS))
    assert out["law_diagnostic"]["choice_points"] == 20 and out["law_diagnostic"]["points"] == 48
    assert run.read_manifest()["law_diagnostic"]["choice_points"] == 20
    assert laws.meta["choice"]["points"] == 20 and laws.meta["choice"]["of"] == 48
    assert set(laws.point_ids) == set(whole.point_ids) and out["points"] == laws.n_points
    assert laws.estimator == laws.meta["selection"]["chosen"] == (whole.estimator if method == "auto" else method)
    assert (laws.meta["selection"]["control_variate"]["applied"]) == (control_variate == "on")
    assert laws.meta["law_diagnostic"]["n_points_scored"] <= 20
    # The sample's points keep the choice's laws; every other point gets the chosen estimator's law
    # with the hyperparameters the choice learned, fitted here in one call on all of them at once.
    record = partitions.split(run_dir, sampling, part_points=7)
    folders = [f for f in store.list(f"parts/{record['key']}") if f.startswith("choice-")]
    plan = next(p for p in (store.read_json(f"parts/{record['key']}/{f}/plan.json") for f in folders)
                if p["chosen"] == laws.estimator and p["control"]["applied"] == (control_variate == "on"))
    sample = set(store.read_json(plan["folder"], "points.json"))
    assert len(sample) == 20 and sample == set(partitions.choice_points(run_dir, record, 0, 20))
    choice = partitions.load_laws(store, f"{plan['folder']}/laws.parquet")
    both = laws.subset(list(choice.point_ids)).to_frame()
    pd.testing.assert_frame_equal(both, choice.to_frame())
    rows = pipeline.load_samples(run_dir, sampling, columns=pipeline.SAMPLE_COLUMNS + ("base_id", "sample_id"))
    rows = rows.loc[~rows["point_id"].isin(sample)]
    if plan["control"]["applied"]:
        rows = apply_control(rows, store.read_parquet(plan["control"]["table"]).to_pandas(), plan["control"]["b"])
    else:
        rows = rows[list(pipeline.SAMPLE_COLUMNS)]
    oob = oob_evidence(Ledger(run.samples))
    ds = open_dataset(info["path"])
    context = FitContext(dataset=ds, oob=oob, random_state=0, k_range=tuple(plan["k_range"]),
                         populations=plan["populations"])
    usable = usable_samples(rows)
    cache = {}
    if plan["chosen"] == "mle" and not plan["control"]["applied"]:
        cache["mle"] = FittedScalingLaws.load(run.file(pipeline.LAWS_MLE))
    if method == "amortized_shrinkage":  # adjusted samples: the choice's amortized model, saved for the others
        assert plan["model"]
        ids = usable["point_id"].unique()
        idx = ds.index_of(ids)
        cache["amortized"] = partitions._load_amortized_model(store, plan["model"]).predict_laws(
            np.asarray(ds.X_train)[idx], np.asarray(ds.y_train)[idx], ids, samples=usable, oob=oob)
    reference = fit_estimator(plan["chosen"], usable, context, cache)
    reference = reference.subset([p for p in reference.point_ids if p not in sample])
    others = laws.subset(list(reference.point_ids))
    # Exact but for the shrinkage modes' convergence tolerance (1e-4, normalised units): their
    # starting values use the median noise of the points fitted together.
    rtol = 1e-3 if plan["chosen"].endswith("shrinkage") else 1e-12
    for name in ("c", "alpha", "sigma", "beta"):
        np.testing.assert_allclose(getattr(others, name), getattr(reference, name), rtol=rtol, atol=rtol * 1e-5)
    pipeline.value(run_dir, info["path"], sampling, laws=pipeline.LAWS, part_points=7)  # the values follow
