"""The NumPy reference against first principles: brute force over all paths, finite differences."""

import itertools

import numpy as np
import pytest
import torch
from helpers import finite_differences

from s2dtw import _reference, _torch_reference, _vectorised_reference


def all_paths(rows: int, cols: int):
    """Every monotone path from (0, 0) to (rows-1, cols-1) with steps right, down, diagonal."""

    def extend(path):
        p, q = path[-1]
        if (p, q) == (rows - 1, cols - 1):
            yield path
            return
        for dp, dq in ((1, 0), (0, 1), (1, 1)):
            if p + dp < rows and q + dq < cols:
                yield from extend(path + [(p + dp, q + dq)])

    yield from extend([(0, 0)])


def brute_force_soft_dtw(grid: np.ndarray, gamma: float) -> float:
    costs = np.array([sum(grid[p, q] for p, q in path) for path in all_paths(*grid.shape)])
    return -gamma * np.logaddexp.reduce(-costs / gamma)


def brute_force_smoothing(cost: np.ndarray, s: float) -> np.ndarray:
    n, m = cost.shape
    out = np.empty_like(cost)
    for i, j in itertools.product(range(n), range(m)):
        if i == j == 0:
            neighbours = [0.0, 0.0, 0.0]
        else:
            neighbours = [cost[a, b] for a, b in ((i, j - 1), (i - 1, j), (i - 1, j - 1)) if a >= 0 and b >= 0]
        out[i, j] = cost[i, j] - s * np.logaddexp.reduce(-np.array(neighbours) / s)
    return out


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (3, 1), (2, 3), (4, 4), (3, 5)])
@pytest.mark.parametrize("gamma", [0.01, 0.5, 3.0])
def test_soft_dtw_table_equals_sum_over_paths(shape, gamma):
    grid = np.random.default_rng(1).normal(size=shape)
    table = _reference.soft_dtw_table(grid, gamma)
    assert table[-1, -1] == pytest.approx(brute_force_soft_dtw(grid, gamma), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("shape", [(1, 1), (2, 1), (2, 2), (2, 3)])
@pytest.mark.parametrize("smoothing", [None, 0.3])
@pytest.mark.parametrize("threshold", [None, 0.5])
def test_align_equals_definition_by_brute_force(shape, smoothing, threshold):
    gamma = 0.4
    cost = np.random.default_rng(2).normal(size=shape)
    smoothed = cost if smoothing is None else brute_force_smoothing(cost, smoothing)
    grid = smoothed
    if threshold is not None:
        grid = np.full((2 * shape[0] + 1, 2 * shape[1] + 1), threshold)
        grid[1::2, 1::2] = smoothed
    value, _ = _reference.align_one(cost, gamma, smoothing, threshold)
    assert value == pytest.approx(brute_force_soft_dtw(grid, gamma), rel=1e-12, abs=1e-12)


def test_smoothing_origin_takes_zero_neighbours():
    cost = np.array([[2.0, 1.0], [0.5, 3.0]])
    smoothed, _ = _reference.smooth(cost, 0.1)
    assert smoothed[0, 0] == pytest.approx(2.0 - 0.1 * np.log(3.0), rel=1e-15)
    assert smoothed[0, 1] == pytest.approx(1.0 + 2.0, rel=1e-15)  # only the left neighbour exists


@pytest.mark.parametrize("smoothing", [None, 0.2])
@pytest.mark.parametrize("threshold", [None, 0.3])
@pytest.mark.parametrize("gamma", [0.05, 1.0])
def test_reference_gradient_matches_finite_differences(smoothing, threshold, gamma):
    cost = np.random.default_rng(3).normal(size=(3, 4))
    _, grad = _reference.align_one(cost, gamma, smoothing, threshold)
    numeric = finite_differences(lambda c: _reference.align_one(c, gamma, smoothing, threshold)[0], cost, 1e-6)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


# --- The vectorised float64 oracle (benchmarks' reference for long pairs) against the plain reference ---


@pytest.mark.parametrize("shape", [(3, 7, 5), (2, 1, 9), (2, 9, 1), (1, 1, 1), (2, 12, 12)])
@pytest.mark.parametrize("gamma", [0.01, 0.1, 2.0])
def test_vectorised_oracle_equals_reference(shape, gamma):
    cost = np.random.default_rng(7).normal(size=shape)
    b, n, m = shape
    value, grad = _vectorised_reference.soft_dtw(cost, gamma)
    ref_value, ref_grad = _reference.align(cost, np.full(b, n), np.full(b, m), gamma, None, None)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-12)


def test_vectorised_oracle_self_check_is_small():
    assert _vectorised_reference.max_error_against_reference(0.1) < 1e-9


# --- The torch reference (the dense VT-TWINS construction) against the plain reference ---

VARIANTS = [(0.1, 0.5), (0.7, None), (None, -0.2), (None, None)]  # (smoothing, threshold)


@pytest.mark.parametrize("smoothing", [0.05, 1.0])
def test_torch_smoothed_cost_equals_reference(smoothing):
    cost = np.random.default_rng(8).normal(size=(2, 4, 6))
    got = _torch_reference.smoothed_cost(torch.from_numpy(cost), smoothing).numpy()
    for b in range(2):
        np.testing.assert_allclose(got[b], _reference.smooth(cost[b], smoothing)[0], rtol=1e-14, atol=1e-14)


def test_torch_weak_grid_equals_reference():
    smoothed = np.random.default_rng(9).normal(size=(2, 3, 5))
    got = _torch_reference.weak_grid(torch.from_numpy(smoothed), 0.3).numpy()
    for b in range(2):
        np.testing.assert_array_equal(got[b], _reference.weak_grid(smoothed[b], 0.3))


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (4, 1), (3, 5), (6, 6)])
@pytest.mark.parametrize("gamma", [0.01, 1.0])
def test_torch_soft_dtw_equals_reference(shape, gamma):
    grid = np.random.default_rng(10).normal(size=(2, *shape))
    got = _torch_reference.soft_dtw(torch.from_numpy(grid), gamma).numpy()
    want = [_reference.soft_dtw_table(g, gamma)[-1, -1] for g in grid]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("smoothing, threshold", VARIANTS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (3, 1), (4, 5)])
def test_torch_reference_value_and_autograd_gradient_equal_reference(smoothing, threshold, shape):
    cost = np.random.default_rng(11).normal(size=(2, *shape))
    tensor = torch.from_numpy(cost).requires_grad_()
    value = _torch_reference.s2dtw(tensor, 0.3, smoothing, threshold)
    (grad,) = torch.autograd.grad(value.sum(), tensor)
    ref_value, ref_grad = _reference.align(cost, np.full(2, shape[0]), np.full(2, shape[1]), 0.3, smoothing, threshold)
    np.testing.assert_allclose(value.detach().numpy(), ref_value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=1e-10, atol=1e-12)


def test_torch_reference_float32_has_finite_gradients():
    # The origin's neighbours are constants set before the logsumexp: no NaN reaches the cost's gradient,
    # and the costs need no finite stand-in for +inf (a large cost stays exact).
    cost = torch.tensor([[[1e6, -2.0], [0.5, 3.0]]], dtype=torch.float32, requires_grad=True)
    grid = _torch_reference.dense_grid(cost, 0.1, 0.5)
    assert grid[0, 1, 1].item() == pytest.approx(1e6 - 0.1 * np.log(3.0), rel=1e-7)
    assert grid[0, 1, 3].item() == pytest.approx(-2.0 + 1e6, rel=1e-7)  # its only neighbour: the left one, 1e6
    (grad,) = torch.autograd.grad(_torch_reference.soft_dtw(grid, 0.1).sum(), cost)
    assert torch.isfinite(grad).all()
    _, ref_grad = _reference.align(cost.detach().double().numpy(), [2], [2], 0.1, 0.1, 0.5)
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=1e-4, atol=1e-6)
