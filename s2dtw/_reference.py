"""Pure-NumPy float64 reference: the oracle every backend is tested against.

Deliberately plain: it builds the smoothed cost D, the weak-alignment grid W and
the whole soft-DTW table R explicitly, and differentiates with the textbook
backward recursion of Cuturi & Blondel (2017). Slow; never used for speed.
``gamma=0`` / ``smoothing=0`` are the hard (exact DTW) forms and ``open_begin`` /
``open_end`` subsequence alignment, as defined in docs/semantics.md ("Variants").
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def softmin(values: np.ndarray, gamma: float) -> tuple[float, np.ndarray]:
    """``-gamma * log(sum(exp(-values / gamma)))`` and its gradient (weights summing to one).

    +inf entries drop out; all +inf gives (+inf, zeros). ``gamma == 0``: the minimum and the
    one-hot of its FIRST occurrence, so callers list the arguments in the tie order.
    """
    values = np.asarray(values, dtype=np.float64)
    lo = values.min()
    if np.isinf(lo):
        return np.inf, np.zeros_like(values)
    if gamma == 0:
        weights = np.zeros_like(values)
        weights[np.argmin(values)] = 1.0
        return lo, weights
    z = np.exp(-(values - lo) / gamma)
    total = z.sum()
    return lo - gamma * np.log(total), z / total


def smooth(cost: np.ndarray, smoothing: float) -> tuple[np.ndarray, np.ndarray]:
    """D[i,j] = C[i,j] + softmin_s(C[i,j-1], C[i-1,j], C[i-1,j-1]); at (0,0) the neighbours are 0.

    Returns D (n, m) and the softmin weights (n, m, 3) on (left, up, diagonal). ``smoothing=0``:
    the hard minimum, ties to the first of (left, up, diagonal); D[0, 0] = C[0, 0].
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


def predecessors(table: np.ndarray, p: int, q: int) -> np.ndarray:
    """R of (p, q)'s predecessors in the tie order: diagonal (p-1, q-1), up (p-1, q), left (p, q-1).

    R's row 0 is the start row: it enters the first grid row diagonally only (its "up" is +inf),
    so an open begin (all of row 0 zero) counts each start cell once.
    """
    up = table[p - 1, q] if p > 1 else np.inf
    return np.array([table[p - 1, q - 1], up, table[p, q - 1]])


def soft_dtw_table(
    grid: np.ndarray, gamma: float, band: np.ndarray | None = None, open_begin: bool = False
) -> np.ndarray:
    """R of shape (P+1, Q+1); the soft-DTW value is R[P, Q]. Cells outside `band` stay +inf.

    `open_begin`: a path may start at any cell of the first grid row (R[0, :] = 0).
    """
    rows, cols = grid.shape
    table = np.full((rows + 1, cols + 1), np.inf)
    table[0, 0] = 0.0
    if open_begin:
        table[0, :] = 0.0
    for p in range(1, rows + 1):
        for q in range(1, cols + 1):
            if band is not None and not band[p - 1, q - 1]:
                continue
            table[p, q] = grid[p - 1, q - 1] + softmin(predecessors(table, p, q), gamma)[0]
    return table


def end_value(table: np.ndarray, gamma: float, open_end: bool = False) -> tuple[float, np.ndarray]:
    """The value and its weights on R's last row R[P, 1:]: R[P, Q], or (`open_end`) the row's softmin.

    With gamma = 0 an open end takes the first (smallest-column) minimum of the last row.
    """
    last = table[-1, 1:]
    if open_end:
        return softmin(last, gamma)
    weights = np.zeros_like(last)
    weights[-1] = 1.0
    return last[-1], weights


def soft_dtw_grad(grid: np.ndarray, table: np.ndarray, gamma: float, open_end: bool = False) -> np.ndarray:
    """d value / d grid (the expected alignment), by the backward recursion on R.

    P(s came from (p, q)) is the weight of R[p, q] in the softmin of s's predecessors,
    recomputed from them (min-shifted): the textbook form exp((R[s] - W[s] - R[p, q]) / gamma)
    subtracts huge numbers and gives NaN for costs of 1e30 (the kernels keep these weights too).
    With gamma = 0 the weights are one-hot (tie rule), so this is the indicator of the optimal path.
    """
    rows, cols = grid.shape
    expected = np.zeros((rows + 2, cols + 2))
    expected[rows, 1 : cols + 1] = end_value(table, gamma, open_end)[1]
    for p in range(rows, 0, -1):
        for q in range(cols, 0, -1):
            total = 0.0
            # successors (p+1, q), (p, q+1), (p+1, q+1) and where (p, q) sits among their predecessors
            for sp, sq, slot in ((p + 1, q, 1), (p, q + 1, 2), (p + 1, q + 1, 0)):
                if sp <= rows and sq <= cols and expected[sp, sq] != 0.0:
                    _, weights = softmin(predecessors(table, sp, sq), gamma)
                    total += expected[sp, sq] * weights[slot]
            expected[p, q] += total
    return expected[1 : rows + 1, 1 : cols + 1]


def _grids(cost: np.ndarray, gamma: float, smoothing: float | None, threshold: float | None,
           bandwidth: float | None, open_begin: bool, open_end: bool):
    """Checks the variant, then D, the smoothing weights, W and the rows [top, bottom) of W a path walks.

    On the weak grid an open begin drops W's null row 0 and an open end its null row 2n: the
    path starts / ends in the first / last cost row (docs/semantics.md, "Variants").
    """
    if gamma < 0 or (smoothing is not None and smoothing < 0):
        raise ValueError(f"gamma and smoothing must be >= 0, got {gamma} and {smoothing}")
    if bandwidth is not None and (open_begin or open_end):
        raise ValueError("open_begin/open_end cannot be combined with a band (bandwidth): the band follows the "
                         "diagonal from the first to the last cell, which an open path need not touch")
    cost = np.asarray(cost, dtype=np.float64)
    smoothed, weights = (cost, None) if smoothing is None else smooth(cost, smoothing)
    grid = smoothed if threshold is None else weak_grid(smoothed, threshold)
    weak = threshold is not None
    top, bottom = int(weak and open_begin), grid.shape[0] - int(weak and open_end)
    return smoothed, weights, grid, top, bottom


def _table(grid: np.ndarray, gamma: float, threshold: float | None, bandwidth: float | None,
           open_begin: bool) -> np.ndarray:
    grid_bandwidth = None if bandwidth is None else bandwidth * (1 if threshold is None else 2)
    return soft_dtw_table(grid, gamma, band_mask(*grid.shape, grid_bandwidth), open_begin)


def align_one(
    cost: np.ndarray, gamma: float, smoothing: float | None, threshold: float | None,
    bandwidth: float | None = None, *, open_begin: bool = False, open_end: bool = False,
) -> tuple[float, np.ndarray]:
    """Value and d value / d cost for one (n, m) cost matrix.

    `bandwidth` is in sequence elements: two grid cells each on the weak grid. ``gamma=0``: exact
    DTW, the gradient the indicator of the optimal path (tie rule); ``smoothing=0``: hard smoothing.
    """
    _, weights, grid, top, bottom = _grids(cost, gamma, smoothing, threshold, bandwidth, open_begin, open_end)
    walked = grid[top:bottom]
    table = _table(walked, gamma, threshold, bandwidth, open_begin)
    value = end_value(table, gamma, open_end)[0]
    expected = np.zeros_like(grid)
    expected[top:bottom] = soft_dtw_grad(walked, table, gamma, open_end)
    grad_smoothed = expected if threshold is None else expected[1::2, 1::2]
    if weights is None:
        return value, grad_smoothed
    grad = grad_smoothed.copy()
    grad[:, :-1] += grad_smoothed[:, 1:] * weights[:, 1:, 0]  # C[i, j] is the left neighbour of (i, j+1)
    grad[:-1, :] += grad_smoothed[1:, :] * weights[1:, :, 1]  # ... the upper neighbour of (i+1, j)
    grad[:-1, :-1] += grad_smoothed[1:, 1:] * weights[1:, 1:, 2]  # ... the diagonal one of (i+1, j+1)
    return value, grad


class Path(NamedTuple):
    """The exact-DTW (gamma = 0) optimal path of one pair."""

    value: float
    cells: np.ndarray  # (L, 2) int64: the cost cells (i, j) walked, in path order (L = 0 is possible on W)
    grid_cells: np.ndarray  # (L_W, 2) int64: every grid cell walked (W's (p, q) on the weak grid)
    x_skipped: np.ndarray | None  # (n,) int64: null cells walked in x_i's row of W (weak grid only)
    y_skipped: np.ndarray | None  # (m,) int64: null cells walked in y_j's column of W (weak grid only)


def optimal_path(
    cost: np.ndarray, smoothing: float | None, threshold: float | None, bandwidth: float | None = None,
    *, open_begin: bool = False, open_end: bool = False,
) -> Path:
    """The gamma = 0 path of one (n, m) cost: backtracking from the end by the tie rule.

    Its indicator is align_one(..., gamma=0)'s d value / d D (docs/semantics.md, "Variants").
    """
    _, _, grid, top, bottom = _grids(cost, 0.0, smoothing, threshold, bandwidth, open_begin, open_end)
    table = _table(grid[top:bottom], 0.0, threshold, bandwidth, open_begin)
    value, end = end_value(table, 0.0, open_end)
    if not np.isfinite(value):
        raise ValueError("no monotone path reaches the last cell inside the band")
    p, q = table.shape[0] - 1, 1 + int(np.argmax(end))
    walked = []
    while p > 0:  # reaching R's row 0 is the start
        walked.append((p - 1 + top, q - 1))
        step = int(np.argmin(predecessors(table, p, q)))  # first minimum: diagonal, up, left
        p, q = (p - 1, q - 1) if step == 0 else (p - 1, q) if step == 1 else (p, q - 1)
    grid_cells = np.array(walked[::-1], dtype=np.int64).reshape(-1, 2)
    if threshold is None:
        return Path(value, grid_cells, grid_cells, None, None)
    rows, cols = grid_cells[:, 0], grid_cells[:, 1]
    n, m = np.shape(cost)
    real = (rows % 2 == 1) & (cols % 2 == 1)
    x_null = (rows % 2 == 1) & (cols % 2 == 0)
    y_null = (rows % 2 == 0) & (cols % 2 == 1)
    return Path(
        value,
        np.stack([rows[real] // 2, cols[real] // 2], axis=1),
        grid_cells,
        np.bincount(rows[x_null] // 2, minlength=n),
        np.bincount(cols[y_null] // 2, minlength=m),
    )


def align(
    cost: np.ndarray,
    pair_n: np.ndarray,
    pair_m: np.ndarray,
    gamma: float,
    smoothing: float | None,
    threshold: float | None,
    bandwidth: float | None = None,
    *,
    open_begin: bool = False,
    open_end: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Batched: cost (B, N, M); pair b uses cost[b, :pair_n[b], :pair_m[b]].

    Returns value (B,) and grad (B, N, M), zero outside each pair's lengths.
    """
    cost = np.asarray(cost, dtype=np.float64)
    value = np.empty(cost.shape[0])
    grad = np.zeros_like(cost)
    for b in range(cost.shape[0]):
        n, m = int(pair_n[b]), int(pair_m[b])
        value[b], grad[b, :n, :m] = align_one(cost[b, :n, :m], gamma, smoothing, threshold, bandwidth,
                                              open_begin=open_begin, open_end=open_end)
    return value, grad


def paths(
    cost: np.ndarray, pair_n: np.ndarray, pair_m: np.ndarray, smoothing: float | None, threshold: float | None,
    bandwidth: float | None = None, *, open_begin: bool = False, open_end: bool = False,
) -> list[Path]:
    """Batched :func:`optimal_path`: pair b's path on cost[b, :pair_n[b], :pair_m[b]]."""
    return [
        optimal_path(np.asarray(cost, dtype=np.float64)[b, : int(pair_n[b]), : int(pair_m[b])], smoothing, threshold,
                     bandwidth, open_begin=open_begin, open_end=open_end)
        for b in range(np.shape(cost)[0])
    ]
