"""Likelihood, parametrisation and sample packing shared by the amortized learners.

Internal units
--------------
Deltas are divided by one global scale ``S`` (the root mean square of all
training deltas, so that Δ ~ 1e-4 meets neither float32 trees nor Adam step
sizes at a bad scale) and sizes are centred at a reference ``k0`` (the
geometric mean of the sampled sizes), ``L = log(k / k0)``. A learner outputs
unbounded numbers ``u`` per point, read as::

    mean(k)     = s * exp(u_l) * exp(-alpha * L)      s = sign of c
    log var(k)  = 2 * u_t - beta * L
    alpha       = a_lo + (a_hi - a_lo) * sigmoid(u_a)
    beta        = b_lo + (b_hi - b_lo) * sigmoid(u_b)

so ``exp(u_l)`` is |ψ| at ``k0`` and ``exp(u_t)`` the noise sd there. In the
units of SPEC §1 (Δ ~ N(c k^-α, σ² k^-β))::

    c     = s * S * exp(u_l) * k0**alpha
    sigma =     S * exp(u_t) * k0**(beta / 2)

Centring at ``k0`` makes the level and the exponent (|c|, α and σ, β) nearly
uncorrelated, which matters for learners with diagonal curvature (trees).

The sign of c
-------------
Two parametrisations (``sign=``):

``"mixture"`` (default)
    A fifth output ``u_p`` gives ``p = P(c > 0 | x, y) = sigmoid(u_p)`` and the
    sign is a latent variable per point: the point's likelihood is
    ``p * L(+|samples) + (1 - p) * L(-|samples)``. Training maximises this
    marginal likelihood: the magnitude/exponent outputs get each sign's
    gradient weighted by its posterior responsibility, the sign output the
    logistic gradient ``p - w_plus``. It is the soft (EM) version of the paper's
    "better of the two signs plus a sign classifier", and it lets the
    magnitude be one smooth function of x shared by points of both signs
    (a mislabelled point is as influential as its correctly labelled twin,
    with the opposite sign). Reported c uses the more probable sign.
``"signed"``
    ``m = u_l`` is the signed level itself (no fifth output). For fixed
    exponents the likelihood is quadratic in ``m``; simpler, but a sign flip
    must be learned as a smooth function passing through zero.

Per-sample negative log-likelihood, with ``r = d - mean``, ``v = var``::

    nll = 0.5 log(2 pi) + 0.5 log v + r^2 / (2 v)

Gradients are exact. The curvature returned for boosting is the *expected*
(Fisher) information (positive), not the observed second derivative, which
is indefinite away from the optimum and made XGBoost diverge::

    I_l = mean^2 / v (mixture) or exp(-2 alpha L) / v (signed)
    I_a = L^2 mean^2 / v * (dalpha/du_a)^2
    I_t = 2,   I_b = L^2 / 2 * (dbeta/du_b)^2,   I_p = p (1 - p)

Failure modes: when |c| ~ 0 the data say nothing about α (its curvature
vanishes) nor about the sign, which then follow the neighbours; points whose
deltas are identically zero push the noise level towards 0 without bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError

HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)
_RAW_CLIP = 8.0
SIGN_MODELS = ("mixture", "signed")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _logit(p: float) -> float:
    return float(np.log(p) - np.log1p(-p))


@dataclass(frozen=True)
class Link:
    """Maps raw outputs ``u`` to the law's parameters (see the module docstring).

    Column order of ``u``: ``(level, alpha, log_tau, beta[, sign_logit])``.
    """

    alpha_range: tuple[float, float]
    beta_range: tuple[float, float]
    sign: str = "mixture"

    @property
    def n_outputs(self) -> int:
        return 5 if self.sign == "mixture" else 4

    def exponents(self, u: np.ndarray):
        a_lo, a_hi = self.alpha_range
        b_lo, b_hi = self.beta_range
        sa = _sigmoid(u[:, 1])
        sb = _sigmoid(u[:, 3])
        return (a_lo + (a_hi - a_lo) * sa, b_lo + (b_hi - b_lo) * sb,
                (a_hi - a_lo) * sa * (1.0 - sa), (b_hi - b_lo) * sb * (1.0 - sb))

    def laws(self, u: np.ndarray, k0: float, scale: float) -> dict[str, np.ndarray]:
        """c, alpha, sigma, beta (SPEC units) and P(c < 0) for raw outputs ``u``."""
        alpha, beta, _, _ = self.exponents(u)
        if self.sign == "mixture":
            p_pos = _sigmoid(u[:, 4])
            level = np.where(p_pos >= 0.5, 1.0, -1.0) * np.exp(u[:, 0])
            p_neg = 1.0 - p_pos
        else:
            level = u[:, 0]
            p_neg = (level < 0).astype(float)
        return {
            "c": scale * level * k0**alpha,
            "alpha": alpha,
            "sigma": scale * np.exp(u[:, 2]) * k0 ** (beta / 2.0),
            "beta": beta,
            "prob_negative_c": p_neg,
        }

    def raw(self, level: float, alpha: float, log_tau: float, beta: float,
            p_pos: float = 0.5) -> np.ndarray:
        """Inverse link for one parameter vector (the starting value)."""
        a_lo, a_hi = self.alpha_range
        b_lo, b_hi = self.beta_range
        pa = np.clip((alpha - a_lo) / (a_hi - a_lo), 1e-3, 1 - 1e-3)
        pb = np.clip((beta - b_lo) / (b_hi - b_lo), 1e-3, 1 - 1e-3)
        if self.sign == "mixture":
            return np.array([np.log(max(abs(level), 1e-12)), _logit(pa), log_tau, _logit(pb),
                             _logit(float(np.clip(p_pos, 1e-3, 1 - 1e-3)))])
        return np.array([level, _logit(pa), log_tau, _logit(pb)])


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
    def n_samples(self) -> int:
        return self.L.size

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


def per_point(values: np.ndarray, packed: Packed) -> np.ndarray:
    """Sum per-sample rows (m,) or (m, p) into per-point rows."""
    n = packed.n_points
    if values.ndim == 1:
        return np.bincount(packed.point, weights=values, minlength=n)
    out = np.empty((n, values.shape[1]))
    for j in range(values.shape[1]):
        out[:, j] = np.bincount(packed.point, weights=values[:, j], minlength=n)
    return out


def point_terms(u: np.ndarray, packed: Packed, link: Link, need_grad: bool = True,
                need_hess: bool = False):
    """Per-point negative log-likelihood (summed over the point's samples).

    ``u`` is (n_points, n_outputs) raw outputs for the points of ``packed``.
    Returns ``(loss (n,), G (n, n_outputs) or None, H (n, n_outputs) or None)``
    with ``G`` the gradient of ``loss`` wrt ``u`` and ``H`` the Fisher diagonal.
    """
    alpha, beta, da, db = link.exponents(u)
    i, L, d = packed.point, packed.L, packed.d
    e = np.exp(-alpha[i] * L)
    logv = 2.0 * u[i, 2] - beta[i] * L
    inv_v = np.exp(-logv)
    const = HALF_LOG_2PI + 0.5 * logv
    mixture = link.sign == "mixture"
    if mixture:
        mu = np.exp(u[i, 0]) * e  # |mean|; the sign is latent
        z_plus = (d - mu) ** 2 * inv_v
        z_minus = (d + mu) ** 2 * inv_v
        n_plus = per_point(const + 0.5 * z_plus, packed)
        n_minus = per_point(const + 0.5 * z_minus, packed)
        log_p = -np.logaddexp(0.0, -u[:, 4])
        log_q = -np.logaddexp(0.0, u[:, 4])
        lw_plus = log_p - n_plus
        lw_minus = log_q - n_minus
        loss = -np.logaddexp(lw_plus, lw_minus)
        if not need_grad:
            return loss, None, None
        w_plus = np.exp(lw_plus + loss)
        wp = w_plus[i]
        # Responsibility-weighted per-sample gradients of the two signs.
        g_level = -(d * (2 * wp - 1.0) - mu) * inv_v * mu
        z_w = wp * z_plus + (1.0 - wp) * z_minus
        g = np.empty((L.size, 4))
        g[:, 0] = g_level
        g[:, 1] = -g_level * L * da[i]
        g[:, 2] = 1.0 - z_w
        g[:, 3] = -0.5 * L * (1.0 - z_w) * db[i]
        G = np.empty((packed.n_points, 5))
        G[:, :4] = per_point(g, packed)
        G[:, 4] = np.exp(log_p) - w_plus
    else:
        mu = u[i, 0] * e
        z = (d - mu) ** 2 * inv_v
        loss = per_point(const + 0.5 * z, packed)
        if not need_grad:
            return loss, None, None
        r = d - mu
        g = np.empty((L.size, 4))
        g[:, 0] = -r * inv_v * e
        g[:, 1] = r * inv_v * L * mu * da[i]
        g[:, 2] = 1.0 - z
        g[:, 3] = -0.5 * L * (1.0 - z) * db[i]
        G = per_point(g, packed)
    if not need_hess:
        return loss, G, None
    h = np.empty((L.size, 4))
    h[:, 0] = (mu * mu if mixture else e * e) * inv_v
    h[:, 1] = L * L * mu * mu * inv_v * da[i] ** 2
    h[:, 2] = 2.0
    h[:, 3] = 0.5 * L * L * db[i] ** 2
    H = np.empty_like(G)
    H[:, :4] = per_point(h, packed)
    if mixture:
        p = np.exp(log_p)
        H[:, 4] = p * (1.0 - p)
    return loss, G, H


def alpha_prior_terms(u: np.ndarray, link: Link, weight: float, center: float = 1.0):
    """A weak per-point penalty ``weight * (alpha - center)^2``: its value (n,),
    gradient and curvature wrt ``u`` (n, n_outputs).

    Training only (the held-out metric is the plain likelihood). Like the
    paper's tiny (α − 1)² prior, it keeps α of points whose samples barely
    determine it (few samples at one end of the k range, |c| ~ 0) from running
    to the bound with a compensating huge c.
    """
    alpha, _, da, _ = link.exponents(u)
    diff = alpha - center
    G = np.zeros_like(u)
    H = np.zeros_like(u)
    G[:, 1] = 2.0 * weight * diff * da
    H[:, 1] = 2.0 * weight * da * da
    return weight * diff * diff, G, H


def mean_nll(u: np.ndarray, packed: Packed, link: Link) -> float:
    """Mean NLL per sample (normalised units) of the points of ``packed``."""
    if packed.n_samples == 0:
        return float("nan")
    loss, _, _ = point_terms(u, packed, link, need_grad=False)
    return float(loss.sum() / packed.n_samples)


def global_init(packed: Packed, link: Link, max_iter: int = 100) -> np.ndarray:
    """One law shared by all points (pooled MLE): the learners' starting value.

    Fisher scoring with backtracking on the shared raw parameters; a few
    passes over the samples.
    """
    # Closed-form level and noise at alpha = 1, beta = 2 as the start.
    e = np.exp(-packed.L)
    w = np.exp(2.0 * packed.L)
    m0 = float(np.sum(packed.d * e * w) / np.sum(e * e * w))
    tau0 = float(np.sqrt(np.mean((packed.d - m0 * e) ** 2 * w)))
    level0 = m0 if link.sign == "signed" else max(abs(m0), 0.1 * tau0)
    u = link.raw(level0, 1.0, np.log(max(tau0, 1e-12)), 2.0, 0.5 + 0.4 * np.sign(m0))
    n = packed.n_points

    def total(v):
        return float(point_terms(np.broadcast_to(v, (n, v.size)), packed, link, False)[0].sum())

    cur = total(u)
    for _ in range(max_iter):
        _, G, H = point_terms(np.broadcast_to(u, (n, u.size)).copy(), packed, link, True, True)
        step = -G.sum(0) / (H.sum(0) + 1e-9)
        t = 1.0
        while t > 1e-4:
            # Clipped so a bound-hugging exponent does not saturate its link.
            cand = np.clip(u + t * step, -_RAW_CLIP, _RAW_CLIP)
            new = total(cand)
            if new <= cur:
                break
            t *= 0.5
        else:
            break
        done = cur - new < 1e-9 * max(1.0, abs(cur))
        u, cur = cand, new
        if done:
            break
    return u
