"""The CUDA second order on a GPU: double backward through the public API, and _dispatch.run_hvp, on CUDA
tensors against the same on CPU tensors (the cpp backend, itself tested against the NumPy oracle).

Run on a GPU machine: ``python -m pytest -m cuda tests/test_cuda_second.py``. Skipped where there is no CUDA
device or the CUDA module was not built. The kernel (csrc/cuda/second_order.cu) runs in float64 for both dtypes,
so float32 differs from the CPU by the inputs' and outputs' rounding; tests/test_cuda_emulation_second.py checks
its logic on the CPU in every run.
"""

from __future__ import annotations

import pytest
import torch
from helpers import VARIANTS

import s2dtw
from s2dtw import _dispatch
from s2dtw._problem import Layout, Params, Problem

pytestmark = pytest.mark.cuda

if not torch.cuda.is_available() or not s2dtw.backends()["cuda"]:
    pytest.skip("needs a CUDA device and the s2dtw CUDA module", allow_module_level=True)

RTOL = {torch.float64: 1e-9, torch.float32: 1e-4}


@pytest.fixture(params=["thread", "block"])
def regime(request, monkeypatch):
    """Both regimes of the second-order kernel (and of the first-order one), forced through $S2DTW_CUDA_REGIME."""
    monkeypatch.setenv("S2DTW_CUDA_REGIME", request.param)
    monkeypatch.delenv("S2DTW_CUDA_STRIP", raising=False)
    return request.param


def close(got: torch.Tensor, expected: torch.Tensor) -> None:
    rtol = RTOL[expected.dtype]
    scale = max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(got.cpu(), expected, rtol=rtol, atol=rtol * scale)


def double_backward(cost: torch.Tensor, upstream: torch.Tensor, backend: str, **kwargs):
    """d sum(value) / d cost with create_graph=True, then d <upstream, that> / d cost (= H·upstream summed)."""
    c = cost.detach().clone().requires_grad_()
    value = s2dtw.s2dtw(cost=c, backend=backend, **kwargs)
    (grad,) = torch.autograd.grad(value.sum(), c, create_graph=True)
    (second,) = torch.autograd.grad((grad * upstream).sum(), c)
    return grad.detach(), second


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("bandwidth", [None, 2.0])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_double_backward_matches_cpu(variant, bandwidth, dtype, regime):
    gen = torch.Generator().manual_seed(0)
    cost = torch.randn(3, 9, 7, generator=gen, dtype=torch.float64).to(dtype)
    upstream = torch.randn(3, 9, 7, generator=gen, dtype=torch.float64).to(dtype)
    xl, yl = torch.tensor([9, 4, 6]), torch.tensor([7, 7, 5])
    kwargs = dict(gamma=0.3, bandwidth=bandwidth, **VARIANTS[variant])
    grad_cpu, second_cpu = double_backward(cost, upstream, "cpp", x_lengths=xl, y_lengths=yl, **kwargs)
    grad_gpu, second_gpu = double_backward(cost.cuda(), upstream.cuda(), "cuda", x_lengths=xl.cuda(),
                                           y_lengths=yl.cuda(), **kwargs)
    close(grad_gpu, grad_cpu)
    close(second_gpu, second_cpu)


def test_gradgradcheck_on_cuda(regime):
    cost = torch.randn(2, 4, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    lengths = dict(x_lengths=torch.tensor([4, 2], device="cuda"), y_lengths=torch.tensor([3, 3], device="cuda"))
    assert torch.autograd.gradgradcheck(
        lambda c: s2dtw.s2dtw(cost=c, gamma=0.5, smoothing=0.3, threshold=0.2, backend="cuda", **lengths), (cost,))


def test_pairwise_double_backward_matches_cpu():
    """The all-pairs layout, through the cost's autograd to x."""
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 6, 4, generator=gen, dtype=torch.float64), torch.randn(2, 5, 4, generator=gen,
                                                                                  dtype=torch.float64)
    upstream = torch.randn(3, 6, 4, generator=gen, dtype=torch.float64)

    def second(device, backend):
        xd = x.to(device).requires_grad_()
        value = s2dtw.pairwise(xd, y.to(device), gamma=0.4, x_lengths=torch.tensor([6, 3, 1], device=device),
                               y_lengths=torch.tensor([5, 2], device=device), backend=backend)
        (grad,) = torch.autograd.grad(value.sum(), xd, create_graph=True)
        return torch.autograd.grad((grad * upstream.to(device)).sum(), xd)[0]

    close(second("cuda", "cuda"), second("cpu", "cpp"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("open_begin,open_end", [(True, False), (False, True), (True, True)],
                         ids=["begin", "end", "both"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_run_hvp_open_matches_cpu(variant, open_begin, open_end, dtype, regime):
    gen = torch.Generator().manual_seed(2)
    cost = torch.randn(3, 5, 8, generator=gen, dtype=torch.float64).to(dtype)
    direction = torch.randn(3, 5, 8, generator=gen, dtype=torch.float64).to(dtype)
    params = Params(gamma=0.3, open_begin=open_begin, open_end=open_end, **VARIANTS[variant])
    xl, yl = torch.tensor([5, 1, 3]), torch.tensor([8, 6, 2])
    cpu = _dispatch.run_hvp("cpp", cost, direction, Problem(Layout.batched(cost, xl, yl), params))
    gpu_problem = Problem(Layout.batched(cost, xl.cuda(), yl.cuda()), params)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # the launch never waits on the device
    try:
        gpu = _dispatch.run_hvp("cuda", cost.cuda(), direction.cuda(), gpu_problem)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    close(gpu, cpu)


def test_out_of_range_cuda_lengths_zero_the_pair(regime):
    """CUDA lengths are checked by the kernel: a pair outside [1, padded length] gets an all-zero region."""
    gen = torch.Generator().manual_seed(3)
    cost, direction = torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64).cuda()
    params = Params(gamma=0.3, smoothing=0.1, threshold=0.5)
    layout = Layout.batched(cost, torch.tensor([6, 0, 7], device="cuda"), torch.tensor([5, 5, 5], device="cuda"))
    out = _dispatch.run_hvp("cuda", cost, direction, Problem(layout, params)).cpu()
    ok = Layout.batched(cost.cpu(), torch.tensor([6]), torch.tensor([5]))
    close(out[:1], _dispatch.run_hvp("cpp", cost[:1].cpu(), direction[:1].cpu(), Problem(ok, params)))
    assert (out[1:] == 0).all()
