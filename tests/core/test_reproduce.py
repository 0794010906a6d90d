"""The reproduction command's core: a tiny end-to-end run (so it cannot rot) and
its summary statistics checked against independent computations."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pointscale import reproduce as rp
from pointscale.errors import ConfigError


# --------------------------------------------------------------------------- statistics


def test_r_squared_hand_computed():
    o = np.array([1.0, 2.0, 3.0, 4.0])
    assert rp.r_squared(o, o) == 1.0
    assert rp.r_squared(o, np.full(4, o.mean())) == 0.0
    # SSE = 4 * 0.25 = 1, SST = 5  ->  0.8
    assert rp.r_squared(o, o + 0.5) == pytest.approx(0.8)
    # NaN pairs are dropped, not counted as errors
    assert rp.r_squared(np.r_[o, np.nan], np.r_[o, 7.0]) == 1.0


def test_noise_ceiling_matches_the_r2_of_the_exact_truth():
    # Exact psi plus Gaussian error of known s.e.: the R² of the truth against
    # the noisy means must match 1 - mean(se²)/var(noisy) within sampling error.
    g = np.random.default_rng(3)
    truth = g.normal(0.0, 1.0, 20_000)
    se = np.full(truth.size, 0.5)
    noisy = truth + g.normal(0.0, 1.0, truth.size) * se
    assert rp.noise_ceiling(noisy, se) == pytest.approx(rp.r_squared(noisy, truth), abs=0.02)
    assert rp.noise_ceiling(noisy, se) == pytest.approx(0.8, abs=0.02)  # 1 - 0.25 / 1.25


def test_size_plan_uses_the_paper_range_when_the_pool_allows():
    big = SimpleNamespace(n_pool=46_842, n_classes=2, task="classification", name="big")
    plan = rp.size_plan(big, 32, 5000)
    assert (plan["lo"], plan["hi"]) == (100, 1000)
    assert plan["grid"] == (100, 129, 166, 215, 278, 359, 464, 599, 774, 1000)  # SPEC §2
    assert plan["extrap"] == (2000, 5000)
    assert rp.size_plan(big, 32, 2000)["extrap"] == (2000,)


def test_size_plan_small_pool_keeps_a_tenfold_range_and_extrapolates_to_the_largest_k():
    small = SimpleNamespace(n_pool=314, n_classes=2, task="classification", name="small")
    plan = rp.size_plan(small, 32, 5000)
    assert (plan["lo"], plan["hi"]) == (20, 200)
    assert plan["extrap"] == (280,)  # largest base: 314 - 32 = 282
    assert max(plan["grid"]) == 200 and min(plan["grid"]) == 20


def test_model_scale_rejects_sample_counts_the_run_does_not_draw():
    with pytest.raises(ConfigError, match="shapley_ns"):
        rp.ModelScale("logreg", fit_ns=(10, 30), shapley_ns=(10, 50))
    with pytest.raises(ConfigError, match="at least 3"):
        rp.ModelScale("logreg", fit_ns=(2, 10))


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    result = rp.run_reproduction(rp.tiny_config(), out / "work")
    page = rp.write_results(result, out / "docs" / "results.md")
    return SimpleNamespace(out=out, result=result, page=page)


def test_tiny_run_writes_the_page_with_every_section_and_its_figures(tiny):
    text = tiny.page.read_text()
    for heading in ("## What reproduced", "## 1. Does the law hold?", "## 2. Spread of α and c",
                    "## 3. Estimator accuracy", "## 4. Valuation", "## 5. Point addition", "## 6. Cost"):
        assert heading in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 4  # law + estimators figure per model
    for link in links:
        png = (tiny.page.parent / link).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # headers with '|' must be escaped or the tables break
    for line in text.splitlines():
        if line.startswith("| dataset"):
            assert "\\|" in line or "|c|" not in line


def test_tiny_run_covers_both_models_and_every_protocol(tiny):
    t = tiny.result.tables
    for name in ("law_fit", "point_r2", "params", "relations", "accuracy", "shapley", "addition", "cost"):
        assert set(t[name]["model"]) == {"logreg", "xgboost"}, name
    assert set(t["noisy"]["model"]) == {"logreg"}  # xgboost's tiny scale skips it
    acc = t["accuracy"]
    assert acc["extrapolated"].any() and (acc.loc[acc["extrapolated"], "k"] == 280).all()
    mc = t["shapley"][t["shapley"]["estimator"] == "monte_carlo"]
    assert set(mc["n"]) == {5, 12, 4}
    for col in ("pearson", "spearman", "sign_agreement"):
        v = pd.concat([acc[col], t["shapley"][col]]).dropna()
        assert ((v >= -1 - 1e-12) & (v <= 1 + 1e-12)).all()
    r2 = t["law_fit"].filter(like="r2").to_numpy(dtype=float)
    assert np.nanmax(r2) <= 1.0


def test_cost_table_counts_fits_from_the_plan(tiny):
    # Ground truth, logreg: 24 points in one block of <= 32, 10 sizes x 3 rounds
    # -> 30 bases, 720 samples; shared bases cost one fit each on top.
    cost = tiny.result.tables["cost"].set_index(["model", "phase"])
    gt = cost.loc[("logreg", "ground_truth")]
    assert gt["samples"] == 24 * 10 * 3
    assert gt["fits"] == 720 + 30
    assert gt["paper_fits"] == 2 * 720
    uni = cost.loc[("logreg", "uniform")]
    assert uni["samples"] == 24 * 12 and uni["fits"] == 24 * 12 + 12


def test_monte_carlo_shapley_equals_the_mean_of_the_ledger(tiny):
    # Independent recomputation from the ledger files on disk.
    from pointscale.sampling import Ledger
    from pointscale.valuation import empirical_psi, grid_shapley, score_pair

    root = tiny.out / "work" / "ledgers" / "breast_cancer" / "logreg"
    uni = Ledger(next(root.glob("uniform-*"))).read()
    gt = Ledger(next(root.glob("ground_truth-*"))).read()
    uni, gt = uni[~uni["failed"]], gt[~gt["failed"]]
    truth = grid_shapley(empirical_psi(gt), 20, 200)
    mc = uni[uni["round"] < 12].groupby("point_id")["delta"].mean().reindex(truth.index)
    expect = score_pair(mc.to_numpy(), truth.to_numpy())["explained_variance"]
    row = tiny.result.tables["shapley"].query("model == 'logreg' and estimator == 'monte_carlo' and n == 12")
    assert row["explained_variance"].iloc[0] == pytest.approx(expect, rel=1e-9)


def test_rerun_resumes_from_the_ledgers(tiny):
    again = rp.run_reproduction(rp.tiny_config(), tiny.out / "work")
    cost = again.tables["cost"]
    sampled = cost[cost["phase"] != "point_addition"]
    assert (sampled["fits_this_run"] == 0).all()
    pd.testing.assert_frame_equal(again.tables["shapley"], tiny.result.tables["shapley"])
    assert math.isfinite(again.wall_seconds)
