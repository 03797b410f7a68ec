"""The kernels as one differentiable torch operator.

A ``torch.library.custom_op`` (``torch.ops.s2dtw.align``, torch >= 2.4) with a fake (meta)
implementation and an autograd formula, so ``torch.compile`` traces through it without graph
breaks. The kernel computes the gradient together with the value (it needs the forward's
transition weights); backward only scales it. The op's schema holds tensors, ints and floats:
`_to_op` and `_from_op` are the one conversion to and from the call's description (_problem.py).

A plain eager call skips the op: `_Eager`, an autograd.Function with the same kernel call (`_forward`)
and backward (`_scaled_grad`), has less Python/dispatcher overhead per call than the op (issue #14).
`_eager` is the one choice between them.

Second order: the backward's gradient is `_ScaledGrad`, whose own backward (create_graph=True, then
differentiating the gradient) is one Hessian-vector product per pair, the op ``torch.ops.s2dtw.hvp``
(_dispatch.run_hvp), inside `_SecondOrder`, a node whose backward refuses a third order.
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


def _forward(cost: torch.Tensor, layout: Layout, params: Params, backend: str,
             need_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's values (n_pairs,) and d value / d cost (shaped like cost; empty unless need_grad)."""
    problem = Problem(layout, params)
    chosen = _dispatch.resolve_backend(cost.device, backend or None, problem.switches)
    value, grad = _dispatch.run(chosen, cost, problem, need_grad)
    return value, (grad if grad is not None else cost.new_empty(0))


def _from_op(pair_n: torch.Tensor, pair_m: torch.Tensor, layout: list[int], params: list[float],
             slots: torch.Tensor | None = None) -> tuple[Layout, Params]:
    """The description back from the op's arguments (`layout.slots` is the op's last argument)."""
    return Layout.from_ints(pair_n, pair_m, layout, slots), Params.from_floats(params)


@torch.library.custom_op("s2dtw::align", mutates_args=())
def align_op(
    cost: torch.Tensor,
    pair_n: torch.Tensor,
    pair_m: torch.Tensor,
    layout: list[int],
    params: list[float],
    backend: str,
    need_grad: bool,
    slots: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Values (n_pairs,) and d value / d cost (shaped like cost; empty unless need_grad).

    `backend` "" picks the default; it is resolved here, at run time, as the switches are read
    (Problem), so that tracing never looks at which modules are installed or at the environment.
    """
    return _forward(cost, *_from_op(pair_n, pair_m, layout, params, slots), backend, need_grad)


@align_op.register_fake
def _(cost, pair_n, pair_m, layout, params, backend, need_grad, slots=None):
    grad = torch.empty_like(cost) if need_grad else cost.new_empty(0)
    return cost.new_empty(pair_n.shape[0]), grad


@torch.library.custom_op("s2dtw::hvp", mutates_args=())
def hvp_op(cost: torch.Tensor, direction: torch.Tensor, pair_n: torch.Tensor, pair_m: torch.Tensor,
           layout: list[int], params: list[float], backend: str, slots: torch.Tensor | None = None) -> torch.Tensor:
    """H·Z of every pair (Z = `direction`, shaped like cost), as a tensor shaped like cost (_dispatch.run_hvp)."""
    problem = Problem(*_from_op(pair_n, pair_m, layout, params, slots))
    chosen = _dispatch.resolve_backend(cost.device, backend or None, problem.switches)
    return _dispatch.run_hvp(chosen, cost, direction.to(cost.dtype).contiguous(), problem)


@hvp_op.register_fake
def _(cost, direction, pair_n, pair_m, layout, params, backend, slots=None):
    return torch.empty_like(cost)


def _pair_sums(layout: Layout, cells: torch.Tensor) -> torch.Tensor:
    """The sum of `cells` (shaped like the cost) over each pair's padded region: (n_pairs,)."""
    sums = cells.reshape(-1, layout.padded_n, layout.pairs_per_x, layout.padded_m).sum((1, 3)).reshape(-1)
    return sums if layout.slots is None else sums[layout.slots]


class _SecondOrder(torch.autograd.Function):
    """The derivatives of <U, layout.scale_grad(E(C), vbar)>: d/dC = scale_grad(H·U, vbar) (H symmetric) and
    d/d vbar = <U, E> per pair (docs/semantics.md, "Second order"), as a node whose own backward raises."""

    @staticmethod
    def forward(ctx, upstream: torch.Tensor, grad: torch.Tensor, grad_value: torch.Tensor, cost: torch.Tensor,
                layout: Layout, params: Params, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
        product = hvp_op(cost, upstream, *_to_op(layout, params), backend, layout.slots)
        return _dispatch.scale_grad(layout, product, grad_value), _pair_sums(layout, upstream * grad)

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError("s2dtw: third-order gradients (differentiating a second derivative of an S2DTW / "
                           "soft-DTW value, e.g. the gradient of a Hessian-vector product) are not implemented")


class _ScaledGrad(torch.autograd.Function):
    """The gradient grad_C = layout.scale_grad(E, vbar), differentiable once more (create_graph=True): its
    backward is _SecondOrder's, one HVP per pair. It needs the cost; `grad` (E) is a constant here, its
    dependence on the cost being what the HVP accounts for."""

    @staticmethod
    def forward(ctx, grad: torch.Tensor, grad_value: torch.Tensor, cost: torch.Tensor, layout: Layout,
                params: Params, backend: str) -> torch.Tensor:
        ctx.save_for_backward(grad, grad_value, cost)
        ctx.layout, ctx.params, ctx.backend = layout, params, backend
        return _dispatch.scale_grad(layout, grad, grad_value)

    @staticmethod
    def backward(ctx, upstream: torch.Tensor):
        grad, grad_value, cost = ctx.saved_tensors
        params = ctx.params
        params.check_second_order()  # before any graph is built: the hard forms have no Hessian
        d_cost, d_value = _SecondOrder.apply(upstream, grad, grad_value, cost, ctx.layout, params, ctx.backend)
        return None, d_value, d_cost, None, None, None


def _save(ctx, cost: torch.Tensor, layout: Layout, params: Params, backend: str, grad: torch.Tensor) -> None:
    # The second output (grad) never gets an upstream gradient of its own: without this autograd would
    # fill a cost-sized zero tensor for it on every backward.
    ctx.set_materialize_grads(False)
    ctx.layout, ctx.params, ctx.backend = layout, params, backend
    ctx.save_for_backward(grad, cost)


def _scaled_grad(ctx, grad_value: torch.Tensor | None) -> torch.Tensor | None:
    if grad_value is None:  # the values took no part in what is differentiated
        return None
    grad, cost = ctx.saved_tensors
    return _ScaledGrad.apply(grad, grad_value, cost, ctx.layout, ctx.params, ctx.backend)


def _setup_context(ctx, inputs, output):
    _save(ctx, inputs[0], *_from_op(*inputs[1:5], inputs[7]), inputs[5], output[1])


def _backward(ctx, grad_value, _grad_of_grad):
    return (_scaled_grad(ctx, grad_value),) + (None,) * 7


align_op.register_autograd(_backward, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The op's forward and backward without the op's dispatch: for plain eager calls only (`_eager`)."""

    @staticmethod
    def forward(ctx, cost: torch.Tensor, layout: Layout, params: Params, backend: str,
                need_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        # grad is an output, as the op's is (saved as one, it keeps this node as its grad_fn); the cost is
        # saved for the second order (_ScaledGrad).
        value, grad = _forward(cost, layout, params, backend, need_grad)
        _save(ctx, cost, layout, params, backend, grad)
        return value, grad

    @staticmethod
    def backward(ctx, grad_value, _grad_of_grad):
        return _scaled_grad(ctx, grad_value), None, None, None, None


def _eager(cost: torch.Tensor) -> bool:
    """Whether the call may skip the op: eager, on a plain tensor, under no dispatch mode.

    torch.compile / torch.export trace the op (its fake kernel and schema), and so do FakeTensorMode and
    the other dispatch modes and tensor subclasses (a Function would hand their data pointers to the kernel).
    torch.func transforms, forward-mode AD and torch.jit.trace are refused before this, by
    _validation._check_transforms.
    """
    return _dispatch.plain(cost)


def align(cost: torch.Tensor, layout: Layout, params: Params, backend: str | None) -> torch.Tensor:
    if _eager(cost):
        value, _ = _Eager.apply(cost, layout, params, backend or "", _needs_grad(cost))
    else:
        value, _ = align_op(cost, *_to_op(layout, params), backend or "", _needs_grad(cost), layout.slots)
    return value
