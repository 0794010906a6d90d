r"""L2 logistic regression for a whole block: one base fit, then every D ∪ {z} at once (SPEC §2).

scikit-learn's L2 logistic regression minimises, over weights w and an
unpenalised intercept b (together θ, with x̃ = [x, 1]),

.. math::  F_D(θ) = C \sum_{i \in D} \ell(θ; x̃_i, y_i) + \tfrac12 \lVert w \rVert^2 .

1. **Base.** Damped Newton on F_D from θ = 0 to θ₀ with ‖step‖∞ ≤ 1e-12
   (1 + ‖θ‖∞): the exact optimum up to rounding.
2. **Every z of the block together.** F_{D∪z} = F_D + C ℓ(·; z), so at θ₀ the
   gradient is only z's own loss gradient and the optimum θ_z moves O(1/k)
   away. Starting all B columns of Θ at θ₀, iterate

   .. math::  θ_z \leftarrow θ_z - (H_0 + C s_z x̃_z x̃_z^\top)^{-1} ∇F_{D∪z}(θ_z)

   with the exact gradient (for all columns at once: ``X̃ᵀ σ(X̃ Θ)`` is two
   matrix products) and the base Hessian H₀ = ∇²F_D(θ₀) plus z's own
   curvature s_z = p_z(1 − p_z) at the current θ_z, applied by
   Sherman–Morrison from one Cholesky factor of H₀. The Hessian error is
   O(‖θ_z − θ₀‖) = O(1/k), so each iteration gains several digits; columns
   stop when the step is ≤ 1e-12 (1 + ‖θ‖∞) (typically 3–6 iterations). A
   column that has not converged after ``max_iter`` iterations is finished
   by the damped exact Newton of step 1, so the result is the exact optimum
   in every case.

   Multinomial (more than two classes): θ is the (d+1) × K matrix of
   scikit-learn's full multinomial parametrisation; z's curvature is the
   rank-(K−1) term (x̃x̃ᵀ) ⊗ (diag p − ppᵀ), applied by Woodbury with a K × K
   solve per column. The intercepts are unpenalised and invariant to a common
   shift; a unit curvature along that one direction fixes the gauge (their
   sum stays 0) without changing any prediction. Each column's step is
   damped by backtracking on its own objective (the approximate Hessian is
   positive definite, so the step descends): with many features and few
   rows (d = 500, k = 300) a single point can move the optimum far enough
   that the full step overshoots, and the damped iteration still converges
   in ~20 iterations instead of falling back to exact Newton per column.

Failure modes: a singular base Hessian cannot occur with C < ∞ (the penalty
makes it positive definite; the gauge term covers the intercepts). Perfectly
separable subsets are fine: the penalty keeps the optimum finite.

Utilities are scored with :mod:`..metrics` on the stacked validation
predictions of all columns, the same arithmetic as for a single estimator.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from scipy.special import expit, logsumexp, softmax

from ..metrics import METRICS
from .base import BlockFit, augment, cho_factor, cho_solve
from .device_logistic import DeviceLogisticSolver

STEP_TOL = 1e-12
REL_TOL = 1e-10      # batched columns: step ≤ 1e-10 × ‖θ_z − θ₀‖∞ (relative accuracy of Δθ)
MAX_MULTI_ITER = 100  # damped quasi-Newton iterations (multinomial) before the exact fallback
EXACT_FALLBACK_PARAMS = 1500  # up to this (d+1)K, slow multinomial columns go to exact Newton at once
QN_CONTRACTION = 0.5  # a column whose step shrinks less than this per iteration goes exact
QN_ITER = 20         # quasi-Newton iterations with the base Hessian before switching
EXACT_ITER = 20      # exact batched Newton iterations for the columns still moving
MAX_NEWTON_ITER = 100
# Dense (d+1)K Hessian: 6000 parameters is a 288 MB matrix and one Cholesky per base;
# measured 30x two cold exact fits at 5,010 (benchmarks/sampling.py --models).
MAX_MULTINOMIAL_PARAMS = 6000



def _backtrack(theta, step, decrement: float, f: float, X1, objective):
    """Armijo backtracking along −step from theta: (new theta, its margins X1 @ theta, objective, step length).

    Near the optimum the decrease is below rounding of f: the full step is taken.
    """
    t = 1.0
    while True:
        new = theta - t * step
        m_new = X1 @ new
        f_new = objective(m_new, new)
        if f_new <= f - 1e-4 * t * decrement or decrement < 1e-12 * (1.0 + abs(f)) or t < 1e-8:
            return new, m_new, f_new, t
        t *= 0.5

def _small_step(step: np.ndarray, theta: np.ndarray, axis=None, moved: np.ndarray | None = None) -> np.ndarray:
    """Converged: the step is below rounding of θ or (batched columns) a tiny fraction of the
    distance moved from the base solution θ₀, which is what Δ depends on to first order."""
    tol = STEP_TOL * (1.0 + np.max(np.abs(theta), axis=axis))
    if moved is not None:
        tol = tol + REL_TOL * np.max(np.abs(moved), axis=axis)
    return np.max(np.abs(step), axis=axis) <= tol


# --------------------------------------------------------------------------- binary logistic


def _binary_objective(m: np.ndarray, y: np.ndarray, theta: np.ndarray, pen: np.ndarray, C: float) -> float:
    return float(C * np.sum(np.logaddexp(0.0, m) - y * m) + 0.5 * np.dot(pen * theta, theta))


def newton_binary(X1: np.ndarray, y: np.ndarray, C: float, pen: np.ndarray,
                  theta: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """Damped Newton for binary L2 logistic regression; returns (θ, converged)."""
    theta = np.zeros(X1.shape[1]) if theta is None else theta.copy()
    m = X1 @ theta
    f = _binary_objective(m, y, theta, pen, C)
    for _ in range(MAX_NEWTON_ITER):
        p = expit(m)
        g = C * (X1.T @ (p - y)) + pen * theta
        s = p * (1.0 - p)
        H = C * ((X1.T * s) @ X1)
        H[np.diag_indices_from(H)] += pen
        step = cho_solve(cho_factor(H), g)
        decrement = float(g @ step)
        theta, m, f, t = _backtrack(theta, step, decrement, f, X1,
                                    lambda mm, th: _binary_objective(mm, y, th, pen, C))
        if _small_step(t * step, theta):
            return theta, True
    return theta, False


def _batch_objective(M, y, mz, yz, Theta, pen, C) -> np.ndarray:
    """F_{D∪z}(θ_z) for every column (M = X̃ Θ, mz = the z margins)."""
    return (C * (np.sum(np.logaddexp(0.0, M) - y[:, None] * M, axis=0) + np.logaddexp(0.0, mz) - yz * mz)
            + 0.5 * np.sum(pen[:, None] * Theta * Theta, axis=0))


def _newton_binary_batch(X1, y, Z1, yz, C, pen, Theta, theta0):
    """Damped exact Newton for several D ∪ {z} at once.

    Each column gets its own Hessian ``C X̃ᵀ diag(s) X̃ + C s_z x̃_z x̃_zᵀ + P``
    and its own backtracking line search (Armijo), so it converges from any
    start (the objective is strictly convex) and quadratically near the
    optimum. Returns (Θ, converged).
    """
    b = Theta.shape[1]
    done = np.zeros(b, dtype=bool)
    idx = np.arange(len(pen))
    M = X1 @ Theta
    mz = np.einsum("ij,ji->i", Z1, Theta)
    f = _batch_objective(M, y, mz, yz, Theta, pen, C)
    for _ in range(EXACT_ITER):
        P = expit(M)
        pz = expit(mz)
        G = C * (X1.T @ (P - y[:, None])) + pen[:, None] * Theta + C * Z1.T * (pz - yz)
        H = C * ((X1.T[None, :, :] * (P * (1.0 - P)).T[:, None, :]) @ X1)    # (b, d1, d1)
        H += C * (pz * (1.0 - pz))[:, None, None] * (Z1[:, :, None] * Z1[:, None, :])
        H[:, idx, idx] += pen
        try:
            step = np.linalg.solve(H, G.T[:, :, None])[:, :, 0].T
        except np.linalg.LinAlgError:
            break
        dec = np.sum(G * step, axis=0)
        t = np.ones(b)
        for _ls in range(40):
            new = Theta - step * t
            M_new = X1 @ new
            mz_new = np.einsum("ij,ji->i", Z1, new)
            f_new = _batch_objective(M_new, y, mz_new, yz, new, pen, C)
            ok = (f_new <= f - 1e-4 * t * dec) | (dec < 1e-12 * (1.0 + np.abs(f)))
            if ok.all():
                break
            t = np.where(ok, t, 0.5 * t)
        Theta, M, mz, f = new, M_new, mz_new, f_new
        done = _small_step(step * t, Theta, axis=0, moved=Theta - theta0[:, None])
        if done.all():
            break
    return Theta, done


class LogisticBinarySolver:
    """Block-wise exact L2 logistic regression for two classes."""

    method = "batched_newton"
    exact = True

    def __init__(self, C: float, fit_intercept: bool, X_val, y_val, metric: str) -> None:
        self.C = float(C)
        self.fit_intercept = bool(fit_intercept)
        self.Xv1 = augment(X_val, fit_intercept)
        self.y_val = np.asarray(y_val)
        self.metric = METRICS[metric]

    def _pen(self, d1: int) -> np.ndarray:
        pen = np.ones(d1)
        if self.fit_intercept:
            pen[-1] = 0.0
        return pen

    def _score(self, Theta: np.ndarray) -> np.ndarray:
        p1 = expit(self.Xv1 @ Theta).T  # (B, n_val)
        if self.metric.from_p1 is not None:
            return self.metric.from_p1(p1, self.y_val)
        proba = np.stack([1.0 - p1, p1], axis=-1)
        return self.metric.from_proba(proba, self.y_val)

    def __call__(self, Xd, yd, Xz, yz, seed: int | None = None) -> BlockFit:
        C = self.C
        X1 = augment(Xd, self.fit_intercept)
        Z1 = augment(Xz, self.fit_intercept)  # (B, d1)
        y = np.asarray(yd, dtype=np.float64)
        yz = np.asarray(yz, dtype=np.float64)
        pen = self._pen(X1.shape[1])
        theta0, ok0 = newton_binary(X1, y, C, pen)

        p0 = expit(X1 @ theta0)
        H0 = C * ((X1.T * (p0 * (1.0 - p0))) @ X1)
        H0[np.diag_indices_from(H0)] += pen
        L = cho_factor(H0)
        V = cho_solve(L, Z1.T)                      # H0⁻¹ x̃_z, (d1, B)
        q = np.einsum("ij,ji->i", Z1, V)            # x̃_zᵀ H0⁻¹ x̃_z
        B = Z1.shape[0]
        Theta = np.repeat(theta0[:, None], B, axis=1)
        done = np.zeros(B, dtype=bool)
        act = np.arange(B)                                        # columns still moving
        last = np.full(B, np.inf)                                 # previous step size per column
        it = 0
        for it in range(1, QN_ITER + 1):
            Th, Za = Theta[:, act], Z1[act]
            R = expit(X1 @ Th) - y[:, None]                       # (k, b)
            pz = expit(np.einsum("ij,ji->i", Za, Th))
            G = C * (X1.T @ R) + pen[:, None] * Th + C * Za.T * (pz - yz[act])
            U = cho_solve(L, G)              # H0⁻¹ g
            cs = C * pz * (1.0 - pz)
            Va = V[:, act]
            step = U - Va * (cs * np.einsum("ij,ji->i", Za, U) / (1.0 + cs * q[act]))
            Th = Th - step
            Theta[:, act] = Th
            small = _small_step(step, Th, axis=0, moved=Th - theta0[:, None])
            done[act[small]] = True
            # Where the base Hessian is too far from the column's own (a point that moves
            # the solution a lot), the iteration contracts slowly or not at all: hand the
            # column to the exact Newton below instead of iterating on.
            size = np.max(np.abs(step), axis=0)
            stalled = ~small & (size > QN_CONTRACTION * last[act])
            grew = stalled & (size > last[act])
            Theta[:, act[grew]] += step[:, grew]                  # undo a step that diverged
            last[act] = size
            act = act[~small & ~stalled]
            if not len(act):
                break
        fallbacks = 0
        if not done.all():
            cols = np.flatnonzero(~done)
            Theta[:, cols], ok = _newton_binary_batch(X1, y, Z1[cols], yz[cols], C, pen, Theta[:, cols], theta0)
            done[cols] = ok
            for b in cols[~ok]:
                Xb = np.vstack([X1, Z1[b:b + 1]])
                Theta[:, b], done[b] = newton_binary(Xb, np.append(y, yz[b]), C, pen, Theta[:, b])
                fallbacks += 1
        scores = self._score(np.column_stack([theta0, Theta]))
        fit_intercept = self.fit_intercept

        def predict_base(X):
            p1 = expit(augment(X, fit_intercept) @ theta0)
            return np.column_stack([1.0 - p1, p1])

        return BlockFit(u_base=float(scores[0]), u_with=scores[1:], converged=done & ok0,
                        method=self.method, iterations=it, fallbacks=fallbacks, predict_base=predict_base)


    def scores_of_sets(self, Xd, yd, added) -> tuple[np.ndarray, np.ndarray]:
        """U(D) and U(D ∪ S) for each added set S = (X_S, y_S), and whether each fit converged.

        Point addition adds whole sets, not one point
        (:func:`pointscale.valuation.point_addition_experiment`): each D ∪ S
        is solved by the damped Newton method to the same optimum as a cold
        fit (the objective is strictly convex), started at D's optimum.
        """
        X1 = augment(Xd, self.fit_intercept)
        y = np.asarray(yd, dtype=np.float64)
        pen = self._pen(X1.shape[1])
        theta0, ok0 = newton_binary(X1, y, self.C, pen)
        thetas, oks = [theta0], [ok0]
        for Xs, ys in added:
            theta, ok = newton_binary(np.vstack([X1, augment(Xs, self.fit_intercept)]),
                                      np.concatenate([y, np.asarray(ys, dtype=np.float64)]), self.C, pen, theta0)
            thetas.append(theta)
            oks.append(ok)
        return np.asarray(self._score(np.column_stack(thetas)), dtype=np.float64), np.asarray(oks)


# --------------------------------------------------------------------------- multinomial logistic


def _multi_objective(M, Y, Theta, pen, C) -> float:
    return float(C * np.sum(logsumexp(M, axis=1) - np.sum(M * Y, axis=1))
                 + 0.5 * np.sum(pen[:, None] * Theta * Theta))


def _multi_hessian(X1, P, C, pen, gauge_row) -> np.ndarray:
    k, d1 = X1.shape
    K = P.shape[1]
    Z = (X1[:, :, None] * P[:, None, :]).reshape(k, d1 * K)
    H = -(Z.T @ Z)
    H4 = H.reshape(d1, K, d1, K)
    for a in range(K):
        H4[:, a, :, a] += (X1.T * P[:, a]) @ X1
    H = C * H4.reshape(d1 * K, d1 * K)
    H[np.diag_indices_from(H)] += np.repeat(pen, K)
    if gauge_row is not None:  # unit curvature along the common intercept shift
        e = np.zeros((d1, K))
        e[gauge_row] = 1.0
        e = e.ravel()
        H += np.outer(e, e)
    return H


def newton_multinomial(X1, Y, C, pen, gauge_row, Theta=None) -> tuple[np.ndarray, bool]:
    """Damped Newton for full multinomial L2 logistic regression; returns (Θ (d1, K), converged)."""
    d1, K = X1.shape[1], Y.shape[1]
    Theta = np.zeros((d1, K)) if Theta is None else Theta.copy()
    M = X1 @ Theta
    f = _multi_objective(M, Y, Theta, pen, C)
    for _ in range(MAX_NEWTON_ITER):
        P = softmax(M, axis=1)
        G = C * (X1.T @ (P - Y)) + pen[:, None] * Theta
        H = _multi_hessian(X1, P, C, pen, gauge_row)
        step = cho_solve(cho_factor(H), G.ravel()).reshape(d1, K)
        decrement = float(np.sum(G * step))
        Theta, M, f, t = _backtrack(Theta, step, decrement, f, X1,
                                    lambda mm, th: _multi_objective(mm, Y, th, pen, C))
        if _small_step(t * step, Theta):
            return Theta, True
    return Theta, False


def _rows_times(A: np.ndarray, T: np.ndarray) -> np.ndarray:
    """``A @ T[b]`` for every b: (n, d) and (B, d, K) to (B, n, K) as one matrix product."""
    B, d, K = T.shape
    return (A @ T.transpose(1, 0, 2).reshape(d, B * K)).reshape(len(A), B, K).transpose(1, 0, 2)


class LogisticMultinomialSolver(LogisticBinarySolver):
    """Block-wise exact L2 multinomial logistic regression (scikit-learn's parametrisation)."""

    def __init__(self, C, fit_intercept, X_val, y_val, metric, n_classes: int) -> None:
        super().__init__(C, fit_intercept, X_val, y_val, metric)
        self.K = int(n_classes)

    def _score_all(self, Thetas: np.ndarray) -> np.ndarray:
        # Thetas: (B, d1, K)
        logits = _rows_times(self.Xv1, Thetas)
        return self.metric.from_proba(softmax(logits, axis=-1), self.y_val)

    def __call__(self, Xd, yd, Xz, yz, seed: int | None = None) -> BlockFit:
        C, K = self.C, self.K
        X1 = augment(Xd, self.fit_intercept)
        Z1 = augment(Xz, self.fit_intercept)
        k, d1 = X1.shape
        B = Z1.shape[0]
        Y = np.eye(K)[np.asarray(yd, dtype=np.intp)]
        Yz = np.eye(K)[np.asarray(yz, dtype=np.intp)]       # (B, K)
        pen = self._pen(d1)
        gauge = d1 - 1 if self.fit_intercept else None
        Theta0, ok0 = newton_multinomial(X1, Y, C, pen, gauge)

        P0 = softmax(X1 @ Theta0, axis=1)
        L = cho_factor(_multi_hessian(X1, P0, C, pen, gauge))
        D = d1 * K
        # W_b = H0⁻¹ U_b with U_b = x̃_b ⊗ I_K  (columns c: x̃_b placed in class c's slots)
        Ub = np.zeros((B, d1, K, K))
        for c in range(K):
            Ub[:, :, c, c] = Z1
        Ub = Ub.reshape(B, D, K)
        W = cho_solve(L, Ub.transpose(1, 0, 2).reshape(D, B * K)).reshape(D, B, K).transpose(1, 0, 2)
        Q = Ub.transpose(0, 2, 1) @ W                        # U_bᵀ H0⁻¹ U_b  (B, K, K)
        Thetas = np.repeat(Theta0[None], B, axis=0)            # (B, d1, K)
        done = np.zeros(B, dtype=bool)
        active = np.ones(B, dtype=bool)                        # columns still iterating
        eye = np.eye(K)

        def objective(Th):
            """F_{D∪z}(θ_z) of every column (B,), and the margins it computed (reused by the gradient)."""
            M = _rows_times(X1, Th)                              # (B, k, K)
            mz = (Z1[:, None, :] @ Th)[:, 0, :]
            f = (C * (np.sum(logsumexp(M, axis=-1) - np.sum(M * Y[None], axis=-1), axis=1)
                      + logsumexp(mz, axis=-1) - np.sum(mz * Yz, axis=-1))
                 + 0.5 * np.sum(pen[None, :, None] * Th * Th, axis=(1, 2)))
            return f, M, mz

        f, M, mz = objective(Thetas)
        X1T = np.ascontiguousarray(X1.T)
        last = np.full(B, np.inf)
        it = 0
        for it in range(1, MAX_MULTI_ITER + 1):
            R = softmax(M, axis=-1) - Y[None]
            pz = softmax(mz, axis=-1)
            G = (C * _rows_times(X1T, R) + pen[None, :, None] * Thetas
                 + C * Z1[:, :, None] * (pz - Yz)[:, None, :])
            Gf = G.reshape(B, D)
            Uf = cho_solve(L, Gf.T).T                          # H0⁻¹ g  (B, D)
            S = C * (pz[:, :, None] * eye[None] - pz[:, :, None] * pz[:, None, :])
            rhs = (S @ (W.transpose(0, 2, 1) @ Gf[:, :, None]))[:, :, 0]   # S Wᵀ g
            inner = np.linalg.solve(eye[None] + S @ Q, rhs[:, :, None])[:, :, 0]
            step = (Uf - (W @ inner[:, :, None])[:, :, 0]).reshape(B, d1, K)
            step[~active] = 0.0
            # The approximate Hessian is positive definite, so the step is a descent
            # direction: backtracking (Armijo, per column) makes the iteration converge
            # even for a point that moves the solution far (many features, few rows),
            # where the full step can overshoot.
            dec = np.sum(Gf * step.reshape(B, D), axis=1)
            t = np.ones(B)
            for _ls in range(40):
                new = Thetas - t[:, None, None] * step
                f_new, M, mz = objective(new)
                ok = ~active | (f_new <= f - 1e-4 * t * dec) | (dec < 1e-12 * (1.0 + np.abs(f)))
                if ok.all():
                    break
                t = np.where(ok, t, 0.5 * t)
            Thetas, f = new, f_new
            taken = (t[:, None] * step.reshape(B, D))
            small = active & _small_step(taken, Thetas.reshape(B, D), axis=1,
                                         moved=(Thetas - Theta0[None]).reshape(B, D))
            done |= small
            active &= ~small
            if D <= EXACT_FALLBACK_PARAMS:
                # Small (d+1)K: exact Newton on one column is cheap, so a column that needs
                # damping or contracts slowly is finished that way rather than iterated on.
                size = np.max(np.abs(taken), axis=1)
                active &= ~((t < 1.0) | (size > QN_CONTRACTION * last))
                last = size
            if not active.any():
                break
        fallbacks = 0
        for b in np.flatnonzero(~done):
            Thetas[b], done[b] = newton_multinomial(np.vstack([X1, Z1[b:b + 1]]), np.vstack([Y, Yz[b:b + 1]]),
                                                    C, pen, gauge, Thetas[b])
            fallbacks += 1
        scores = self._score_all(np.concatenate([Theta0[None], Thetas]))
        fit_intercept = self.fit_intercept

        def predict_base(X):
            return softmax(augment(X, fit_intercept) @ Theta0, axis=1)

        return BlockFit(u_base=float(scores[0]), u_with=scores[1:], converged=done & ok0,
                        method=self.method, iterations=it, fallbacks=fallbacks, predict_base=predict_base)


# --------------------------------------------------------------------------- selection

# Settings the fast path honours; others that do not change the optimum are ignored.
_IGNORED = {"tol", "max_iter", "solver", "warm_start", "verbose", "n_jobs", "random_state"}


def build(params: Mapping[str, Any], task: str, n_classes: int, X_val, y_val, metric: str, device=None):
    """The solver of scikit-learn's ``LogisticRegression`` with these settings, or None.

    (:class:`~.base.SolverBuilder`.) Two classes on a GPU device: :mod:`.device_logistic`;
    multinomial stays on the CPU (LAPACK Cholesky + Woodbury), whatever the device.
    """
    if task != "classification":
        return None
    C = params.get("C", 1.0)
    extra = set(params) - _IGNORED - {"C", "fit_intercept", "l1_ratio", "penalty",
                                      "class_weight", "intercept_scaling", "dual"}
    if extra or params.get("class_weight") is not None or params.get("dual", False):
        return None
    if params.get("penalty", "deprecated") not in ("deprecated", "l2"):
        return None
    if float(params.get("l1_ratio", 0.0) or 0.0) != 0.0:
        return None
    if params.get("solver") == "liblinear":
        return None  # liblinear penalises the intercept: another objective
    if isinstance(C, bool) or not isinstance(C, (int, float)) or not 0 < C < np.inf:
        return None
    fit_intercept = bool(params.get("fit_intercept", True))
    if n_classes == 2:
        if device is not None and device.is_gpu:
            return DeviceLogisticSolver(C, fit_intercept, X_val, y_val, metric, device)
        return LogisticBinarySolver(C, fit_intercept, X_val, y_val, metric)
    if (np.shape(X_val)[1] + 1) * n_classes > MAX_MULTINOMIAL_PARAMS:
        return None  # the dense (d+1)K Hessian would cost more than it saves
    return LogisticMultinomialSolver(C, fit_intercept, X_val, y_val, metric, n_classes)
