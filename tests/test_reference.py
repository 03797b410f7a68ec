"""The NumPy reference against first principles: brute force over all paths, finite differences."""

import itertools

import numpy as np
import pytest

from s2dtw import _reference


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
    h = 1e-6
    numeric = np.zeros_like(cost)
    for idx in np.ndindex(cost.shape):
        up, down = cost.copy(), cost.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (
            _reference.align_one(up, gamma, smoothing, threshold)[0]
            - _reference.align_one(down, gamma, smoothing, threshold)[0]
        ) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
