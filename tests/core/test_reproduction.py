"""The reproduction (``reproduction/``): protocols checked against independent computations, and a
tiny end-to-end run (slow tier) whose page, figures and ledgers are checked."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score

from pointscale.data import load_dataset
from pointscale.errors import ConfigError
from pointscale.laws import fit_log_ols, fit_mle
from pointscale.sampling import SamplingConfig, sample_marginals
from reproduction import ModelScale, protocols as P
from reproduction.phases import size_plan


def test_model_scale_rejects_sample_counts_the_run_does_not_draw():
    with pytest.raises(ConfigError, match="shapley_ns"):
        ModelScale("logreg", fit_ns=(10, 30), shapley_ns=(10, 50))
    with pytest.raises(ConfigError, match="at least 3"):
        ModelScale("logreg", fit_ns=(2, 10))
    with pytest.raises(ConfigError, match="addition_sizes"):
        ModelScale("logreg", addition_sizes=(5000, 500))


def test_size_plan_follows_the_finite_pool_rule():
    big = SimpleNamespace(n_pool=46_842, n_classes=2)
    plan = size_plan(big, 5000)
    assert (plan["lo"], plan["hi"]) == (100, 1000)
    assert plan["grid"] == (100, 129, 166, 215, 278, 359, 464, 599, 774, 1000)  # SPEC §2
    assert plan["extrap"] == (2000, 5000)
    assert size_plan(SimpleNamespace(n_pool=9000, n_classes=2), 5000)["extrap"] == (2000,)  # 5000 > a third of the pool
    small = size_plan(SimpleNamespace(n_pool=314, n_classes=2), 5000)
    assert (small["lo"], small["hi"], small["extrap"]) == (10, 104, ())


@pytest.fixture(scope="module")
def cancer_gt():
    ds = load_dataset("breast_cancer")
    ids = [str(p) for p in ds.point_ids[:40]]
    cfg = SamplingConfig(mode="staggered", sizes=(15, 30, 60, 120), samples_per_size=8, block_size=20)
    return ds, ids, sample_marginals(ds, cfg, ids)


def test_law_fit_reports_the_papers_statistic_in_and_out_of_sample(cancer_gt):
    from pointscale.valuation import empirical_psi, split_halves

    ds, ids, gt = cancer_gt
    index = pd.Index(sorted(ids), name="point_id")
    table = P.law_fit(gt, gt.iloc[:0], (15, 30, 60, 120), index, {"mle": fit_mle})
    t = table.set_index(["fit", "target"])
    # independent recomputation: in sample = sklearn's r2_score on points x sizes of the MLE fitted on all samples
    laws = fit_mle(gt[["point_id", "k", "delta"]])
    psi = empirical_psi(gt).reindex(index)
    pred = P.law_predictions(laws, index, [15, 30, 60, 120])
    ok = pred.notna().all(axis=1)
    assert t.loc[("in-sample", "mean_per_size"), "r2"] == pytest.approx(r2_score(psi[ok], pred[ok]), abs=1e-9)
    # out of sample: fitted on half A, scored on half B's means
    a, b = split_halves(gt)
    laws_a = fit_mle(a[["point_id", "k", "delta"]])
    pred_a = P.law_predictions(laws_a, index, [15, 30, 60, 120])
    psi_b = empirical_psi(b).reindex(index)
    ok = pred_a.notna().all(axis=1)
    assert t.loc[("out-of-sample", "mean_per_size"), "r2"] == pytest.approx(r2_score(psi_b[ok], pred_a[ok]), abs=1e-9)
    assert t.loc[("out-of-sample", "mean_per_size"), "noise_ceiling"] < t.loc[("in-sample", "mean_per_size"),
                                                                             "noise_ceiling"]


def test_transfer_samples_rescore_the_same_fits(cancer_gt):
    ds = cancer_gt[0]
    ids = [str(p) for p in ds.point_ids[:30]]
    cfg = SamplingConfig(metric="paper_ce", k_min=15, k_max=100, samples_per_point=6, block_size=10)
    frames = P.transfer_samples(ds, lambda d, v: sample_marginals(d, cfg, ids), seed=0)
    assert set(frames) == {"val_a", "val_b", "val", "test"}
    # Δ on the whole validation split, computed directly, equals the row-weighted mean of the halves
    direct = sample_marginals(ds, cfg, ids).sort_values(["point_id", "round"]).reset_index(drop=True)
    np.testing.assert_allclose(frames["val"]["delta"], direct["delta"], rtol=1e-9, atol=1e-13)
    # and the test-scored Δ is recomputable from one pair of sklearn fits
    from pointscale.sampling.metrics import paper_ce_from_proba
    from pointscale.sampling.plans import subset_for
    from pointscale.sampling.models import make_estimator

    row = frames["test"].iloc[0]
    D = subset_for(row, ds, cfg)
    z = ds.index_of([row["point_id"]])
    X, y = np.asarray(ds.X_train), np.asarray(ds.y_train)
    scores = []
    for idx in (D, np.r_[D, z]):
        est = make_estimator("logreg", "classification", 0, None).fit(X[idx], y[idx])
        scores.append(paper_ce_from_proba(est.predict_proba(ds.X_test), np.asarray(ds.y_test)))
    assert row["delta"] == pytest.approx(scores[1] - scores[0], abs=1e-6)
    out = P.value_transfer(frames)
    assert -1 <= out["transfer_spearman"] <= 1 and out["points"] == 30


def test_addition_candidates_use_the_papers_r2_filter(cancer_gt):
    _, ids, gt = cancer_gt
    laws, kept, total = P.addition_candidates(gt, fit_log_ols)
    full = fit_log_ols(gt[~gt["failed"]][["point_id", "k", "delta"]])
    r2 = pd.Series(full.extra["r2"], index=full.point_ids)
    assert total == len(ids) and kept == int((r2 >= 0.9).sum()) == laws.n_points
    assert set(laws.point_ids) == set(r2.index[r2 >= 0.9])


# --------------------------------------------------------------------------- end to end (slow)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from reproduction import run_reproduction, tiny_config, write_results

    out = tmp_path_factory.mktemp("reproduce")
    result = run_reproduction(tiny_config(), out / "work")
    page = write_results(result, out / "docs" / "results.md")
    return SimpleNamespace(out=out, result=result, page=page)


@pytest.mark.slow
def test_tiny_run_writes_every_section_figures_and_refuses_the_degenerate_addition(tiny):
    text = tiny.page.read_text()
    for heading in ("## Verdicts", "## 0. Which utility", "## 1. Does the law hold?", "## 2. Spread of α and c",
                    "## 3. Estimator accuracy", "## 4. Valuation", "## 5. Point addition", "## 6. Cost",
                    "## Differences from the paper"):
        assert heading in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 4  # law + estimators figure per model
    for link in links:
        assert (tiny.page.parent / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # breast_cancer's 113 test rows: the addition is refused with the reason, not reported
    add = tiny.result.tables["addition"]
    assert (add["refused"].str.contains("113 rows")).all() and "refused — the test split" in text
    # facts come from the manifest: pool size, cores, workers
    man = tiny.result.manifest
    assert man["datasets"][0]["n_pool"] == 314 and f"{man['machine']['cpu_count']} CPU core(s)" in text


@pytest.mark.slow
def test_tiny_run_cost_counts_fits_from_the_plan_and_a_rerun_resumes(tiny):
    from reproduction import run_reproduction, tiny_config

    cost = tiny.result.tables["cost"].set_index(["model", "phase"])
    gt = cost.loc[("logreg", "ground_truth")]
    # 24 points in one block of <= 32, 10 sizes x 4 rounds -> 40 bases, 960 samples, one extra fit per base
    assert gt["samples"] == 24 * 10 * 4 and gt["fits"] == 960 + 40 and gt["paper_fits"] == 2 * 960
    again = run_reproduction(tiny_config(), tiny.out / "work")
    sampled = again.tables["cost"]
    assert (sampled[sampled["phase"] != "point_addition"]["fits_this_run"] == 0).all()
    pd.testing.assert_frame_equal(again.tables["shapley"], tiny.result.tables["shapley"])


@pytest.mark.slow
def test_tiny_run_monte_carlo_shapley_equals_the_mean_of_the_ledger(tiny):
    from pointscale.sampling import Ledger
    from pointscale.valuation import empirical_psi, grid_shapley, score_pair

    root = tiny.out / "work" / "ledgers" / "breast_cancer" / "logreg"
    uni = Ledger(next(root.glob("uniform-*"))).read()
    gt = Ledger(next(root.glob("ground_truth-*"))).read()
    uni, gt = uni[~uni["failed"]], gt[~gt["failed"]]
    truth = grid_shapley(empirical_psi(gt), 10, 104)
    mc = uni[uni["round"] < 12].groupby("point_id")["delta"].mean().reindex(truth.index)
    expect = score_pair(mc.to_numpy(), truth.to_numpy())["explained_variance"]
    row = tiny.result.tables["shapley"].query("model == 'logreg' and estimator == 'monte_carlo' and n == 12")
    assert row["explained_variance"].iloc[0] == pytest.approx(expect, rel=1e-9)


@pytest.mark.slow
def test_a_finished_run_reloads_and_merges_into_one_page(tiny):
    from reproduction import ReproductionResult, write_results

    loaded = ReproductionResult.load(tiny.out / "work")
    assert loaded.manifest["finished"] and loaded.manifest["models_done"] == ["breast_cancer/logreg",
                                                                                "breast_cancer/xgboost"]
    pd.testing.assert_frame_equal(loaded.tables["shapley"], tiny.result.tables["shapley"], check_dtype=False)
    # The same run twice would report every (dataset, model) twice: refused, naming the pair.
    with pytest.raises(ConfigError, match="breast_cancer/logreg is in both"):
        ReproductionResult.merge([loaded, ReproductionResult.load(tiny.out / "work")])

    def one_model(model: str) -> ReproductionResult:
        tables = {name: (t[t["model"] == model].reset_index(drop=True) if "model" in t else t)
                  for name, t in loaded.tables.items()}
        manifest = dict(loaded.manifest, models_done=[f"breast_cancer/{model}"])
        return ReproductionResult(tables=tables, manifest=manifest, folder=loaded.folder)

    # Runs of another seed (or scale, utility, block size) measure something else: refused.
    reseeded = one_model("xgboost")
    reseeded.manifest["config"] = dict(reseeded.manifest["config"], seed=1)
    with pytest.raises(ConfigError, match="share the scale, seed"):
        ReproductionResult.merge([one_model("logreg"), reseeded])

    merged = ReproductionResult.merge([one_model("logreg"), one_model("xgboost")])
    assert merged.manifest["models_done"] == loaded.manifest["models_done"]
    assert len(merged.tables["law_fit"]) == len(loaded.tables["law_fit"])
    page = write_results(merged, tiny.out / "merged" / "results.md").read_text()
    assert "Merged from runs of the same scale" in page
    assert "Law fit, breast_cancer/logreg" in page and "Law fit, breast_cancer/xgboost" in page
