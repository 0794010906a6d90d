"""The bad inputs of issue 28, as a new user meets them: one line, exit status 2, in seconds.

Each case is a row of ``docs/errors.md``. Real subprocesses of the CLI (one
line on stderr, no traceback); none of them starts a Prefect server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from flows.cli import _validate
from flows.options import PipelineOptions
from tests.conftest import run_cli


def _one_line(proc: subprocess.CompletedProcess, message: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("pointscale: error:") and message in lines[0], proc.stderr


def _timed_run(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = run_cli("run", *args, timeout=120)
    return proc, time.monotonic() - started


def _csv(path, n, seed=0, **columns):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                          "y": rng.choice(["p", "q"], size=n)}).assign(**columns)
    frame.to_csv(path, index=False)
    return str(path)


# --------------------------------------------------------------------------- the run folder


def test_out_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    proc, took = _timed_run("--out", str(tmp_path / "f"))
    _one_line(proc, f"--out {tmp_path / 'f'}: {tmp_path / 'f'} is a file; give a folder path")
    assert took < 15, took


def test_out_inside_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    proc, took = _timed_run("--out", str(tmp_path / "f" / "run"))
    _one_line(proc, f"cannot be created: {tmp_path / 'f'} is a file")
    assert took < 15, took


def _unwritable(folder) -> bool:
    """Make ``folder`` unwritable to this process: immutable (root), or read-only permissions."""
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        return True
    chattr = shutil.which("chattr")
    return bool(chattr) and subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode == 0


def test_out_in_an_unwritable_folder(tmp_path):
    folder = tmp_path / "locked"
    if not _unwritable(folder):
        pytest.skip("cannot make a folder unwritable here (root without chattr +i)")
    try:
        proc, took = _timed_run("--out", str(folder / "run"))
        _one_line(proc, f"cannot write in {folder}")
        assert "give a folder you can write to" in proc.stderr and took < 15, took
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=False)
        else:
            folder.chmod(0o700)


# --------------------------------------------------------------------------- the data


def test_a_30_row_file_is_told_in_rows(tmp_path):
    proc, _ = _timed_run("--dataset", _csv(tmp_path / "small.csv", 30), "--target", "y",
                         "--out", str(tmp_path / "r"))
    _one_line(proc, "small.csv has 30 rows: 17 in the training pool, 7 validation, 6 test; valuing needs a "
                    "file of at least 59 rows")
    assert "k_max" not in proc.stderr


def test_the_smallest_file_named_works(tmp_path, capsys):
    # The size the message names is enough: the checks before any compute pass.
    _validate(PipelineOptions(dataset=_csv(tmp_path / "ok.csv", 59), target="y"))


def test_rows_dropped_and_columns_converted_are_said_on_the_terminal(tmp_path, capsys):
    n = 300
    y = np.where(np.arange(n) < 40, None, np.random.default_rng(1).choice(["p", "q"], n)).astype(object)
    path = _csv(tmp_path / "wine.csv", n, y=y,
                harvest=pd.date_range("2001-03-01", periods=n, freq="D").strftime("%Y-%m-%d"),
                note=[f"tasting note {i}" for i in range(n)])
    ds, _ = _validate(PipelineOptions(dataset=path, target="y"))
    err = capsys.readouterr().err
    assert "data: dropped 40 of 300 rows: their target 'y' is missing" in err
    assert "data: column 'harvest' holds dates: became numeric features harvest.days" in err
    assert "data: dropped column 'note': text with 260 distinct values" in err and "--keep-columns note" in err
    assert ds.n_features == 5  # a, b and three date features; no indicator per row


def test_single_class_names_the_value_and_the_fix(tmp_path):
    path = tmp_path / "one.csv"
    pd.DataFrame({"a": np.arange(50.0), "y": 1}).to_csv(path, index=False)
    proc, _ = _timed_run("--dataset", str(path), "--target", "y", "--out", str(tmp_path / "r"))
    _one_line(proc, "target 'y' has a single class (1) in all 50 rows")
    assert "np.int64" not in proc.stderr and "--task regression" in proc.stderr


@pytest.mark.parametrize("model, message", [
    ("sklearn:NoSuchThing", "scikit-learn's classes live in its submodules"),
    ("sklearn:LogisticRegression", "did you mean sklearn.linear_model:LogisticRegression?"),
])
def test_sklearn_name_without_its_submodule(tmp_path, model, message):
    proc, _ = _timed_run("--model", model, "--out", str(tmp_path / "r"))
    _one_line(proc, message)


def test_a_bad_run_folder_is_one_line_before_any_import_of_the_orchestrator(tmp_path):
    """The run-folder check needs no Prefect, no data: the CLI answers before importing them."""
    (tmp_path / "f").write_text("x")
    code = ("import sys; from flows.cli import main; rc = main(['run', '--out', sys.argv[1]]); "
            "assert 'prefect' not in sys.modules and 'sklearn' not in sys.modules, 'imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f")], capture_output=True, text=True,
                          timeout=120)
    _one_line(proc, "is a file")
