"""docs/extending.md works as written: a family registered from outside the package takes its fast path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from pointscale.sampling import MODELS, subset_for, utility
from pointscale.sampling.models import spec_of

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


@pytest.fixture(scope="module")
def toy():
    """The page's code blocks, run in order in one namespace (they register ``soft_centroid``)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 3
    namespace: dict = {"__name__": "extending_example"}
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 -- the documented example
        yield namespace
    finally:
        MODELS.pop("soft_centroid", None)


def test_registered_family_is_dispatched_to_its_solver(toy):
    spec = spec_of("soft_centroid")
    assert spec is not None and spec.solver is toy["build_soft_centroid"]
    samples = toy["samples"]
    assert len(samples) == 16 and not samples["failed"].any()
    assert (samples["method"] == "centroid_update").all()


def test_registered_family_matches_cold_fits(toy, cancer):
    config = toy["config"].resolved(cancer)
    samples = toy["samples"]
    SoftCentroid = toy["SoftCentroid"]

    def u(idx):
        est = SoftCentroid(temperature=1.0).fit(cancer.X_train[idx], cancer.y_train[idx])
        return utility(config.metric, est, cancer.X_val, cancer.y_val, cancer.n_classes)

    deltas = []
    for _, row in samples.iterrows():
        D = subset_for(row, cancer, config)
        z = cancer.index_of([row.point_id])[0]
        base, with_z = u(D), u(np.append(D, z))
        assert row.u_base == pytest.approx(base, rel=1e-12, abs=1e-12)
        assert row.delta == pytest.approx(with_z - base, rel=1e-7, abs=1e-12)
        deltas.append(row.delta)
    assert np.abs(deltas).max() > 1e-6  # the points move the centroids: Δ is not trivially zero
