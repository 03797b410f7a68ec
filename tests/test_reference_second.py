"""The second-order oracle (s2dtw._reference_second) against finite differences of the first-order
reference's gradient, Hessian symmetry, torch double backward, and the DILATE temporal term."""

import numpy as np
import pytest
import torch

from s2dtw import _reference, _reference_second

# (gamma, smoothing, threshold, bandwidth): plain soft-DTW, each S2DTW piece alone, S2DTW, bands
CONFIGS = [
    (1.0, None, None, None),
    (0.3, 0.2, None, None),
    (0.3, None, 0.4, None),
    (0.1, 0.1, 0.5, None),
    (0.5, None, None, 1.0),
    (0.1, 0.1, 0.5, 1.0),
]
SHAPES = [(1, 1), (1, 4), (4, 1), (3, 5), (4, 4), (5, 3)]


def pair(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape), rng.normal(size=shape)


def fd_of_gradient(cost, direction, config, step=1e-5):
    """Central difference of _reference's E along `direction`, the step relative to the cost's scale."""
    h = step * max(1.0, np.abs(cost).max()) / max(1e-300, np.abs(direction).max())
    plus = _reference.align_one(cost + h * direction, *config)[1]
    minus = _reference.align_one(cost - h * direction, *config)[1]
    return (plus - minus) / (2 * h)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("config", CONFIGS)
def test_hvp_matches_finite_differences_of_the_gradient(shape, config):
    for seed in range(3):
        cost, direction = pair(shape, seed)
        value, grad, product = _reference_second.hvp(cost, direction, *config)
        ref_value, ref_grad = _reference.align_one(cost, *config)
        assert value == ref_value
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-14)
        numeric = fd_of_gradient(cost, direction, config)
        scale = max(1.0, np.abs(numeric).max())
        np.testing.assert_allclose(product, numeric, rtol=1e-6, atol=1e-7 * scale)


def test_hvp_is_not_trivially_zero():
    cost, direction = pair((3, 4), 7)
    for config in CONFIGS:
        assert np.abs(_reference_second.hvp(cost, direction, *config)[2]).max() > 1e-3


@pytest.mark.parametrize("config", CONFIGS)
def test_one_by_one_without_weak_grid_is_linear(config):
    """A 1x1 cost has one path: value = C (+ constant), so H = 0 exactly unless the weak grid adds paths."""
    gamma, smoothing, threshold, bandwidth = config
    product = _reference_second.hvp(np.array([[0.7]]), np.array([[1.3]]), *config)[2]
    if threshold is None:
        assert product[0, 0] == 0.0
    else:
        assert abs(product[0, 0]) > 1e-6


@pytest.mark.parametrize("shape", [(3, 5), (4, 4), (1, 3)])
@pytest.mark.parametrize("config", CONFIGS)
def test_hessian_is_symmetric(shape, config):
    rng = np.random.default_rng(11)
    cost, first, second = (rng.normal(size=shape) for _ in range(3))
    a = np.sum(first * _reference_second.hvp(cost, second, *config)[2])
    b = np.sum(second * _reference_second.hvp(cost, first, *config)[2])
    assert a == pytest.approx(b, rel=1e-10, abs=1e-12)


def torch_value(cost, gamma, smoothing, threshold):
    """The definition (docs/semantics.md 2-4, no band) in torch ops on scalars, for autograd."""
    n, m = cost.shape

    def softmin(args, g):
        return -g * torch.logsumexp(-torch.stack(args) / g, dim=0)

    smoothed = [[cost[i, j] for j in range(m)] for i in range(n)]
    if smoothing is not None:
        zero = cost.new_zeros(())
        for i in range(n):
            for j in range(m):
                nbs = [cost[a, b] for a, b in ((i, j - 1), (i - 1, j), (i - 1, j - 1)) if a >= 0 and b >= 0]
                smoothed[i][j] = cost[i, j] + softmin(nbs or [zero, zero, zero], smoothing)
    grid = smoothed
    if threshold is not None:
        null = cost.new_full((), threshold)
        grid = [[null] * (2 * m + 1) for _ in range(2 * n + 1)]
        for i in range(n):
            for j in range(m):
                grid[2 * i + 1][2 * j + 1] = smoothed[i][j]
    rows, cols = len(grid), len(grid[0])
    table = {}
    for p in range(rows):
        for q in range(cols):
            preds = [table[c] for c in ((p - 1, q - 1), (p - 1, q), (p, q - 1)) if c in table]
            table[p, q] = grid[p][q] + (softmin(preds, gamma) if preds else 0.0)
    return table[rows - 1, cols - 1]


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 3), (4, 2)])
@pytest.mark.parametrize("config", [c for c in CONFIGS if c[3] is None])
def test_hvp_matches_torch_double_backward(shape, config):
    cost, direction = pair(shape, 5)
    gamma, smoothing, threshold, _ = config
    tcost = torch.tensor(cost, requires_grad=True)
    (grad,) = torch.autograd.grad(torch_value(tcost, gamma, smoothing, threshold), tcost, create_graph=True)
    directional = (grad * torch.tensor(direction)).sum()
    # one path (1x1, no weak grid): E is a constant, so autograd has no graph to differentiate
    product = torch.autograd.grad(directional, tcost)[0] if directional.requires_grad else torch.zeros_like(tcost)
    _, ref_grad, ref_product = _reference_second.hvp(cost, direction, *config)
    np.testing.assert_allclose(ref_grad, grad.detach().numpy(), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(ref_product, product.numpy(), rtol=1e-9, atol=1e-11)


def temporal_term(cost, config):
    """DILATE's temporal distortion sum_ij E_ij (i - j)^2, on the expected alignment E = d value / d C."""
    n, m = cost.shape
    i, j = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
    return np.sum(_reference.align_one(cost, *config)[1] * (i - j) ** 2.0)


@pytest.mark.parametrize("shape", [(3, 4), (4, 4), (5, 3)])
@pytest.mark.parametrize("config", CONFIGS)
def test_dilate_temporal_gradient_is_hvp_with_omega(shape, config):
    cost = np.random.default_rng(13).normal(size=shape)
    n, m = shape
    i, j = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
    omega = (i - j) ** 2.0
    product = _reference_second.hvp(cost, omega, *config)[2]
    h = 1e-5
    numeric = np.zeros_like(cost)
    for k in range(n):
        for col in range(m):
            bump = np.zeros_like(cost)
            bump[k, col] = h
            numeric[k, col] = (temporal_term(cost + bump, config) - temporal_term(cost - bump, config)) / (2 * h)
    np.testing.assert_allclose(product, numeric, rtol=1e-6, atol=1e-7 * max(1.0, np.abs(numeric).max()))
    assert np.abs(product).max() > 1e-4


@pytest.mark.parametrize("kwargs", [dict(gamma=0.0), dict(gamma=0.5, smoothing=0.0), dict(gamma=-1.0)])
def test_hard_forms_and_bad_parameters_raise(kwargs):
    cost, direction = pair((2, 3), 0)
    with pytest.raises(ValueError, match="second order"):
        _reference_second.hvp(cost, direction, **kwargs)


def test_wrong_direction_shape_and_unreachable_band_raise():
    cost, direction = pair((2, 3), 0)
    with pytest.raises(ValueError, match="direction"):
        _reference_second.hvp(cost, direction[:, :2], 0.5)
    with pytest.raises(ValueError, match="band"):
        _reference_second.hvp(np.zeros((2, 9)), np.zeros((2, 9)), 0.5, bandwidth=0.0)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (6, 4)])
def test_value_tangent_is_expected_alignment_times_direction(shape):
    """dot R[P, Q] = <E, dot W> (docs/semantics.md "Second order"), and E is soft_dtw_grad's."""
    grid, grid_direction = pair(shape, 17)
    gamma = 0.3
    table = _reference.soft_dtw_table(grid, gamma)
    tangent = _reference_second.tangent_table(table, grid_direction, gamma)
    expected, _ = _reference_second.expected_and_tangent(table, tangent, grid_direction, gamma)
    np.testing.assert_allclose(expected, _reference.soft_dtw_grad(grid, table, gamma), rtol=1e-12, atol=1e-14)
    assert tangent[-1, -1] == pytest.approx(np.sum(expected * grid_direction), rel=1e-12, abs=1e-14)


def test_pull_form_of_the_tangent_backward_equals_the_push_form():
    """docs/semantics.md's pull form (what a row-by-row kernel computes) gives the oracle's dot E."""
    grid, grid_direction = pair((4, 6), 19)
    gamma = 0.4
    table = _reference.soft_dtw_table(grid, gamma, _reference.band_mask(4, 6, 2.0))
    tangent = _reference_second.tangent_table(table, grid_direction, gamma)
    expected, expected_dot = _reference_second.expected_and_tangent(table, tangent, grid_direction, gamma)
    rows, cols = grid.shape
    pulled = np.zeros((rows + 2, cols + 2))
    for p in range(rows, 0, -1):
        for q in range(cols, 0, -1):
            for tp, tq, slot in ((p + 1, q + 1, 0), (p + 1, q, 1), (p, q + 1, 2)):
                if tp > rows or tq > cols or not np.isfinite(table[tp, tq]):
                    continue
                pi = _reference.softmin(_reference.predecessors(table, tp, tq), gamma)[1][slot]
                dot_w = grid_direction[tp - 1, tq - 1]
                pulled[p, q] += pi * pulled[tp, tq] - pi / gamma * (
                    tangent[p, q] - tangent[tp, tq] + dot_w) * expected[tp - 1, tq - 1]
    np.testing.assert_allclose(pulled[1 : rows + 1, 1 : cols + 1], expected_dot, rtol=1e-12, atol=1e-14)
    assert np.abs(expected_dot).max() > 1e-3
