r"""The Gaussian likelihood of the scaling-law noise model, vectorised over points.

Model
-----
For one point z and one sample at dataset size k (SPEC §1):

.. math::

    \Delta \sim \mathcal N\!\left(c\,k^{-\alpha},\; \sigma^2 k^{-\beta}\right),
    \qquad \alpha, \beta \in [0, e^2],\; c \in \mathbb R,\; \sigma > 0.

With n samples :math:`(k_i, \Delta_i)` the mean negative log-likelihood per
sample (the number every estimator reports as ``nll``) is

.. math::

    \ell = \tfrac12\log 2\pi + \tfrac12\log\sigma^2 - \tfrac{\beta}{2}\,\overline{\log k}
           + \frac{1}{2n\sigma^2}\sum_i (\Delta_i - c k_i^{-\alpha})^2 k_i^{\beta}.

Profile likelihood
------------------
For fixed (α, β) the optimal c and σ² are closed-form (weighted least squares
with weights :math:`k^\beta`):

.. math::

    c^* = \frac{\overline{\Delta k^{\beta-\alpha}}}{\overline{k^{\beta-2\alpha}}},\qquad
    \sigma^{*2} = \overline{(\Delta - c^* k^{-\alpha})^2 k^{\beta}},

so only (α, β) are searched. Two reparametrisations make this well conditioned
and cheap:

* **Centred sizes.** With :math:`x = \log k - \overline{\log k}` (per point) and
  :math:`k_0 = e^{\overline{\log k}}` the geometric mean size, the model reads
  :math:`\Delta \sim \mathcal N(c' e^{-\alpha x}, \sigma'^2 e^{-\beta x})` with
  :math:`c = c' k_0^{\alpha}` and :math:`\sigma^2 = \sigma'^2 k_0^{\beta}`; the
  likelihood is unchanged and the :math:`\overline{\log k}` term vanishes.
  Then c' is ψ at the typical sampled size, nearly uncorrelated with α, and
  :math:`e^{\beta x}` stays O(1) instead of spanning 20 decades.
* **Scaled deltas.** :math:`y = \Delta / s` with s the root mean square of
  the point's Δ. Deltas from 1e-7 to 1 then look alike to the optimiser;
  :math:`\ell` shifts by exactly :math:`\log s`.

With the per-point means :math:`A = \overline{y^2 e^{\beta x}}`,
:math:`B = \overline{y\, e^{(\beta-\alpha)x}}`, :math:`C = \overline{e^{(\beta-2\alpha)x}}`,

.. math::

    c'^* = B/C,\qquad S(\alpha,\beta) = \sigma'^{*2} = A - B^2/C,\qquad
    \ell = \tfrac12\log 2\pi + \tfrac12 + \log s + \tfrac12 \log S(\alpha, \beta).

The derivatives of A, B, C in (α, β) are the same means with extra factors x
and x² (e.g. :math:`\partial_\beta A = \overline{y^2 x e^{\beta x}}`,
:math:`\partial_\alpha C = -2\,\overline{x e^{(\beta-2\alpha)x}}`), so one pass
over the samples with nine segment sums gives the objective, its gradient and
its exact Hessian for every point at once (:func:`profile_objective`). A
coarse lattice in (α, β) costs little more: :math:`e^{jhx}` for integer j are
successive products of :math:`e^{hx}` (:func:`profile_grid`).

Uncertainty
-----------
Intervals come from the **observed Fisher information of the full
four-parameter likelihood** in (c', α, log σ'², β) at the MLE, inverted per
point, with the delta method. Reasons: the profile Hessian alone gives no
variance for c; a parametric bootstrap multiplies the cost of the fit by the
number of replicates; profile-likelihood intervals need a root search per
point and parameter. The information is exact (no finite differences) and
costs one more pass over the samples. Where it is not positive definite (a
saddle or a bound) the expected information is used instead (it is block
diagonal: the mean parameters (c', α) and the variance parameters
(log σ'², β) are asymptotically independent) and the point is flagged.

* α: Wald interval on log α (α > 0, and the sampling distribution of α̂ is
  right-skewed when few sizes are sampled), clipped to the parameter box.
* c: c = c'·k_0^α is ψ at the sampled sizes extrapolated to k = 1, so its
  relative error is that of α times log k_0 ≈ 6: a Wald interval on c itself
  is wide and symmetric and nearly always spans 0. We first test the *sign*:
  ψ_k has the sign of c at every k, and the z statistic of ψ_k is largest at
  the size k* where (ψ_k*, α) are uncorrelated; the sign is established when
  |z(k*)| ≥ z_{0.975}, with k* restricted to the sampled range. If so, the
  interval is sign(c)·exp(log|c| ± z·se(log|c|)); if not, it is the Wald
  interval c ± z·se(c) widened to contain 0. ``sign_uncertain`` is defined
  by the interval itself: it contains 0.
* Coverage is asymptotic. On the benchmark's synthetic sets the 95 % α
  intervals cover the truth for about 82 % of points with 10 samples, 92 %
  with 30 and 94–95 % with 100 or more; with few samples treat them as
  optimistic.
* ψ_k: Wald interval on ψ_k with the delta method
  (:meth:`FittedScalingLaws.predict_interval`); symmetric so that it can cross 0.

Failure modes (and what the estimators do)
------------------------------------------
* Fewer than 3 samples: nothing is identified; NaN and ``too_few_samples``.
* One distinct k: α and β are not identified (x ≡ 0 makes ℓ flat in both);
  NaN and ``alpha_unidentifiable``.
* All Δ = 0: s = 0; c = 0 and σ = 0 exactly, α, β undefined (NaN), nll
  undefined (the likelihood is unbounded); ``zero_variance``. An exact fit
  (S ≈ 0 up to rounding, e.g. constant Δ ≠ 0, which α = 0 fits exactly) also
  makes the likelihood unbounded: S is floored at 1e-12·A so the optimiser
  stays finite, and the point is flagged ``zero_variance``.
* c' ≈ 0 (a worthless point): α is not identified (the information about α
  scales with c'²); α's interval becomes the whole box and the point is
  usually ``poor_fit``.
* α or β on the boundary 0 or e² (the paper's bounds): the optimum is a
  corner solution; ``alpha_at_bound``; Wald intervals are unreliable there.
* The profile can have several local minima when samples are few; a lattice
  search over (α, β) before Newton avoids most of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PARAM_MAX",
    "LOG_2PI",
    "PackedSamples",
    "pack_samples",
    "segment_sum",
    "profile_objective",
    "profile_grid",
    "closed_form",
    "observed_information",
    "expected_information",
    "gaussian_nll",
    "mean_nll_by_point",
]

#: Upper bound of α and β (the paper clamps log α, log β at 2).
PARAM_MAX = math.exp(2.0)
#: How close to a bound (0 or e²) an exponent counts as at it, where a fit's exponents are summarised
#: (the automatic choice's collapse check, the run summary): shrinkage's collapsed populations sit at
#: 7.383-7.389 on the estimator benchmark's non-linear models.
ALPHA_BOUND_TOL = 0.05
LOG_2PI = math.log(2.0 * math.pi)
#: Relative floor of S = σ'² against A = mean(y² e^{βx}); below it the fit is
#: exact up to rounding (cancellation in A − B²/C) and the likelihood unbounded.
S_FLOOR = 1e-12


@dataclass(frozen=True)
class PackedSamples:
    """Samples of several points, sorted by point, in the normalised variables.

    Attributes
    ----------
    point_index : ndarray of shape (P,)
        For each packed point, its index in the caller's list of points.
    starts, counts : ndarray of shape (P,)
        Offset and number of samples of each packed point (counts > 0).
    seg : ndarray of shape (N,)
        Packed point of each sample.
    x : ndarray of shape (N,)
        log k minus the point's mean log k.
    y : ndarray of shape (N,)
        Δ divided by the point's root-mean-square Δ.
    scale : ndarray of shape (P,)
        The root-mean-square Δ of each point (s).
    log_k0 : ndarray of shape (P,)
        The point's mean log k.
    x_min, x_max : ndarray of shape (P,)
        Range of x of each point.
    """

    point_index: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    seg: np.ndarray
    x: np.ndarray
    y: np.ndarray
    scale: np.ndarray
    log_k0: np.ndarray
    x_min: np.ndarray
    x_max: np.ndarray

    @property
    def n_points(self) -> int:
        return int(self.counts.shape[0])

    def take(self, sel: np.ndarray) -> "PackedSamples":
        """The packed points ``sel`` (indices into this packing), keeping their order."""
        sel = np.asarray(sel, dtype=np.intp)
        counts = self.counts[sel]
        starts = np.zeros_like(counts)
        np.cumsum(counts[:-1], out=starts[1:])
        # Sample indices of the selected points, segment by segment.
        offsets = np.repeat(self.starts[sel] - starts, counts)
        rows = np.arange(int(counts.sum()), dtype=np.intp) + offsets
        return PackedSamples(
            point_index=self.point_index[sel],
            starts=starts,
            counts=counts,
            seg=np.repeat(np.arange(sel.size, dtype=np.intp), counts),
            x=self.x[rows],
            y=self.y[rows],
            scale=self.scale[sel],
            log_k0=self.log_k0[sel],
            x_min=self.x_min[sel],
            x_max=self.x_max[sel],
        )


def segment_sum(packed: PackedSamples, values: np.ndarray) -> np.ndarray:
    """Per-point sums of a per-sample array (segments are contiguous and non-empty).

    ``values`` may hold several per-sample rows (shape ``(..., n_samples)``): each row is summed
    per point, in one call, with the same sums in the same order as one call per row.
    """
    return np.add.reduceat(values, packed.starts, axis=-1)


def pack_samples(codes: np.ndarray, k: np.ndarray, delta: np.ndarray, keep: np.ndarray) -> PackedSamples:
    """Sort samples by point and move them to the normalised variables.

    Parameters
    ----------
    codes : ndarray of int, shape (N,)
        Point index of each sample (0 .. n_points − 1).
    k, delta : ndarray of shape (N,)
        Sizes (> 0) and marginal contributions.
    keep : ndarray of int, shape (P,)
        Point indices to pack; each must have at least one sample and a
        non-zero root-mean-square Δ.
    """
    keep = np.asarray(keep, dtype=np.intp)
    n_codes = int(codes.max()) + 1 if codes.size else 0
    position = np.full(max(n_codes, int(keep.max()) + 1 if keep.size else 0), -1, dtype=np.intp)
    position[keep] = np.arange(keep.size)
    pos = position[codes] if codes.size else codes
    rows = np.flatnonzero(pos >= 0)
    order = rows[np.argsort(pos[rows], kind="stable")]
    seg = pos[order]
    counts = np.bincount(seg, minlength=keep.size).astype(np.intp)
    if keep.size and counts.min() == 0:
        raise ValueError("pack_samples: a kept point has no samples")
    starts = np.zeros_like(counts)
    np.cumsum(counts[:-1], out=starts[1:])
    logk = np.log(np.asarray(k, dtype=np.float64)[order])
    d = np.asarray(delta, dtype=np.float64)[order]
    log_k0 = np.add.reduceat(logk, starts) / counts if keep.size else np.zeros(0)
    x = logk - log_k0[seg]
    scale = np.sqrt(np.add.reduceat(d * d, starts) / counts) if keep.size else np.zeros(0)
    y = d / scale[seg]
    x_min = np.minimum.reduceat(x, starts) if keep.size else np.zeros(0)
    x_max = np.maximum.reduceat(x, starts) if keep.size else np.zeros(0)
    return PackedSamples(keep, starts, counts, seg, x, y, scale, log_k0, x_min, x_max)


@dataclass(frozen=True)
class ProfileValue:
    """The profile objective at (α, β) for every packed point.

    ``f`` is ½·log S (the part of ℓ that depends on (α, β)); ``grad`` has shape
    (P, 2) and ``hess`` (P, 2, 2) in the order (α, β); ``c_norm`` is c'* and
    ``s2_norm`` is S = σ'*²; ``floored`` marks points where S hit its floor.
    """

    f: np.ndarray
    grad: np.ndarray | None
    hess: np.ndarray | None
    c_norm: np.ndarray
    s2_norm: np.ndarray
    floored: np.ndarray


def profile_objective(
    packed: PackedSamples, alpha: np.ndarray, beta: np.ndarray, derivatives: bool = True
) -> ProfileValue:
    """½·log S(α, β) with its exact gradient and Hessian, for every packed point.

    Parameters
    ----------
    packed : PackedSamples
    alpha, beta : ndarray of shape (P,)
    derivatives : bool, default=True
        Also return gradient and Hessian (costs six more segment sums).
    """
    seg, x, y = packed.seg, packed.x, packed.y
    n = packed.counts.astype(np.float64)
    u = np.exp(beta[seg] * x)
    v = np.exp(-alpha[seg] * x)
    t_a = y * y * u
    t_b = y * u * v
    t_c = u * v * v
    A0 = segment_sum(packed, t_a) / n
    B0 = segment_sum(packed, t_b) / n
    C0 = segment_sum(packed, t_c) / n
    Q = B0 * B0 / C0
    floor = S_FLOOR * A0
    S_raw = A0 - Q
    floored = S_raw <= floor
    S = np.where(floored, floor, S_raw)
    f = 0.5 * np.log(S)
    c_norm = B0 / C0
    if not derivatives:
        return ProfileValue(f, None, None, c_norm, S, floored)

    t_a *= x
    t_b *= x
    t_c *= x
    A1 = segment_sum(packed, t_a) / n
    B1 = segment_sum(packed, t_b) / n
    C1 = segment_sum(packed, t_c) / n
    t_a *= x
    t_b *= x
    t_c *= x
    A2 = segment_sum(packed, t_a) / n
    B2 = segment_sum(packed, t_b) / n
    C2 = segment_sum(packed, t_c) / n

    P = alpha.shape[0]
    # First and second derivatives of A, B, C in (alpha, beta).
    dA = np.stack([np.zeros(P), A1], axis=1)
    dB = np.stack([-B1, B1], axis=1)
    dC = np.stack([-2.0 * C1, C1], axis=1)
    d2A = np.zeros((P, 2, 2))
    d2A[:, 1, 1] = A2
    d2B = B2[:, None, None] * np.array([[1.0, -1.0], [-1.0, 1.0]])
    d2C = C2[:, None, None] * np.array([[4.0, -2.0], [-2.0, 1.0]])

    B_, C_ = B0[:, None], C0[:, None]
    dQ = 2.0 * B_ * dB / C_ - B_ * B_ * dC / (C_ * C_)
    outer = lambda a, b: a[:, :, None] * b[:, None, :]  # noqa: E731
    B3, C3 = B0[:, None, None], C0[:, None, None]
    d2Q = (
        2.0 * outer(dB, dB) / C3
        + 2.0 * B3 * d2B / C3
        - 2.0 * B3 * (outer(dB, dC) + outer(dC, dB)) / (C3 * C3)
        - B3 * B3 * d2C / (C3 * C3)
        + 2.0 * B3 * B3 * outer(dC, dC) / (C3 * C3 * C3)
    )
    dS = dA - dQ
    d2S = d2A - d2Q
    S_ = S[:, None]
    grad = 0.5 * dS / S_
    hess = 0.5 * (d2S / S[:, None, None] - outer(dS, dS) / (S[:, None, None] ** 2))
    # At the floor the objective is flat by construction.
    grad[floored] = 0.0
    hess[floored] = 0.0
    return ProfileValue(f, grad, hess, c_norm, S, floored)


def profile_grid(packed: PackedSamples, h: float, n_alpha: int, n_beta: int) -> np.ndarray:
    """½·log S on the lattice α = h·i (i < n_alpha), β = h·j (j < n_beta).

    Uses :math:`e^{(jh)x} = (e^{hx})^j`: every exponent needed (β, β − α and
    β − 2α all lie on the lattice) is one multiplication away from the
    previous one, so the grid costs about three segment sums per lattice
    exponent instead of three exponentials per grid cell.

    Returns
    -------
    ndarray of shape (P, n_alpha, n_beta)
    """
    x, y = packed.x, packed.y
    n = packed.counts.astype(np.float64)
    lo, hi = -2 * (n_alpha - 1), n_beta - 1
    n_pow = hi - lo + 1
    A = np.empty((packed.n_points, n_pow))
    B = np.empty((packed.n_points, n_pow))
    C = np.empty((packed.n_points, n_pow))
    y2 = y * y
    step_up = np.exp(h * x)
    step_down = 1.0 / step_up

    def fill(j: int, power: np.ndarray) -> None:
        col = j - lo
        C[:, col] = segment_sum(packed, power) / n
        if j >= -(n_alpha - 1):
            B[:, col] = segment_sum(packed, y * power) / n
        if j >= 0:
            A[:, col] = segment_sum(packed, y2 * power) / n

    power = np.ones_like(x)
    fill(0, power)
    for j in range(1, hi + 1):
        power = power * step_up
        fill(j, power)
    power = np.ones_like(x)
    for j in range(-1, lo - 1, -1):
        power = power * step_down
        fill(j, power)

    ia = np.arange(n_alpha)[:, None]
    ib = np.arange(n_beta)[None, :]
    a_idx = (ib - lo)
    b_idx = (ib - ia - lo)
    c_idx = (ib - 2 * ia - lo)
    A_g = A[:, np.broadcast_to(a_idx, (n_alpha, n_beta))]
    B_g = B[:, b_idx]
    C_g = C[:, c_idx]
    S = A_g - B_g * B_g / C_g
    S = np.maximum(S, S_FLOOR * A_g)
    return 0.5 * np.log(S)


def closed_form(packed: PackedSamples, alpha: np.ndarray, beta: np.ndarray):
    """Parameters in original units and the exact mean NLL at (α, β).

    S is recomputed directly as mean((y − c'e^{−αx})² e^{βx}) (no cancellation).

    Returns
    -------
    c, sigma, nll, c_norm, s2_norm : ndarray of shape (P,)
    """
    seg, x, y = packed.seg, packed.x, packed.y
    n = packed.counts.astype(np.float64)
    u = np.exp(beta[seg] * x)
    v = np.exp(-alpha[seg] * x)
    c_norm = segment_sum(packed, y * u * v) / segment_sum(packed, u * v * v)
    r = y - c_norm[seg] * v
    s2 = segment_sum(packed, r * r * u) / n
    with np.errstate(divide="ignore"):
        nll = 0.5 * LOG_2PI + 0.5 + np.log(packed.scale) + 0.5 * np.log(s2)
    c = packed.scale * c_norm * np.exp(alpha * packed.log_k0)
    sigma = packed.scale * np.sqrt(s2) * np.exp(0.5 * beta * packed.log_k0)
    return c, sigma, nll, c_norm, s2


def observed_information(
    packed: PackedSamples, c_norm: np.ndarray, alpha: np.ndarray, s2_norm: np.ndarray, beta: np.ndarray
) -> np.ndarray:
    """Observed information (Hessian of the total NLL) in (c', α, log σ'², β).

    With m = e^{−αx}, w = e^{βx}/σ'², r = y − c'm (sums over a point's samples):

    ==========  =====================================
    (c', c')    Σ w m²
    (c', α)     Σ w x m (r − c'm)
    (c', ls)    Σ r w m
    (c', β)     −Σ r w x m
    (α, α)      c' Σ w x² m (c'm − r)
    (α, ls)     −c' Σ r w x m
    (α, β)      c' Σ r w x² m
    (ls, ls)    ½ Σ r² w
    (ls, β)     −½ Σ r² w x
    (β, β)      ½ Σ r² w x²
    ==========  =====================================

    Returns
    -------
    ndarray of shape (P, 4, 4)
    """
    seg, x, y = packed.seg, packed.x, packed.y
    m = np.exp(-alpha[seg] * x)
    w = np.exp(beta[seg] * x) / s2_norm[seg]
    cs = c_norm[seg]
    r = y - cs * m
    wm = w * m
    s = lambda v: segment_sum(packed, v)  # noqa: E731
    wmm = s(wm * m)
    wxmm = s(wm * m * x)
    wxxmm = s(wm * m * x * x)
    rwm = s(r * wm)
    rwxm = s(r * wm * x)
    rwxxm = s(r * wm * x * x)
    rrw = s(r * r * w)
    rrwx = s(r * r * w * x)
    rrwxx = s(r * r * w * x * x)
    c = c_norm
    info = np.empty((packed.n_points, 4, 4))
    info[:, 0, 0] = wmm
    info[:, 0, 1] = rwxm - c * wxmm
    info[:, 0, 2] = rwm
    info[:, 0, 3] = -rwxm
    info[:, 1, 1] = c * (c * wxxmm - rwxxm)
    info[:, 1, 2] = -c * rwxm
    info[:, 1, 3] = c * rwxxm
    info[:, 2, 2] = 0.5 * rrw
    info[:, 2, 3] = -0.5 * rrwx
    info[:, 3, 3] = 0.5 * rrwxx
    iu = np.triu_indices(4, 1)
    info[:, iu[1], iu[0]] = info[:, iu[0], iu[1]]
    return info


def expected_information(
    packed: PackedSamples, c_norm: np.ndarray, alpha: np.ndarray, s2_norm: np.ndarray, beta: np.ndarray
) -> np.ndarray:
    """Expected (Fisher) information in (c', α, log σ'², β); block diagonal.

    Returns
    -------
    ndarray of shape (P, 4, 4)
    """
    seg, x = packed.seg, packed.x
    m = np.exp(-alpha[seg] * x)
    w = np.exp(beta[seg] * x) / s2_norm[seg]
    wmm = w * m * m
    s = lambda v: segment_sum(packed, v)  # noqa: E731
    i_cc = s(wmm)
    i_ca = -c_norm * s(wmm * x)
    i_aa = c_norm**2 * s(wmm * x * x)
    n = packed.counts.astype(np.float64)
    sx = s(x)
    sxx = s(x * x)
    info = np.zeros((packed.n_points, 4, 4))
    info[:, 0, 0] = i_cc
    info[:, 0, 1] = info[:, 1, 0] = i_ca
    info[:, 1, 1] = i_aa
    info[:, 2, 2] = 0.5 * n
    info[:, 2, 3] = info[:, 3, 2] = -0.5 * sx
    info[:, 3, 3] = 0.5 * sxx
    return info


def gaussian_nll(delta, k, c, alpha, sigma, beta) -> float:
    """Mean NLL per sample of one point's samples under the noise model (float64).

    The reference implementation used by tests and benchmarks to compare
    estimators on equal terms: it takes parameters in original units and
    computes every term directly.
    """
    delta = np.asarray(delta, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    mean = c * k ** (-alpha)
    var = sigma**2 * k ** (-beta)
    return float(np.mean(0.5 * LOG_2PI + 0.5 * np.log(var) + 0.5 * (delta - mean) ** 2 / var))


def mean_nll_by_point(codes, k, delta, c, alpha, sigma, beta, n_points: int | None = None) -> np.ndarray:
    """:func:`gaussian_nll` for many points at once.

    Parameters
    ----------
    codes : ndarray of int, shape (N,)
        Point index of each sample.
    k, delta : ndarray of shape (N,)
    c, alpha, sigma, beta : ndarray of shape (P,)
        Parameters per point, in original units.

    Returns
    -------
    ndarray of shape (P,)
        NaN for points without samples.
    """
    codes = np.asarray(codes, dtype=np.intp)
    n_points = int(len(c) if n_points is None else n_points)
    k = np.asarray(k, dtype=np.float64)
    delta = np.asarray(delta, dtype=np.float64)
    c, alpha, sigma, beta = (np.asarray(a, dtype=np.float64)[codes] for a in (c, alpha, sigma, beta))
    logk = np.log(k)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mean = c * np.exp(-alpha * logk)
        log_var = 2.0 * np.log(sigma) - beta * logk
        terms = 0.5 * LOG_2PI + 0.5 * log_var + 0.5 * (delta - mean) ** 2 * np.exp(-log_var)
    total = np.bincount(codes, terms, minlength=n_points)
    count = np.bincount(codes, minlength=n_points)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count
