"""The R² statistics of a law against an empirical ψ (SPEC §6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score

from pointscale.errors import DataError
from pointscale.valuation import empirical_psi, empirical_psi_se, law_r2, split_halves

SIZES = [100, 129, 166, 215, 278, 359, 464, 599, 774, 1000]


def _laws(n, seed):
    g = np.random.default_rng(seed)
    c = g.lognormal(-1.0, 0.8, n) * np.where(g.random(n) < 0.2, -1, 1)
    alpha = g.uniform(0.8, 1.6, n)
    k = np.asarray(SIZES, dtype=float)
    return pd.DataFrame(c[:, None] * k[None, :] ** -alpha[:, None], columns=SIZES,
                        index=pd.Index([f"p{i}" for i in range(n)], name="point_id"))


def test_mean_per_size_r2_is_sklearn_r2_score_and_pooled_is_r2_of_the_raveled_cells():
    truth = _laws(200, 0)
    g = np.random.default_rng(1)
    pred = truth * (1 + 0.3 * g.standard_normal(truth.shape)) + 1e-4 * g.standard_normal(truth.shape)
    table = law_r2(truth, pred).set_index("target")
    assert table.loc["mean_per_size", "r2"] == pytest.approx(r2_score(truth.to_numpy(), pred.to_numpy()), abs=1e-12)
    assert table.loc["pooled", "r2"] == pytest.approx(
        r2_score(truth.to_numpy().ravel(), pred.to_numpy().ravel()), abs=1e-12)
    for k in SIZES:
        assert table.loc[str(k), "r2"] == pytest.approx(r2_score(truth[k], pred[k]), abs=1e-12)
    # ψ shrinks with k, so between-size spread inflates the pooled R² above the paper's
    assert table.loc["pooled", "r2"] > table.loc["mean_per_size", "r2"]
    assert np.isnan(table["noise_ceiling"]).all()


def test_non_finite_points_are_dropped_from_every_row_and_order_of_columns_does_not_matter():
    truth = _laws(50, 2)
    pred = truth * 1.1
    pred.iloc[3, 4] = np.nan
    table = law_r2(truth, pred[SIZES[::-1]])
    assert (table["n_points"] == 49).all()
    keep = truth.index != truth.index[3]
    assert table.set_index("target").loc["mean_per_size", "r2"] == pytest.approx(
        r2_score(truth[keep], pred[keep][SIZES]))
    with pytest.raises(DataError, match="lacks sizes"):
        law_r2(truth, pred[SIZES[:3]])


def test_noise_ceiling_is_what_the_exact_psi_scores_against_noisy_means():
    # The exact ψ scored against per-cell means of n noisy samples: its R² per
    # size must match the ceiling computed from the samples' standard errors.
    psi = _laws(400, 3)
    g = np.random.default_rng(4)
    n = 50
    rows = []
    for pid, row in psi.iterrows():
        for k in SIZES:
            sd = 4.0 * k ** -1.2  # per-sample noise well above the typical signal, as in the paper
            for r in range(n):
                rows.append((pid, k, r, row[k] + sd * g.standard_normal()))
    samples = pd.DataFrame(rows, columns=["point_id", "k", "round", "delta"])
    truth, se = empirical_psi(samples), empirical_psi_se(samples)
    table = law_r2(truth, psi, se).set_index("target")
    # 400 points: the per-size R² of the exact law scatters ~0.02 around its ceiling
    for k in SIZES:
        assert table.loc[str(k), "r2"] == pytest.approx(table.loc[str(k), "noise_ceiling"], abs=0.06)
    assert table.loc["mean_per_size", "r2"] == pytest.approx(table.loc["mean_per_size", "noise_ceiling"], abs=0.02)
    assert table.loc["mean_per_size", "noise_ceiling"] < 0.95  # the noise is not negligible here

    # out of sample: halves are disjoint and complete
    a, b = split_halves(samples)
    assert len(a) + len(b) == len(samples)
    assert a.groupby(["point_id", "k"]).size().eq(n // 2).all() and b.groupby(["point_id", "k"]).size().eq(n // 2).all()
    assert not set(zip(a.point_id, a.k, a["round"])) & set(zip(b.point_id, b.k, b["round"]))
    # a half's ceiling is lower (se grows by √2)
    half = law_r2(empirical_psi(b), psi, empirical_psi_se(b)).set_index("target")
    assert half.loc["mean_per_size", "noise_ceiling"] < table.loc["mean_per_size", "noise_ceiling"]
