"""The user's own data, the issue's acceptance check and the watcher: 10 % flipped labels in a digits
training file found against a clean validation file with exactly the command a user types, and a
validation file kept fixed while training files arrive in a watched folder. (Split from
``test_own_data.py`` so that the suite's second worker runs these two, its slowest tests, beside it.)"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import run_cli
from tests.flows.conftest import own_files

pytestmark = pytest.mark.slow


def test_flipped_labels_are_found_against_a_clean_validation_file(prefect_api, tmp_path):
    # The acceptance check, exactly the command a user types (default model, utility and
    # size range): 10 % flipped labels in a digits training file, a clean validation file, 20 samples
    # per point (benchmarks/own_data.py).
    from benchmarks.own_data import aucs, make_files

    made = make_files(tmp_path, seed=0)
    out = tmp_path / "run"
    proc = run_cli("run", "--dataset", str(tmp_path / "train.csv"), "--valid", str(tmp_path / "valid.csv"),
                   "--target", "label", "--id-column", "row_id", "--samples-per-point", "20",
                   "--workers", "2", "--out", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = aucs(out, made["flipped"])
    assert result["valued"] == 1347 and result["flipped_valued"] == 135
    assert result["auc_shapley"] >= 0.8, result


def test_watcher_keeps_a_validation_file_fixed_while_training_files_arrive(prefect_server, tmp_path):
    # The served flow the watcher's event starts, with serve's options: a validation file kept in the
    # watched folder under a leading "_" (which the scan skips) stays the validation split of every run.
    from flows.options import PipelineOptions
    from flows.watch import on_new_data_flow, scan_datasets

    data = tmp_path / "incoming"
    data.mkdir()
    train, valid = own_files(data)
    (data / "valid.csv").rename(data / "_valid.csv")
    found, _ = scan_datasets(data)
    assert set(found) == {"train"}  # the validation file is not a dataset
    options = PipelineOptions(target="label", id_column="row_id", valid=str(data / "_valid.csv"),
                              model="sklearn.naive_bayes:GaussianNB", samples_per_point=6, k_min=20, k_max=50,
                              workers=1, removal=False, select_m=5, laws="mle")  # the law choice: not under test
    runs = tmp_path / "runs"
    first = on_new_data_flow(name="train", path=found["train"]["path"], runs_dir=str(runs), options=options)
    assert first["action"] == "pipeline"
    more = train.sample(20, random_state=2).assign(row_id=[f"n{i}" for i in range(20)])
    pd.concat([train, more]).to_csv(data / "train.csv", index=False)
    found, _ = scan_datasets(data)
    second = on_new_data_flow(name="train", path=found["train"]["path"], runs_dir=str(runs), options=options)
    assert second["action"] == "revalue" and second["new_points"] == 20
    manifest = json.loads((runs / "train" / "run.json").read_text())
    assert manifest["dataset"]["n_val"] == len(valid) and manifest["dataset"]["n_pool"] == len(train) + 20
    assert manifest["config"]["sampling"]["model"] == "sklearn.naive_bayes:GaussianNB"
