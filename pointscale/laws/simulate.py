"""Synthetic samples from the scaling-law noise model, for tests and benchmarks.

Δ ~ Normal(c·k^(−α), σ²·k^(−β)) (SPEC §1). Every point draws from its own
generator ``rng(seed, STREAM_SIMULATION, point_id)``, so a point's samples do
not depend on which other points are simulated with it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..seeding import STREAM_SIMULATION, rng

__all__ = ["draw_parameters", "simulate_samples", "STAGGERED_SIZES"]

#: The validation protocol's sizes, ``geomspace(100, 1000, 10)`` as ints (SPEC §2).
STAGGERED_SIZES = tuple(int(k) for k in np.geomspace(100, 1000, 10).astype(int))


def draw_parameters(
    n_points: int,
    seed: int,
    *,
    alpha_range: tuple[float, float] = (0.7, 2.0),
    log10_abs_c_range: tuple[float, float] = (-1.5, 0.5),
    negative_fraction: float = 0.15,
    beta_range: tuple[float, float] = (1.5, 3.5),
    snr: float = 1.0,
    k_ref: float = float(np.sqrt(100 * 1000)),
) -> pd.DataFrame:
    """Per-point parameters spread like real data.

    α uniform in ``alpha_range``; |c| log-uniform over ``log10_abs_c_range``
    (two decades by default) with a fraction ``negative_fraction`` of negative
    c; β uniform in ``beta_range``; σ set so that the per-sample
    signal-to-noise ratio |ψ_k| / sd(Δ) equals ``snr`` at ``k_ref``.

    Returns
    -------
    DataFrame with columns point_id (str), c, alpha, sigma, beta
    """
    if n_points < 1:
        raise ConfigError(f"n_points={n_points} must be >= 1")
    if not 0.0 <= negative_fraction <= 1.0:
        raise ConfigError(f"negative_fraction={negative_fraction} must lie in [0, 1]")
    if snr <= 0:
        raise ConfigError(f"snr={snr} must be > 0")
    g = rng(seed, STREAM_SIMULATION, "parameters")
    alpha = g.uniform(*alpha_range, n_points)
    beta = g.uniform(*beta_range, n_points)
    sign = np.where(g.random(n_points) < negative_fraction, -1.0, 1.0)
    c = sign * 10.0 ** g.uniform(*log10_abs_c_range, n_points)
    sigma = np.abs(c) * k_ref ** (beta / 2.0 - alpha) / snr
    ids = np.array([f"p{i:06d}" for i in range(n_points)], dtype=object)
    return pd.DataFrame({"point_id": ids, "c": c, "alpha": alpha, "sigma": sigma, "beta": beta})


def simulate_samples(
    params: pd.DataFrame,
    n_samples: int,
    seed: int,
    *,
    k_min: int = 100,
    k_max: int = 1000,
    sizes: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Draw samples (point_id, k, delta) from the noise model.

    Parameters
    ----------
    params : DataFrame
        Columns point_id, c, alpha, sigma, beta (e.g. from :func:`draw_parameters`).
    n_samples : int
        Samples per point; with ``sizes``, samples *per size*.
    seed : int
        Root seed.
    k_min, k_max : int, default=100, 1000
        Range of the uniform random design (inclusive), used when ``sizes`` is None.
    sizes : sequence of int, optional
        Staggered design: ``n_samples`` samples at each of these sizes.

    Returns
    -------
    DataFrame with columns point_id, k (int64), delta (float64)
    """
    if n_samples < 1:
        raise ConfigError(f"n_samples={n_samples} must be >= 1")
    if sizes is None and not 1 <= k_min <= k_max:
        raise ConfigError(f"need 1 <= k_min={k_min} <= k_max={k_max}")
    missing = {"point_id", "c", "alpha", "sigma", "beta"} - set(params.columns)
    if missing:
        raise ConfigError(f"params lacks column(s) {sorted(missing)}")
    ids = params["point_id"].to_numpy()
    per_point = n_samples if sizes is None else n_samples * len(sizes)
    ks = np.empty((len(ids), per_point), dtype=np.int64)
    noise = np.empty((len(ids), per_point))
    for i, pid in enumerate(ids):
        g = rng(seed, STREAM_SIMULATION, pid)
        if sizes is None:
            ks[i] = g.integers(k_min, k_max + 1, per_point)
        else:
            ks[i] = np.repeat(np.asarray(sizes, dtype=np.int64), n_samples)
        noise[i] = g.standard_normal(per_point)
    kf = ks.astype(np.float64)
    col = lambda name: params[name].to_numpy(dtype=np.float64)[:, None]  # noqa: E731
    delta = col("c") * kf ** (-col("alpha")) + col("sigma") * kf ** (-col("beta") / 2.0) * noise
    return pd.DataFrame(
        {
            "point_id": np.repeat(ids, per_point),
            "k": ks.ravel(),
            "delta": delta.ravel(),
        }
    )
