"""Pure-NumPy float64 reference: the oracle every backend is tested against.

Deliberately plain: it builds the smoothed cost D, the weak-alignment grid W and
the whole soft-DTW table R explicitly, and differentiates with the textbook
backward recursion of Cuturi & Blondel (2017). Slow; never used for speed.
"""

from __future__ import annotations

import numpy as np


def softmin(values: np.ndarray, gamma: float) -> tuple[float, np.ndarray]:
    """``-gamma * log(sum(exp(-values / gamma)))`` and its gradient (weights summing to one).

    +inf entries drop out; all +inf gives (+inf, zeros).
    """
    values = np.asarray(values, dtype=np.float64)
    lo = values.min()
    if np.isinf(lo):
        return np.inf, np.zeros_like(values)
    z = np.exp(-(values - lo) / gamma)
    total = z.sum()
    return lo - gamma * np.log(total), z / total


def smooth(cost: np.ndarray, smoothing: float) -> tuple[np.ndarray, np.ndarray]:
    """D[i,j] = C[i,j] + softmin_s(C[i,j-1], C[i-1,j], C[i-1,j-1]); at (0,0) the neighbours are 0.

    Returns D (n, m) and the softmin weights (n, m, 3) on (left, up, diagonal).
    """
    n, m = cost.shape
    padded = np.full((n + 1, m + 1), np.inf)
    padded[1:, 1:] = cost
    smoothed = np.empty((n, m))
    weights = np.zeros((n, m, 3))
    for i in range(n):
        for j in range(m):
            if i == 0 and j == 0:
                neighbours = np.zeros(3)  # constants: no gradient flows to them
                smoothed[i, j] = cost[i, j] + softmin(neighbours, smoothing)[0]
                continue
            neighbours = np.array([padded[i + 1, j], padded[i, j + 1], padded[i, j]])
            soft, weights[i, j] = softmin(neighbours, smoothing)
            smoothed[i, j] = cost[i, j] + soft
    return smoothed, weights


def weak_grid(smoothed: np.ndarray, threshold: float) -> np.ndarray:
    """The (2n+1, 2m+1) weak-alignment grid: D on odd/odd cells, ``threshold`` elsewhere."""
    n, m = smoothed.shape
    grid = np.full((2 * n + 1, 2 * m + 1), float(threshold))
    grid[1::2, 1::2] = smoothed
    return grid


def band_mask(rows: int, cols: int, bandwidth: float | None) -> np.ndarray:
    """Cells (p, q) with |p (cols-1) - q (rows-1)| <= floor(bandwidth * min(rows-1, cols-1)).

    `bandwidth` is in grid cells along the longer side; None keeps every cell.
    """
    if bandwidth is None:
        return np.ones((rows, cols), dtype=bool)
    width = np.floor(bandwidth * min(rows - 1, cols - 1))
    p, q = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return np.abs(p * (cols - 1) - q * (rows - 1)) <= width


def soft_dtw_table(grid: np.ndarray, gamma: float, band: np.ndarray | None = None) -> np.ndarray:
    """R of shape (P+1, Q+1); the soft-DTW value is R[P, Q]. Cells outside `band` stay +inf."""
    rows, cols = grid.shape
    table = np.full((rows + 1, cols + 1), np.inf)
    table[0, 0] = 0.0
    for p in range(1, rows + 1):
        for q in range(1, cols + 1):
            if band is not None and not band[p - 1, q - 1]:
                continue
            predecessors = [table[p - 1, q - 1], table[p - 1, q], table[p, q - 1]]
            table[p, q] = grid[p - 1, q - 1] + softmin(predecessors, gamma)[0]
    return table


def soft_dtw_grad(grid: np.ndarray, table: np.ndarray, gamma: float) -> np.ndarray:
    """d R[P, Q] / d grid (the expected alignment), by the backward recursion on R.

    P(s came from (p, q)) is the weight of R[p, q] in the softmin of s's predecessors,
    recomputed from them (min-shifted): the textbook form exp((R[s] - W[s] - R[p, q]) / gamma)
    subtracts huge numbers and gives NaN for costs of 1e30 (the kernels keep these weights too).
    """
    rows, cols = grid.shape
    expected = np.zeros((rows + 2, cols + 2))
    expected[rows, cols] = 1.0
    for p in range(rows, 0, -1):
        for q in range(cols, 0, -1):
            if p == rows and q == cols:
                continue
            total = 0.0
            # successors (p+1, q), (p, q+1), (p+1, q+1): probability that each came from (p, q)
            for sp, sq in ((p + 1, q), (p, q + 1), (p + 1, q + 1)):
                if sp <= rows and sq <= cols and expected[sp, sq] != 0.0:
                    predecessors = [(sp - 1, sq - 1), (sp - 1, sq), (sp, sq - 1)]
                    _, weights = softmin(np.array([table[c] for c in predecessors]), gamma)
                    total += expected[sp, sq] * weights[predecessors.index((p, q))]
            expected[p, q] = total
    return expected[1 : rows + 1, 1 : cols + 1]


def align_one(
    cost: np.ndarray, gamma: float, smoothing: float | None, threshold: float | None,
    bandwidth: float | None = None,
) -> tuple[float, np.ndarray]:
    """Value and d value / d cost for one (n, m) cost matrix.

    `bandwidth` is in sequence elements: two grid cells each on the weak grid.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if smoothing is None:
        smoothed, weights = cost, None
    else:
        smoothed, weights = smooth(cost, smoothing)
    grid = smoothed if threshold is None else weak_grid(smoothed, threshold)
    grid_bandwidth = None if bandwidth is None else bandwidth * (1 if threshold is None else 2)
    table = soft_dtw_table(grid, gamma, band_mask(*grid.shape, grid_bandwidth))
    expected = soft_dtw_grad(grid, table, gamma)
    grad_smoothed = expected if threshold is None else expected[1::2, 1::2]
    if weights is None:
        return table[-1, -1], grad_smoothed
    grad = grad_smoothed.copy()
    grad[:, :-1] += grad_smoothed[:, 1:] * weights[:, 1:, 0]  # C[i, j] is the left neighbour of (i, j+1)
    grad[:-1, :] += grad_smoothed[1:, :] * weights[1:, :, 1]  # ... the upper neighbour of (i+1, j)
    grad[:-1, :-1] += grad_smoothed[1:, 1:] * weights[1:, 1:, 2]  # ... the diagonal one of (i+1, j+1)
    return table[-1, -1], grad


def align(
    cost: np.ndarray,
    pair_n: np.ndarray,
    pair_m: np.ndarray,
    gamma: float,
    smoothing: float | None,
    threshold: float | None,
    bandwidth: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Batched: cost (B, N, M); pair b uses cost[b, :pair_n[b], :pair_m[b]].

    Returns value (B,) and grad (B, N, M), zero outside each pair's lengths.
    """
    cost = np.asarray(cost, dtype=np.float64)
    value = np.empty(cost.shape[0])
    grad = np.zeros_like(cost)
    for b in range(cost.shape[0]):
        n, m = int(pair_n[b]), int(pair_m[b])
        value[b], grad[b, :n, :m] = align_one(cost[b, :n, :m], gamma, smoothing, threshold, bandwidth)
    return value, grad
