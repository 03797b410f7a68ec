"""The CUDA multi-block regime (one pair's row strips over several blocks, handed on through progress flags), run
under host emulation (see test_cuda_emulation.py), with all blocks of the launch running at once as OS threads.

$S2DTW_EMULATION_SMS x $S2DTW_EMULATION_BLOCKS_PER_SM (read by the emulated cudaDeviceGetAttribute and
cudaOccupancyMaxActiveBlocksPerMultiprocessor) is the number of blocks the plan may make co-resident, so a few
hundred rows in 32-row strips give 3 blocks per pair that take turns on 7-15 strips. The multi-block regime runs
the block regime's code on the same inputs in the same order, so it must equal the block regime bit for bit (and
the C++ kernel / NumPy reference within test_cuda_emulation's tolerances).
"""

from __future__ import annotations

import pytest
import torch
from cuda_emulation import build
from helpers import VARIANTS
from test_cuda_emulation import (
    TOL,
    batched,
    check,
    check_reference,
    run_emulated,
    set_regime,
    variant_cost,
    variant_params,
)

from s2dtw._problem import Layout, Params

pytestmark = pytest.mark.cuda_emulation

if build.compiler() is None:
    pytest.skip("no C++ compiler to build the CUDA emulation", allow_module_level=True)
emulated = pytest.fixture(scope="module", name="emulated")(build.load)


def set_device(monkeypatch, sms: int, per_sm: int = 1) -> None:
    monkeypatch.setenv("S2DTW_EMULATION_SMS", str(sms))
    monkeypatch.setenv("S2DTW_EMULATION_BLOCKS_PER_SM", str(per_sm))


def check_multi(module, monkeypatch, cost, layout, params, need_grad=True):
    """Multi-block against the C++ kernel, and bit-equal to the one-block regime with the same strip."""
    set_regime(monkeypatch, "multi", 32)
    value, grad = check(module, cost, layout, params, need_grad)
    set_regime(monkeypatch, "block", 32)
    one_value, one_grad = run_emulated(module, cost, layout, params, need_grad)
    assert torch.equal(value, one_value), "the multi-block regime changed the values"
    if need_grad:
        assert torch.equal(grad, one_grad), "the multi-block regime changed the gradient"


@pytest.mark.parametrize("need_grad", [True, False], ids=["grad", "value"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("variant", ["soft-dtw", "s2dtw"])
def test_one_long_pair(emulated, monkeypatch, variant, dtype, need_grad):
    """One 200 x 90 pair (401 rows on the weak grid): 7 (13) strips over 3 blocks."""
    set_device(monkeypatch, 3)
    cost, layout = batched((1, 200, 90), dtype=dtype, seed=31)
    check_multi(emulated, monkeypatch, cost, layout, Params(gamma=0.2, **VARIANTS[variant]), need_grad)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variable_lengths(emulated, monkeypatch, variant):
    """Two pairs with 3 blocks each; the shorter pair has fewer strips than blocks on the plain grid (block 2 idle)."""
    set_device(monkeypatch, 6)
    cost, layout = batched((2, 150, 40), [150, 50], [40, 23], seed=32)
    check_multi(emulated, monkeypatch, cost, layout, Params(gamma=0.3, **VARIANTS[variant]))


@pytest.mark.parametrize("blocks,shape,bandwidth", [(4, (1, 230, 200), 3.0), (2, (1, 130, 200), 40.0)],
                         ids=["narrow", "wide-2-blocks"])
@pytest.mark.parametrize("variant", ["soft-dtw", "s2dtw"])
def test_band(emulated, monkeypatch, variant, blocks, shape, bandwidth):
    """A narrow band: each strip's steps start far right, the flags' chunks cross the band's edges. A wide one on
    M > N with 2 blocks: a strip's first column buffer writes lie right of the band of the strip below, inside the
    band of the strip it shares that buffer with (which must have read them first)."""
    set_device(monkeypatch, blocks)
    cost, layout = batched(shape, seed=33)
    check_multi(emulated, monkeypatch, cost, layout, Params(gamma=0.2, bandwidth=bandwidth, **VARIANTS[variant]))


@pytest.mark.parametrize("open_", ["open_begin", "open_end", "open_both"])
@pytest.mark.parametrize("gamma", [0.0, 0.3], ids=["hard", "soft"])
def test_open_ends(emulated, monkeypatch, gamma, open_):
    """The open end's softmin over the last row (the block holding the last strip), against the NumPy reference
    (exact on integer costs with hard minima)."""
    set_device(monkeypatch, 3)
    set_regime(monkeypatch, "multi", 32)
    params = variant_params("s2dtw", "hard" if gamma == 0 else "own", gamma, open_)
    cost = variant_cost((1, 70, 9), params, torch.float64, seed=34)
    check_reference(emulated, cost, Layout.batched(cost, torch.tensor([70]), torch.tensor([9])), params)


def test_all_pairs_layout(emulated, monkeypatch):
    set_device(monkeypatch, 4)
    n, m = 90, 31
    cost = torch.randn(2 * n, m, generator=torch.Generator().manual_seed(35), dtype=torch.float64)
    layout = Layout.all_pairs(cost, torch.tensor([90, 61]), torch.tensor([31]))
    check_multi(emulated, monkeypatch, cost, layout, Params(gamma=0.3, smoothing=0.1, threshold=0.5))


@pytest.mark.parametrize("dtype,m", [(torch.float64, 150), (torch.float32, 300)], ids=["f64", "f32"])
def test_recompute(emulated, monkeypatch, dtype, m):
    """A 1 MiB tape budget on a 450 x m pair (full tape over it): 3 blocks, each keeping one strip's tape (32 m
    entries: a quarter of the budget fits 3), each strip recomputed from its checkpoint row; bit-equal to the full
    tape."""
    set_device(monkeypatch, 3)
    cost, layout = batched((1, 450, m), dtype=dtype, seed=36)
    params = Params(gamma=0.2, smoothing=None, threshold=None)
    monkeypatch.setenv("S2DTW_CUDA_TAPE_MIB", "1024")
    set_regime(monkeypatch, "multi", 32)
    full_value, full_grad = run_emulated(emulated, cost, layout, params, need_grad=True)
    monkeypatch.setenv("S2DTW_CUDA_TAPE_MIB", "1")
    from test_cuda_emulation_tape import workspace
    assert workspace(emulated, cost, layout, params) < 450 * m * 2 * cost.element_size()
    value, grad = check(emulated, cost, layout, params)
    assert torch.equal(value, full_value) and torch.equal(grad, full_grad), "recomputing changed the results"


def test_deterministic(emulated, monkeypatch):
    """The threads interleave differently on every run; the results must not."""
    set_device(monkeypatch, 4)
    set_regime(monkeypatch, "multi", 32)
    cost, layout = batched((1, 160, 70), seed=37)
    params = Params(gamma=0.1, smoothing=0.1, threshold=0.5)
    first = run_emulated(emulated, cost, layout, params, need_grad=True)
    for _ in range(2):
        again = run_emulated(emulated, cost, layout, params, need_grad=True)
        assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    torch.testing.assert_close(first[1], check(emulated, cost, layout, params)[1], **TOL[torch.float64][1])


def test_forced_without_room_raises(emulated, monkeypatch):
    """Forcing the regime where not even one block per pair can be co-resident refuses (a flag wait could
    otherwise deadlock): 2 pairs on a device holding 1 block."""
    set_device(monkeypatch, 1)
    set_regime(monkeypatch, "multi", 32)
    cost, layout = batched((2, 70, 9), seed=38)
    with pytest.raises(RuntimeError, match="co-resident"):
        run_emulated(emulated, cost, layout, Params(gamma=0.3, smoothing=None, threshold=None), need_grad=True)
