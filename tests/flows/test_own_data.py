"""The user's own data and model through the real command line, Prefect server and Dask cluster:
a training file with a clean validation file, class-path estimators, resume, the task's default
model, coerced columns and revaluation against a fixed validation file (finding flipped labels and the
watcher: ``test_own_data_acceptance.py``, a file of their own so that a second test worker runs them)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pointscale.sampling import Ledger
from tests.conftest import run_cli
from tests.flows.conftest import own_files

pytestmark = pytest.mark.slow

# k_max within a third of the 150-point pool (the finite-pool size rule). The law choice is not under
# test here (tests/core/test_laws_auto.py; the default command: test_own_data_acceptance.py).
SMALL = ["--samples-per-point", "6", "--k-min", "20", "--k-max", "50", "--workers", "1", "--no-removal",
         "--select", "5", "--laws", "mle"]


def _args(tmp_path, train="train.csv"):
    return ["--dataset", str(tmp_path / train), "--valid", str(tmp_path / "valid.csv"), "--target", "label",
            "--id-column", "row_id"]


def _manifest(run_dir):
    return json.loads((run_dir / "run.json").read_text())


def _ledger(run_dir):
    return Ledger(run_dir / "samples").read()


GAUSSIAN_NB = ["--model", "sklearn.naive_bayes:GaussianNB"]
LOGISTIC_C05 = ["--model", "sklearn.linear_model:LogisticRegression", "--model-param", "C=0.5"]


def _own_run(root, model_args):
    """``pointscale run`` with a class-path estimator on the user's files in ``root``, and what it wrote,
    read at once: tests that continue the run (resume, revalue) change the folder afterwards."""
    train, valid = own_files(root)
    out = root / "run"
    args = [*_args(root), *model_args, *SMALL, "--out", str(out)]
    proc = run_cli("run", *args, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"train": train, "valid": valid, "root": root, "out": out, "args": args, "model_args": model_args,
            "values": pd.read_parquet(out / "values.parquet"), "manifest": _manifest(out),
            "ledger": _ledger(out).sort_values("sample_id").reset_index(drop=True)}


@pytest.fixture(scope="module")
def gaussian_nb_run(prefect_api, tmp_path_factory):
    """Checked as a user's estimator, then continued by the resume check."""
    return _own_run(tmp_path_factory.mktemp("gaussian-nb"), GAUSSIAN_NB)


@pytest.fixture(scope="module")
def logistic_run(prefect_api, tmp_path_factory):
    """Checked as a user's estimator with a parameter, then continued by the revalue check."""
    return _own_run(tmp_path_factory.mktemp("logistic"), LOGISTIC_C05)


@pytest.mark.parametrize("run, params", [
    ("gaussian_nb_run", {"var_smoothing": 1e-9}),
    ("logistic_run", {"C": 0.5}),
], ids=["GaussianNB", "LogisticRegression-C0.5"])
def test_user_estimators_complete_with_finite_values(request, run, params):
    run = request.getfixturevalue(run)
    train, valid, values, manifest = run["train"], run["valid"], run["values"], run["manifest"]
    assert len(values) == len(train) and np.isfinite(values["shapley"]).all()
    assert set(values["point_id"]) == set(train["row_id"])  # the whole training file is valued
    sampling = manifest["config"]["sampling"]
    assert sampling["model"] == run["model_args"][1]
    assert {k: sampling["model_params"][k] for k in params} == params
    ledger = run["ledger"]
    assert set(ledger["method"]) == {"cold"} and not ledger["failed"].any()  # base sharing, no fast path
    dataset = manifest["dataset"]
    assert (dataset["n_pool"], dataset["n_val"], dataset["n_test"]) == (len(train), len(valid), 0)


def test_resume_with_a_custom_estimator_reuses_every_sample(gaussian_nb_run):
    out, args, first = gaussian_nb_run["out"], gaussian_nb_run["args"], gaussian_nb_run["ledger"]
    # Lose part of the ledger (as a crash would), then rerun the same command.
    shards = sorted(Ledger(out / "samples").shard_dir.glob("*.parquet"))
    lost = shards[len(shards) // 2]
    for path in lost.parent.glob(lost.name + "*"):
        path.unlink()
    proc = run_cli("run", *args, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    counts = _manifest(out)["counts"]
    assert 0 < counts["fits_executed"] and counts["samples_reused"] > 0
    again = _ledger(out).sort_values("sample_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(again, first)  # the rebuilt estimator gives bit-identical samples
    proc = run_cli("run", *args, timeout=400)
    assert proc.returncode == 0 and _manifest(out)["counts"]["fits_executed"] == 0


def test_regression_dataset_without_a_model_completes_with_ridge(prefect_api, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("run", "--dataset", "diabetes", "--points", "40", *SMALL, "--out", str(out), timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    sampling = _manifest(out)["config"]["sampling"]
    assert (sampling["model"], sampling["metric"]) == ("ridge", "neg_mse")
    assert set(_ledger(out)["method"]) == {"rank_one"}  # ridge's exact fast path
    assert np.isfinite(pd.read_parquet(out / "values.parquet")["shapley"]).all()


def test_coerced_column_is_reported_in_run_json(prefect_api, tmp_path):
    train, _ = own_files(tmp_path)
    train["b"] = train["b"].astype(object)
    train.loc[[3, 77], "b"] = ["oops", "?!"]
    train.to_csv(tmp_path / "train.csv", index=False)
    out = tmp_path / "run"
    proc = run_cli("run", *_args(tmp_path), "--coerce-numeric", "--points", "20", *SMALL, "--out", str(out),
                   timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    manifest = _manifest(out)
    assert manifest["dataset"]["report"]["coerced_to_missing"] == {"b": 2}
    assert manifest["config"]["data"]["coerce_numeric"] is True


def test_revalue_keeps_the_validation_file_fixed_while_training_rows_arrive(logistic_run):
    # The run of a user's estimator with a parameter: revalue refits with the run's own model.
    train, valid, out, tmp_path = (logistic_run[k] for k in ("train", "valid", "out", "root"))
    rng = np.random.default_rng(5)
    new = train.sample(20, random_state=1).assign(row_id=[f"n{i}" for i in range(20)],
                                                  a=rng.normal(size=20))
    pd.concat([train, new]).to_csv(tmp_path / "train2.csv", index=False)
    proc = run_cli("revalue", "--run-dir", str(out), "--dataset", str(tmp_path / "train2.csv"),
                   "--workers", "1", timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    manifest = _manifest(out)
    assert manifest["revalue"]["new_points"] == 20 and manifest["dataset"]["n_val"] == len(valid)
    assert len(pd.read_parquet(out / "values.parquet")) == len(train) + 20
    # The new rows were triaged before any of them was sampled: triage.parquet is older than
    # every ledger shard holding a new row, and the forecast is graded in run.json.
    triage = out / "triage.parquet"
    assert set(pd.read_parquet(triage)["point_id"]) == set(new["row_id"])
    shards = [f for f in (out / "samples" / "shards").glob("*.parquet")
              if pd.read_parquet(f, columns=["point_id"])["point_id"].isin(new["row_id"]).any()]
    assert shards and triage.stat().st_mtime_ns < min(f.stat().st_mtime_ns for f in shards)
    assert manifest["triage"]["points"] == 20 and "spearman_label_score_vs_run" in manifest["triage"]
    assert "20 new points valued." in proc.stdout and "Triage of the new rows" in proc.stdout
    # The validation file changed in place: refused, nothing lost.
    valid.assign(a=valid["a"] + 1).to_csv(tmp_path / "valid.csv", index=False)
    pd.concat([train, new, new.assign(row_id=[f"m{i}" for i in range(20)])]).to_csv(tmp_path / "train3.csv",
                                                                                  index=False)
    proc = run_cli("revalue", "--run-dir", str(out), "--dataset", str(tmp_path / "train3.csv"),
                   "--workers", "1", timeout=400)
    assert proc.returncode == 2 and "validation rows differ" in proc.stderr and "Traceback" not in proc.stderr
    assert len(pd.read_parquet(out / "values.parquet")) == len(train) + 20
