"""The core package is framework-free: importing all of it loads no orchestrator."""

from __future__ import annotations

import subprocess
import sys

import pointscale

FORBIDDEN = ("prefect", "prefect_dask", "dask", "distributed")


def test_core_imports_no_orchestration_module():
    # A fresh interpreter, so modules imported by other tests do not count.
    code = (
        "import importlib, pkgutil, sys, pointscale\n"
        "for m in pkgutil.walk_packages(pointscale.__path__, 'pointscale.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bad = sorted({{n.split('.')[0] for n in sys.modules}} & set({FORBIDDEN!r}))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported {out.stdout.strip()}"


def test_core_modules_do_not_mention_orchestrators_in_imports():
    # Also catches lazy imports inside functions, which the runtime check cannot see.
    import pathlib
    import re

    root = pathlib.Path(pointscale.__file__).parent
    pattern = re.compile(r"^\s*(from|import)\s+(prefect|prefect_dask|dask|distributed)\b", re.M)
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
