r"""Binary L2 logistic regression for a whole block on a GPU (array API).

The CPU solver (:class:`~.logistic.LogisticBinarySolver`) reuses one
Cholesky factor of the base Hessian through Sherman–Morrison updates, which
is sequential LAPACK work. On a GPU the cheaper route is to give every one of
the M = B + 1 problems (the base D, and D ∪ {z_b}) its own exact damped
Newton iteration, all at once:

.. math::  θ_m \leftarrow θ_m - t_m H_m^{-1} ∇F_m(θ_m), \quad
           F_m(θ) = C \Big(\sum_{i \in D} \ell(θ; x̃_i, y_i) + w_m \ell(θ; x̃_{z_m}, y_{z_m})\Big)
                    + \tfrac12 \lVert w \rVert^2,

with ``w_0 = 0`` (the base) and ``w_b = 1``; H_m = C X̃ᵀ diag(s_m) X̃ + C w_m
s_{z_m} x̃ x̃ᵀ + P is formed as one batched product and solved as one batched
linear system, and t_m halves until the Armijo condition holds (each problem
is strictly convex, so this converges from θ = 0). Columns stop when their
step is ≤ 1e-12 (1 + ‖θ‖∞), the CPU solver's criterion, so both reach the
same optimum up to rounding (``python -m benchmarks.gpu`` measures it).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from ..metrics import METRICS
from .base import BlockFit, array_namespace, device_of, sigmoid

STEP_TOL = 1e-12
MAX_ITER = 100


def _softplus(xp, m):
    """log(1 + e^m) without overflow."""
    return xp.where(m > 0, m + xp.log(1.0 + xp.exp(-m)), xp.log(1.0 + xp.exp(xp.where(m > 0, -m, m))))


def newton_block(X1, y, Z1, yz, weight, C: float, pen):
    """Θ (d1, M) solving the M problems above, and a converged flag per problem.

    Parameters
    ----------
    X1 : array (k, d1)
        Shared rows with a column of ones when there is an intercept.
    y : array (k,)
    Z1 : array (M, d1)
        Each problem's own row (ignored where ``weight`` is 0).
    yz, weight : arrays (M,)
    C : float
    pen : array (d1,)
        1 for penalised coordinates, 0 for the intercept.
    """
    xp = array_namespace(X1)
    k, d1 = X1.shape
    M = Z1.shape[0]
    Theta = xp.zeros((d1, M), dtype=X1.dtype, device=device_of(X1))
    X1T = X1.T

    def objective(Th):
        m, mz = X1 @ Th, xp.sum(Z1 * Th.T, axis=1)
        return (C * (xp.sum(_softplus(xp, m) - y[:, None] * m, axis=0) + weight * (_softplus(xp, mz) - yz * mz))
                + 0.5 * xp.sum(pen[:, None] * Th * Th, axis=0))

    f = objective(Theta)
    done = xp.zeros((M,), dtype=xp.bool, device=device_of(X1))
    for _ in range(MAX_ITER):
        P = sigmoid(xp, X1 @ Theta)                                   # (k, M)
        pz = sigmoid(xp, xp.sum(Z1 * Theta.T, axis=1))                # (M,)
        G = C * (X1T @ (P - y[:, None])) + C * (Z1 * (weight * (pz - yz))[:, None]).T + pen[:, None] * Theta
        S = P * (1.0 - P)
        H = C * ((X1T[None, :, :] * S.T[:, None, :]) @ X1)            # (M, d1, d1)
        H = H + C * (weight * pz * (1.0 - pz))[:, None, None] * (Z1[:, :, None] * Z1[:, None, :])
        H = H + xp.eye(d1, dtype=X1.dtype, device=device_of(X1))[None, :, :] * pen[None, :, None]
        step = xp.linalg.solve(H, G.T[:, :, None])[:, :, 0].T           # (d1, M)
        dec = xp.sum(G * step, axis=0)
        t = xp.ones((M,), dtype=X1.dtype, device=device_of(X1))
        for _ls in range(40):
            new = Theta - step * t
            f_new = objective(new)
            ok = (f_new <= f - 1e-4 * t * dec) | (dec < 1e-12 * (1.0 + xp.abs(f)))
            if bool(xp.all(ok)):
                break
            t = xp.where(ok, t, 0.5 * t)
        Theta, f = new, f_new
        small = xp.max(xp.abs(step * t), axis=0) <= STEP_TOL * (1.0 + xp.max(xp.abs(Theta), axis=0))
        done = done | small
        if bool(xp.all(done)):
            break
    return Theta, done


class DeviceLogisticSolver:
    """Binary L2 logistic regression for a block on a :class:`~.devices.Device` (float64)."""

    method = "batched_newton"
    exact = True

    def __init__(self, C: float, fit_intercept: bool, X_val, y_val, metric: str, device) -> None:
        self.C, self.fit_intercept, self.device = float(C), bool(fit_intercept), device
        self.Xv1 = device.asarray(self._augment(np.asarray(X_val, dtype=np.float64)))
        self.y_val = np.asarray(y_val)
        self.metric = METRICS[metric]

    def _augment(self, X):
        return np.hstack([X, np.ones((len(X), 1))]) if self.fit_intercept else X

    def __call__(self, Xd, yd, Xz, yz, seed: int | None = None):
        dev = self.device
        X1 = self._augment(np.asarray(Xd, dtype=np.float64))
        Z1 = self._augment(np.asarray(Xz, dtype=np.float64))
        d1 = X1.shape[1]
        Z_all = np.vstack([np.zeros((1, d1)), Z1])                      # problem 0: the base
        weight = np.r_[0.0, np.ones(len(Z1))]
        pen = np.ones(d1)
        if self.fit_intercept:
            pen[-1] = 0.0
        Theta, done = newton_block(dev.asarray(X1), dev.asarray(np.asarray(yd, dtype=np.float64)),
                                   dev.asarray(Z_all), dev.asarray(np.r_[0.0, np.asarray(yz, dtype=np.float64)]),
                                   dev.asarray(weight), self.C, dev.asarray(pen))
        xp = array_namespace(Theta)
        p1 = dev.to_numpy(sigmoid(xp, self.Xv1 @ Theta)).T             # (M, n_val)
        scores = self.metric.from_proba(np.stack([1.0 - p1, p1], axis=-1), self.y_val)
        done = dev.to_numpy(done).astype(bool)
        theta0 = dev.to_numpy(Theta[:, 0])
        fit_intercept = self.fit_intercept

        def predict_base(X):
            X = np.asarray(X, dtype=np.float64)
            p = expit((np.hstack([X, np.ones((len(X), 1))]) if fit_intercept else X) @ theta0)
            return np.column_stack([1.0 - p, p])

        return BlockFit(u_base=float(scores[0]), u_with=scores[1:], converged=done[1:] & done[0],
                        method=self.method, predict_base=predict_base)
