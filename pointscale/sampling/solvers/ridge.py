r"""Ridge and ordinary least squares for a whole block: closed form, rank-one updates.

θ₀ = A⁻¹ X̃ᵀy with A = X̃ᵀX̃ + diag(α, ..., α, 0) (x̃ = [x, 1] with an
unpenalised intercept); adding z is a rank-one update, closed form by
Sherman–Morrison:

.. math::  θ_z = θ_0 + A^{-1} x̃_z \frac{y_z - x̃_z^\top θ_0}{1 + x̃_z^\top A^{-1} x̃_z}.

If A is numerically singular (ordinary least squares on collinear columns,
where scikit-learn returns a minimum-norm solution) the solver declines and
the engine fits that block with the model itself.

Utilities are scored with :mod:`..metrics` on the stacked validation
predictions of all columns, the same arithmetic as for a single estimator.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from scipy.linalg import LinAlgError

from ..metrics import METRICS
from .base import BlockFit, augment, cho_factor, cho_solve

# Settings the fast path honours; others that do not change the optimum are ignored.
_IGNORED = {"solver", "tol", "max_iter", "random_state", "copy_X", "n_jobs"}


class RidgeSolver:
    """Closed-form ridge (alpha > 0) or least squares (alpha = 0) with rank-one updates."""

    method = "rank_one"
    exact = True
    RCOND_MIN = 1e-10

    def __init__(self, alpha: float, fit_intercept: bool, X_val, y_val, metric: str) -> None:
        self.alpha = float(alpha)
        self.fit_intercept = bool(fit_intercept)
        self.Xv1 = augment(X_val, fit_intercept)
        self.y_val = np.asarray(y_val, dtype=np.float64)
        self.metric = METRICS[metric]

    def __call__(self, Xd, yd, Xz, yz, seed: int | None = None) -> BlockFit | None:
        X1 = augment(Xd, self.fit_intercept)
        Z1 = augment(Xz, self.fit_intercept)
        y = np.asarray(yd, dtype=np.float64)
        A = X1.T @ X1
        pen = np.full(X1.shape[1], self.alpha)
        if self.fit_intercept:
            pen[-1] = 0.0
        A[np.diag_indices_from(A)] += pen
        try:
            L = cho_factor(A)
        except LinAlgError:
            return None
        diag = np.abs(np.diag(L))
        if diag.min() ** 2 < self.RCOND_MIN * diag.max() ** 2:
            return None  # numerically singular: let the model itself decide (minimum norm)
        theta0 = cho_solve(L, X1.T @ y)
        V = cho_solve(L, Z1.T)
        q = np.einsum("ij,ji->i", Z1, V)
        resid = np.asarray(yz, dtype=np.float64) - Z1 @ theta0
        Theta = theta0[:, None] + V * (resid / (1.0 + q))
        pred = (self.Xv1 @ np.column_stack([theta0, Theta])).T
        scores = self.metric.from_pred(pred, self.y_val)
        B = Z1.shape[0]
        fit_intercept = self.fit_intercept
        return BlockFit(u_base=float(scores[0]), u_with=scores[1:], converged=np.ones(B, dtype=bool),
                        method=self.method, iterations=1,
                        predict_base=lambda X: augment(X, fit_intercept) @ theta0)


def _build(alpha, params: Mapping[str, Any], task: str, X_val, y_val, metric: str) -> RidgeSolver | None:
    extra = set(params) - _IGNORED - {"alpha", "fit_intercept", "positive"}
    if task != "regression" or extra or params.get("positive", False):
        return None
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha < np.inf:
        return None
    return RidgeSolver(alpha, bool(params.get("fit_intercept", True)), X_val, y_val, metric)


def build(params: Mapping[str, Any], task: str, n_classes: int, X_val, y_val, metric: str,
          device=None) -> RidgeSolver | None:
    """The solver of scikit-learn's ``Ridge`` with these settings, or None (:class:`~.base.SolverBuilder`)."""
    return _build(params.get("alpha", 1.0), params, task, X_val, y_val, metric)


def build_least_squares(params: Mapping[str, Any], task: str, n_classes: int, X_val, y_val, metric: str,
                        device=None) -> RidgeSolver | None:
    """The solver of scikit-learn's ``LinearRegression`` (alpha = 0), or None."""
    return _build(0.0, params, task, X_val, y_val, metric)
