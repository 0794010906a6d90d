r"""Empirical-Bayes (shrinkage) scaling laws, vectorised over points.

Why
---
With 10–30 samples per point the per-point MLE (:mod:`.mle`) is unstable: α
is barely determined, and ψ_k = c·k^(−α) extrapolated to the small end of the
range explodes when α is overestimated (measured: explained variance of
Shapley −1,146 on adult at 10 samples per point, against +0.22 for the plain
mean). Here every point's law is estimated together with a *population*
distribution of laws learned from all points of the run, and each point is
pulled towards it as much as its own samples leave it undetermined.

Parametrisation
---------------
All points share one unit of Δ (``S``, the root mean square of every usable
Δ of the run) and one reference size :math:`k_r = \sqrt{k_{lo} k_{hi}}` (the
geometric middle of the sampled range). With :math:`x = \log(k / k_r)` and
:math:`y = Δ / S`, a point's law is :math:`\theta = (v, a, l, b)`:

.. math::

    y \sim \mathcal N\!\left(v\,e^{-a x},\; e^{\,l - b x}\right)

so ``v`` is ψ at :math:`k_r` (in units of S) -- well determined by any
samples across the range and nearly uncorrelated with the exponent ``a`` = α
-- ``l`` is the log noise variance at :math:`k_r` and ``b`` = β. In SPEC
units :math:`c = S v k_r^{a}`, :math:`σ^2 = S^2 e^{l} k_r^{b}`.

Population model and estimation
-------------------------------
Each coordinate has a normal prior, independent across coordinates:
:math:`\theta_{ip} \sim \mathcal N(\mu_{ip}, \tau_p^2)`, where
:math:`\mu_{ip} = \mu_p` (a population mean) or, given a per-point prior
mean :math:`m_{ip}` (e.g. the amortized estimator's prediction for that
point), :math:`\mu_{ip} = m_{ip} + \delta_p` (a learned offset). α and β stay
in the box [0, e²] of the MLE.

The hyperparameters (μ or δ, and τ²) maximise the marginal likelihood of all
samples, approximated by Laplace's method, with EM:

* E step: each point's posterior mode :math:`\hat\theta_i` of
  :math:`F_i(\theta) = \sum_j \mathrm{nll}_{ij}(\theta) + \tfrac12\sum_p
  (\theta_p - \mu_{ip})^2/\tau_p^2`, and its covariance
  :math:`V_i = (\mathcal I_i + \mathrm{diag}\,\tau^{-2})^{-1}`;
* M step: :math:`\mu_p = \overline{\hat\theta_{ip}}` (or
  :math:`\delta_p = \overline{\hat\theta_{ip} - m_{ip}}`) and
  :math:`\tau_p^2 = \overline{(\hat\theta_{ip} - \mu_{ip})^2 + V_{i,pp}}`.

The E step is one step per EM iteration for all points at once (4 × 4
systems, batched), warm-started from the previous iterate: a full Newton step
(observed information plus the prior's exact curvature) where it is a descent
direction and lowers :math:`F_i`, else a damped Fisher-scoring step with a
backtracking line search on :math:`F_i` (generalised EM: both steps increase
the objective). Iteration stops when no mode moves by more than ``tol`` and
τ² changes by less than ``tol`` relatively. Fisher scoring alone converges
linearly, and slowly where a point's posterior is flat in the noise parameters
(few samples): a step below ``tol`` then stopped it up to ~100 × ``tol`` from
its mode, and a one-sample-per-point run of 20,000 points left half of them
moving after 300 iterations; Newton steps converge quadratically near the
mode. Where the points carry little evidence of a spread, EM approaches
it slowly (linearly, and sublinearly towards a spread of zero) and the modes
creep with it: in the estimator benchmark's fits (10–30 samples per point,
128 points) 81 of 96 were still moving after 300 iterations, every point
then flagged ``not_converged`` and the law choice set shrinkage aside. So
the flag is per point: an EM stopped at ``max_iter`` settles each point's
mode under the prior reached (``meta['em_converged']`` says the prior
itself did not settle; a warning too), and flags the points whose mode did
not converge. The M step's covariance :math:`V_i` is the inverse of the expected
(Fisher) information plus the prior precision, whichever step was taken, so
the EM's fixed point does not depend on the steps; the reported covariance
uses the observed information where that plus the prior precision is
positive definite.

Properties
----------
* With many samples per point :math:`\mathcal I_i` dominates the prior
  precision and the mode tends to the per-point MLE (a test checks this).
* With few samples a point's law tends to its prior mean, never to a steep
  law with a huge c: there is nothing to explode.
* Points with ψ ≈ 0 leave α undetermined; it then takes its prior value.

Intervals
---------
Posterior (Laplace) intervals: α ± z·sd (clipped to the box); ψ_k and the
Shapley value by the delta method on the posterior covariance of (c, α)
(``extra['var_c']``, ``extra['var_alpha']``, ``extra['cov_c_alpha']``, as
:mod:`.mle` provides); c on the log scale when its sign is established (as in
:mod:`.mle`). They are calibrated *on average over the points* when the
population model holds (empirical-Bayes coverage), not point by point.

Failure modes
-------------
* A point without usable samples gets NaN and ``too_few_samples`` (its prior
  mean is available from ``meta['population']``).
* All Δ of the run are zero: S = 0; every point gets c = 0, σ = 0.
* A population that is far from normal (e.g. a heavy tail of very valuable
  points) is shrunk too strongly in its tail; with many samples per point the
  effect vanishes. ``fit_laws(method="auto")`` compares this estimator with
  the others by held-out likelihood.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import ConfigError, ConvergenceWarning
from ..seeding import point_keys
from .likelihood import LOG_2PI, PARAM_MAX, PackedSamples, observed_information, segment_sum
from .mle import _c_interval, _sign_z, prepare_samples
from .result import FittedScalingLaws

__all__ = ["fit_shrinkage", "prior_from_laws"]

_NAMES = ("v", "alpha", "log_var", "beta")
_BOUND_TOL = 1e-6
#: Floor of every prior variance (in the normalised units): keeps the prior
#: precision finite when the population has no spread in a coordinate.
_TAU2_FLOOR = 1e-8
#: Mode steps under the prior an unconverged EM stopped at (the modes then follow the prior reached).
_SETTLE_STEPS = 50
_LS_STEPS = 12
#: Points the population prior is learned on (see fit_shrinkage).
_EM_POINTS = 2000


def _pack_global(codes: np.ndarray, k: np.ndarray, delta: np.ndarray, keep: np.ndarray,
                 log_kr: float, scale: float) -> PackedSamples:
    """Samples of the kept points, sorted by point, in the run's common units."""
    position = np.full(int(codes.max()) + 1 if codes.size else 0, -1, dtype=np.intp)
    position[keep] = np.arange(keep.size)
    pos = position[codes]
    rows = np.flatnonzero(pos >= 0)
    order = rows[np.argsort(pos[rows], kind="stable")]
    seg = pos[order]
    counts = np.bincount(seg, minlength=keep.size).astype(np.intp)
    starts = np.zeros_like(counts)
    np.cumsum(counts[:-1], out=starts[1:])
    x = np.log(k[order]) - log_kr
    y = delta[order] / scale
    P = keep.size
    return PackedSamples(point_index=keep, starts=starts, counts=counts, seg=seg, x=x, y=y,
                         scale=np.full(P, scale), log_k0=np.full(P, log_kr),
                         x_min=np.minimum.reduceat(x, starts), x_max=np.maximum.reduceat(x, starts))


class _Sums:
    """Per-point sums that the objective, the gradient and the Fisher information need."""

    def __init__(self, packed: PackedSamples, theta: np.ndarray, full: bool = True) -> None:
        x, y = packed.x, packed.y
        # Segments are contiguous: repeating is cheaper than gathering by index.
        v, a, l, b = np.repeat(theta.T, packed.counts, axis=1)
        m = np.exp(-a * x)
        w = np.exp(b * x - l)
        r = y - v * m
        rw = r * w
        if not full:
            self.rrw = segment_sum(packed, r * rw)
            return
        # Every per-sample term in one array, summed per point in one call.
        terms = np.empty((9, x.size))
        np.multiply(r, rw, out=terms[0])                # r²w
        np.multiply(terms[0], x, out=terms[1])          # r²w x
        np.multiply(rw, m, out=terms[2])                # r w m
        np.multiply(terms[2], x, out=terms[3])          # r w m x
        np.multiply(w * m, m, out=terms[4])             # w m²
        np.multiply(terms[4], x, out=terms[5])          # w m² x
        np.multiply(terms[5], x, out=terms[6])          # w m² x²
        # Residual-weighted terms of the observed information (Newton steps, :meth:`_Problem.hessian`).
        np.multiply(terms[3], x, out=terms[7])          # r w m x²
        np.multiply(terms[1], x, out=terms[8])          # r²w x²
        sums = segment_sum(packed, terms)
        (self.rrw, self.rrwx, self.rwm, self.rwmx, self.wmm, self.wmmx, self.wmmxx,
         self.rwmxx, self.rrwxx) = sums


class _Problem:
    """The posterior objective of every point for fixed hyperparameters."""

    def __init__(self, packed: PackedSamples) -> None:
        self.packed = packed
        self.n = packed.counts.astype(np.float64)
        self.sx = segment_sum(packed, packed.x)
        self.sxx = segment_sum(packed, packed.x * packed.x)

    def data_nll(self, theta: np.ndarray, sums: _Sums) -> np.ndarray:
        """Σ_j nll_ij without the constant ½ log 2π (normalised units)."""
        l, b = theta[:, 2], theta[:, 3]
        return 0.5 * (self.n * l - b * self.sx) + 0.5 * sums.rrw

    def objective(self, theta, sums, mu, tau2) -> np.ndarray:
        return self.data_nll(theta, sums) + 0.5 * np.sum((theta - mu) ** 2 / tau2, axis=1)

    def gradient(self, theta, sums) -> np.ndarray:
        v = theta[:, 0]
        g = np.empty_like(theta)
        g[:, 0] = -sums.rwm
        g[:, 1] = v * sums.rwmx
        g[:, 2] = 0.5 * self.n - 0.5 * sums.rrw
        g[:, 3] = -0.5 * self.sx + 0.5 * sums.rrwx
        return g

    def fisher(self, theta, sums) -> np.ndarray:
        """Expected information in (v, a, l, b): block diagonal, positive semi-definite."""
        v = theta[:, 0]
        info = np.zeros((theta.shape[0], 4, 4))
        info[:, 0, 0] = sums.wmm
        info[:, 0, 1] = info[:, 1, 0] = -v * sums.wmmx
        info[:, 1, 1] = v * v * sums.wmmxx
        info[:, 2, 2] = 0.5 * self.n
        info[:, 2, 3] = info[:, 3, 2] = -0.5 * self.sx
        info[:, 3, 3] = 0.5 * self.sxx
        return info

    def hessian(self, theta, sums) -> np.ndarray:
        """Observed information in (v, a, l, b): the data NLL's exact Hessian (may be indefinite away from a mode)."""
        v = theta[:, 0]
        H = self.fisher(theta, sums)
        H[:, 0, 1] = H[:, 1, 0] = -v * sums.wmmx + sums.rwmx
        H[:, 1, 1] -= v * sums.rwmxx
        H[:, 0, 2] = H[:, 2, 0] = sums.rwm
        H[:, 0, 3] = H[:, 3, 0] = -sums.rwmx
        H[:, 1, 2] = H[:, 2, 1] = -v * sums.rwmx
        H[:, 1, 3] = H[:, 3, 1] = v * sums.rwmxx
        H[:, 2, 2] = 0.5 * sums.rrw
        H[:, 2, 3] = H[:, 3, 2] = -0.5 * sums.rrwx
        H[:, 3, 3] = 0.5 * sums.rrwxx
        return H


def _clip(theta: np.ndarray) -> np.ndarray:
    theta[:, 1] = np.clip(theta[:, 1], 0.0, PARAM_MAX)
    theta[:, 3] = np.clip(theta[:, 3], 0.0, PARAM_MAX)
    return theta


def _initial(packed: PackedSamples) -> np.ndarray:
    """Per-point start: α = 1, β = 2 (the paper's start), v by weighted least squares, l by moments."""
    P = packed.n_points
    theta = np.zeros((P, 4))
    theta[:, 1], theta[:, 3] = 1.0, 2.0
    seg, x, y = packed.seg, packed.x, packed.y
    m = np.exp(-x)
    u = np.exp(2.0 * x)
    theta[:, 0] = segment_sum(packed, y * m * u) / segment_sum(packed, m * m * u)
    r = y - theta[seg, 0] * m
    s2 = segment_sum(packed, r * r * u) / packed.counts
    # With fewer than 3 samples the residual says nothing about the noise (one
    # sample fits exactly): start such points at the run's median noise level.
    pooled = np.median(s2[packed.counts >= 3]) if (packed.counts >= 3).any() else float(np.mean(y * y))
    s2 = np.where(packed.counts >= 3, s2, pooled)
    theta[:, 2] = np.log(np.maximum(s2, 1e-12 * max(float(np.mean(y * y)), 1e-300)))
    return theta


def _solve(A: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Batched A⁻¹g for symmetric positive (semi-)definite 4 × 4 systems.

    A relative jitter on the diagonal keeps nearly singular systems (a point
    whose few samples pin v and α together) solvable; any still singular one
    is solved by least squares.
    """
    idx = np.arange(A.shape[1])
    A = A.copy()
    A[:, idx, idx] += 1e-12 * np.abs(A[:, idx, idx]).max(axis=1, keepdims=True) + 1e-300
    try:
        return np.linalg.solve(A, g[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:
        return np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(A, g)])


def _inverse(A: np.ndarray) -> np.ndarray:
    """Batched inverse of the Fisher-plus-prior matrices (symmetric positive definite: the prior's
    Hessian is); the pseudo-inverse for any that is not (singular or not finite).

    LU per 4 × 4 matrix rather than an eigendecomposition: the EM calls this every iteration for
    every point, and the eigendecomposition was a third of the law choice's time.
    """
    with np.errstate(all="ignore"):
        try:
            inv = np.linalg.inv(A)
            bad = ~np.isfinite(inv).all(axis=(1, 2))
        except np.linalg.LinAlgError:
            inv, bad = np.empty_like(A), np.ones(A.shape[0], dtype=bool)
    if bad.any():
        inv[bad] = np.linalg.pinv(A[bad], hermitian=True)
    return inv


class _Prior:
    """Normal prior on φ(θ) = (v or z, a, l, b), z = v·e^{−l/2} (``relative``), diag variances τ².

    ``relative``: the prior is on the signal-to-noise ratio at k_r, so points
    with noisy samples are not shrunk harder merely for being noisy (the
    density of v given l then carries the Jacobian e^{−l/2}: a term ½·l).
    Prior means: a population mean, or per-point ``base`` means plus an
    offset, plus (with covariates ``X``) a linear function ``X @ B`` learned
    in the M step (a Fay–Herriot regression prior).
    """

    def __init__(self, relative: bool, base: np.ndarray | None, X: np.ndarray | None = None) -> None:
        self.relative = relative
        self.base = None if base is None else self.phi(base)
        self.have = None if base is None else np.isfinite(self.base).all(axis=1)
        self.X = X
        self.B = None if X is None else np.zeros((X.shape[1], 4))
        self.pop = np.zeros(4)
        self.offset = np.zeros(4)
        self.tau2 = np.ones(4)

    def copy_for(self, base: np.ndarray | None, X: np.ndarray | None) -> "_Prior":
        """The same hyperparameters for another set of points."""
        out = _Prior(self.relative, base, X)
        out.pop, out.offset, out.tau2 = self.pop.copy(), self.offset.copy(), self.tau2.copy()
        out.B = None if self.B is None else self.B.copy()
        return out

    def phi(self, theta: np.ndarray) -> np.ndarray:
        out = np.array(theta, dtype=np.float64, copy=True)
        if self.relative:
            out[:, 0] = theta[:, 0] * np.exp(-0.5 * theta[:, 2])
        return out

    def _row0(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The one non-trivial row of ∂φ/∂θ (``relative``): ∂φ₀/∂v = e and ∂φ₀/∂l = f; the rest is the identity."""
        e = np.exp(-0.5 * theta[:, 2])
        return e, -0.5 * theta[:, 0] * e

    def means(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Prior means of φ for every point (or the points ``rows``); one row if shared."""
        if self.base is None:
            m = self.pop[None, :]
        else:
            base, have = (self.base, self.have) if rows is None else (self.base[rows], self.have[rows])
            m = np.where(have[:, None], base + self.offset[None, :], self.pop[None, :])
        if self.X is not None:
            m = m + (self.X if rows is None else self.X[rows]) @ self.B
        return m

    def energy(self, theta: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        e = 0.5 * np.sum((self.phi(theta) - self.means(rows)) ** 2 / self.tau2, axis=1)
        return e + 0.5 * theta[:, 2] if self.relative else e

    def grad_hess(self, theta: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Gradient and Gauss–Newton Hessian of :meth:`energy` in θ.

        ∂φ/∂θ is the identity but for φ₀'s row under ``relative`` (:meth:`_row0`), so
        Jᵀd and Jᵀ diag(1/τ²) J are written out rather than multiplied as 4 × 4 matrices.
        """
        d = (self.phi(theta) - self.means(rows)) / self.tau2
        w = 1.0 / self.tau2
        g = d.copy()
        H = np.zeros((theta.shape[0], 4, 4))
        idx = np.arange(4)
        H[:, idx, idx] = w
        if self.relative:
            e, f = self._row0(theta)
            g[:, 0] = e * d[:, 0]
            g[:, 2] += f * d[:, 0] + 0.5
            H[:, 0, 0] = w[0] * e * e
            H[:, 0, 2] = H[:, 2, 0] = w[0] * e * f
            H[:, 2, 2] = w[2] + w[0] * f * f
        return g, H

    def curvature(self, theta: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """What the exact Hessian of :meth:`energy` adds to :meth:`grad_hess`'s Gauss–Newton one:
        (φ₀ − m₀)/τ₀² times φ₀'s second derivatives (``relative``; zero otherwise)."""
        C = np.zeros((theta.shape[0], 4, 4))
        if self.relative:
            d0 = (self.phi(theta)[:, 0] - self.means(rows)[:, 0]) / self.tau2[0]
            e, _ = self._row0(theta)
            C[:, 0, 2] = C[:, 2, 0] = -0.5 * e * d0
            C[:, 2, 2] = 0.25 * theta[:, 0] * e * d0
        return C

    def update(self, theta: np.ndarray, cov: np.ndarray) -> None:
        """M step: population mean (or offset to the per-point means) and variances."""
        phi = self.phi(theta)
        if self.X is not None:
            # Least squares of φ (minus the base means) on [1, X] (+ an own
            # intercept for points without a base mean).
            P = phi.shape[0]
            target = phi.copy()
            design = [np.ones(P), self.X]
            if self.base is not None:
                target[self.have] -= self.base[self.have]
                if (~self.have).any():
                    design.append((~self.have).astype(np.float64))
            D = np.column_stack(design)
            coef = np.linalg.lstsq(D, target, rcond=None)[0]
            q = self.X.shape[1]
            self.B = coef[1:1 + q]
            if self.base is None:
                self.pop = coef[0]
            else:
                self.offset = coef[0]
                self.pop = coef[0] + coef[-1] if (~self.have).any() else self.pop
        elif self.base is None:
            self.pop = phi.mean(axis=0)
        else:
            if self.have.any():
                self.offset = np.mean(phi[self.have] - self.base[self.have], axis=0)
            if (~self.have).any():
                self.pop = phi[~self.have].mean(axis=0)
        # Var φ = diag(J cov Jᵀ), with J the identity but for φ₀'s row under ``relative``.
        var_phi = np.diagonal(cov, axis1=1, axis2=2).copy()
        if self.relative:
            e, f = self._row0(theta)
            var_phi[:, 0] = e * e * cov[:, 0, 0] + 2.0 * e * f * cov[:, 0, 2] + f * f * cov[:, 2, 2]
        self.tau2 = np.maximum(np.mean((phi - self.means()) ** 2 + var_phi, axis=0), _TAU2_FLOOR)


def _standardise(covariates: pd.DataFrame, point_ids: np.ndarray,
                 stats: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Covariates of these points, each column centred and scaled (missing -> 0 = the mean), and how.

    ``stats`` (what an earlier call returned): centre, scale and keep the
    columns as that call did, whatever these points' own spread.
    """
    frame = covariates.reindex(index=pd.Index(point_ids, dtype=object),
                               columns=None if stats is None else stats["columns"])
    X = frame.to_numpy(dtype=np.float64)
    if stats is None:
        mu = np.nanmean(X, axis=0)
        sd = np.nanstd(X, axis=0)
    else:
        mu, sd = np.asarray(stats["mean"], np.float64), np.asarray(stats["sd"], np.float64)
    X = (X - mu) / np.where(sd > 0, sd, 1.0)
    X = np.where(np.isfinite(X), X, 0.0)
    used = np.std(X, axis=0) > 0 if stats is None else np.asarray(stats["used"], bool)
    return X[:, used], {"columns": [str(c) for c in frame.columns], "mean": mu.tolist(), "sd": sd.tolist(),
                        "used": used.tolist()}


def prior_from_laws(laws: FittedScalingLaws, point_ids: np.ndarray, *, k_ref: float, scale: float) -> np.ndarray:
    """Per-point prior means θ = (v, a, l, b) from other laws (e.g. amortized predictions).

    Returns an array of shape (len(point_ids), 4) in the shrinkage units (Δ in
    units of ``scale``, sizes relative to ``k_ref``); rows are NaN where
    ``laws`` has no finite law for the point.
    """
    pos = pd.Index(laws.point_ids).get_indexer(np.asarray(point_ids, dtype=object))
    out = np.full((len(point_ids), 4), np.nan)
    ok = pos >= 0
    p = pos[ok]
    c, a, s, b = laws.c[p], laws.alpha[p], laws.sigma[p], laws.beta[p]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out[ok, 0] = c * np.exp(-a * np.log(k_ref)) / scale
        out[ok, 1] = a
        out[ok, 2] = np.log(s * s) - b * np.log(k_ref) - 2.0 * np.log(scale)
        out[ok, 3] = b
    out[~np.isfinite(out).all(axis=1)] = np.nan
    return out


def fit_shrinkage(
    samples: pd.DataFrame,
    *,
    prior: FittedScalingLaws | None = None,
    covariates: pd.DataFrame | None = None,
    prior_scale: str = "auto",
    k_ref: float | None = None,
    min_samples: int = 1,
    level: float = 0.95,
    max_iter: int = 300,
    tol: float = 1e-4,
    population: dict[str, Any] | None = None,
) -> FittedScalingLaws:
    """Empirical-Bayes scaling laws for every point in a samples table.

    Parameters
    ----------
    samples : DataFrame
        Columns ``point_id``, ``k``, ``delta`` and optionally ``failed``
        (failed rows and non-finite deltas are dropped and counted).
    prior : FittedScalingLaws, optional
        Per-point prior means (e.g. the amortized estimator's predictions);
        the population then learns an offset and a spread around them.
        Points it lacks use the population mean. None: one population mean.
    covariates : DataFrame, optional
        Per-point covariates (indexed by point id, numeric columns), e.g. the
        out-of-bag evidence: the prior means become a linear function of them
        (learned with the rest of the prior). Standardised here; points
        without a row get the column means.
    prior_scale : {"auto", "relative", "absolute"}, default="auto"
        The prior on v: on the signal-to-noise ratio at k_r (``relative``)
        or on v itself (``absolute``). "auto" fits both and keeps the one
        with the larger (Laplace) marginal likelihood of all samples.
    k_ref : float, optional
        Reference size of the parametrisation; default the geometric middle
        of the sampled sizes.
    min_samples : int, default=1
        Points with fewer usable samples get NaN and ``too_few_samples``.
    level : float, default=0.95
        Coverage of the posterior intervals.
    max_iter : int, default=300
        EM iterations at most (one Newton or Fisher-scoring step per point each); beyond, a
        ConvergenceWarning, ``meta['em_converged']`` False; flag ``not_converged``: own mode unsettled.
    tol : float, default=1e-4
        Convergence threshold on the largest move of a mode (normalised
        units) and on the relative change of the prior's standard deviations
        in one iteration.
    population : dict, optional
        The learned population of an earlier fit (its ``meta['population_state']``:
        the prior's family, means, spreads and covariate coefficients, the
        units ``k_ref`` and ``delta_scale``, the covariates' centring): no
        EM, each point's mode under that prior. So the laws of any set of
        points are those they would get in the earlier fit, point by point
        (the law choice learns the population on a sample of the points and
        applies it to the others partition by partition).

    Returns
    -------
    FittedScalingLaws
        ``estimator="shrinkage"`` (or ``"amortized_shrinkage"`` with a
        ``prior``), posterior intervals, covariance extras (``var_c``,
        ``var_alpha``, ``cov_c_alpha``) and ``sign_z``; ``meta['population']``
        holds the learned prior.
    """
    _check_options(min_samples, level, max_iter, prior_scale)
    t0 = time.perf_counter()
    ids, codes, k, delta, counts = prepare_samples(samples)
    P = ids.shape[0]
    n = np.bincount(codes, minlength=P).astype(np.int64)
    estimator = "shrinkage" if prior is None else "amortized_shrinkage"
    fit = n >= min_samples
    keep = np.flatnonzero(fit)
    used = fit[codes]
    k_lo = float(k[used].min()) if used.any() else 1.0
    k_hi = float(k[used].max()) if used.any() else 1.0
    kr = float(k_ref) if k_ref is not None else float(np.sqrt(k_lo * k_hi))
    if population is not None:
        kr = float(population["k_ref"])
    if not (np.isfinite(kr) and kr > 0):
        raise ConfigError(f"k_ref={k_ref} must be a positive number")
    scale = float(np.sqrt(np.mean(delta[used] ** 2))) if used.any() else 0.0
    if population is not None:
        scale = float(population["delta_scale"])

    nan = lambda: np.full(P, np.nan)  # noqa: E731
    out = {name: nan() for name in ("c", "alpha", "sigma", "beta", "nll", "var_c", "var_alpha",
                                    "cov_c_alpha", "sign_z", "alpha_low", "alpha_high", "c_low", "c_high")}
    flag = {name: np.zeros(P, dtype=bool) for name in
            ("too_few_samples", "alpha_at_bound", "beta_at_bound", "sign_uncertain", "not_converged")}
    flag["too_few_samples"][~fit] = True
    meta: dict[str, Any] = {**counts, "n_points": int(P), "n_fitted": int(keep.size),
                            "min_samples": int(min_samples), "level": float(level),
                            "k_ref": kr, "delta_scale": scale,
                            "prior": "population" if prior is None else "per-point prior means + offset"}
    if keep.size and scale == 0.0:
        # Every delta is zero: the law is psi = 0 with no noise; nothing to estimate.
        out["c"][keep], out["sigma"][keep] = 0.0, 0.0
        flag["sign_uncertain"][keep] = True
        keep = keep[:0]
        meta["population_state"] = {"k_ref": kr, "delta_scale": 0.0}
    if keep.size:
        fitted = _fit_population(codes, k, delta, ids, keep, kr, scale, prior=prior, covariates=covariates,
                                 prior_scale=prior_scale, level=level, max_iter=max_iter, tol=tol,
                                 out=out, flag=flag, population=population)
        meta.update(fitted)
        if not fitted["converged"]:
            warnings.warn(f"shrinkage EM: the population prior still moved after max_iter={max_iter} iterations; "
                          f"modes found under the prior reached ({int(flag['not_converged'].sum())} of {keep.size} "
                          "not converged, flag 'not_converged')", ConvergenceWarning, stacklevel=2)
    meta["seconds"] = round(time.perf_counter() - t0, 4)
    meta["flag_counts"] = {name: int(v.sum()) for name, v in flag.items()}
    meta["intervals"] = "posterior (Laplace) intervals under the learned population prior; delta method for c"
    extra = {key: out[key] for key in ("var_c", "var_alpha", "cov_c_alpha", "sign_z")}
    return FittedScalingLaws(
        point_ids=ids, c=out["c"], alpha=out["alpha"], sigma=out["sigma"], beta=out["beta"],
        nll=out["nll"], n_samples=n, estimator=estimator, alpha_low=out["alpha_low"],
        alpha_high=out["alpha_high"], c_low=out["c_low"], c_high=out["c_high"], flags=flag,
        extra=extra, k_range=(int(np.floor(k_lo)), int(np.ceil(k_hi))) if used.any() else None, meta=meta,
    )


def _check_options(min_samples: int, level: float, max_iter: int, prior_scale: str) -> None:
    if min_samples < 1:
        raise ConfigError(f"min_samples={min_samples} must be >= 1")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level={level} must lie in (0, 1)")
    if max_iter < 1:
        raise ConfigError(f"max_iter={max_iter} must be >= 1")
    if prior_scale not in ("auto", "relative", "absolute"):
        raise ConfigError(f"prior_scale={prior_scale!r} must be 'auto', 'relative' or 'absolute'")


def _fit_population(codes, k, delta, ids, keep, kr: float, scale: float, *, prior, covariates, prior_scale: str,
                    level: float, max_iter: int, tol: float, out: dict[str, np.ndarray],
                    flag: dict[str, np.ndarray], population: dict[str, Any] | None = None) -> dict[str, Any]:
    """Learn the prior (EM; or take ``population``), find every kept point's mode under it, fill ``out`` and ``flag``.

    Returns the fit's entries of ``meta`` (``converged`` among them, and
    ``population_state``: what :func:`fit_shrinkage`'s ``population`` takes).
    """
    packed = _pack_global(codes, k, delta, keep, np.log(kr), scale)
    base = None if prior is None else prior_from_laws(prior, ids[keep], k_ref=kr, scale=scale)
    X, x_stats = (None, None) if covariates is None else _standardise(
        covariates, ids[keep], None if population is None else population["covariates"])
    if population is not None:
        given = _Prior(bool(population["relative"]), base, X)
        given.pop, given.offset = np.asarray(population["pop"]), np.asarray(population["offset"])
        given.tau2 = np.asarray(population["tau2"])
        given.B = None if population["B"] is None or X is None else np.asarray(population["B"])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            res = _modes(packed, given, base, max_iter=max_iter, tol=tol)
            res["converged"] = bool(res["converged"] and population["converged"])
            _finish(res, packed, kr, scale, level, out, flag)
        return {"population": _population(given), "population_given": True, "iterations": res["iterations"],
                "converged": res["converged"], "em_converged": bool(population["converged"]),
                "prior_scale": "relative" if given.relative else "absolute",
                "population_state": dict(population)}
    families = ("relative", "absolute") if prior_scale == "auto" else (prior_scale,)
    # The population is learned on at most _EM_POINTS points (chosen by a
    # keyed hash of their ids, so independent of row order): two thousand
    # points pin the prior's means and spreads to a few percent, and the
    # EM's many iterations then cost little on large runs. Every point's
    # mode is then found under that prior.
    sub = np.arange(keep.size)
    if keep.size > _EM_POINTS:
        sub = np.sort(np.argsort(point_keys(ids[keep], 0), kind="stable")[:_EM_POINTS])
    p_sub = packed if sub.size == keep.size else packed.take(sub)
    b_sub = None if base is None else base[sub]
    x_sub = None if X is None else X[sub]
    best, evidence = None, {}
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for family in families:
            res = _em(p_sub, b_sub, relative=family == "relative", max_iter=max_iter, tol=tol, X=x_sub)
            evidence[family] = _log_evidence(res)
            if best is None or evidence[family] > evidence[best[1]]:
                best = (res, family)
        res, family = best
        em_iterations, em_converged = res["iterations"], bool(res["converged"])
        if sub.size < keep.size:
            prior_full = res["prior"].copy_for(base, X)
            mode_res = _modes(packed, prior_full, base, max_iter=max_iter, tol=tol)
            mode_res["converged"] = mode_res["converged"] and res["converged"]
            res = mode_res
        _finish(res, packed, kr, scale, level, out, flag)
    learned = res["prior"]
    state = {"relative": bool(learned.relative), "pop": learned.pop.tolist(), "offset": learned.offset.tolist(),
             "tau2": learned.tau2.tolist(), "B": None if learned.B is None else learned.B.tolist(),
             "covariates": x_stats, "k_ref": kr, "delta_scale": scale, "converged": em_converged}
    return {"population": _population(learned), "em_iterations": em_iterations, "em_converged": em_converged,
            "em_points": int(sub.size), "iterations": res["iterations"],
            "converged": bool(res["converged"]), "prior_scale": family,
            "log_evidence_per_point": {f: v / sub.size for f, v in evidence.items()},
            "population_state": state}


def _start(packed: PackedSamples, base: np.ndarray | None) -> np.ndarray:
    theta = _initial(packed)
    if base is not None:
        have = np.isfinite(base).all(axis=1)
        theta[have] = base[have]
        theta = _clip(theta)
    return theta


def _step(packed: PackedSamples, prob: _Problem, prior: _Prior, theta: np.ndarray,
          rows: np.ndarray | None = None):
    """One step on every point's posterior objective: Newton where it descends, else damped Fisher scoring.

    A point takes the full Newton step (the observed information plus the
    prior's exact curvature) where that step is a descent direction and lowers
    its objective; Fisher scoring alone converges only linearly (a point with
    few samples has a flat posterior in the noise parameters, where the
    expected information is far from the observed one: 300 iterations left
    most points of a one-sample-per-point run unconverged). Every other point
    takes the Fisher-scoring step, halved (backtracking) until its objective
    does not increase. Both steps go downhill and stop at the same modes.

    Returns the new modes, the Fisher-plus-prior matrices at the old ones (the
    EM's M step uses them, so its fixed point does not depend on the steps) and
    each point's largest move. ``rows``: which points of the prior ``packed`` holds (None: all).
    """
    sums = _Sums(packed, theta)
    f = prob.data_nll(theta, sums) + prior.energy(theta, rows)
    g_p, H_p = prior.grad_hess(theta, rows)
    g = prob.gradient(theta, sums) + g_p
    A = prob.fisher(theta, sums) + H_p
    tol = 1e-12 * np.abs(f)
    with np.errstate(all="ignore"):
        newton = _solve(prob.hessian(theta, sums) + H_p + prior.curvature(theta, rows), g)
        descends = np.isfinite(newton).all(axis=1) & (np.sum(newton * g, axis=1) > 0)
        trial = theta.copy()
        trial[descends] = _clip(theta[descends] - newton[descends])
        f_n = prob.data_nll(trial, _Sums(packed, trial, full=False)) + prior.energy(trial, rows)
    took = descends & (f_n <= f + tol)
    new = np.where(took[:, None], trial, theta)
    rest = np.flatnonzero(~took)
    if rest.size:
        sub = packed.take(rest) if rest.size < theta.shape[0] else packed
        sub_rows = rest if rows is None else rows[rest]
        th_b, f_b = theta[rest], f[rest]
        st_b = _solve(A[rest], g[rest])
        new[rest] = _backtrack(sub, prior, sub_rows, th_b, st_b, f_b + tol[rest])
    return new, A, np.abs(new - theta).max(axis=1)


def _backtrack(sub: PackedSamples, prior: _Prior, rows: np.ndarray, theta: np.ndarray, step: np.ndarray,
               bound: np.ndarray) -> np.ndarray:
    """Each point at θ − t·step for the largest t in 1, ½, …, 2^−_LS_STEPS whose objective is at most
    ``bound``; θ where none is.

    The full step and the half step are tried on the points still looking; the
    points left after them (few, but often stalled on every step size) have all
    the shorter steps scored in one call rather than one call per halving: the
    same objective values and the same choice, at a fraction of the calls.
    """
    out = theta.copy()
    todo = np.arange(theta.shape[0])
    t = 1.0
    for _ in range(min(2, _LS_STEPS + 1)):
        trial = _clip(theta[todo] - t * step[todo])
        part = sub if todo.size == theta.shape[0] else sub.take(todo)
        ok = _sub_objective(part, trial, prior, rows[todo]) <= bound[todo]
        out[todo[ok]] = trial[ok]
        todo = todo[~ok]
        if not todo.size:
            return out
        t *= 0.5
    scales = t * 0.5 ** np.arange(_LS_STEPS - 1)  # exact powers of two: as if halved one at a time
    if not scales.size:
        return out
    reps = np.tile(todo, scales.size)
    trial = _clip(theta[reps] - np.repeat(scales, todo.size)[:, None] * step[reps])
    ok = (_sub_objective(sub.take(reps), trial, prior, rows[reps]) <= bound[reps]).reshape(scales.size, -1)
    found = ok.any(axis=0)
    first = ok.argmax(axis=0)
    out[todo[found]] = trial.reshape(scales.size, todo.size, -1)[first[found], np.flatnonzero(found)]
    return out


def _sub_objective(sub: PackedSamples, theta: np.ndarray, prior: _Prior, rows: np.ndarray) -> np.ndarray:
    """The posterior objective of the points ``rows`` (packed as ``sub``)."""
    n = sub.counts.astype(np.float64)
    sx = segment_sum(sub, sub.x)
    data = 0.5 * (n * theta[:, 2] - theta[:, 3] * sx) + 0.5 * _Sums(sub, theta, full=False).rrw
    return data + prior.energy(theta, rows)


def _em(packed: PackedSamples, base: np.ndarray | None, *, relative: bool, max_iter: int,
        tol: float, X: np.ndarray | None = None) -> dict[str, Any]:
    """Modes and hyperparameters together (generalised EM, one step per point per iteration, :func:`_step`)."""
    prob = _Problem(packed)
    theta = _start(packed, base)
    prior = _Prior(relative, base, X)
    prior.update(theta, np.zeros((packed.n_points, 4, 4)))
    # A weak first prior: four times the spread of the starting values, at least 1.
    prior.tau2 = np.maximum(prior.tau2 * 4.0, 1.0)
    converged = False
    it = 0
    last = np.zeros(4)
    omega = np.ones(4)
    for it in range(1, max_iter + 1):
        theta, A, moves = _step(packed, prob, prior, theta)
        moved = float(moves.max()) if moves.size else 0.0
        old = prior.tau2.copy()
        prior.update(theta, _inverse(A))
        # EM moves a variance slowly when the points carry little information
        # about it. Over-relaxation in log τ² (growing while successive steps
        # agree in sign, reset when they do not) keeps the fixed point and
        # cuts the iterations several-fold.
        step = np.log(prior.tau2) - np.log(old)
        omega = np.where(step * last > 0, np.minimum(omega * 1.5, 8.0), 1.0)
        last = step
        prior.tau2 = np.maximum(old * np.exp(omega * step), _TAU2_FLOOR)
        change = float(np.max(np.abs(np.sqrt(prior.tau2 / old) - 1.0)))
        if moved < tol and change < tol:
            converged = True
            break
    if not converged:
        # The prior was still moving, and the modes with it (each iteration takes one step under the
        # prior of the moment): settle them under the prior reached, so each value is a posterior mode.
        for _ in range(_SETTLE_STEPS):
            theta, _, moves = _step(packed, prob, prior, theta)
            if not moves.size or moves.max() < tol:
                break
    return {"theta": theta, "prior": prior, "iterations": it, "converged": converged, "problem": prob,
            "point_converged": moves < tol}


def _modes(packed: PackedSamples, prior: _Prior, base: np.ndarray | None, *, max_iter: int,
           tol: float) -> dict[str, Any]:
    """Every point's posterior mode under fixed hyperparameters.

    A point leaves the working set once its step is below ``tol``; the set is
    re-packed when it has shrunk enough, so slow points cost little.
    """
    prob = _Problem(packed)
    theta = _start(packed, base)
    P = packed.n_points
    wrows, work, wprob = np.arange(P), packed, prob
    converged = False
    point_converged = np.ones(P, dtype=bool)
    it = 0
    for it in range(1, max_iter + 1):
        new, _, moves = _step(work, wprob, prior, theta[wrows], None if wrows.size == P else wrows)
        theta[wrows] = new
        still = moves > tol
        if not still.any():
            converged = True
            break
        if it == max_iter:
            point_converged[wrows[still]] = False
        elif still.sum() < 0.6 * wrows.size:
            sel = np.flatnonzero(still)
            work, wrows = work.take(sel), wrows[sel]
            wprob = _Problem(work)
    return {"theta": theta, "prior": prior, "iterations": it, "converged": converged, "problem": prob,
            "point_converged": point_converged}


def _population(prior: _Prior) -> dict[str, Any]:
    out = {"prior_on_v": "signal-to-noise ratio v*exp(-log_var/2)" if prior.relative else "v",
           "mean": dict(zip(_NAMES, (float(v) for v in prior.pop))),
           "sd": dict(zip(_NAMES, (float(v) for v in np.sqrt(prior.tau2)))),
           "units": "v = psi at k_ref / delta_scale; log_var = log noise variance at k_ref / delta_scale^2"}
    if prior.base is not None:
        out["offset"] = dict(zip(_NAMES, (float(v) for v in prior.offset)))
    if prior.B is not None:
        out["covariate_coefficients"] = {name: [float(v) for v in prior.B[:, j]] for j, name in enumerate(_NAMES)}
    return out


def _log_evidence(res: dict[str, Any]) -> float:
    """Laplace approximation of the log marginal likelihood of all samples.

    Normalised units, without the constants every prior family shares:
    Σ_i −F_i(θ̂_i) − ½ Σ_p log τ_p² − ½ log det(𝓘_i + prior Hessian).
    """
    theta, prior, prob = res["theta"], res["prior"], res["problem"]
    sums = _Sums(prob.packed, theta)
    _, H_p = prior.grad_hess(theta)
    _, logdet = np.linalg.slogdet(prob.fisher(theta, sums) + H_p)
    return float(np.sum(-(prob.data_nll(theta, sums) + prior.energy(theta))
                        - 0.5 * np.sum(np.log(prior.tau2)) - 0.5 * logdet))


def _finish(res, packed, kr, scale, level, out, flag) -> None:
    """Parameters in SPEC units, posterior covariance, intervals, flags, NLL."""
    theta, prior, prob = res["theta"], res["prior"], res["problem"]
    i = packed.point_index
    v, a, l, b = theta.T
    sums = _Sums(packed, theta)
    log_kr = np.log(kr)
    c = scale * v * np.exp(a * log_kr)
    out["c"][i] = c
    out["alpha"][i] = a
    out["sigma"][i] = scale * np.exp(0.5 * (l + b * log_kr))
    out["beta"][i] = b
    out["nll"][i] = (prob.data_nll(theta, sums) / prob.n + 0.5 * LOG_2PI + np.log(scale))
    # Posterior covariance: observed information + prior precision where positive
    # definite, else the expected information (always PD with the prior).
    obs = observed_information(packed, v, a, np.exp(l), b)
    # observed_information is in (v, a, log var, b) with var = e^l: the same coordinates.
    _, H_prior = prior.grad_hess(theta)
    obs = obs + H_prior
    fisher = prob.fisher(theta, sums) + H_prior
    eig = np.linalg.eigvalsh(np.where(np.isfinite(obs), obs, 0.0))
    use_obs = np.isfinite(obs).all(axis=(1, 2)) & (eig[:, 0] > 0)
    H = np.where(use_obs[:, None, None], obs, fisher)
    cov = np.linalg.pinv(H, hermitian=True)
    s_vv, s_va, s_aa = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    j0 = scale * np.exp(a * log_kr)
    j1 = c * log_kr
    var_c = j0 * j0 * s_vv + 2.0 * j0 * j1 * s_va + j1 * j1 * s_aa
    out["var_c"][i] = var_c
    out["var_alpha"][i] = s_aa
    out["cov_c_alpha"][i] = j0 * s_va + j1 * s_aa
    z = stats.norm.ppf(0.5 + level / 2.0)
    sd_a = np.sqrt(np.maximum(s_aa, 0.0))
    out["alpha_low"][i] = np.clip(a - z * sd_a, 0.0, PARAM_MAX)
    out["alpha_high"][i] = np.clip(a + z * sd_a, 0.0, PARAM_MAX)
    zs = _sign_z(v, s_vv, s_va, s_aa, packed.x_min, packed.x_max)
    cl, ch, uncertain = _c_interval(c, var_c, zs, z)
    out["sign_z"][i], out["c_low"][i], out["c_high"][i] = zs, cl, ch
    flag["sign_uncertain"][i] = uncertain
    flag["alpha_at_bound"][i] = (a <= _BOUND_TOL) | (a >= PARAM_MAX - _BOUND_TOL)
    flag["beta_at_bound"][i] = (b <= _BOUND_TOL) | (b >= PARAM_MAX - _BOUND_TOL)
    flag["not_converged"][i] = ~np.asarray(res["point_converged"], dtype=bool)
