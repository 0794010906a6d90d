"""pointscale: individualized data scaling laws (Covert et al., ICML 2024).

A point's expected marginal contribution at dataset size k follows
psi_k(z) ~ c(z) * k**(-alpha(z)). The subpackages read as the method's table of
contents: :mod:`pointscale.data` (ingestion), :mod:`pointscale.sampling`
(marginal contributions), :mod:`pointscale.laws` (fitting), and
:mod:`pointscale.valuation` (using the laws). This package never imports an
orchestrator; ``flows/`` and ``tasks/`` wrap it for Prefect and Dask.
"""

__version__ = "0.1.0"
