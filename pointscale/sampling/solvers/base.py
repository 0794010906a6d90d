"""The solver vocabulary: what a batched solver is, what it returns, and how a model finds its own.

A *batched solver* fits one block -- the base subset D and every D ∪ {z} of
the block -- faster than one estimator fit each, and returns the utilities
(:class:`BlockFit`). A model family opts in through its registry entry
(:class:`~pointscale.sampling.models.ModelSpec`): ``solver`` names a *build*
function, ``"module:function"`` (imported on first use, so a model's
dependencies load only when it runs) or the function itself, with the
signature of :class:`SolverBuilder`. The build either returns a
:class:`Solver` for these settings or ``None`` (it declines: the engine
fits the block with the estimator itself). :func:`solver_for` is the lookup.

The families (one file each beside this one):

* :mod:`.logistic` -- L2 logistic regression, binary and multinomial (exact
  batched Newton); on a GPU, :mod:`.device_logistic`.
* :mod:`.ridge` -- ridge and ordinary least squares (closed-form rank-one updates).
* :mod:`.mlp` -- the paper's MLP, a block's models trained together (array API).
* :mod:`.svm` -- the RBF SVM with Platt probabilities on one exact distance table.
* :mod:`.xgb` -- the registry's XGBoost, each fit on a plain ``DMatrix`` (the same models).

``docs/extending.md`` adds a family from outside the package.

Also here: the array-API helpers the device code shares (:func:`array_namespace`,
:func:`device_of`, :func:`sigmoid`, :func:`is_numpy`) and the LAPACK
Cholesky helpers of the CPU solvers.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import numpy as np
from scipy.linalg import LinAlgError
from scipy.linalg.lapack import dpotrf, dpotrs

from ...errors import ConfigError


@dataclass
class BlockFit:
    """Utilities of a base and of base ∪ {z} for each z of a block."""

    u_base: float
    u_with: np.ndarray
    converged: np.ndarray
    method: str
    iterations: int = 0
    fallbacks: int = 0
    #: The base model (trained on D alone) as a function of feature rows: class
    #: probabilities (n, K) for classification, predictions (n,) for regression.
    #: Scoring pool points outside D costs a prediction, not a fit (out-of-bag evidence).
    predict_base: Callable[[np.ndarray], np.ndarray] | None = None


class Solver(Protocol):
    """Fits one block: the base D and every D ∪ {z}, scored on the validation split.

    Attributes
    ----------
    method : str
        Recorded in the ledger's ``method`` column.
    exact : bool
        True when every utility equals a cold fit of the model's estimator on the
        same rows up to the optimiser's tolerance and rounding; False when the
        solver's models differ from the estimator's by more (e.g. float32
        rounding accumulated in another summation order).
    """

    method: str
    exact: bool

    def __call__(self, Xd: np.ndarray, yd: np.ndarray, Xz: np.ndarray, yz: np.ndarray,
                 seed: int | None = None) -> BlockFit | None:
        """The block's utilities, or None to let the estimator fit this block.

        ``Xd, yd`` are D's rows, ``Xz, yz`` the block's points (one D ∪ {z} each),
        ``seed`` the block's model seed (common to the base and every D ∪ {z}).
        """


class SolverBuilder(Protocol):
    """Constructs a family's solver for one run's settings, or declines (returns None)."""

    def __call__(self, params: Mapping[str, Any], task: str, n_classes: int, X_val: np.ndarray,
                 y_val: np.ndarray, metric: str, device: Any = None) -> Solver | None:
        """``params``: the estimator's full settings (registry defaults plus overrides);
        ``metric`` a key of :data:`~pointscale.sampling.metrics.METRICS`; ``device`` a
        resolved :class:`~pointscale.sampling.devices.Device` (None: the CPU)."""


@functools.lru_cache(maxsize=64)
def _import_builder(path: str) -> Callable[..., Solver | None]:
    module_name, _, name = path.partition(":")
    try:
        builder = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"solver {path!r} cannot be imported ({exc}); a ModelSpec's solver is "
                          "'module:function' or the function itself") from None
    return builder


def solver_for(spec: Any, params: Mapping[str, Any], task: str, n_classes: int, X_val, y_val,
               metric: str, device=None) -> Solver | None:
    """The batched solver of registry entry ``spec`` for these settings, or None.

    None when the entry names no solver or its build declines the settings.
    """
    builder = getattr(spec, "solver", None)
    if builder is None:
        return None
    if isinstance(builder, str):
        builder = _import_builder(builder)
    return builder(params, task, n_classes, X_val, y_val, metric, device)


# --------------------------------------------------------------------------- array API


def _compat():
    try:
        import array_api_compat
    except ImportError:  # scikit-learn ships a copy
        from sklearn.externals import array_api_compat
    return array_api_compat


def array_namespace(*arrays):
    """The array-API namespace of ``arrays`` (numpy, torch, CuPy, ...)."""
    return _compat().array_namespace(*arrays)


def device_of(x):
    """The device an array lives on (array API)."""
    return _compat().device(x)


def is_numpy(xp) -> bool:
    """Whether the namespace ``xp`` is numpy's."""
    return "numpy" in getattr(xp, "__name__", "")


def sigmoid(xp, z):
    """The logistic function; exp of a non-positive argument only, so no overflow for any margin."""
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# --------------------------------------------------------------------------- CPU linear algebra


def cho_factor(A: np.ndarray) -> np.ndarray:
    """Upper Cholesky factor (LAPACK dpotrf without scipy's wrapper overhead)."""
    c, info = dpotrf(A, lower=0, clean=0)
    if info != 0:
        raise LinAlgError(f"matrix is not positive definite (dpotrf info={info})")
    return c


def cho_solve(c: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve with an upper Cholesky factor from :func:`cho_factor`."""
    x, info = dpotrs(c, b, lower=0)
    if info != 0:
        raise LinAlgError(f"dpotrs info={info}")
    return x


def augment(X: np.ndarray, fit_intercept: bool) -> np.ndarray:
    """``[X, 1]`` (float64) when there is an intercept, else X."""
    X = np.asarray(X, dtype=np.float64)
    if not fit_intercept:
        return np.ascontiguousarray(X)
    return np.hstack([X, np.ones((X.shape[0], 1))])
