"""FittedScalingLaws: validation, tables, prediction, files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pointscale.errors import DataError, ExtrapolationWarning, PointscaleError
from pointscale.laws import FittedScalingLaws, fit_mle
from pointscale.laws.simulate import draw_parameters, simulate_samples


def make(n=4, intervals=True, **overrides):
    kwargs = dict(
        point_ids=np.array([f"p{i}" for i in range(n)]),
        c=np.linspace(-0.5, 1.0, n),
        alpha=np.linspace(0.8, 1.6, n),
        sigma=np.full(n, 0.3),
        beta=np.full(n, 2.5),
        nll=np.linspace(-3.0, -2.0, n),
        n_samples=np.arange(10, 10 + n),
        estimator="mle",
        flags={"poor_fit": np.arange(n) % 2 == 0},
        extra={"var_c": np.full(n, 0.01), "var_alpha": np.full(n, 0.04), "cov_c_alpha": np.full(n, 0.005)},
        k_range=(100, 1000),
        meta={"note": "test", "missing": float("nan")},
    )
    if intervals:
        kwargs.update(
            alpha_low=kwargs["alpha"] - 0.2,
            alpha_high=kwargs["alpha"] + 0.2,
            c_low=kwargs["c"] - 0.1,
            c_high=kwargs["c"] + 0.1,
        )
    kwargs.update(overrides)
    return FittedScalingLaws(**kwargs)


def test_shapes_are_validated():
    with pytest.raises(PointscaleError, match="alpha has shape"):
        make(alpha=np.ones(3))
    with pytest.raises(PointscaleError, match="all-or-nothing"):
        make(intervals=False, alpha_low=np.zeros(4))
    with pytest.raises(PointscaleError, match="boolean"):
        make(flags={"poor_fit": np.zeros(4)})
    with pytest.raises(PointscaleError, match="estimator"):
        make(estimator="adam")
    with pytest.raises(PointscaleError, match="clashes"):
        make(extra={"alpha": np.zeros(4)})


def test_frame_has_every_column():
    laws = make()
    frame = laws.to_frame()
    for col in ("point_id", "c", "alpha", "sigma", "beta", "nll", "n_samples", "alpha_low", "alpha_high",
                "c_low", "c_high", "estimator", "poor_fit", "var_c", "var_alpha", "cov_c_alpha"):
        assert col in frame.columns
    assert len(frame) == 4 and frame["poor_fit"].dtype == bool
    no_int = make(intervals=False).to_frame()
    assert no_int["alpha_low"].isna().all()
    assert laws.n_points == 4 and laws.has_intervals and not make(intervals=False).has_intervals


def test_predict_and_extrapolation_warning():
    laws = make()
    k = np.array([100.0, 500.0])
    pred = laws.predict(k)
    assert pred.shape == (4, 2)
    np.testing.assert_allclose(pred, laws.c[:, None] * k[None, :] ** (-laws.alpha[:, None]))
    with pytest.warns(ExtrapolationWarning, match="5000"):
        laws.predict([5000])
    with pytest.raises(PointscaleError, match="> 0"):
        laws.predict([0.0])


def test_predict_interval_is_the_delta_method():
    laws = make()
    k = 300.0
    lo, hi = laws.predict_interval([k])
    # Written out for one point: g = (k^-a, -c ln k k^-a), var = g' S g.
    i = 1
    m = k ** -laws.alpha[i]
    g = np.array([m, -laws.c[i] * np.log(k) * m])
    S = np.array([[0.01, 0.005], [0.005, 0.04]])
    half = 1.959963984540054 * np.sqrt(g @ S @ g)
    assert lo[i, 0] == pytest.approx(laws.c[i] * m - half)
    assert hi[i, 0] == pytest.approx(laws.c[i] * m + half)
    lo90, hi90 = laws.predict_interval([k], level=0.9)
    assert hi90[i, 0] - lo90[i, 0] < hi[i, 0] - lo[i, 0]


def test_missing_intervals_raise_naming_the_estimator():
    laws = make(intervals=False, estimator="log_ols", extra={})
    with pytest.raises(PointscaleError, match="log_ols"):
        laws.predict_interval([100])
    with pytest.raises(PointscaleError, match="log_ols"):
        laws.conf_int()


def test_conf_int_and_summary():
    laws = make()
    ci = laws.conf_int()
    assert list(ci.columns) == ["alpha_low", "alpha_high", "c_low", "c_high"]
    assert ci.index.name == "point_id" and ci.loc["p2", "alpha_low"] == pytest.approx(laws.alpha[2] - 0.2)
    text = laws.summary()
    assert "4 points" in text and "poor_fit" in text and "alpha" in text


def test_save_load_round_trip(tmp_path):
    laws = fit_mle(simulate_samples(draw_parameters(12, seed=1), 30, seed=2))
    path = laws.save(tmp_path / "laws_mle.parquet")
    assert (tmp_path / "laws_mle.parquet.json").exists()
    back = FittedScalingLaws.load(path)
    pd.testing.assert_frame_equal(back.to_frame(), laws.to_frame())
    assert back.k_range == laws.k_range and back.estimator == "mle"
    assert back.meta == json.loads(json.dumps(laws.meta))
    assert set(back.flags) == set(laws.flags) and set(back.extra) == set(laws.extra)
    # NaN survives the JSON sidecar.
    other = make()
    other.save(tmp_path / "x.parquet")
    assert np.isnan(FittedScalingLaws.load(tmp_path / "x.parquet").meta["missing"])
    # No intervals stays no intervals.
    make(intervals=False).save(tmp_path / "y.parquet")
    assert not FittedScalingLaws.load(tmp_path / "y.parquet").has_intervals


def test_load_refuses_a_table_without_its_sidecar(tmp_path):
    path = make().save(tmp_path / "a.parquet")
    (tmp_path / "a.parquet.json").unlink()
    with pytest.raises(DataError, match="sidecar"):
        FittedScalingLaws.load(path)


def test_subset_and_concat():
    laws = make()
    sub = laws.subset(["p3", "p1"])
    assert list(sub.point_ids) == ["p3", "p1"]
    assert sub.alpha[0] == laws.alpha[3] and sub.flags["poor_fit"][1] == laws.flags["poor_fit"][1]
    masked = laws.subset(laws.flags["poor_fit"])
    assert list(masked.point_ids) == ["p0", "p2"]
    with pytest.raises(PointscaleError, match="unknown"):
        laws.subset(["nope"])
    joined = FittedScalingLaws.concat([laws.subset(["p0", "p1"]), laws.subset(["p2", "p3"])])
    pd.testing.assert_frame_equal(joined.to_frame(), laws.to_frame())
    with pytest.raises(PointscaleError, match="overlap"):
        FittedScalingLaws.concat([laws, laws])


def test_zero_c_predicts_zero_even_with_unknown_alpha():
    laws = make(c=np.array([0.0, 1.0, 0.0, 2.0]), alpha=np.array([np.nan, 1.0, np.nan, 1.0]), intervals=False)
    pred = laws.predict([100, 200])
    assert np.all(pred[[0, 2]] == 0.0) and np.all(np.isfinite(pred))
