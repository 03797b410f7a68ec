"""Cost matrices built with torch ops, so that autograd reaches the sequences."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ._validation import METRICS, check_cost

Metric = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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

