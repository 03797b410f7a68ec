"""Cost matrices built with torch ops, so that autograd reaches the sequences."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ._validation import METRICS, check_cost

Metric = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# symmetric_cost cuts x into groups of whole sequences, as many as keep this many rows each (GEMMs of fewer rows
# lose more speed than the products they save; benchmarks/pairwise_bench.py), at most one per sequence.
MIN_GROUP_ROWS = 128


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dynamic programme runs in float32 or float64; half inputs (and autocast's
    half-precision GEMMs) are computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def cost_matrix(x: torch.Tensor, y: torch.Tensor, metric: Metric) -> torch.Tensor:
    """C[b, i, j] = cost(x[b, i], y[b, j]) of shape (B, N, M), checked finite.

    ``neg_dot``: -<x_i, y_j> (the VT-TWINS cost); ``neg_cosine``: the same on
    L2-normalised rows; ``sqeuclidean``: ||x_i - y_j||^2; or a callable
    ``metric(x, y) -> (B, N, M)``. Finite inputs can still overflow (1e20 in float32):
    the check is on the cost the kernels will see.
    """
    shape = (x.shape[0], x.shape[1], y.shape[1])
    return check_cost(_metric(x, y, metric), shape)


def _metric(x: torch.Tensor, y: torch.Tensor, metric: Metric) -> torch.Tensor:
    if callable(metric):
        return metric(x, y)
    if metric == "neg_dot":
        return -torch.bmm(x, y.transpose(1, 2))
    if metric == "neg_cosine":
        return -torch.bmm(F.normalize(x, dim=-1), F.normalize(y, dim=-1).transpose(1, 2))
    if metric == "sqeuclidean":
        # |x|^2 + |y|^2 - 2<x, y>: one GEMM instead of a (B, N, M, d) difference tensor.
        squared = x.pow(2).sum(-1, keepdim=True) + y.pow(2).sum(-1).unsqueeze(1)
        return (squared - 2 * torch.bmm(x, y.transpose(1, 2))).clamp_min(0)
    raise ValueError(f"metric must be one of {METRICS} or a callable, got {metric!r}")


def symmetric_cost(x: torch.Tensor, metric: str, rows: torch.Tensor,
                   cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The cost of the pairs (rows[k], cols[k]), rows[k] <= cols[k], of the sequences of x (B, N, d) for a built-in
    metric, in the compute dtype and checked finite, and each pair's slot: its N x N region is that slot of the
    grid of N x N regions tiling the 2-d cost (Layout.in_grid). The cost is `_FoldedGram`'s: the block-upper
    triangle of the all-pairs cost, folded: about half the all-pairs GEMM (forward and backward) and memory."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS} or a callable, got {metric!r}")
    batch, n, d = x.shape
    flat = x.to(compute_dtype(x.dtype)).reshape(batch * n, d)
    if metric == "neg_cosine":
        flat = F.normalize(flat, dim=-1)
    groups = max(1, min(batch, batch * n // MIN_GROUP_ROWS))
    fold = _Fold(batch * n, -(-batch // groups) * n)
    if metric == "sqeuclidean":  # |x_i|^2 + |x_j|^2 - 2<x_i, x_j> = -2 <[x_i, |x_i|^2, 1], [x_j, -1/2, -|x_j|^2 / 2]>
        squared, ones = flat.pow(2).sum(-1, keepdim=True), flat.new_ones(batch * n, 1)
        left, right = torch.cat([flat, squared, ones], 1), torch.cat([flat, -ones / 2, -squared / 2], 1)
        cost = _FoldedGram.apply(left, right, fold, -2.0).clamp_min(0)
    else:
        cost = _FoldedGram.apply(flat, flat, fold, -1.0)
    return check_cost(cost.unsqueeze(0)).squeeze(0), fold.slots(rows, cols, n)


class _Fold:
    """Where _FoldedGram puts the block row of each group of `rows` rows of x (R rows; the last group may be
    shorter), group a's rows against x[lo_a:]: in band min(a, g - 1 - a) of `rows` buffer rows, the block rows
    of groups a and g - 1 - a side by side, the wider one left. Every band is then R + the last group's rows
    wide (the odd middle band less): no block below the triangle is stored."""

    def __init__(self, total: int, rows: int) -> None:
        self.total, self.rows = total, rows
        los = range(0, total, rows)
        g = len(los)
        # (lo, hi, buffer row, buffer column) of each group: its block row x[lo:hi] against x[lo:], at that corner
        self.blocks = [(lo, min(lo + rows, total), min(a, g - 1 - a) * rows,
                        0 if a <= g - 1 - a else total - los[-1 - a]) for a, lo in enumerate(los)]
        self.width = max(col + total - lo for lo, _, _, col in self.blocks)
        self.height = (g + 1) // 2 * rows

    def zero_uncovered(self, out: torch.Tensor) -> None:
        """Zero the cells of the buffer that no block row covers: right of the right (or only) block row of a
        band and below a short last group's."""
        g = len(self.blocks)
        for a, (lo, hi, row, col) in enumerate(self.blocks):
            if a >= g - 1 - a:  # the right (or the only) block row of its band
                out[row:row + hi - lo, col + self.total - lo:].zero_()
                out[row + hi - lo:row + self.rows, col:].zero_()

    def slots(self, rows: torch.Tensor, cols: torch.Tensor, n: int) -> torch.Tensor:
        """The slot of each pair (rows[k] <= cols[k]) of sequences of n rows: the number, row-major, of its n x n
        region in the grid of n x n regions that tiles the buffer (sequence j's column in the block row of i's
        group is j - the group's first sequence)."""
        per_group, per_row = self.rows // n, self.width // n
        start = []  # per sequence i: the slot of pair (i, j), less j
        for i in range(self.total // n):
            group = i // per_group
            row, col = self.blocks[group][2:]
            start.append((row // n + i - group * per_group) * per_row + col // n - group * per_group)
        return torch.tensor(start, device=rows.device)[rows] + cols


class _FoldedGram(torch.autograd.Function):
    """scale * a b^T on its block-upper triangle, folded (_Fold): group a's block row scale * a[lo:hi] b[lo:]^T at
    its corner of a (height, width) buffer, 0 in the cells no block covers. With g groups, forward and backward
    do (g + 1) / (2g) of the full product's multiply-adds, and only the blocks carry a gradient."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, fold: _Fold, scale: float) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        ctx.fold, ctx.scale, ctx.same = fold, scale, a is b
        out = a.new_empty(fold.height, fold.width)
        for lo, hi, row, col in fold.blocks:  # beta=0: the empty buffer is never read
            out[row:row + hi - lo, col:col + fold.total - lo].addmm_(a[lo:hi], b[lo:].T, beta=0, alpha=scale)
        fold.zero_uncovered(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        a, b = ctx.saved_tensors
        fold, scale = ctx.fold, ctx.scale
        grad_a = torch.zeros_like(a)
        grad_b = grad_a if ctx.same else torch.zeros_like(b)  # x x^T: both factors' gradients in one
        for lo, hi, row, col in fold.blocks:
            block = grad[row:row + hi - lo, col:col + fold.total - lo]
            grad_a[lo:hi].addmm_(block, b[lo:], alpha=scale)
            grad_b[lo:].addmm_(block.T, a[lo:hi], alpha=scale)
        return grad_a, None if ctx.same else grad_b, None, None
