"""Ingestion: ids, fingerprints, splits, preprocessing and every bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pointscale.data import load_dataset, open_dataset
from pointscale.errors import ConfigError, DataError


def _frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    y = np.where(x1 + rng.normal(scale=0.5, size=n) > 0, "yes", "no")
    return pd.DataFrame({"x1": x1, "x2": rng.integers(0, 100, n), "color": color, "label": y})


def test_builtin_breast_cancer_shapes_and_task():
    d = load_dataset("breast_cancer")
    assert d.task == "classification" and d.n_classes == 2
    assert d.X_train.shape[1] == 30 and len(d.point_ids) == d.X_train.shape[0]
    assert d.X_train.shape[0] + d.X_val.shape[0] + d.X_test.shape[0] == 569
    # Standardised on the training pool only: pool means ~0, stds ~1.
    np.testing.assert_allclose(d.X_train.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(d.X_train.std(axis=0), 1, atol=1e-9)
    assert len(set(d.point_ids)) == len(d.point_ids)


def test_regression_and_digits_binarised():
    assert load_dataset("diabetes").task == "regression"
    d = load_dataset("digits")
    assert set(np.unique(d.y_train)) == {0, 1}


def test_split_is_stratified():
    d = load_dataset("breast_cancer")
    shares = [np.bincount(y, minlength=2)[1] / len(y) for y in (d.y_train, d.y_val, d.y_test)]
    # 357/569 = 0.627 positives overall; rounding per class moves a share by < 1 row / split size.
    for share in shares:
        assert abs(share - 357 / 569) < 0.02


def test_fingerprint_stable_and_sensitive(tmp_path):
    f = _frame()
    f.to_csv(tmp_path / "a.csv", index=False)
    a1 = load_dataset(tmp_path / "a.csv", target="label")
    a2 = load_dataset(tmp_path / "a.csv", target="label")
    assert a1.fingerprint == a2.fingerprint
    g = f.copy()
    g.loc[5, "x1"] += 1e-3
    g.to_csv(tmp_path / "b.csv", index=False)
    assert load_dataset(tmp_path / "b.csv", target="label").fingerprint != a1.fingerprint
    # Settings are part of the fingerprint too.
    assert load_dataset(tmp_path / "a.csv", target="label", seed=1).fingerprint != a1.fingerprint


def test_ids_stable_under_appended_rows(tmp_path):
    f = _frame(200)
    f.to_csv(tmp_path / "a.csv", index=False)
    more = pd.concat([f, _frame(40, seed=1)], ignore_index=True)
    more.to_csv(tmp_path / "b.csv", index=False)
    a = load_dataset(tmp_path / "a.csv", target="label")
    b = load_dataset(tmp_path / "b.csv", target="label")
    ids_a = set(a.point_ids) | set(a.val_ids) | set(a.test_ids)
    ids_b = set(b.point_ids) | set(b.val_ids) | set(b.test_ids)
    assert ids_a < ids_b and len(ids_b - ids_a) == 40


def test_extending_a_version_keeps_old_points_exactly(tmp_path):
    f = _frame(200)
    a = load_dataset("a", frame=f, target="label")
    more = pd.concat([f, _frame(30, seed=2)], ignore_index=True)
    b = load_dataset("b", frame=more, target="label", base=a)
    assert list(b.val_ids) == list(a.val_ids) and list(b.test_ids) == list(a.test_ids)
    assert list(b.point_ids[: a.n_pool]) == list(a.point_ids)
    np.testing.assert_array_equal(b.X_train[: a.n_pool], a.X_train)
    np.testing.assert_array_equal(b.X_val, a.X_val)
    assert b.n_pool == a.n_pool + 30 and b.fingerprint != a.fingerprint


def test_duplicate_rows_get_suffixed_ids():
    f = _frame(50)
    f = pd.concat([f, f.iloc[[3, 3]]], ignore_index=True)
    d = load_dataset("dup", frame=f, target="label", val_size=10, test_size=5)
    all_ids = list(d.point_ids) + list(d.val_ids) + list(d.test_ids)
    assert len(set(all_ids)) == 52
    assert sum(i.endswith("~1") for i in all_ids) == 1 and sum(i.endswith("~2") for i in all_ids) == 1


def test_id_column_and_categoricals(tmp_path):
    f = _frame(120)
    f.insert(0, "uid", [f"row{i}" for i in range(120)])
    f.loc[[1, 2, 3], "color"] = np.nan
    f.to_parquet(tmp_path / "t.parquet")
    d = load_dataset(tmp_path / "t.parquet", target="label", id_column="uid")
    assert all(p.startswith("row") for p in d.point_ids)
    assert "color=red" in d.feature_names and "uid" not in d.feature_names
    assert d.report["missing_values_imputed"] == {"color": 3}


def test_folder_of_files_is_concatenated(tmp_path):
    f = _frame(120)
    f.iloc[:60].to_csv(tmp_path / "part1.csv", index=False)
    f.iloc[60:].to_csv(tmp_path / "part2.csv", index=False)
    d = load_dataset(tmp_path, target="label")
    assert d.n_pool + len(d.val_ids) + len(d.test_ids) == 120


def test_save_and_memory_mapped_open(tmp_path):
    d = load_dataset("breast_cancer")
    folder = d.save(tmp_path)
    e = open_dataset(folder)
    assert isinstance(e.X_train, np.memmap)
    np.testing.assert_array_equal(e.X_train, d.X_train)
    assert e.fingerprint == d.fingerprint and list(e.point_ids) == list(d.point_ids)
    assert e.config == d.config


@pytest.mark.parametrize(
    "make, kwargs, message",
    [
        (lambda p: None, {"target": "label"}, "not found"),
        (lambda p: p.write_text(""), {"target": "label"}, "empty"),
        (lambda p: p.write_text("x1,label\n"), {"target": "label"}, "no rows"),
        (lambda p: p.write_bytes(b"\x00\xff\x00garbage"), {"target": "label"}, "cannot read"),
        (lambda p: _frame().to_csv(p, index=False), {"target": "nope"}, "target column 'nope' not found"),
        (lambda p: _frame().assign(label="yes").to_csv(p, index=False), {"target": "label"}, "single class"),
        (lambda p: _frame().assign(label=["a"] + ["b"] * 199).to_csv(p, index=False),
         {"target": "label"}, "fewer than 2 rows"),
        (lambda p: _frame().assign(empty=np.nan).to_csv(p, index=False), {"target": "label"},
         "entirely missing"),
        (lambda p: _frame(12).to_csv(p, index=False), {"target": "label"}, "too few"),
        (lambda p: _frame().to_csv(p, index=False), {}, "--target is required"),
    ],
)
def test_bad_input_gets_a_clear_error(tmp_path, make, kwargs, message):
    path = tmp_path / ("bad.parquet" if "cannot read" in message else "bad.csv")
    make(path)
    with pytest.raises((DataError, ConfigError), match=message):
        load_dataset(path, **kwargs)


# --------------------------------------------------------------------------- columns that cannot be features


def _dated(n=240, seed=0):
    frame = _frame(n, seed)
    frame["visit"] = pd.date_range("2019-06-01", periods=n, freq="37h").strftime("%Y-%m-%d %H:%M")
    frame["note"] = [f"called back on day {i}" for i in range(n)]
    frame.loc[[3, 9], "visit"] = None
    return frame


def test_dates_become_date_features_and_near_unique_text_is_dropped():
    d = load_dataset("dated", frame=_dated(), target="label")
    plain = load_dataset("plain", frame=_frame(240), target="label")
    assert d.feature_names == (*plain.feature_names, "visit.days", "visit.month", "visit.weekday")
    assert d.n_features == plain.n_features + 3  # not one indicator per row
    lines = d.report["data_preparation"]
    assert any(line.startswith("column 'visit' holds dates: became numeric features") for line in lines)
    assert any(line.startswith("dropped column 'note': text with 240 distinct values") for line in lines)
    columns = d.report["columns"]
    assert columns["note"].startswith("dropped") and columns["visit"].startswith("dates")
    assert columns["color"].startswith("categorical") and columns["label"] == "target"
    # The date features are numbers in time order (days since 1970, standardised).
    days = d.feature_names.index("visit.days")
    assert np.isfinite(d.X_train[:, days]).all() and d.X_train[:, days].std() > 0.5


def test_keep_columns_keeps_them_as_they_are():
    kept = load_dataset("dated", frame=_dated(), target="label", keep_columns=["note", "visit"])
    assert any(name.startswith("note=") for name in kept.feature_names)
    assert any(name.startswith("visit=") for name in kept.feature_names)
    assert "visit.days" not in kept.feature_names
    assert not [line for line in kept.report["data_preparation"] if "dates" in line or "dropped column" in line]
    with pytest.raises(ConfigError, match="--keep-columns names 'nope'"):
        load_dataset("dated", frame=_dated(), target="label", keep_columns=["nope"])


def test_fingerprints_change_only_for_converted_columns():
    # Data without such columns keeps the fingerprint it had before these rules existed.
    assert load_dataset("breast_cancer").fingerprint.startswith("1cad8cde")
    a = load_dataset("dated", frame=_dated(), target="label")
    b = load_dataset("dated", frame=_dated(), target="label", keep_columns=["note"])
    assert a.fingerprint != b.fingerprint


def test_extension_applies_the_base_versions_column_rules():
    first = _dated(200)
    base = load_dataset("dated", frame=first, target="label")
    added = _dated(40, seed=5).assign(note=[f"new note {i}" for i in range(40)])
    more = load_dataset("dated", frame=pd.concat([first, added], ignore_index=True), target="label", base=base)
    assert more.feature_names == base.feature_names and more.n_pool == base.n_pool + 40
    np.testing.assert_array_equal(more.X_train[more.index_of(base.point_ids)], base.X_train)


def test_dropped_target_rows_and_imputations_are_said():
    frame = _frame(200)
    frame.loc[:9, "label"] = None
    frame.loc[20:22, "x1"] = np.nan
    d = load_dataset("f", frame=frame, target="label")
    lines = d.report["data_preparation"]
    assert "dropped 10 of 200 rows: their target 'label' is missing" in lines
    assert "column 'x1': 3 missing value(s) imputed with the training pool's median" in lines
    assert d.report["rows_dropped_missing_target"] == 10
