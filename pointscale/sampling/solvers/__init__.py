"""Batched solvers: a block's base and every D ∪ {z} fitted at once (see :mod:`.base`).

:mod:`.base` holds the vocabulary (:class:`~.base.BlockFit`, the
:class:`~.base.Solver` protocol, :func:`~.base.solver_for`); each family is
one module beside it (:mod:`.logistic`, :mod:`.device_logistic`,
:mod:`.ridge`, :mod:`.mlp`, :mod:`.svm`), named by its registry entry's
``solver`` (:class:`~pointscale.sampling.models.ModelSpec`).
"""

from .base import BlockFit, Solver, SolverBuilder, solver_for

__all__ = ["BlockFit", "Solver", "SolverBuilder", "solver_for"]
