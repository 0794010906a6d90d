"""Datasets shared by the core tests (loaded once per session: they are read-only)."""

from __future__ import annotations

import pytest

from pointscale.data import load_dataset


@pytest.fixture(scope="session")
def cancer():
    return load_dataset("breast_cancer")


@pytest.fixture(scope="session")
def diabetes():
    return load_dataset("diabetes")
