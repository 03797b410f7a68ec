"""Functional API: S2DTW and soft-DTW values of a batch of pairs, differentiable."""

from __future__ import annotations

import torch

from . import _dispatch
from ._cost import Metric, cost_matrix
from ._dispatch import Layout, Params
from ._validation import Lengths, check_cost, check_lengths, check_params, check_sequences


class _AlignFunction(torch.autograd.Function):
    """Values of every pair of a cost buffer. The kernels compute the gradient in the
    same pass as the value (it needs the forward's transition weights), so backward
    only scales the saved gradient."""

    @staticmethod
    def forward(ctx, cost: torch.Tensor, layout: Layout, params: Params, backend: str) -> torch.Tensor:
        value, grad = _dispatch.run(backend, cost, layout, params, need_grad=ctx.needs_input_grad[0])
        ctx.layout = layout
        if grad is not None:
            ctx.save_for_backward(grad)
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_value: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return ctx.layout.scale_grad(grad, grad_value), None, None, None


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # The dynamic programme runs in float32 or float64; half inputs are computed in float32.
    return torch.float64 if dtype == torch.float64 else torch.float32


def _align(
    x: torch.Tensor | None,
    y: torch.Tensor | None,
    cost: torch.Tensor | None,
    params: Params,
    metric: Metric,
    x_lengths: Lengths,
    y_lengths: Lengths,
    backend: str | None,
) -> torch.Tensor:
    if cost is not None:
        if x is not None or y is not None:
            raise ValueError("pass either the sequences x, y or a precomputed cost=, not both")
        cost = check_cost(cost)
        out_dtype = cost.dtype
        cost = cost.to(_compute_dtype(out_dtype))
    else:
        if x is None or y is None:
            raise ValueError("pass the sequences x (B, N, d) and y (B, M, d), or a precomputed cost=")
        x, y = check_sequences(x, y)
        out_dtype = x.dtype
        compute = _compute_dtype(out_dtype)
        cost = cost_matrix(x.to(compute), y.to(compute), metric).to(compute)
    batch, n, m = cost.shape
    chosen = _dispatch.resolve_backend(cost.device, backend)
    layout = Layout.batched(
        cost,
        check_lengths("x_lengths", x_lengths, batch, n, cost.device),
        check_lengths("y_lengths", y_lengths, batch, m, cost.device),
    )
    value = _AlignFunction.apply(cost.contiguous(), layout, params, chosen)
    return value.to(out_dtype)


def s2dtw(
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    *,
    cost: torch.Tensor | None = None,
    gamma: float = 0.1,
    smoothing: float | None = 0.1,
    threshold: float | None = 0.5,
    metric: Metric = "neg_dot",
    x_lengths: Lengths = None,
    y_lengths: Lengths = None,
    backend: str | None = None,
) -> torch.Tensor:
    """S2DTW (VT-TWINS): soft-DTW with local neighbourhood smoothing and weak alignment.

    Args:
        x: (B, N, d) sequences, e.g. video clips.
        y: (B, M, d) sequences, e.g. captions.
        cost: (B, N, M) precomputed cost, instead of ``x``, ``y``.
        gamma: soft-DTW temperature (> 0).
        smoothing: temperature of the local neighbourhood smoothing; ``None`` turns it off.
        threshold: null cost of skipping a clip or caption in the weak-alignment grid;
            ``None`` turns the weak alignment off.
        metric: ``"neg_dot"``, ``"neg_cosine"``, ``"sqeuclidean"`` or ``f(x, y) -> (B, N, M)``.
        x_lengths, y_lengths: (B,) integers; pair b uses ``x[b, :x_lengths[b]]``, ``y[b, :y_lengths[b]]``.
        backend: ``"cuda"``, ``"cpp"``, ``"numba"`` or ``"numpy"``; default: the fastest for the device
            (or ``$S2DTW_BACKEND``).

    Returns:
        (B,) values, in the input's dtype and on its device. Differentiable w.r.t. x, y (or cost).
    """
    params = check_params(gamma, smoothing, threshold)
    return _align(x, y, cost, params, metric, x_lengths, y_lengths, backend)


def soft_dtw(
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    *,
    cost: torch.Tensor | None = None,
    gamma: float = 1.0,
    metric: Metric = "sqeuclidean",
    x_lengths: Lengths = None,
    y_lengths: Lengths = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Plain soft-DTW (Cuturi & Blondel 2017): :func:`s2dtw` with no smoothing and no weak alignment.

    Args and returns as :func:`s2dtw`; the defaults are soft-DTW's customary ``gamma=1`` and the
    squared Euclidean cost.
    """
    params = check_params(gamma, None, None)
    return _align(x, y, cost, params, metric, x_lengths, y_lengths, backend)
