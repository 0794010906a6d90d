"""A real run with a non-linear model says whether the law holds and how reliable the values are:
on the terminal, in run.json, in report.md and in the report the Prefect UI shows."""

from __future__ import annotations

import json

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_xgboost_run_states_the_law_diagnostic_everywhere(prefect_api, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("run", "--dataset", "breast_cancer", "--model", "xgboost", "--points", "60",
                   "--samples-per-point", "8", "--workers", "1", "--no-removal", "--select", "5",
                   "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    diagnostic = json.loads((out / "run.json").read_text())["law_diagnostic"]
    for key in ("verdict", "loglik_gain_per_sample", "loglik_gain_se", "share_good_fit", "reliability",
                "samples_for_reliability_0.9", "estimator", "control_variate"):
        assert key in diagnostic, key
    assert diagnostic["verdict"] in ("holds", "does not hold", "undecided")
    assert diagnostic["control_variate"] == "none"
    sentence = diagnostic["sentence"]
    assert "scaling law" in sentence and "for xgboost on this data" in sentence and "reliability" in sentence
    assert sentence in proc.stdout  # the terminal summary
    assert sentence in (out / "report.md").read_text()
    # The report artifact in the UI is report.md with its figures inlined.
    with get_client(sync_client=True) as client:
        reports = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["pointscale-report"])))
    assert any(sentence in (a.data or "") for a in reports)
