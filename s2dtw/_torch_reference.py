"""The dense VT-TWINS construction with plain torch ops: docs/semantics.md written out, differentiable.

The fused kernels never build the (2N+1, 2M+1) weak-alignment grid; this module does, explicitly, as the
VT-TWINS training code does: the smoothed cost D from three shifted copies of the cost, the grid W with D on
its odd/odd cells, then soft-DTW on W. Autograd differentiates every step, so it is an independent check of
the kernels' hand-written backward, and it is the pipeline the benchmarks time the peer libraries on.
Works on any device and dtype; slow (a Python loop over anti-diagonals in :func:`soft_dtw`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def smoothed_cost(cost: torch.Tensor, smoothing: float | None) -> torch.Tensor:
    """D = C + softmin_smoothing(C[i, j-1], C[i-1, j], C[i-1, j-1]), (B, N, M) -> (B, N, M).

    Neighbours outside the matrix are +inf, and at (0, 0) all three are the constant 0, so that
    D[0, 0] = C[0, 0] - smoothing * ln 3. The origin's neighbours are set *before* the logsumexp, so no
    logsumexp ever sees three infinities (its gradient is NaN there) and +inf stands for "outside" exactly:
    a finite stand-in such as 1e4 would compete with real costs of that size. `smoothing=None` returns the
    cost itself, `smoothing=0` adds the neighbours' minimum.
    """
    if smoothing is None:
        return cost
    _, n, m = cost.shape
    padded = F.pad(cost, (1, 0, 1, 0), value=float("inf"))
    neighbours = torch.stack([padded[:, 1:, :-1], padded[:, :-1, 1:], padded[:, :-1, :-1]])  # left, up, diagonal
    origin = torch.zeros(n, m, dtype=torch.bool, device=cost.device)
    origin[0, 0] = True
    neighbours = neighbours.masked_fill(origin, 0.0)
    if smoothing == 0:  # the hard minimum (docs/semantics.md, "Variants" V2): D[0, 0] = C[0, 0]
        return cost + neighbours.amin(0)
    return cost - smoothing * torch.logsumexp(-neighbours / smoothing, dim=0)


def weak_grid(smoothed: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """The weak-alignment grid W (B, 2N+1, 2M+1): D on odd/odd cells, `threshold` on the others.

    `threshold=None` returns D itself.
    """
    if threshold is None:
        return smoothed
    batch, n, m = smoothed.shape
    grid = smoothed.new_full((batch, 2 * n + 1, 2 * m + 1), float(threshold))
    grid[:, 1::2, 1::2] = smoothed
    return grid


def dense_grid(cost: torch.Tensor, smoothing: float | None, threshold: float | None) -> torch.Tensor:
    """The grid plain soft-DTW walks for S2DTW: ``weak_grid(smoothed_cost(cost, smoothing), threshold)``."""
    return weak_grid(smoothed_cost(cost, smoothing), threshold)


def soft_dtw(grid: torch.Tensor, gamma: float) -> torch.Tensor:
    """Plain soft-DTW value R[P, Q] of each (B, P, Q) grid -> (B,), one anti-diagonal of R at a time.

    Each diagonal of R is kept whole (indexed by the row p, +inf where a cell is a border of R or off the
    grid) and only its cells on the grid are computed, so every computed cell has a finite predecessor and
    autograd never meets a logsumexp of infinities.
    """
    batch, rows, cols = grid.shape
    inf = grid.new_full((batch, rows + 1), float("inf"))
    before = torch.cat([grid.new_zeros(batch, 1), inf[:, 1:]], dim=1)  # diagonal 0: R[0, 0] = 0
    last = inf  # diagonal 1: R[1, 0] = R[0, 1] = +inf
    for diagonal in range(2, rows + cols + 1):
        lo, hi = max(1, diagonal - cols), min(rows, diagonal - 1)  # rows p of the grid cells (p, diagonal - p)
        p = torch.arange(lo, hi + 1, device=grid.device)
        # predecessors of R[p, q]: R[p-1, q-1] (two diagonals back), R[p-1, q] and R[p, q-1] (one back)
        predecessors = torch.stack([before[:, lo - 1 : hi], last[:, lo - 1 : hi], last[:, lo : hi + 1]])
        cells = grid[:, p - 1, diagonal - p - 1] - gamma * torch.logsumexp(-predecessors / gamma, dim=0)
        before, last = last, torch.cat([inf[:, :lo], cells, inf[:, hi + 1 :]], dim=1)
    return last[:, rows]


def s2dtw(
    cost: torch.Tensor, gamma: float = 0.1, smoothing: float | None = 0.1, threshold: float | None = 0.5
) -> torch.Tensor:
    """S2DTW values (B,) of equal-length pairs from their cost (B, N, M), no band: the dense construction."""
    return soft_dtw(dense_grid(cost, smoothing, threshold), gamma)
