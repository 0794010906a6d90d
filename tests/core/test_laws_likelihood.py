"""The likelihood machinery, checked against direct formulas and finite differences."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pointscale.laws import likelihood as L
from pointscale.laws.simulate import draw_parameters, simulate_samples


@pytest.fixture(scope="module")
def packed_data():
    params = draw_parameters(40, seed=11)
    samples = simulate_samples(params, 30, seed=12)
    codes, _ = pd.factorize(samples["point_id"], sort=True)
    k = samples["k"].to_numpy(dtype=float)
    delta = samples["delta"].to_numpy()
    packed = L.pack_samples(codes, k, delta, np.arange(40))
    return codes, k, delta, packed


def test_profile_gradient_and_hessian_match_finite_differences(packed_data):
    *_, packed = packed_data
    g = np.random.default_rng(0)
    a = g.uniform(0.2, 3.0, packed.n_points)
    b = g.uniform(0.3, 5.0, packed.n_points)
    v = L.profile_objective(packed, a, b)
    h = 1e-5
    fa = [L.profile_objective(packed, a + s * h, b) for s in (1, -1)]
    fb = [L.profile_objective(packed, a, b + s * h) for s in (1, -1)]
    # Central differences have O(h^2) ~ 1e-10 error on O(1) curvatures.
    np.testing.assert_allclose(v.grad[:, 0], (fa[0].f - fa[1].f) / (2 * h), atol=1e-7)
    np.testing.assert_allclose(v.grad[:, 1], (fb[0].f - fb[1].f) / (2 * h), atol=1e-7)
    np.testing.assert_allclose(v.hess[:, 0, 0], (fa[0].grad[:, 0] - fa[1].grad[:, 0]) / (2 * h), atol=1e-6)
    np.testing.assert_allclose(v.hess[:, 0, 1], (fb[0].grad[:, 0] - fb[1].grad[:, 0]) / (2 * h), atol=1e-6)
    np.testing.assert_allclose(v.hess[:, 1, 1], (fb[0].grad[:, 1] - fb[1].grad[:, 1]) / (2 * h), atol=1e-6)


def test_closed_form_nll_equals_direct_gaussian_nll(packed_data):
    codes, k, delta, packed = packed_data
    a = np.full(packed.n_points, 1.3)
    b = np.full(packed.n_points, 2.5)
    c, sigma, nll, _, _ = L.closed_form(packed, a, b)
    for p in (0, 7, 39):
        rows = codes == p
        direct = L.gaussian_nll(delta[rows], k[rows], c[p], a[p], sigma[p], b[p])
        assert nll[p] == pytest.approx(direct, abs=1e-12)
    # c and sigma are the optimum for fixed (alpha, beta): perturbing raises the NLL.
    for p in (3, 20):
        rows = codes == p
        base = L.gaussian_nll(delta[rows], k[rows], c[p], a[p], sigma[p], b[p])
        for dc, ds in ((1.01, 1.0), (0.99, 1.0), (1.0, 1.01), (1.0, 0.99)):
            assert L.gaussian_nll(delta[rows], k[rows], c[p] * dc, a[p], sigma[p] * ds, b[p]) > base


def test_grid_matches_pointwise_objective(packed_data):
    *_, packed = packed_data
    grid = L.profile_grid(packed, 0.5, 6, 9)
    for ia, ib in ((0, 0), (2, 4), (5, 8), (5, 0)):
        f = L.profile_objective(packed, np.full(packed.n_points, 0.5 * ia), np.full(packed.n_points, 0.5 * ib), False).f
        np.testing.assert_allclose(grid[:, ia, ib], f, atol=1e-10)


def test_observed_information_is_the_hessian_of_the_total_nll(packed_data):
    codes, k, delta, packed = packed_data
    p = 5
    sub = packed.take(np.array([p]))
    x, y = sub.x, sub.y
    theta = np.array([0.8, 1.1, np.log(0.9), 2.2])  # (c', alpha, log sigma'^2, beta)

    def total(t):
        return len(y) * L.gaussian_nll(y, np.exp(x), t[0], t[1], np.exp(0.5 * t[2]), t[3])

    h = 1e-4
    fd = np.empty((4, 4))
    for i in range(4):
        for j in range(4):
            e_i, e_j = np.eye(4)[i] * h, np.eye(4)[j] * h
            fd[i, j] = (
                total(theta + e_i + e_j)
                - total(theta + e_i - e_j)
                - total(theta - e_i + e_j)
                + total(theta - e_i - e_j)
            ) / (4 * h * h)
    info = L.observed_information(
        sub, np.array([theta[0]]), np.array([theta[1]]), np.array([np.exp(theta[2])]), np.array([theta[3]])
    )[0]
    np.testing.assert_allclose(info, fd, rtol=1e-5, atol=1e-4)


def test_take_selects_the_right_samples(packed_data):
    *_, packed = packed_data
    sel = np.array([9, 2, 30])
    sub = packed.take(sel)
    for j, p in enumerate(sel):
        a, b = packed.starts[p], packed.starts[p] + packed.counts[p]
        c, d = sub.starts[j], sub.starts[j] + sub.counts[j]
        np.testing.assert_array_equal(sub.x[c:d], packed.x[a:b])
        np.testing.assert_array_equal(sub.y[c:d], packed.y[a:b])
    np.testing.assert_array_equal(sub.point_index, sel)


def test_mean_nll_by_point_matches_per_point(packed_data):
    codes, k, delta, packed = packed_data
    P = packed.n_points
    c, a, s, b = np.full(P, 0.1), np.full(P, 1.2), np.full(P, 0.5), np.full(P, 2.0)
    many = L.mean_nll_by_point(codes, k, delta, c, a, s, b)
    rows = codes == 4
    assert many[4] == pytest.approx(L.gaussian_nll(delta[rows], k[rows], 0.1, 1.2, 0.5, 2.0), abs=1e-12)
