"""Numba CPU fallback of the S2DTW / soft-DTW kernel.

A line-by-line port of the C++ CPU kernel (``csrc/cpu/s2dtw_cpu.cpp``, per-cell
math from ``csrc/s2dtw_cell.h``), used when the compiled module is missing:
the recursion over the implicit grid W runs in float64 with two rolling rows,
the gradient replays a tape of transition weights kept in the input's dtype,
and pairs are spread over threads in chunks that each own one workspace.
"""

from __future__ import annotations

import math
import os
import types

import numba
import numpy as np
from numba import njit, prange

from . import _band
from ._problem import LN3, Problem

# The band rule and grid size are _band.py's, compiled here (inlined into the kernel).
band_width = njit(inline="always")(_band.band_width)
band_columns = njit(inline="always")(_band.band_columns)
grid_extent = njit(inline="always")(_band.grid_extent)


@njit(inline="always")
def softmin3(a, b, c, gamma, inv_gamma):
    """softmin_gamma(a, b, c) and its weights d/d(a, b, c), min-shifted; +inf drops out.

    gamma = 0: the minimum, and the one-hot weights of its FIRST argument (the tie rule, csrc/s2dtw_cell.h).
    """
    lo = min(a, b, c)
    if lo == math.inf:
        return lo, 0.0, 0.0, 0.0
    if gamma == 0.0:
        if a == lo:
            return lo, 1.0, 0.0, 0.0
        if b == lo:
            return lo, 0.0, 1.0, 0.0
        return lo, 0.0, 0.0, 1.0
    ea = math.exp((lo - a) * inv_gamma)
    eb = math.exp((lo - b) * inv_gamma)
    ec = math.exp((lo - c) * inv_gamma)
    total = ea + eb + ec
    inv = 1.0 / total
    return lo - gamma * math.log(total), ea * inv, eb * inv, ec * inv


@njit(inline="always")
def reciprocal(t):
    """1 / t, and 0 for the hard minimum t = 0 (whose softmin never uses it)."""
    return 1.0 / t if t > 0.0 else 0.0


@njit(inline="always")
def softmin_row(values, start, count, gamma, weights):
    """softmin_gamma of values[start : start + count], its weights into weights[:count] (the open end)."""
    lo = math.inf
    first = 0
    for k in range(count):
        if values[start + k] < lo:
            lo, first = values[start + k], k
    weights[:count] = 0.0
    if lo == math.inf:
        return lo
    if gamma == 0.0:
        weights[first] = 1.0
        return lo
    total = 0.0
    for k in range(count):
        weights[k] = math.exp((lo - values[start + k]) / gamma)
        total += weights[k]
    for k in range(count):
        weights[k] /= total
    return lo - gamma * math.log(total)


@njit(inline="always")
def cost_at(cost, base, stride_i, stride_j, i, j):
    return np.float64(cost[base + i * stride_i + j * stride_j])


@njit(inline="always")
def smoothed_cost(cost, base, stride_i, stride_j, i, j, smooth, smoothing):
    """D[i, j] and dD[i, j] / d(C[i, j-1], C[i-1, j], C[i-1, j-1])."""
    c = cost_at(cost, base, stride_i, stride_j, i, j)
    if not smooth:
        return c, 0.0, 0.0, 0.0
    if i == 0 and j == 0:
        return c - smoothing * LN3, 0.0, 0.0, 0.0  # softmin_s(0, 0, 0); constants, no gradient
    left = cost_at(cost, base, stride_i, stride_j, i, j - 1) if j > 0 else math.inf
    up = cost_at(cost, base, stride_i, stride_j, i - 1, j) if i > 0 else math.inf
    diag = cost_at(cost, base, stride_i, stride_j, i - 1, j - 1) if i > 0 and j > 0 else math.inf
    soft, w_left, w_up, w_diag = softmin3(left, up, diag, smoothing, reciprocal(smoothing))
    return c + soft, w_left, w_up, w_diag


@njit(inline="always")
def is_cost_cell(weak, p, q):
    return not weak or ((p & 1) == 1 and (q & 1) == 1)


@njit(inline="always")
def cost_index(weak, p):
    return p >> 1 if weak else p


@njit(inline="always")
def grid_cell(cost, base, stride_i, stride_j, p, q, smooth, smoothing, weak, threshold):
    """Cell (p, q) of the grid W: D on cost cells, the threshold elsewhere."""
    if not is_cost_cell(weak, p, q):
        return threshold
    i, j = cost_index(weak, p), cost_index(weak, q)
    return smoothed_cost(cost, base, stride_i, stride_j, i, j, smooth, smoothing)[0]


def _kernel(cost, value, grad, with_grad, pair_n, pair_m, slots, pairs_per_x, padded_n, padded_m, stride_x,
            stride_y, stride_i, stride_j, gamma, smooth, smoothing, weak, threshold, banded, bandwidth, open_begin,
            open_end, n_chunks):
    # slots: Layout.slot_numbers(); pairs_per_x .. stride_j: Layout.ints(), in its fields' order; then Params,
    # each optional one as a flag and a value (run() unpacks the Problem).
    n_pairs = value.shape[0]
    inv_gamma = reciprocal(gamma)
    big_p, big_q = grid_extent(weak, padded_n), grid_extent(weak, padded_m)
    for chunk in prange(n_chunks):
        rows = np.empty(2 * (big_q + 1), np.float64)
        tape = np.empty(2 * big_p * big_q if with_grad else 0, cost.dtype)
        ends = np.empty(big_q, np.float64)  # the open end's softmin weights over the last row
        for b in range(chunk, n_pairs, n_chunks):
            base = (slots[b] // pairs_per_x) * stride_x + (slots[b] % pairs_per_x) * stride_y
            P, Q = grid_extent(weak, pair_n[b]), grid_extent(weak, pair_m[b])
            # The rows [top, bottom) walked: on the weak grid an open begin / end skips null row 0 / 2n
            # (docs/semantics.md, "Variants" V4).
            top = 1 if weak and open_begin else 0
            bottom = P - 1 if weak and open_end else P

            # Forward: R over W, two rows (+inf outside the band); the tape keeps
            # d softmin / d(R diagonal, R above). R's row 0 is 0 at the start cell, at every column for an
            # open begin, and enters the first walked row diagonally only (its "up" is +inf).
            above, here = 0, Q + 1
            rows[:2 * (Q + 1)] = math.inf
            rows[0] = 0.0
            if open_begin:
                rows[:Q + 1] = 0.0
            width = band_width(weak, banded, bandwidth, P, Q)
            for p in range(top, bottom):
                lo, hi = band_columns(P, Q, width, p)
                rows[here + lo] = math.inf
                for q in range(lo, hi + 1):
                    up = rows[above + q + 1] if p > top else math.inf
                    soft, w_diag, w_up, _ = softmin3(rows[above + q], up, rows[here + q], gamma, inv_gamma)
                    cell = grid_cell(cost, base, stride_i, stride_j, p, q, smooth, smoothing, weak, threshold)
                    rows[here + q + 1] = cell + soft
                    if with_grad:
                        tape[2 * (p * Q + q)] = w_diag
                        tape[2 * (p * Q + q) + 1] = w_up
                above, here = here, above
            if open_end:
                value[b] = softmin_row(rows, above + 1, Q, gamma, ends)
            else:
                value[b] = rows[above + Q]
            if not with_grad:
                continue

            for i in range(padded_n):
                for j in range(padded_m):
                    grad[base + i * stride_i + j * stride_j] = 0

            # Backward: E = d value / d W from the bottom-right corner, two rows; each cost cell's E
            # goes into the gradient, through the smoothing weights when smoothing.
            # The last row starts at the end's weights: one-hot at its last cell, the softmin's for an open end.
            below, here = 0, Q + 1
            for p in range(bottom - 1, top - 1, -1):
                lo, hi = band_columns(P, Q, width, p)
                next_lo, next_hi = band_columns(P, Q, width, p + 1) if p + 1 < bottom else (1, 0)
                for q in range(hi, lo - 1, -1):
                    e = 0.0
                    if p == bottom - 1:
                        e = ends[q] if open_end else (1.0 if q == Q - 1 else 0.0)
                    if next_lo <= q <= next_hi:
                        e += rows[below + q] * np.float64(tape[2 * ((p + 1) * Q + q) + 1])
                    if next_lo <= q + 1 <= next_hi:
                        e += rows[below + q + 1] * np.float64(tape[2 * ((p + 1) * Q + q + 1)])
                    if q + 1 <= hi:
                        t = 2 * (p * Q + q + 1)
                        from_left = 1.0 - np.float64(tape[t]) - np.float64(tape[t + 1])
                        e += rows[here + q + 1] * max(from_left, 0.0)
                    rows[here + q] = e
                    if e == 0.0 or not is_cost_cell(weak, p, q):
                        continue
                    i, j = cost_index(weak, p), cost_index(weak, q)
                    at = base + i * stride_i + j * stride_j
                    grad[at] += grad.dtype.type(e)
                    if smooth:
                        _, w_left, w_up, w_diag = smoothed_cost(cost, base, stride_i, stride_j, i, j, smooth,
                                                                smoothing)
                        if j > 0:
                            grad[at - stride_j] += grad.dtype.type(e * w_left)
                        if i > 0:
                            grad[at - stride_i] += grad.dtype.type(e * w_up)
                        if i > 0 and j > 0:
                            grad[at - stride_i - stride_j] += grad.dtype.type(e * w_diag)
                below, here = here, below


# The parallel kernel, and the same code compiled without threads (prange runs as range) for one
# thread or a forked child: a parallel numba region in a child of a process that already used GNU
# OpenMP aborts it ("fork() called from a process already using GNU OpenMP"), even at one thread.
def _compiled(name: str, **options) -> numba.core.registry.CPUDispatcher:
    """`_kernel` compiled under its own name: numba's on-disk cache tells functions apart by name, not options."""
    copy = types.FunctionType(_kernel.__code__, _kernel.__globals__, name)
    copy.__qualname__ = name
    return njit(cache=True, **options)(copy)


_parallel_kernel = _compiled("_parallel_kernel", parallel=True)
_serial_kernel = _compiled("_serial_kernel")
_forked = False


def _mark_forked() -> None:
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_mark_forked)


def run(cost: np.ndarray, value: np.ndarray, grad: np.ndarray | None, problem: Problem, num_threads: int) -> None:
    """Soft-DTW values (and gradients) of every pair of `problem` in a flat cost buffer.

    ``cost`` is 1-D (float32 or float64), laid out as ``problem.layout`` says; ``value`` (n_pairs,)
    receives the values; ``grad`` (None or laid out like ``cost``) receives d value / d cost, 0 on each
    region's padding. Runs on up to ``num_threads`` threads.
    """
    layout, params = problem.layout, problem.params
    if layout.n_pairs == 0:
        return
    with_grad = grad is not None
    if grad is None:
        grad = np.empty(0, cost.dtype)
    n_chunks = 1 if _forked else max(1, min(int(num_threads), layout.n_pairs))
    optional = [(v is not None, 0.0 if v is None else float(v))
                for v in (params.smoothing, params.threshold, params.bandwidth)]
    args = (cost, value, grad, with_grad, layout.pair_n.numpy(), layout.pair_m.numpy(), layout.slot_numbers().numpy(),
            *map(int, layout.ints()), float(params.gamma), *(x for pair in optional for x in pair),
            bool(params.open_begin), bool(params.open_end), n_chunks)
    if n_chunks == 1:
        _serial_kernel(*args)
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(min(n_chunks, numba.config.NUMBA_NUM_THREADS))
    try:
        _parallel_kernel(*args)
    finally:
        numba.set_num_threads(previous)
