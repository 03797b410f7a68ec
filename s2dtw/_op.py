"""The kernels as one differentiable torch operator.

A ``torch.library.custom_op`` (``torch.ops.s2dtw.align``, torch >= 2.4) with a fake (meta)
implementation and an autograd formula, so ``torch.compile`` traces through it without graph
breaks. The kernel computes the gradient together with the value (it needs the forward's
transition weights); backward only scales it.
"""

from __future__ import annotations

import torch

from . import _dispatch
from ._dispatch import Layout, Params


def _needs_grad(cost: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and cost.requires_grad


@torch.library.custom_op("s2dtw::align", mutates_args=())
def align_op(
    cost: torch.Tensor,
    pair_n: torch.Tensor,
    pair_m: torch.Tensor,
    layout: list[int],
    gamma: float,
    smoothing: float | None,
    threshold: float | None,
    bandwidth: float | None,
    backend: str,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Values (n_pairs,) and d value / d cost (shaped like cost; empty unless need_grad).

    `backend` "" picks the default; it is resolved here, at run time, so that tracing never
    looks at which modules are installed.
    """
    params = Params(gamma, smoothing, threshold, bandwidth)
    chosen = _dispatch.resolve_backend(cost.device, backend or None)
    value, grad = _dispatch.run(chosen, cost, Layout.from_ints(pair_n, pair_m, layout), params, need_grad)
    return value, (grad if grad is not None else cost.new_empty(0))


@align_op.register_fake
def _(cost, pair_n, pair_m, layout, gamma, smoothing, threshold, bandwidth, backend, need_grad):
    grad = torch.empty_like(cost) if need_grad else cost.new_empty(0)
    return cost.new_empty(pair_n.shape[0]), grad


class _FirstOrderOnly(torch.autograd.Function):
    """The gradient layout.scale_grad(grad, grad_value), as a node whose own backward raises.

    The kernels have no second derivative: without this node, differentiating the gradient
    (create_graph=True, then backward through it) would silently give a zero Hessian term.
    A gradient taken with create_graph=True and only used as a value still works.
    """

    @staticmethod
    def forward(ctx, grad: torch.Tensor, grad_value: torch.Tensor, layout: Layout) -> torch.Tensor:
        return layout.scale_grad(grad, grad_value)

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError("s2dtw: second-order gradients (differentiating the gradient of an S2DTW / soft-DTW "
                           "value, e.g. a gradient penalty or a Hessian-vector product) are not implemented")


def _setup_context(ctx, inputs, output):
    ctx.layout = Layout.from_ints(inputs[1], inputs[2], inputs[3])
    ctx.save_for_backward(output[1])


def _backward(ctx, grad_value, _grad_of_grad):
    (grad,) = ctx.saved_tensors
    return (_FirstOrderOnly.apply(grad, grad_value, ctx.layout),) + (None,) * 9


align_op.register_autograd(_backward, setup_context=_setup_context)


def align(cost: torch.Tensor, layout: Layout, params: Params, backend: str | None) -> torch.Tensor:
    value, _ = align_op(cost, layout.pair_n, layout.pair_m, layout.ints(), params.gamma, params.smoothing,
                        params.threshold, params.bandwidth, backend or "", _needs_grad(cost))
    return value
