r"""S(α), the mean of k^(−α) over an inclusive size range: the factor a law's Shapley value carries.

The distributional Shapley value of a law ψ_k = c·k^(−α) over [k_min, k_max]
is ν = c·S(α) (:mod:`pointscale.valuation.values`); the law selection scores
candidates by it (:mod:`pointscale.laws.auto`).

For α > 1, Σ = ζ(α, k_min) − ζ(α, k_max + 1) with the Hurwitz zeta, but that
form is useless for α ≤ 1 (the zeta diverges) and loses digits to
cancellation when the two zetas are close. We therefore sum the first
``_HEAD`` terms directly and the rest by Euler–Maclaurin with three
Bernoulli corrections. The tail then starts at k ≥ ``_HEAD`` = 1024, where
the remainder is below ``B8/8! · |f⁽⁷⁾(k)| ≈ 1e-5 · (α)_7 · k^(−α−7)``,
i.e. a relative error < 1e-15 for every α ≤ e² (the MLE's upper bound).
The result is exact to rounding for any range and any real α, at a cost of
at most ``_HEAD`` terms per point.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import exprel

from ..errors import ConfigError

__all__ = ["power_mean", "check_size_range"]

_HEAD = 1024  # terms summed directly before Euler–Maclaurin takes over
_CHUNK = 256  # k values per vectorised block (bounds memory at n_points × _CHUNK)


def check_size_range(k_min: Any, k_max: Any) -> tuple[int, int]:
    """``(k_min, k_max)`` as ints, or a ConfigError: integers, 1 ≤ k_min ≤ k_max."""
    try:
        lo, hi = int(k_min), int(k_max)
    except (TypeError, ValueError):
        raise ConfigError(f"k_min={k_min!r} and k_max={k_max!r} must be integers") from None
    if lo != k_min or hi != k_max:
        raise ConfigError(f"k_min={k_min!r} and k_max={k_max!r} must be integers")
    if lo < 1:
        raise ConfigError(f"k_min={lo} must be at least 1")
    if hi < lo:
        raise ConfigError(f"k_max={hi} must be >= k_min={lo}")
    return lo, hi


#: Points per block of :func:`_direct_sum`: its temporaries are points × _CHUNK
#: floats (~130 MB here), whatever the number of points.
_POINT_CHUNK = 65_536


def _direct_sum(alpha: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Σ_{k=lo}^{hi} k^(−α) by blocks of sizes and of points (hi − lo small)."""
    out = np.zeros(alpha.shape, dtype=np.float64)
    for p0 in range(0, alpha.shape[0], _POINT_CHUNK):
        a = alpha[p0:p0 + _POINT_CHUNK, None]
        for start in range(lo, hi + 1, _CHUNK):
            ks = np.arange(start, min(start + _CHUNK, hi + 1), dtype=np.float64)
            with np.errstate(over="ignore", invalid="ignore"):
                out[p0:p0 + _POINT_CHUNK] += np.exp(-a * np.log(ks)[None, :]).sum(axis=1)
    return out


def _em_tail(alpha: np.ndarray, a: int, b: int) -> np.ndarray:
    """Σ_{k=a}^{b} k^(−α) by Euler–Maclaurin (accurate for a ≥ ~1000)."""
    fa, fb = float(a), float(b)
    L = np.log(fb / fa)
    one_m = 1.0 - alpha
    with np.errstate(over="ignore", invalid="ignore"):
        # ∫_a^b k^(−α) dk = a^(1−α) · L · exprel((1−α) L): stable through α = 1.
        integral = fa ** one_m * L * exprel(one_m * L)
        pa, pb = fa ** (-alpha), fb ** (-alpha)
        total = integral + 0.5 * (pa + pb)
        # f^(2j−1)(k) = −(α)_(2j−1) k^(−α−2j+1), rising factorials (α)_n.
        r1 = alpha
        r3 = r1 * (alpha + 1.0) * (alpha + 2.0)
        r5 = r3 * (alpha + 3.0) * (alpha + 4.0)
        d1 = -r1 * (pb / fb - pa / fa)
        d3 = -r3 * (pb / fb**3 - pa / fa**3)
        d5 = -r5 * (pb / fb**5 - pa / fa**5)
        total = total + d1 / 12.0 - d3 / 720.0 + d5 / 30240.0
    return total


def _power_sum(alpha: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Σ_{k=lo}^{hi} k^(−α) for each α (see module docstring)."""
    alpha = np.asarray(alpha, dtype=np.float64)
    if hi - lo + 1 <= 2 * _HEAD:
        return _direct_sum(alpha, lo, hi)
    # Here hi > lo + 2·_HEAD, so the tail [split, hi] is long and starts at ≥ _HEAD.
    split = max(lo, _HEAD)
    total = _em_tail(alpha, split, hi)
    if lo < split:
        total = total + _direct_sum(alpha, lo, split - 1)
    return total


def power_mean(alpha: Any, k_min: int, k_max: int) -> np.ndarray:
    """S(α) = mean over k = k_min..k_max (inclusive) of k^(−α), for each α.

    Exact to rounding for any real α and any range (see the module docstring);
    NaN where α is NaN.
    """
    lo, hi = check_size_range(k_min, k_max)
    alpha = np.atleast_1d(np.asarray(alpha, dtype=np.float64))
    return _power_sum(alpha, lo, hi) / float(hi - lo + 1)
