"""Given validation/test splits, dirty numeric columns and encodings (the user's own data)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from pointscale.data import DataConfig, load_dataset
from pointscale.errors import ConfigError, DataError


def _frame(n, seed, prefix):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({
        "row_id": [f"{prefix}{i}" for i in range(n)],
        "x": x,
        "color": rng.choice(["red", "green"], size=n),
        "label": np.where(x + rng.normal(scale=0.5, size=n) > 0, "yes", "no"),
    })


@pytest.fixture()
def files(tmp_path):
    train, valid, test = _frame(200, 1, "t"), _frame(60, 2, "v"), _frame(40, 3, "s")
    valid.loc[0, "color"] = "purple"  # a category the training pool never saw
    paths = {}
    for name, frame in (("train", train), ("valid", valid), ("test", test)):
        paths[name] = tmp_path / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    return paths, (train, valid, test)


def test_given_files_are_the_splits_and_preprocessing_sees_the_pool_only(files):
    paths, (train, valid, test) = files
    ds = load_dataset(paths["train"], valid=paths["valid"], test=paths["test"], target="label",
                      id_column="row_id")
    assert ds.point_ids.tolist() == train["row_id"].tolist()  # every training row is valued
    assert ds.val_ids.tolist() == valid["row_id"].tolist()
    assert ds.test_ids.tolist() == test["row_id"].tolist()
    assert ds.report["splits"] == "given"
    # Standardised with the training pool's mean and scale, not the validation file's.
    x = ds.feature_names.index("x")
    mean, scale = train["x"].mean(), train["x"].std(ddof=0)
    np.testing.assert_allclose(ds.X_val[:, x], (valid["x"] - mean) / scale, rtol=1e-12)
    # The unseen category encodes as all zeros; the known ones as one-hot.
    onehot = [i for i, n in enumerate(ds.feature_names) if n.startswith("color=")]
    assert ds.feature_names[onehot[0]] in ("color=green", "color=red") and len(onehot) == 2
    assert np.all(ds.X_val[0, onehot] == 0) and np.all(ds.X_val[1:, onehot].sum(axis=1) == 1)


def test_without_a_test_file_the_test_split_is_empty(files):
    paths, (train, _, _) = files
    ds = load_dataset(paths["train"], valid=paths["valid"], target="label", id_column="row_id")
    assert ds.n_pool == len(train) and ds.X_test.shape == (0, ds.n_features)


def test_split_column_gives_the_same_arrays_as_files(files, tmp_path):
    paths, (train, valid, test) = files
    one = pd.concat([train.assign(split="train"), valid.assign(split="valid"), test.assign(split="Test")])
    one = one.sample(frac=1.0, random_state=0)  # rows interleaved: the column decides, not the order
    path = tmp_path / "one.csv"
    one.to_csv(path, index=False)
    a = load_dataset(paths["train"], valid=paths["valid"], test=paths["test"], target="label", id_column="row_id")
    b = load_dataset(path, split_column="split", target="label", id_column="row_id")
    assert "split" not in b.feature_names
    order = pd.Index(b.point_ids).get_indexer(a.point_ids)
    # Row order differs, so the pool mean is summed in another order: equal to rounding.
    np.testing.assert_allclose(b.X_train[order], a.X_train, rtol=1e-12, atol=1e-15)
    vorder = pd.Index(b.val_ids).get_indexer(a.val_ids)
    np.testing.assert_allclose(b.X_val[vorder], a.X_val, rtol=1e-12, atol=1e-15)
    assert sorted(b.test_ids) == sorted(a.test_ids)


def test_fingerprint_covers_every_split(files, tmp_path):
    paths, (train, valid, test) = files
    kw = dict(target="label", id_column="row_id")
    base = load_dataset(paths["train"], valid=paths["valid"], test=paths["test"], **kw).fingerprint
    # Same content under other names: same fingerprint (paths are not content).
    copies = {k: tmp_path / f"copy_{k}.csv" for k in paths}
    for k in paths:
        shutil.copy(paths[k], copies[k])
    assert load_dataset(copies["train"], valid=copies["valid"], test=copies["test"], **kw).fingerprint == base
    # One changed value in the validation or the test file: a new fingerprint.
    for name, frame in (("valid", valid), ("test", test)):
        changed = frame.copy()
        changed.loc[3, "x"] += 1.0
        changed.to_csv(copies[name], index=False)
        fp = load_dataset(copies["train"], valid=copies["valid"], test=copies["test"], **kw).fingerprint
        assert fp != base, name
        shutil.copy(paths[name], copies[name])
    # Swapping the roles of two files is another dataset too.
    swapped = load_dataset(copies["train"], valid=copies["test"], test=copies["valid"], **kw).fingerprint
    assert swapped != base
    # Without a test file: another fingerprint than with it.
    assert load_dataset(paths["train"], valid=paths["valid"], **kw).fingerprint != base


def test_content_ids_of_the_training_file_survive_appends_and_other_splits(files, tmp_path):
    paths, (train, valid, _) = files
    kw = dict(target="label")
    first = load_dataset(paths["train"], valid=paths["valid"], **kw)
    more = pd.concat([train, _frame(30, 9, "n")], ignore_index=True)
    path = tmp_path / "more.csv"
    more.to_csv(path, index=False)
    second = load_dataset(path, valid=paths["valid"], **kw)
    assert second.point_ids[: len(train)].tolist() == first.point_ids.tolist()
    assert second.val_ids.tolist() == first.val_ids.tolist()
    # Ids of the training file do not depend on the validation file.
    other_valid = tmp_path / "v2.csv"
    _frame(50, 11, "w").to_csv(other_valid, index=False)
    assert load_dataset(paths["train"], valid=other_valid, **kw).point_ids.tolist() == first.point_ids.tolist()


def test_extending_keeps_old_points_and_requires_the_same_validation_rows(files, tmp_path):
    paths, (train, valid, _) = files
    kw = dict(target="label", id_column="row_id")
    old = load_dataset(paths["train"], valid=paths["valid"], **kw)
    more = pd.concat([train, _frame(30, 9, "n")], ignore_index=True)
    path = tmp_path / "more.csv"
    more.to_csv(path, index=False)
    new = load_dataset(path, valid=paths["valid"], base=old, **kw)
    assert new.n_pool == len(more)
    np.testing.assert_array_equal(new.X_train[: old.n_pool], old.X_train)  # same features for old points
    np.testing.assert_array_equal(new.X_val, old.X_val)
    changed = valid.copy()
    changed.loc[0, "x"] = 99.0
    moved = tmp_path / "valid2.csv"
    changed.to_csv(moved, index=False)
    with pytest.raises(DataError, match="validation rows differ from those of the run's dataset version"):
        load_dataset(path, valid=moved, base=old, **kw)


@pytest.mark.parametrize("kwargs, message", [
    (dict(test="TEST"), "needs valid= too"),
    (dict(valid="VALID", split_column="split"), "not both"),
    (dict(valid="VALID", val_size=10), "leave them out"),
    (dict(encoding="no-such-codec"), "unknown encoding 'no-such-codec'"),
])
def test_bad_split_settings(files, kwargs, message):
    paths, _ = files
    kwargs = {k: (str(paths["test"]) if v == "TEST" else str(paths["valid"]) if v == "VALID" else v)
              for k, v in kwargs.items()}
    with pytest.raises(ConfigError, match=message):
        load_dataset(paths["train"], target="label", **kwargs)


def test_bad_given_splits(files, tmp_path):
    paths, (train, valid, _) = files
    other = tmp_path / "other.csv"
    valid.drop(columns=["color"]).to_csv(other, index=False)
    with pytest.raises(DataError, match=r"validation file .* other columns .*missing color"):
        load_dataset(paths["train"], valid=other, target="label")
    one = tmp_path / "one.csv"
    pd.concat([train.assign(split="train"), valid.assign(split="holdout")]).to_csv(one, index=False)
    with pytest.raises(DataError, match="split column 'split' has value.*'holdout'"):
        load_dataset(one, split_column="split", target="label")
    with pytest.raises(DataError, match="split column 'nosplit' not found"):
        load_dataset(one, split_column="nosplit", target="label")
    pd.concat([train.assign(split="train"), valid.assign(split="test")]).to_csv(one, index=False)
    with pytest.raises(DataError, match="validation split .* is empty"):
        load_dataset(one, split_column="split", target="label")
    extra = valid.copy()
    extra.loc[0, "label"] = "maybe"
    extra.to_csv(other, index=False)
    with pytest.raises(DataError, match="training pool .* no rows of class\\(es\\) 'maybe'"):
        load_dataset(paths["train"], valid=other, target="label")


def test_dirty_numeric_column_is_named_with_count_and_rows(files, tmp_path):
    paths, (train, valid, _) = files
    dirty = train.copy()
    dirty["x"] = dirty["x"].astype(object)
    dirty.loc[[4, 120], "x"] = ["oops", "n/a?"]
    path = tmp_path / "dirty.csv"
    dirty.to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        load_dataset(path, valid=paths["valid"], target="label")
    text = str(info.value)
    assert "column 'x'" in text and "2 value(s)" in text and "'oops' at row 5 of" in text
    assert "row 121" in text and "--coerce-numeric" in text and "\n" not in text
    ds = load_dataset(path, valid=paths["valid"], target="label", coerce_numeric=True)
    assert ds.report["coerced_to_missing"] == {"x": 2}
    assert "x" in ds.feature_names and not any(n.startswith("x=") for n in ds.feature_names)
    # The strays become the training median (imputation), the other values stay.
    x = ds.feature_names.index("x")
    assert np.isfinite(ds.X_train[:, x]).all()


def test_dirty_value_in_the_validation_file_names_that_file(files, tmp_path):
    paths, (_, valid, _) = files
    dirty = valid.copy()
    dirty["x"] = dirty["x"].astype(object)
    dirty.loc[7, "x"] = "oops"
    path = tmp_path / "dirty_valid.csv"
    dirty.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"1 value\(s\) .*'oops' at row 8 of .*dirty_valid.csv"):
        load_dataset(paths["train"], valid=path, target="label")


def test_a_categorical_column_is_not_mistaken_for_a_dirty_numeric_one(tmp_path):
    frame = _frame(200, 1, "t")
    frame["code"] = np.where(np.arange(200) % 3 == 0, "A", "7")  # a third are letters: categorical
    path = tmp_path / "codes.csv"
    frame.to_csv(path, index=False)
    ds = load_dataset(path, target="label")
    assert {"code=A", "code=7"} <= set(ds.feature_names)


def test_encoding(tmp_path):
    frame = _frame(120, 1, "t")
    frame["city"] = np.where(np.arange(120) % 2 == 0, "Genève", "Zürich")
    path = tmp_path / "latin.csv"
    frame.to_csv(path, index=False, encoding="latin-1")
    with pytest.raises(DataError, match=r"cannot read .*latin.csv as utf-8: byte 0x.. .*--encoding latin-1"):
        load_dataset(path, target="label")
    ds = load_dataset(path, target="label", encoding="latin-1")
    assert {"city=Genève", "city=Zürich"} <= set(ds.feature_names)
    assert DataConfig(encoding="latin-1").stable_hash() != DataConfig().stable_hash()


def test_seeded_split_fingerprints_are_unchanged_by_the_new_settings():
    # Versions ingested before given splits existed keep their fingerprints (new fields at defaults
    # stay out of the hash); checked against the fields the fingerprint covers.
    cfg = DataConfig(source="breast_cancer")
    assert set(cfg.fingerprint_fields()) == {"target", "id_column", "task", "val_size", "test_size", "seed"}
    assert "coerce_numeric" in DataConfig(coerce_numeric=True).fingerprint_fields()
