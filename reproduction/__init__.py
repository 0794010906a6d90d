"""Reproducing the paper's findings on real data (``pointscale reproduce``).

Outside the core method packages: it *uses* pointscale's sampling, laws and
valuation to run the paper's protocols, and writes ``docs/results.md``.

* :mod:`.config` — per-model scales and the named scales (tiny, quick, full);
* :mod:`.phases` — the sampling phases, each into a resumable ledger;
* :mod:`.protocols` — one function per protocol, each returning a DataFrame;
* :mod:`.run` — :func:`run_reproduction`: phases + protocols → tables, arrays, manifest;
* :mod:`.figures` — the PNG figures from the saved tables and arrays;
* :mod:`.page` — the page (``results.md.tmpl``) and the verdicts.
"""

from .config import SCALES, ModelScale, ReproduceConfig, full_config, quick_config, tiny_config
from .page import differences, verdicts, write_results
from .run import ReproductionResult, run_reproduction

__all__ = ["SCALES", "ModelScale", "ReproduceConfig", "ReproductionResult", "differences", "full_config",
           "quick_config", "run_reproduction", "tiny_config", "verdicts", "write_results"]
