"""The CUDA call path of the Python layer never synchronises with the GPU (CPU-only guard).

Every public entry runs on fake CUDA tensors (FakeTensorMode: shapes and devices, no data, no GPU
needed) under a dispatch mode that fails on any read of a tensor's value on the host (.item(),
.tolist(), bool(t), int(t): aten._local_scalar_dense) and on any operator that mixes CPU and CUDA
tensors (a host <-> device copy such as lengths.to(device)). The kernel itself is the custom op's
fake implementation here, and only the forward runs: autograd on a fake CUDA leaf needs a CUDA
runtime (the backward is the op's scale_grad, a reshape and a product), and so do soft_alignment
(it differentiates inside) and F.cross_entropy, so S2DTWContrastiveLoss is covered through pairwise
(what it calls with the lengths). tests/test_cuda.py runs every entry forward and backward on a GPU
under torch.cuda.set_sync_debug_mode("error").
"""

from __future__ import annotations

import pytest
import torch
from helpers import public_entries
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

import s2dtw
from s2dtw import _dispatch, functional
from s2dtw._problem import Layout, Params, Problem

if not hasattr(torch.library, "custom_op"):
    pytest.skip("needs torch.library.custom_op (torch >= 2.4) for the fake kernel", allow_module_level=True)

HOST_READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default}


class NoHostSync(TorchDispatchMode):
    """Fails on a host read of a tensor value or an operator with both CPU and CUDA tensors."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in HOST_READS:
            raise AssertionError(f"host read of a tensor value: {func}")
        tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        devices = {t.device.type for t in tensors} | {
            torch.device(d).type for d in pytree.tree_leaves(kwargs) if isinstance(d, (torch.device, str))
            and str(d).split(":")[0] in ("cpu", "cuda")}
        if {"cpu", "cuda"} <= devices:
            raise AssertionError(f"host <-> device copy: {func} on {sorted(devices)}")
        return func(*args, **kwargs)


def _to_through_dispatch(self: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Tensor.to as the aten._to_copy it dispatches to. (Tensor.to's Python binding first takes a
    device guard for the tensor's device, which a torch without CUDA cannot make for a fake CUDA
    tensor; this way the guard mode sees the copy instead.)"""
    dtype, device = kwargs.get("dtype"), kwargs.get("device")
    for arg in args:
        if isinstance(arg, torch.dtype):
            dtype = arg
        elif isinstance(arg, (str, torch.device)):
            device = torch.device(arg)
        elif isinstance(arg, torch.Tensor):
            dtype, device = arg.dtype, arg.device
    device = None if device is None else torch.device(device)
    same_device = device is None or (device.type == self.device.type and device.index in (None, self.device.index))
    if (dtype is None or dtype == self.dtype) and same_device:
        return self
    return torch.ops.aten._to_copy.default(self, dtype=dtype or self.dtype, device=device or self.device,
                                           non_blocking=kwargs.get("non_blocking", False))


@pytest.fixture
def fake_cuda(monkeypatch):
    """The CUDA backend 'available' (its kernel is the op's fake implementation) inside FakeTensorMode."""
    real = _dispatch._available
    monkeypatch.setattr(_dispatch, "_available", lambda name: True if name == "cuda" else real(name))
    monkeypatch.setattr(torch.Tensor, "to", _to_through_dispatch)
    with FakeTensorMode():
        yield


# Entries that differentiate inside (soft_alignment) or call F.cross_entropy need a CUDA runtime
# even on fake tensors; the contrastive loss is covered through pairwise, its only s2dtw call.
NEEDS_CUDA_RUNTIME = ("S2DTWContrastiveLoss", "soft_alignment")


@pytest.mark.parametrize("with_lengths", [False, True], ids=["no lengths", "CUDA lengths"])
def test_cuda_path_never_syncs(fake_cuda, with_lengths):
    x, y = torch.randn(3, 6, 4, device="cuda"), torch.randn(3, 5, 4, device="cuda")
    cost = torch.randn(3, 6, 5, device="cuda")
    # Made on the device by the caller, outside the guard (torch.tensor(..., device=) copies).
    xl = torch.tensor([6, 2, 4], device="cuda") if with_lengths else None
    yl = torch.tensor([5, 5, 1], device="cuda") if with_lengths else None
    for name, call in public_entries(x, y, cost, xl, yl):
        if name in NEEDS_CUDA_RUNTIME:
            continue
        with NoHostSync():
            out = call()
        assert out.device.type == "cuda", name


def test_guard_catches_a_lengths_copy(fake_cuda, monkeypatch):
    """The guard is not blind: lengths made on the CPU and copied over (the old code) fail it."""
    def copied(name, lengths, batch, full, device):
        return torch.full((batch,), full, dtype=torch.int64).to(device)

    monkeypatch.setattr(functional, "check_lengths", copied)
    x, y = torch.randn(2, 4, 3, device="cuda"), torch.randn(2, 5, 3, device="cuda")
    with NoHostSync(), pytest.raises(AssertionError, match="host <-> device copy"):
        s2dtw.s2dtw(x, y)


def test_guard_catches_a_host_read(fake_cuda):
    x, lengths = torch.randn(2, 4, 3, device="cuda"), torch.full((2,), 4, device="cuda")
    with NoHostSync(), pytest.raises(AssertionError, match="host read"):
        functional.check_lengths("x_lengths", lengths, 2, 4, x.device).tolist()


def test_cuda_kernel_refuses_lengths_on_another_device(fake_cuda):
    cost = torch.randn(2, 4, 3, device="cuda")
    layout = Layout.batched(cost, torch.tensor([4, 4]), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="pair lengths on cpu"):
        _dispatch._run_cuda(cost, cost.new_empty(2), None, Problem(layout, Params(1.0, None, None)))
