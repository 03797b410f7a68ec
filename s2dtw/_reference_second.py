"""Pure-NumPy float64 oracle for second order: Hessian-vector products of the value w.r.t. the cost.

``H Z = d/dt [d value / d C](C + t Z)`` at t = 0, by the second dynamic programme of Mensch &
Blondel (ICML 2018): a forward pass of the tangent of R along the forward's transition weights,
then one backward pass of E and its tangent, extended through the local smoothing and the weak
grid exactly as docs/semantics.md ("Second order") writes it. Loops on purpose: obviously
correct, slow, never used for speed. First-order pieces (D, its weights, W, the band, R) are
:mod:`s2dtw._reference`'s own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from s2dtw import _reference

if TYPE_CHECKING:
    from s2dtw._problem import Layout, Params


def _smoothing_edges(n: int, m: int):
    """(i, j, slot, a, b): cost cell (a, b) is (i, j)'s smoothing neighbour `slot` (left, up, diagonal)."""
    for i in range(n):
        for j in range(m):
            for slot, (a, b) in enumerate(((i, j - 1), (i - 1, j), (i - 1, j - 1))):
                if a >= 0 and b >= 0:
                    yield i, j, slot, a, b


def _smoothing_tangent(direction: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """dot D[i, j] = Z[i, j] + sum_l w_l(i, j) Z[neighbour l] (w = 0 at (0, 0): constant neighbours)."""
    out = direction.copy()
    for i, j, slot, a, b in _smoothing_edges(*direction.shape):
        out[i, j] += weights[i, j, slot] * direction[a, b]
    return out


def _smoothing_pullback(upstream: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The adjoint of dot D: out[a, b] = up[a, b] + sum over the (i, j) having (a, b) as neighbour of up[i, j] w."""
    out = upstream.copy()
    for i, j, slot, a, b in _smoothing_edges(*upstream.shape):
        out[a, b] += upstream[i, j] * weights[i, j, slot]
    return out


def _smoothing_curvature(first: np.ndarray, direction: np.ndarray, smoothed_direction: np.ndarray,
                         weights: np.ndarray, smoothing: float) -> np.ndarray:
    """sum over (i, j) of G[i, j] dot w_l(i, j) at neighbour l, dot w_l = -(w_l / s)(Z[nb l] - (dot D - Z)[i, j])."""
    out = np.zeros_like(first)
    mean = smoothed_direction - direction  # sum_r w_r(i, j) Z[neighbour r]
    for i, j, slot, a, b in _smoothing_edges(*first.shape):
        out[a, b] -= first[i, j] * weights[i, j, slot] / smoothing * (direction[a, b] - mean[i, j])
    return out


def _predecessor_cells(p: int, q: int) -> tuple[tuple[int, int], ...]:
    """R-table cells of (p, q)'s predecessors in the tie order of _reference.predecessors."""
    return (p - 1, q - 1), (p - 1, q), (p, q - 1)


def tangent_table(table: np.ndarray, grid_direction: np.ndarray, gamma: float) -> np.ndarray:
    """dot R (shape of R): dot R[p, q] = dot W[p-1, q-1] + sum_k pi_k(p, q) dot R[pred k]; 0 where R is +inf."""
    tangent = np.zeros_like(table)
    rows, cols = grid_direction.shape
    for p in range(1, rows + 1):
        for q in range(1, cols + 1):
            if not np.isfinite(table[p, q]):
                continue
            _, pi = _reference.softmin(_reference.predecessors(table, p, q), gamma)
            tangent[p, q] = grid_direction[p - 1, q - 1] + sum(
                pi[k] * tangent[cell] for k, cell in enumerate(_predecessor_cells(p, q)))
    return tangent


def end_seeds(table: np.ndarray, tangent: np.ndarray, gamma: float, open_end: bool) -> tuple[np.ndarray, np.ndarray]:
    """E and dot E on R's last row R[P, 1:]: (one-hot at Q, 0) for a closed end; an open end's
    softmin over the row gives its weights omega and their tangent -(omega / gamma)(dot R - <omega, dot R>)."""
    weights = _reference.end_value(table, gamma, open_end)[1]
    if not open_end:
        return weights, np.zeros_like(weights)
    last = tangent[-1, 1:]
    return weights, -weights / gamma * (last - np.sum(weights * last))


def expected_and_tangent(table: np.ndarray, tangent: np.ndarray, grid_direction: np.ndarray,
                         gamma: float, open_end: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """E = d value / d W and dot E = H_W dot W, in one backward sweep (shape of W each).

    Each cell t pushes to its predecessors a_k: E[a_k] += pi_k E[t] and dot E[a_k] += dot pi_k E[t]
    + pi_k dot E[t], with dot pi_k = -(pi_k / gamma)(dot R[a_k] - (dot R[t] - dot W[t])). Reverse
    row-major order finishes every cell's successors before the cell itself pushes. The last row
    starts at :func:`end_seeds`.
    """
    rows, cols = grid_direction.shape
    expected = np.zeros_like(table)
    expected_dot = np.zeros_like(table)
    expected[rows, 1:], expected_dot[rows, 1:] = end_seeds(table, tangent, gamma, open_end)
    for p in range(rows, 0, -1):
        for q in range(cols, 0, -1):
            if not np.isfinite(table[p, q]):
                continue
            _, pi = _reference.softmin(_reference.predecessors(table, p, q), gamma)
            mean = tangent[p, q] - grid_direction[p - 1, q - 1]  # = sum_k pi_k dot R[a_k]
            for k, cell in enumerate(_predecessor_cells(p, q)):
                pi_dot = -pi[k] / gamma * (tangent[cell] - mean)
                expected[cell] += pi[k] * expected[p, q]
                expected_dot[cell] += pi_dot * expected[p, q] + pi[k] * expected_dot[p, q]
    return expected[1:, 1:], expected_dot[1:, 1:]


def hvp(cost: np.ndarray, direction: np.ndarray, gamma: float, smoothing: float | None = None,
        threshold: float | None = None, bandwidth: float | None = None, *, open_begin: bool = False,
        open_end: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """Value, E = d value / d C and H Z = d E / d C applied to `direction`, for one pair.

    cost, direction: (n, m); returns (float, (n, m), (n, m)) in float64. `bandwidth` is in sequence
    elements and `open_begin` / `open_end` are as in _reference.align_one. Needs gamma > 0 and
    smoothing None or > 0 (the hard forms are piecewise linear: their Hessian is zero or undefined).
    """
    cost = np.asarray(cost, dtype=np.float64)
    direction = np.asarray(direction, dtype=np.float64)
    if direction.shape != cost.shape:
        raise ValueError(f"direction must have the cost's shape {cost.shape}, got {direction.shape}")
    if not gamma > 0 or (smoothing is not None and not smoothing > 0):
        raise ValueError(f"second order needs gamma > 0 and smoothing None or > 0, got {gamma} and {smoothing}")
    _, weights, grid, top, bottom = _reference._grids(cost, gamma, smoothing, threshold, bandwidth, open_begin,
                                                      open_end)
    table = _reference._table(grid[top:bottom], gamma, threshold, bandwidth, open_begin)
    value = _reference.end_value(table, gamma, open_end)[0]
    if not np.isfinite(value):
        raise ValueError("no monotone path reaches the last cell inside the band")
    smoothed_direction = direction if weights is None else _smoothing_tangent(direction, weights)
    grid_direction = smoothed_direction
    if threshold is not None:  # null cells are constants: no direction there
        grid_direction = np.zeros_like(grid)
        grid_direction[1::2, 1::2] = smoothed_direction
    tangent = tangent_table(table, grid_direction[top:bottom], gamma)
    expected, expected_dot = np.zeros_like(grid), np.zeros_like(grid)
    expected[top:bottom], expected_dot[top:bottom] = expected_and_tangent(table, tangent, grid_direction[top:bottom],
                                                                          gamma, open_end)
    if threshold is not None:
        expected, expected_dot = expected[1::2, 1::2], expected_dot[1::2, 1::2]
    if weights is None:
        return value, expected, expected_dot
    grad = _smoothing_pullback(expected, weights)
    curvature = _smoothing_curvature(expected, direction, smoothed_direction, weights, smoothing)
    product = _smoothing_pullback(expected_dot, weights) + curvature
    return value, grad, product


def run(cost: np.ndarray, direction: np.ndarray, out: np.ndarray, layout: Layout, params: Params) -> None:
    """:func:`hvp` of every pair of `layout` in flat buffers: `out` (laid out like `cost` and `direction`)
    receives H Z on each pair's padded region, zero outside its lengths."""
    strides = (layout.stride_i * cost.itemsize, layout.stride_j * cost.itemsize)

    def region(flat: np.ndarray, b: int, shape: tuple[int, int]) -> np.ndarray:
        return np.lib.stride_tricks.as_strided(flat[layout.offset(b):], shape=shape, strides=strides)

    for b in range(layout.n_pairs):
        n, m = int(layout.pair_n[b]), int(layout.pair_m[b])
        region(out, b, (layout.padded_n, layout.padded_m))[:] = 0
        region(out, b, (n, m))[:] = hvp(region(cost, b, (n, m)), region(direction, b, (n, m)), params.gamma,
                                        params.smoothing, params.threshold, params.bandwidth,
                                        open_begin=params.open_begin, open_end=params.open_end)[2]
