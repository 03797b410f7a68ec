"""The torch ops around the cpp kernel moved into the C++ module (issue #14): the input's finite check and the
backward's scaling by d loss / d value, each against the torch ops they replace, bit for bit."""

from __future__ import annotations

import pytest
import torch

import s2dtw
from s2dtw import _dispatch
from s2dtw._problem import Layout

pytestmark = pytest.mark.skipif(_dispatch._load("cpp") is None, reason="the C++ extension is not built")

_DTYPES = (torch.float32, torch.float64)


@pytest.mark.parametrize("dtype", _DTYPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_all_finite_finds_every_non_finite_value(dtype, bad):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(70_001, generator=g, dtype=dtype) - 0.5) * torch.finfo(dtype).max
    x[:3] = torch.tensor([torch.finfo(dtype).max, -torch.finfo(dtype).max, torch.finfo(dtype).tiny / 4], dtype=dtype)
    assert _dispatch.all_finite(x) is True
    for at in (0, 12_345, 70_000):  # in either thread's share, and the last value
        y = x.clone()
        y[at] = bad
        assert _dispatch.all_finite(y) is False
    assert _dispatch.all_finite(x[:0]) is True


def test_all_finite_leaves_what_it_cannot_read_to_torch():
    x = torch.ones(6, 6)
    assert _dispatch.all_finite(x.t()) is None  # not contiguous
    assert _dispatch.all_finite(x.half()) is None
    assert _dispatch.all_finite(x) is True


@pytest.mark.parametrize("contiguous", [True, False])
def test_non_finite_cost_raises_the_same_error_on_either_path(contiguous):
    cost = torch.rand(3, 5, 4)
    cost[1, 2, 3] = float("nan")
    if not contiguous:
        cost = cost.transpose(1, 2).contiguous().transpose(1, 2)
    with pytest.raises(ValueError, match="cost contains NaN or inf"):
        s2dtw.soft_dtw(cost=cost, gamma=0.5, backend="cpp")


def _layouts(dtype):
    """(layout, grad) cases: a batch, a grid of regions side by side, and a grid with slots."""
    g = torch.Generator().manual_seed(1)
    batch = torch.randn(5, 6, 7, generator=g, dtype=dtype)
    yield Layout.batched(batch, torch.full((5,), 6), torch.full((5,), 7)), batch
    grid = torch.randn(3 * 4, 2 * 5, generator=g, dtype=dtype)
    lengths = torch.tensor([4, 3, 2, 4, 1, 4])
    yield Layout.in_grid(grid, 4, 5, lengths, lengths.flip(0).clamp(max=5)), grid
    slots = torch.tensor([5, 0, 2])
    yield Layout.in_grid(grid, 4, 5, lengths[:3], lengths[:3], slots=slots), grid


@pytest.mark.parametrize("dtype", _DTYPES)
def test_scale_grad_matches_torch_bit_for_bit(dtype, monkeypatch):
    for layout, grad in _layouts(dtype):
        factors = torch.randn(layout.n_pairs, dtype=dtype)
        factors[0] = -factors[0].abs()  # a negative factor times a zero cell: -0.0 on both paths
        expected = [layout.scale_grad(grad, f) for f in (factors, torch.ones(()).to(dtype).expand(layout.n_pairs))]
        with monkeypatch.context() as patch:  # the C++ pass, not the torch fallback
            patch.setattr(Layout, "scale_grad", lambda *_: pytest.fail("fell back to torch"))
            got = [_dispatch.scale_grad(layout, grad, f)
                   for f in (factors, torch.ones(()).to(dtype).expand(layout.n_pairs))]
        for want, have in zip(expected, got, strict=True):
            assert have.shape == want.shape
            assert torch.equal(have.view(-1).view(torch.int64 if dtype == torch.float64 else torch.int32),
                               want.view(-1).view(torch.int64 if dtype == torch.float64 else torch.int32))


def test_a_cpp_call_runs_no_torch_pass_over_the_cost():
    """The finite check and the gradient's scaling are the C++ module's: no aminmax / mul over the cost."""
    cost = torch.rand(64, 9, 9, requires_grad=True)
    s2dtw.s2dtw(cost=cost, gamma=0.5, smoothing=0.1, threshold=0.2, backend="cpp").sum().backward()  # warm
    with torch.profiler.profile() as prof:
        s2dtw.s2dtw(cost=cost, gamma=0.5, smoothing=0.1, threshold=0.2, backend="cpp").sum().backward()
    names = {event.name for event in prof.events()}
    assert "_Eager" in names  # the profile saw the call
    assert not names & {"aten::aminmax", "aten::mul", "aten::isfinite"}, names
