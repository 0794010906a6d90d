"""Benchmark: fitting the laws (issue 4) against the paper's estimator.

Run ``python -m benchmarks.fit`` (``--quick`` for a smaller run).

Synthetic sets are drawn from the noise model with parameters spread like
real data (α in [0.7, 2], |c| over two decades, 15 % negative c, σ giving a
per-sample signal-to-noise ratio of 1 at k ≈ 316, k uniform in [100, 1000])
at 10, 30, 100 and 500 samples per point. For each set the script prints

* the NLL comparison: fraction of points where our MLE's mean NLL is
  ≤ the paper estimator's + 1e-6 (both evaluated by the same float64
  reference function at the parameters each estimator returned);
* the speed ratio: the paper's estimator, run per point as in its code,
  timed on a subset of points and scaled to the whole set, over our time;
* explained variance of the predicted ψ_k against the true ψ_k at k = 100,
  359, 1000, for our MLE, the paper's estimator and the plain Monte Carlo
  mean (for reference);
* coverage of our 95 % intervals for α, c and ψ_359;

and finally times 10,000 points × 100 samples.

The paper's estimator (``iancovert/data-scaling``, ``LikelihoodEstimator``)
is re-implemented here independently of :mod:`pointscale.laws.likelihood`:
Adam (lr 0.05, β₁ = 0.9, β₂ = 0.999, ε = 1e-8) on (log α, log β) starting at
α = 1, β = 2; at each step c and σ take their closed-form optimum for the
current (α, β), as in the paper's own code (``calculate_optimal_c_sigma``),
so Adam minimises the same profile likelihood; at most 1000 steps, stop after
100 steps without a new best NLL, log α and log β clamped at ≤ 2 after each
step, best iterate kept. Differences from the original: float64 instead of
float32 (which can only help it) and an analytic gradient (the envelope
theorem gives the profile gradient; autograd through the closed forms gives
the same). For the NLL comparison the same Adam iterations run for all
points at once (elementwise identical to the per-point loop, which the
script checks on a few points); the timing uses the per-point loop, which is
how the paper ran it.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from pointscale.laws import fit_mle
from pointscale.laws.likelihood import mean_nll_by_point
from pointscale.laws.simulate import draw_parameters, simulate_samples

LR, B1, B2, EPS = 0.05, 0.9, 0.999, 1e-8
STEPS, PATIENCE, LOG_MAX = 1000, 100, 2.0
EVAL_K = np.array([100, 359, 1000])


# --------------------------------------------------------------- paper, per point
def paper_fit_one(delta: np.ndarray, k: np.ndarray) -> tuple[float, float, float, float, float]:
    """The paper's estimator for one point: (c, alpha, sigma, beta, nll)."""
    logk = np.log(k)
    mlogk = logk.mean()
    p = np.array([0.0, np.log(2.0)])  # log alpha, log beta
    m = np.zeros(2)
    v = np.zeros(2)
    best, best_params, bad = np.inf, None, 0
    for t in range(1, STEPS + 1):
        alpha, beta = np.exp(p)
        ka = np.exp(-alpha * logk)
        kb = np.exp(beta * logk)
        c = np.mean(delta * kb * ka) / np.mean(kb * ka * ka)
        r = delta - c * ka
        s2 = np.mean(r * r * kb)
        loss = 0.5 * np.log(2 * np.pi) + 0.5 * np.log(s2) - 0.5 * beta * mlogk + 0.5
        if loss < best:
            best, best_params, bad = loss, (c, alpha, np.sqrt(s2), beta), 0
        else:
            bad += 1
            if bad >= PATIENCE:
                break
        g_alpha = c * np.mean(r * kb * ka * logk) / s2
        g_beta = 0.5 * np.mean(r * r * kb * logk) / s2 - 0.5 * mlogk
        g = np.array([g_alpha * alpha, g_beta * beta])
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        p = p - LR * (m / (1 - B1**t)) / (np.sqrt(v / (1 - B2**t)) + EPS)
        p = np.minimum(p, LOG_MAX)
    return (*best_params, best)


# --------------------------------------------------------- paper, all points at once
def paper_fit_all(codes: np.ndarray, k: np.ndarray, delta: np.ndarray, n_points: int):
    """The same Adam iterations for all points together (elementwise identical)."""
    order = np.argsort(codes, kind="stable")
    codes, k, delta = codes[order], k[order], delta[order]
    counts = np.bincount(codes, minlength=n_points)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    logk = np.log(k)
    mlogk = np.add.reduceat(logk, starts) / counts
    seg_mean = lambda a: np.add.reduceat(a, starts) / counts  # noqa: E731
    p = np.tile([0.0, np.log(2.0)], (n_points, 1))
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    best = np.full(n_points, np.inf)
    best_params = np.full((n_points, 4), np.nan)
    bad = np.zeros(n_points, dtype=int)
    running = np.ones(n_points, dtype=bool)
    for t in range(1, STEPS + 1):
        alpha, beta = np.exp(p[:, 0]), np.exp(p[:, 1])
        ka = np.exp(-alpha[codes] * logk)
        kb = np.exp(beta[codes] * logk)
        c = seg_mean(delta * kb * ka) / seg_mean(kb * ka * ka)
        r = delta - c[codes] * ka
        s2 = seg_mean(r * r * kb)
        loss = 0.5 * np.log(2 * np.pi) + 0.5 * np.log(s2) - 0.5 * beta * mlogk + 0.5
        improved = running & (loss < best)
        best[improved] = loss[improved]
        best_params[improved] = np.stack([c, alpha, np.sqrt(s2), beta], axis=1)[improved]
        bad[improved] = 0
        worse = running & ~improved
        bad[worse] += 1
        running &= ~(worse & (bad >= PATIENCE))
        if not running.any():
            break
        g_alpha = c * seg_mean(r * kb * ka * logk) / s2
        g_beta = 0.5 * seg_mean(r * r * kb * logk) / s2 - 0.5 * mlogk
        g = np.stack([g_alpha * alpha, g_beta * beta], axis=1)
        m_new = B1 * m + (1 - B1) * g
        v_new = B2 * v + (1 - B2) * g * g
        p_new = p - LR * (m_new / (1 - B1**t)) / (np.sqrt(v_new / (1 - B2**t)) + EPS)
        p_new = np.minimum(p_new, LOG_MAX)
        run = running[:, None]
        m, v, p = np.where(run, m_new, m), np.where(run, v_new, v), np.where(run, p_new, p)
    return best_params, best
