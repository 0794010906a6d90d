"""Bad input and bad configuration end with one clear line and exit 2, before any compute.

These call the CLI's ``main`` in-process (one subprocess checks the installed
console script); validation happens before a Prefect server or a Dask
cluster would start, so no server is needed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pointscale.sampling.devices import _gpu

from flows.cli import main
from tests.conftest import run_cli
from tests.flows.conftest import own_files as _own_files


def _csv(tmp_path, n=120, **assign):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                          "y": rng.choice(["p", "q"], size=n)}).assign(**assign)
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    return str(path)


CASES = [
    (["--k-min", "200", "--k-max", "150"], "k_min=200 must not exceed k_max=150"),
    (["--k-max", "5000"], "largest k is 282"),
    (["--samples-per-point", "0"], "samples_per_point"),
    (["--model", "resnet"], "unknown model 'resnet'"),
    (["--metric", "f1"], "unknown metric 'f1'"),
    (["--metric", "neg_mse"], "neg_mse"),
    (["--model", "ridge"], "ridge"),
    (["--points", "100000"], "exceeds the training pool"),
    (["--dataset", "/nonexistent/data.csv", "--target", "y"], "data file not found"),
    (["--dataset", "no_such_builtin_name"], "not found"),
    (["--model-param", "n_neighbours=3", "--model", "knn"], "n_neighbours"),
    (["--laws", "nope"], "'nope' is not an estimator; use auto or one of shrinkage, mle"),
    (["--laws", "amortized_shrinkage", "--no-amortized"],
     "laws=amortized_shrinkage builds on the amortized estimator, which amortized=False turns off"),
]
# Without a GPU (none in CI), --device cuda must stop before anything runs.
if _gpu() is None:
    CASES.append((["--device", "cuda", "--model", "mlp_batched"], "device='cuda' needs a CUDA GPU"))


@pytest.mark.parametrize("args, message", CASES, ids=[c[1][:30] for c in CASES])
def test_bad_configuration_exits_2_with_message(tmp_path, capsys, args, message):
    code = main(["run", *args, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert message in err and err.startswith("pointscale: error:")
    # Nothing was computed: no ledger, no manifest.
    assert not (tmp_path / "run" / "samples").exists()
    assert not (tmp_path / "run" / "run.json").exists()


def test_bad_data_file_errors_from_the_console_script(tmp_path):
    # A real subprocess: the installed entry point turns the error into one line, no traceback.
    proc = run_cli("run", "--dataset", _csv(tmp_path), "--target", "nope", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "target column 'nope' not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_single_class_target(tmp_path, capsys):
    code = main(["run", "--dataset", _csv(tmp_path, y="p"), "--target", "y", "--out", str(tmp_path / "r")])
    assert code == 2 and "single class" in capsys.readouterr().err


HELP = {
    # each subcommand's help must document the options its command reads
    "run": ["--dataset", "--model", "--metric", "--k-min", "--k-max", "--samples-per-point", "--points",
            "--valid", "--test", "--split-column", "--coerce-numeric", "--encoding", "--laws"],
    "revalue": ["--run-dir", "--dataset"],
    "ingest": ["--dataset", "--target"],
    "sample": ["--dataset", "--samples-per-point"],
    "addition": ["--run-dir", "--n-small", "--n-large", "--repeats"],
    "server": ["--port"],
    "serve": ["--data-dir", "--cron", "--watch-interval", "--valid", "--model"],
    "reproduce": ["--settle", "--depth", "--repeats", "--quick", "--out", "--results", "--datasets", "--models",
                  "--gt-per-size", "--page-only", "--seed",
                  "--with-runs"],
}


@pytest.mark.parametrize("sub", sorted(HELP))
def test_every_subcommand_documents_its_options(sub, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([sub, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith(f"usage: pointscale {sub}")
    missing = [opt for opt in HELP[sub] if opt not in out]
    assert not missing, f"{sub} --help does not document {missing}"


def test_settle_names_the_models_it_knows(tmp_path, capsys):
    code = main(["reproduce", "--settle", "--models", "mlp", "--out", str(tmp_path / "s"),
                 "--results", str(tmp_path / "r.md")])
    err = capsys.readouterr().err
    assert code == 2 and "--settle knows the models logreg, xgboost, xgboost_monotone, mlp_batched, svm" in err
    assert "not mlp; name those instead" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()  # refused before any sampling


def test_an_unknown_option_exits_2_and_names_it(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["addition", "--run-dir", "x", "--no-such-option"])
    assert exit_info.value.code == 2 and "--no-such-option" in capsys.readouterr().err


# --------------------------------------------------------------------------- your own data and model


def _own_args(tmp_path):
    return ["--dataset", str(tmp_path / "train.csv"), "--valid", str(tmp_path / "valid.csv"),
            "--target", "label", "--id-column", "row_id"]


def _stray_string(tmp_path):
    train, _ = _own_files(tmp_path)
    train["b"] = train["b"].astype(object)
    train.loc[41, "b"] = "oops"
    train.to_csv(tmp_path / "train.csv", index=False)
    return []


def _points_file(tmp_path, text):
    (tmp_path / "pts.txt").write_text(text)
    return ["--points", str(tmp_path / "pts.txt")]


OWN_CASES = [
    ("unimportable model", lambda tmp: ["--model", "nosuch.module:Thing"],
     "cannot import module 'nosuch.module' for model 'nosuch.module:Thing'"),
    ("no predict_proba under a probability metric", lambda tmp: ["--model", "sklearn.svm:SVC"],
     "model 'sklearn.svm:SVC' has no predict_proba, which metric"),
    ("float column with a stray string", _stray_string,
     "column 'b' is numeric except for 1 value(s) that are not numbers: 'oops' at row 42"),
    ("setting the class refuses", lambda tmp: ["--model", "sklearn.naive_bayes:GaussianNB",
                                               "--model-param", "var_smoothing=-1"], "var_smoothing"),
    ("regressor on a classification task", lambda tmp: ["--model", "sklearn.linear_model:Ridge"],
     "is a regressor; it does not fit a classification task"),
    ("unknown sklearn scorer", lambda tmp: ["--metric", "sklearn:f2"], "unknown scikit-learn scorer 'f2'"),
    ("regression scorer", lambda tmp: ["--metric", "sklearn:r2"], "does not fit a classification task"),
    ("unknown point ids", lambda tmp: _points_file(tmp, "t1\nzz9\n"), "1 point id(s) in"),
    ("missing validation file", lambda tmp: ["--valid", str(tmp / "nope.csv")], "data file not found"),
    ("unknown encoding", lambda tmp: ["--encoding", "klingon"], "unknown encoding 'klingon'"),
]


@pytest.mark.parametrize("make, message", [c[1:] for c in OWN_CASES], ids=[c[0] for c in OWN_CASES])
def test_own_data_and_model_errors_exit_2_with_one_line(tmp_path, make, message):
    # A real subprocess: exactly one line on stderr, no traceback, nothing computed.
    _own_files(tmp_path)
    extra = make(tmp_path)
    args = _own_args(tmp_path)
    if "--valid" in extra:
        args = args[:2] + args[4:]  # the case brings its own --valid
    proc = run_cli("run", *args, *extra, "--out", str(tmp_path / "run"), timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("pointscale: error:") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "samples").exists() and not (tmp_path / "run" / "run.json").exists()


def test_unreachable_dask_address_is_one_line_in_seconds(tmp_path):
    """Checked before a server or a cluster starts: nothing listens on this loopback port."""
    import time

    from flows.runtime import free_port

    address = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = run_cli("run", "--dask-address", address, "--points", "10", "--out", str(tmp_path / "r"), timeout=120)
    took = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert f"no Dask scheduler answers at {address}" in proc.stderr
    assert took < 60
