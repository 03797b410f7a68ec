"""The kernels as one differentiable torch operator.

A ``torch.library.custom_op`` (``torch.ops.s2dtw.align``, torch >= 2.4) with a fake (meta)
implementation and an autograd formula, so ``torch.compile`` traces through it without graph
breaks. The kernel computes the gradient together with the value (it needs the forward's
transition weights); backward only scales it. The op's schema holds tensors, ints and floats:
`_to_op` and `_from_op` are the one conversion to and from the call's description (_problem.py).
"""

from __future__ import annotations

import torch

from . import _dispatch
from ._problem import Layout, Params, Problem


def _needs_grad(cost: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and cost.requires_grad


def _to_op(layout: Layout, params: Params) -> tuple[torch.Tensor, torch.Tensor, list[int], list[float]]:
    """The op's arguments `pair_n, pair_m, layout, params` for a description."""
    return layout.pair_n, layout.pair_m, layout.ints(), params.floats()


def _from_op(pair_n: torch.Tensor, pair_m: torch.Tensor, layout: list[int],
             params: list[float]) -> tuple[Layout, Params]:
    """The description back from the op's arguments."""
    return Layout.from_ints(pair_n, pair_m, layout), Params.from_floats(params)


@torch.library.custom_op("s2dtw::align", mutates_args=())
def align_op(
    cost: torch.Tensor,
    pair_n: torch.Tensor,
    pair_m: torch.Tensor,
    layout: list[int],
    params: list[float],
    backend: str,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Values (n_pairs,) and d value / d cost (shaped like cost; empty unless need_grad).

    `backend` "" picks the default; it is resolved here, at run time, as the switches are read
    (Problem), so that tracing never looks at which modules are installed or at the environment.
    """
    problem = Problem(*_from_op(pair_n, pair_m, layout, params))
    chosen = _dispatch.resolve_backend(cost.device, backend or None, problem.switches)
    value, grad = _dispatch.run(chosen, cost, problem, need_grad)
    return value, (grad if grad is not None else cost.new_empty(0))


@align_op.register_fake
def _(cost, pair_n, pair_m, layout, params, backend, need_grad):
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
    ctx.layout, _ = _from_op(*inputs[1:5])
    ctx.save_for_backward(output[1])


def _backward(ctx, grad_value, _grad_of_grad):
    (grad,) = ctx.saved_tensors
    return (_FirstOrderOnly.apply(grad, grad_value, ctx.layout),) + (None,) * 6


align_op.register_autograd(_backward, setup_context=_setup_context)


def align(cost: torch.Tensor, layout: Layout, params: Params, backend: str | None) -> torch.Tensor:
    value, _ = align_op(cost, *_to_op(layout, params), backend or "", _needs_grad(cost))
    return value
