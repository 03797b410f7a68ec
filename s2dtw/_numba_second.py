"""Numba port of the CPU second-order kernel (``csrc/cpu/second_order.cpp``): Hessian-vector products.

Per pair, the forward recursion of R over the walked grid carries dot R (kept for every cell) and
the tape of transition weights; the backward sweep pushes E and dot E from each cell to its
predecessors and sends each cost cell's (E, dot E) through the smoothing into H·Z
(docs/semantics.md, "Second order"). float64 throughout, one thread; the per-cell math is s2dtw._numba's.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._numba import band_columns, band_width, cost_at, grid_extent, is_cost_cell, smoothed_cost, softmin3
from ._problem import Problem


@njit(inline="always")
def _direction(z, base, stride_i, stride_j, i, j):
    return cost_at(z, base, stride_i, stride_j, i, j) if i >= 0 and j >= 0 else 0.0


@njit(inline="always")
def _cell(cost, z, base, si, sj, p, q, smooth, smoothing, weak, threshold):
    """Grid cell (p, q): (is a cost cell, i, j, W, dot W, w_left, w_up, w_diag)."""
    if not is_cost_cell(weak, p, q):
        return False, 0, 0, threshold, 0.0, 0.0, 0.0, 0.0
    i, j = (p >> 1, q >> 1) if weak else (p, q)
    value, wl, wu, wd = smoothed_cost(cost, base, si, sj, i, j, smooth, smoothing)
    tangent = (_direction(z, base, si, sj, i, j) + wl * _direction(z, base, si, sj, i, j - 1)
               + wu * _direction(z, base, si, sj, i - 1, j) + wd * _direction(z, base, si, sj, i - 1, j - 1))
    return True, i, j, value, tangent, wl, wu, wd


@njit(inline="always")
def _smoothing_product(product, z, base, si, sj, m, i, j, e, de, tangent, wl, wu, wd, smoothing):
    """(G, dot G) of cost cell (i, j) into H·Z through its smoothing neighbours (left, up, diagonal)."""
    mean = tangent - _direction(z, base, si, sj, i, j)
    for a, b, w in ((i, j - 1, wl), (i - 1, j, wu), (i - 1, j - 1, wd)):
        if a >= 0 and b >= 0:
            w_dot = -w / smoothing * (_direction(z, base, si, sj, a, b) - mean)
            product[a * m + b] += de * w + e * w_dot


# One thread (speed is not this fallback's aim): no parallel build, which a forked child could not run
# (see s2dtw._numba), and one compilation.
@njit(cache=True)
def _kernel(cost, z, out, pair_n, pair_m, slots, pairs_per_x, padded_n, padded_m, stride_x, stride_y, si, sj,
            gamma, smooth, smoothing, weak, threshold, banded, bandwidth, open_begin, open_end, unreached):
    n_pairs = pair_n.shape[0]
    inv_gamma = 1.0 / gamma
    big_p, big_q = grid_extent(weak, padded_n), grid_extent(weak, padded_m)
    rows = np.empty(4 * (big_q + 1))
    tape = np.empty(2 * big_p * big_q)
    tangent = np.empty((big_p + 1) * (big_q + 1))
    product = np.empty(padded_n * padded_m)
    for b in range(n_pairs):
        base = (slots[b] // pairs_per_x) * stride_x + (slots[b] % pairs_per_x) * stride_y
        top = 1 if weak and open_begin else 0
        P = grid_extent(weak, pair_n[b]) - top - (1 if weak and open_end else 0)
        Q = grid_extent(weak, pair_m[b])
        S = Q + 1
        width = band_width(weak, banded, bandwidth, P, Q)

        # Forward: R in two rows, dot R for every cell (R's indexing), the tape.
        above, here = 0, S
        rows[: 2 * S] = math.inf
        rows[: S if open_begin else 1] = 0.0
        tangent[: (P + 1) * S] = 0.0
        for p in range(P):
            lo, hi = band_columns(P, Q, width, p)
            rows[here + lo] = math.inf
            for q in range(lo, hi + 1):
                up = math.inf if p == 0 else rows[above + q + 1]  # row 0 enters diagonally only
                soft, w_diag, w_up, _ = softmin3(rows[above + q], up, rows[here + q], gamma, inv_gamma)
                _, _, _, value, dot_w, _, _, _ = _cell(cost, z, base, si, sj, top + p, q, smooth, smoothing,
                                                       weak, threshold)
                rows[here + q + 1] = value + soft
                tape[2 * (p * Q + q)] = w_diag
                tape[2 * (p * Q + q) + 1] = w_up
                w_left = max(1.0 - w_diag - w_up, 0.0)
                if soft != math.inf:
                    tangent[(p + 1) * S + q + 1] = (dot_w + w_diag * tangent[p * S + q]
                                                    + w_up * tangent[p * S + q + 1]
                                                    + w_left * tangent[(p + 1) * S + q])
            above, here = here, above
        last = above

        # The end: E[P, Q] = 1, or an open end's softmin weights over the last row and their tangents.
        e_here, e_above, d_here, d_above = 0, S, 2 * S, 3 * S  # the forward's rows are done with
        ends = rows[last + 1: last + 1 + Q].copy()
        rows[e_here: e_here + Q] = 0.0
        rows[d_here: d_here + Q] = 0.0
        lowest = ends.min() if open_end else ends[Q - 1]
        if lowest == math.inf:
            unreached[0] = b
            continue
        if open_end:
            weights = np.exp((lowest - ends) * inv_gamma)
            weights /= weights.sum()
            t_last = tangent[P * S + 1: P * S + 1 + Q]
            rows[e_here: e_here + Q] = weights
            rows[d_here: d_here + Q] = -weights * inv_gamma * (t_last - np.sum(weights * t_last))
        else:
            rows[e_here + Q - 1] = 1.0

        # Backward: each cell pushes E and dot E to its predecessors (push form of the oracle).
        product[:] = 0.0
        for p in range(P - 1, -1, -1):
            rows[e_above: e_above + Q] = 0.0
            rows[d_above: d_above + Q] = 0.0
            lo, hi = band_columns(P, Q, width, p)
            for q in range(hi, lo - 1, -1):
                e, de = rows[e_here + q], rows[d_here + q]
                if e == 0.0 and de == 0.0:
                    continue
                is_cost, i, j, _, dot_w, wl, wu, wd = _cell(cost, z, base, si, sj, top + p, q, smooth,
                                                            smoothing, weak, threshold)
                if is_cost:
                    product[i * padded_m + j] += de
                    if smooth:
                        _smoothing_product(product, z, base, si, sj, padded_m, i, j, e, de, dot_w, wl, wu,
                                           wd, smoothing)
                pd, pu = tape[2 * (p * Q + q)], tape[2 * (p * Q + q) + 1]
                mean = tangent[(p + 1) * S + q + 1] - dot_w
                if q > 0:
                    pl = max(1.0 - pd - pu, 0.0)
                    rows[e_here + q - 1] += pl * e
                    rows[d_here + q - 1] += pl * (de - inv_gamma * (tangent[(p + 1) * S + q] - mean) * e)
                if p > 0:  # grid row 0's predecessors are the start row
                    if q > 0:
                        rows[e_above + q - 1] += pd * e
                        rows[d_above + q - 1] += pd * (de - inv_gamma * (tangent[p * S + q] - mean) * e)
                    rows[e_above + q] += pu * e
                    rows[d_above + q] += pu * (de - inv_gamma * (tangent[p * S + q + 1] - mean) * e)
            e_here, e_above = e_above, e_here
            d_here, d_above = d_above, d_here
        n, m = pair_n[b], pair_m[b]
        for i in range(padded_n):
            for j in range(padded_m):
                out[base + i * si + j * sj] = product[i * padded_m + j] if i < n and j < m else 0.0


def hvp(cost: np.ndarray, direction: np.ndarray, out: np.ndarray, problem: Problem) -> None:
    """H·Z of every pair of `problem` into `out`; the three 1-D buffers are laid out as ``problem.layout``
    says (float32 or float64, computed in float64). Raises ValueError for gamma == 0, smoothing == 0, or a
    pair whose end no monotone path reaches."""
    layout, params = problem.layout, problem.params
    params.check_second_order()
    if layout.n_pairs == 0:
        return
    optional = [(v is not None, 0.0 if v is None else float(v))
                for v in (params.smoothing, params.threshold, params.bandwidth)]
    # float64 in and out (one compiled specialisation; the recursion is float64 anyway)
    result = out if out.dtype == np.float64 else np.zeros(out.shape)  # zero where no pair is
    cost, direction = cost.astype(np.float64, copy=False), direction.astype(np.float64, copy=False)
    unreached = np.full(1, -1, np.int64)
    _kernel(cost, direction, result, layout.pair_n.numpy(), layout.pair_m.numpy(), layout.slot_numbers().numpy(),
            *map(int, layout.ints()), float(params.gamma), *(x for pair in optional for x in pair), params.open_begin,
            params.open_end, unreached)
    if result is not out:
        out[:] = result
    if unreached[0] >= 0:
        raise ValueError(f"s2dtw: second order: no monotone path reaches the last cell of pair {unreached[0]} "
                         "inside the band")
