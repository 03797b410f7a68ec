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


def symmetric_cost(x: torch.Tensor, metric: str) -> torch.Tensor:
    """The (B*N, B*N) cost of every sequence of x (B, N, d) against every other for a built-in metric, right on
    the regions (i, j) with i <= j only (the symmetric pairwise(x) reads no other), in the compute dtype and
    checked finite. Its dot products are `_UpperGram`'s: about half the all-pairs GEMM, forward and backward."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS} or a callable, got {metric!r}")
    batch, n, d = x.shape
    rows = x.to(compute_dtype(x.dtype)).reshape(batch * n, d)
    if metric == "neg_cosine":
        rows = F.normalize(rows, dim=-1)
    groups = max(1, min(batch, batch * n // MIN_GROUP_ROWS))
    cost = _UpperGram.apply(rows, -(-batch // groups) * n, -2.0 if metric == "sqeuclidean" else -1.0)
    if metric == "sqeuclidean":  # |x_i|^2 + |x_j|^2 - 2<x_i, x_j>
        squared = rows.pow(2).sum(-1)
        cost = (cost + squared.unsqueeze(1) + squared).clamp_min(0)
    return check_cost(cost.unsqueeze(0)).squeeze(0)


class _UpperGram(torch.autograd.Function):
    """scale * x x^T on its block-upper triangle: for x (R, d) cut into groups of `rows` rows, block (a, b) is
    scale * x[a] x[b]^T for a <= b and 0 below. With g groups, forward and backward do (g + 1) / (2g) of the
    full product's multiply-adds, and only the blocks computed carry a gradient (no mask, no gather)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rows: int, scale: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.rows, ctx.scale = rows, scale
        gram = x.new_empty(x.shape[0], x.shape[0])
        for lo in range(0, x.shape[0], rows):
            gram[lo:lo + rows, :lo].zero_()
            gram[lo:lo + rows, lo:].addmm_(x[lo:lo + rows], x[lo:].T, beta=0, alpha=scale)  # beta=0: never read
        return gram

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        grad_x = torch.zeros_like(x)
        for lo in range(0, x.shape[0], ctx.rows):
            block = grad[lo:lo + ctx.rows, lo:]  # d / d (x[a] x[a:]^T): both factors are rows of x
            grad_x[lo:lo + ctx.rows].addmm_(block, x[lo:], alpha=ctx.scale)
            grad_x[lo:].addmm_(block.T, x[lo:lo + ctx.rows], alpha=ctx.scale)
        return grad_x, None, None
