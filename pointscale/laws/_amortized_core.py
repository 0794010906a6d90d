"""Likelihood, parametrisation and sample packing shared by the amortized learners.

Internal units
--------------
A learner outputs four unbounded numbers per point, ``u = (u_m, u_a, u_s, u_b)``.
They are read in *normalised* units: deltas are divided by one global scale
``S`` (the root mean square of all training deltas, so that Δ ~ 1e-4 does not
meet float32 trees or Adam step sizes), and sizes are centred at a reference
``k0`` (the geometric mean of the sampled sizes), ``L = log(k / k0)``::

    mean(k)      = m * exp(-alpha * L)                 m     = u_m
    log var(k)   = 2 * log_tau - beta * L              log_tau = u_s
    alpha        = a_lo + (a_hi - a_lo) * sigmoid(u_a)
    beta         = b_lo + (b_hi - b_lo) * sigmoid(u_b)

so ``m`` is the expected delta at ``k0`` and ``tau`` its noise sd there. In the
units of SPEC §1 (Δ ~ N(c k^-α, σ² k^-β))::

    c     = S * m   * k0**alpha
    sigma = S * tau * k0**(beta / 2)

Centring at ``k0`` makes ``m`` and ``alpha`` (and ``tau`` and ``beta``) nearly
uncorrelated, which matters for learners with diagonal curvature (trees).
``m`` is signed, so the sign of c is learned directly: for fixed (α, β) the
likelihood is quadratic in ``m``, there is no two-sign search and no separate
sign classifier (the paper's MLP predicted log|c| plus a sign logit and took
the better sign per point).

Per-sample negative log-likelihood, with ``r = d - mean``, ``v = var``::

    nll = 0.5 log(2 pi) + 0.5 log v + r^2 / (2 v)

Its gradient with respect to ``u`` is exact. The curvature returned for
boosting is the *expected* (Fisher) information, which is positive, instead of
the observed second derivative, which is indefinite away from the optimum and
made XGBoost diverge::

    I_mm = exp(-2 alpha L) / v        I_aa = L^2 mean^2 / v * (dalpha/du_a)^2
    I_ss = 2                          I_bb = L^2 / 2       * (dbeta/du_b)^2

Failure modes: when ``m`` is ~0 the data carry no information about α (its
curvature vanishes), so α drifts to whatever the neighbours say, or stays at
the initial value; points whose deltas are identically zero push ``tau``
towards 0 without bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError

HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)
N_PARAMS = 4
_RAW_CLIP = 8.0
PARAM_NAMES = ("m", "alpha", "log_tau", "beta")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x, dtype=float)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def _logit(p: float) -> float:
    return float(np.log(p) - np.log1p(-p))


@dataclass(frozen=True)
class Link:
    """Maps raw outputs ``u`` to (m, alpha, log_tau, beta) and back."""

    alpha_range: tuple[float, float]
    beta_range: tuple[float, float]

    def params(self, u: np.ndarray) -> tuple[np.ndarray, ...]:
        """Return ``m, alpha, log_tau, beta, dalpha_du, dbeta_du`` for raw ``u`` (n, 4)."""
        a_lo, a_hi = self.alpha_range
        b_lo, b_hi = self.beta_range
        sa = _sigmoid(u[:, 1])
        sb = _sigmoid(u[:, 3])
        alpha = a_lo + (a_hi - a_lo) * sa
        beta = b_lo + (b_hi - b_lo) * sb
        return (
            u[:, 0],
            alpha,
            u[:, 2],
            beta,
            (a_hi - a_lo) * sa * (1.0 - sa),
            (b_hi - b_lo) * sb * (1.0 - sb),
        )

    def raw(self, m: float, alpha: float, log_tau: float, beta: float) -> np.ndarray:
        """Inverse link for one parameter vector (used for the initial value)."""
        a_lo, a_hi = self.alpha_range
        b_lo, b_hi = self.beta_range
        pa = np.clip((alpha - a_lo) / (a_hi - a_lo), 1e-4, 1 - 1e-4)
        pb = np.clip((beta - b_lo) / (b_hi - b_lo), 1e-4, 1 - 1e-4)
        return np.array([m, _logit(pa), log_tau, _logit(pb)], dtype=float)


@dataclass(frozen=True)
class Packed:
    """Samples sorted by point, in normalised units.

    ``point`` indexes rows of the point set the samples belong to; ``ptr`` is
    the CSR offset array (``ptr[i]:ptr[i+1]`` are the samples of point ``i``).
    """

    point: np.ndarray  # (m,) int64, sorted
    L: np.ndarray  # (m,) log(k / k0)
    d: np.ndarray  # (m,) delta / scale
    ptr: np.ndarray  # (n_points + 1,)

    @property
    def n_points(self) -> int:
        return self.ptr.size - 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.ptr)

    def subset(self, points: np.ndarray) -> "Packed":
        """Samples of the given points, renumbered 0..len(points)-1 in that order."""
        points = np.asarray(points, dtype=np.int64)
        idx = gather_index(self.ptr, points)
        counts = self.counts[points]
        ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        point = np.repeat(np.arange(points.size, dtype=np.int64), counts)
        return Packed(point=point, L=self.L[idx], d=self.d[idx], ptr=ptr)


def gather_index(ptr: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Indices of the samples of ``points`` (CSR gather), grouped in that order."""
    starts = ptr[points]
    counts = ptr[points + 1] - starts
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return offsets + np.arange(total, dtype=np.int64)


def pack(point: np.ndarray, k: np.ndarray, delta: np.ndarray, n_points: int,
         k0: float, scale: float) -> Packed:
    order = np.argsort(point, kind="stable")
    point = np.asarray(point, dtype=np.int64)[order]
    counts = np.bincount(point, minlength=n_points)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    L = np.log(np.asarray(k, dtype=float)[order] / k0)
    d = np.asarray(delta, dtype=float)[order] / scale
    return Packed(point=point, L=L, d=d, ptr=ptr)


def normalisation(k: np.ndarray, delta: np.ndarray) -> tuple[float, float]:
    """The reference size ``k0`` (geometric mean of k) and delta scale ``S`` (RMS)."""
    k0 = float(np.exp(np.mean(np.log(k))))
    scale = float(np.sqrt(np.mean(np.square(delta))))
    if not np.isfinite(scale) or scale <= 0.0:
        raise DataError(
            f"all {delta.size} training deltas are zero (RMS={scale}); "
            "the noise model needs some variation"
        )
    return k0, scale


def sample_terms(u_pt: np.ndarray, packed: Packed, link: Link, need_grad: bool = True,
                 need_hess: bool = False):
    """Per-sample NLL and, optionally, gradient and Fisher curvature wrt ``u``.

    ``u_pt`` is (n_points, 4) raw outputs for the points of ``packed``. Returns
    ``nll`` (m,), ``grad`` (m, 4) or None and ``hess`` (m, 4) or None.
    """
    m, alpha, log_tau, beta, da, db = link.params(u_pt)
    i = packed.point
    L = packed.L
    e = np.exp(-alpha[i] * L)
    mu = m[i] * e
    logv = 2.0 * log_tau[i] - beta[i] * L
    inv_v = np.exp(-logv)
    r = packed.d - mu
    z2 = r * r * inv_v
    nll = HALF_LOG_2PI + 0.5 * logv + 0.5 * z2
    if not need_grad:
        return nll, None, None
    grad = np.empty((L.size, N_PARAMS))
    grad[:, 0] = -r * inv_v * e
    grad[:, 1] = (r * inv_v * L * mu) * da[i]
    grad[:, 2] = 1.0 - z2
    grad[:, 3] = -0.5 * L * (1.0 - z2) * db[i]
    if not need_hess:
        return nll, grad, None
    hess = np.empty_like(grad)
    hess[:, 0] = e * e * inv_v
    hess[:, 1] = L * L * mu * mu * inv_v * da[i] ** 2
    hess[:, 2] = 2.0
    hess[:, 3] = 0.5 * L * L * db[i] ** 2
    return nll, grad, hess


def per_point(values: np.ndarray, packed: Packed) -> np.ndarray:
    """Sum per-sample rows (m,) or (m, p) into per-point rows (n_points,) or (n_points, p)."""
    n = packed.n_points
    if values.ndim == 1:
        return np.bincount(packed.point, weights=values, minlength=n)
    out = np.empty((n, values.shape[1]))
    for j in range(values.shape[1]):
        out[:, j] = np.bincount(packed.point, weights=values[:, j], minlength=n)
    return out


def mean_nll(u_pt: np.ndarray, packed: Packed, link: Link) -> float:
    """Mean per-sample NLL in normalised units."""
    nll, _, _ = sample_terms(u_pt, packed, link, need_grad=False)
    return float(np.mean(nll)) if nll.size else float("nan")


def global_init(packed: Packed, link: Link, max_iter: int = 200) -> np.ndarray:
    """One law for all points together (pooled MLE): the learners' starting value.

    Solved with Fisher scoring on the 4 raw parameters; cheap (a few passes over
    the samples) and makes the boosting/MLP start at a sensible place.
    """
    u = link.raw(0.0, 1.0, 0.0, 2.0)
    # Closed-form start for m and tau at alpha=1, beta=2.
    e = np.exp(-1.0 * packed.L)
    w = np.exp(2.0 * packed.L)  # 1 / var up to tau^2, beta = 2
    m0 = float(np.sum(packed.d * e * w) / np.sum(e * e * w))
    tau0 = float(np.sqrt(np.mean((packed.d - m0 * e) ** 2 * w)))
    u = link.raw(m0, 1.0, np.log(max(tau0, 1e-12)), 2.0)
    one = Packed(point=np.zeros_like(packed.point), L=packed.L, d=packed.d,
                 ptr=np.array([0, packed.L.size]))
    prev = np.inf
    for _ in range(max_iter):
        nll, g, h = sample_terms(u[None, :], one, link, need_hess=True)
        G = g.sum(0)
        H = h.sum(0) + 1e-9
        cur = float(nll.mean())
        step = -G / H
        # Backtracking keeps scoring monotone.
        t = 1.0
        while t > 1e-4:
            cand = u + t * step
            if mean_nll(cand[None, :], one, link) <= cur:
                break
            t *= 0.5
        # Clipped so a bound-hugging exponent does not saturate the sigmoid link.
        u = np.clip(u + t * step, -_RAW_CLIP, _RAW_CLIP)
        if abs(prev - cur) < 1e-10:
            break
        prev = cur
    return u
