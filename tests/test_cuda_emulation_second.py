"""The CUDA second order (csrc/cuda/second_order.cu, `_cuda.hvp`) run on the CPU under host emulation.

Checked against the NumPy oracles in float64: s2dtw/_reference_second.hvp for the closed variants, and central
finite differences of s2dtw/_reference.align_one's gradient along the direction for open_begin / open_end (the
second-order oracle has no open flags). The workspace is filled with NaN bytes, the output with NaN and guarded by
sentinel cells on both sides, and the costs' padding is NaN, so a cell read before it is written, a write outside
the regions or a read outside the pair shows in the results. See tests/test_cuda_emulation.py for the emulation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cuda_emulation import build
from helpers import VARIANTS, run_child

from s2dtw import _dispatch, _reference, _reference_second
from s2dtw._problem import Layout, Params, Problem, Switches

pytestmark = pytest.mark.cuda_emulation

if build.compiler() is None:
    pytest.skip("no C++ compiler to build the CUDA emulation", allow_module_level=True)

GUARD = 16  # cells of sentinel around the output buffer
STEP = 1e-5  # central differences of the gradient (float64)


@pytest.fixture(scope="module")
def emulated():
    return build.load()


REGIMES = {"auto": 0, "thread": 1, "block": 2}  # Problem::cuda_regime


def run_hvp(module, cost: torch.Tensor, direction: torch.Tensor, layout: Layout, params: Params, regime: str = "auto",
            workspace_size: int | None = None) -> torch.Tensor:
    """H·direction from the emulated module; the output's neighbours are checked untouched."""
    dtype = _dispatch._DTYPE_NAMES[cost.dtype]
    problem = Problem(layout, params, Switches(cuda_regime=REGIMES[regime]))
    size = module.hvp_workspace_bytes(dtype, problem) if workspace_size is None else workspace_size
    workspace = torch.full((max(size, 1),), 0xFF, dtype=torch.uint8)
    padded = torch.full((cost.numel() + 2 * GUARD,), -777.0, dtype=cost.dtype)
    out = padded[GUARD:-GUARD].view(cost.shape).fill_(float("nan"))
    module.hvp(dtype=dtype, cost=cost.data_ptr(), direction=direction.data_ptr(), out=out.data_ptr(),
               workspace=workspace.data_ptr(), workspace_size=size, stream=0, problem=problem)
    assert (padded[:GUARD] == -777).all() and (padded[-GUARD:] == -777).all(), "wrote outside the output"
    return out


def region(tensor: torch.Tensor, layout: Layout, b: int) -> torch.Tensor:
    """Pair b's n x m cells of a buffer in `layout` (a view)."""
    n, m = int(layout.pair_n[b]), int(layout.pair_m[b])
    flat = tensor.reshape(-1)
    return flat.as_strided((n, m), (layout.stride_i, layout.stride_j), flat.storage_offset() + layout.offset(b))


def oracle(cost: np.ndarray, direction: np.ndarray, params: Params) -> np.ndarray:
    """H·Z of one pair in float64: _reference_second, or differences of the gradient for an open begin / end."""
    if not (params.open_begin or params.open_end):
        return _reference_second.hvp(cost, direction, params.gamma, params.smoothing, params.threshold,
                                     params.bandwidth)[2]

    def grad(c):
        return _reference.align_one(c, params.gamma, params.smoothing, params.threshold, params.bandwidth,
                                    open_begin=params.open_begin, open_end=params.open_end)[1]

    return (grad(cost + STEP * direction) - grad(cost - STEP * direction)) / (2 * STEP)


def check(module, cost, direction, layout, params, rtol, regime):
    """The emulated hvp against the oracle, pair by pair; exactly 0 outside every pair."""
    out = run_hvp(module, cost, direction, layout, params, regime)
    inside = torch.zeros(cost.shape, dtype=torch.bool)
    for b in range(layout.n_pairs):
        expected = oracle(region(cost, layout, b).double().numpy(), region(direction, layout, b).double().numpy(),
                          params)
        got = region(out, layout, b).double()
        scale = max(float(np.abs(expected).max()), 1.0)
        torch.testing.assert_close(got, torch.from_numpy(expected), rtol=rtol, atol=rtol * scale,
                                   msg=lambda msg, b=b: f"pair {b}: {msg}")
        region(inside, layout, b).fill_(True)
    assert (out[~inside] == 0).all(), "nonzero outside the pairs"


def batched(shape, x_lengths, y_lengths, dtype=torch.float64, seed=0):
    """Random cost and direction (B, N, M), NaN outside the pairs (the kernel must never read there)."""
    gen = torch.Generator().manual_seed(seed)
    cost, direction = torch.randn((2, *shape), generator=gen, dtype=torch.float64)
    layout = Layout.batched(cost, torch.tensor(x_lengths), torch.tensor(y_lengths))
    padded = torch.full((2, *shape), float("nan"), dtype=torch.float64)
    for b in range(shape[0]):
        region(padded[0], layout, b).copy_(region(cost, layout, b))
        region(padded[1], layout, b).copy_(region(direction, layout, b))
    return padded[0].to(dtype), padded[1].to(dtype), layout


RTOL = {torch.float64: 1e-9, torch.float32: 1e-4}


REGIME = pytest.mark.parametrize("regime", ["thread", "block"])


@REGIME
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants_variable_lengths(emulated, variant, dtype, regime):
    """N != M, a full pair, a 1 x 3 one and a ragged one."""
    cost, direction, layout = batched((3, 6, 5), [6, 1, 4], [5, 3, 2], dtype=dtype)
    check(emulated, cost, direction, layout, Params(gamma=0.3, **VARIANTS[variant]), RTOL[dtype], regime)


@REGIME
@pytest.mark.parametrize("bandwidth", [1.0, 2.5])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_band(emulated, variant, bandwidth, regime):
    cost, direction, layout = batched((2, 7, 6), [7, 5], [6, 6], seed=1)
    params = Params(gamma=0.5, bandwidth=bandwidth, **VARIANTS[variant])
    check(emulated, cost, direction, layout, params, 1e-9, regime)


@REGIME
@pytest.mark.parametrize("open_begin,open_end", [(True, False), (False, True), (True, True)],
                         ids=["begin", "end", "both"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_open_begin_end(emulated, variant, open_begin, open_end, regime):
    """Subsequence alignment (Variants V4; on the weak grid without W's null first / last row)."""
    cost, direction, layout = batched((3, 4, 7), [4, 1, 3], [7, 5, 1], seed=2)
    params = Params(gamma=0.4, open_begin=open_begin, open_end=open_end, **VARIANTS[variant])
    check(emulated, cost, direction, layout, params, 1e-6, regime)  # finite differences: ~1e-10 error


@REGIME
def test_open_float32(emulated, regime):
    cost, direction, layout = batched((2, 5, 6), [5, 2], [6, 6], dtype=torch.float32, seed=3)
    params = Params(gamma=0.3, open_begin=True, open_end=True, **VARIANTS["s2dtw"])
    check(emulated, cost, direction, layout, params, 1e-4, regime)


@REGIME
def test_many_pairs(emulated, regime):
    """70 pairs: two thread blocks of 64 (the last part-full, the scratch interleaved across pairs) or 70 blocks."""
    gen = torch.Generator().manual_seed(6)
    lengths = torch.randint(1, 5, (2, 70), generator=gen)
    cost, direction, layout = batched((70, 4, 4), lengths[0].tolist(), lengths[1].tolist(), seed=6)
    check(emulated, cost, direction, layout, Params(gamma=0.2, smoothing=0.1, threshold=0.5), 1e-9, regime)


@REGIME
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_all_pairs_layout(emulated, dtype, regime):
    bx, by, n, m = 2, 3, 5, 4
    gen = torch.Generator().manual_seed(4)
    cost = torch.randn(bx * n, by * m, generator=gen, dtype=torch.float64).to(dtype)
    direction = torch.randn(bx * n, by * m, generator=gen, dtype=torch.float64).to(dtype)
    layout = Layout.all_pairs(cost, torch.tensor([5, 2]), torch.tensor([4, 1, 3]))
    check(emulated, cost, direction, layout, Params(gamma=0.3, smoothing=0.2, threshold=0.5), RTOL[dtype], regime)


def test_long_pair_regimes_agree(emulated):
    """Anti-diagonals longer than the block (256 threads, up to 263 cells on a 263 x 271 weak grid): some threads
    take two cells per diagonal. The regimes run the same per-cell code in the same order per cell: bit-identical."""
    cost, direction, layout = batched((1, 131, 135), [131], [135], seed=7)
    params = Params(gamma=0.5, **VARIANTS["weak only"])
    thread = run_hvp(emulated, cost, direction, layout, params, "thread")
    assert torch.isfinite(thread).all() and thread.abs().max() > 0
    assert torch.equal(run_hvp(emulated, cost, direction, layout, params, "block"), thread)


@pytest.mark.parametrize("params,match", [
    (Params(gamma=0.0, smoothing=0.1, threshold=0.5), "gamma > 0"),
    (Params(gamma=0.1, smoothing=0.0, threshold=0.5), "smoothing > 0"),
])
def test_hard_forms_raise(emulated, params, match):
    cost, direction, layout = batched((1, 3, 3), [3], [3])
    with pytest.raises(ValueError, match=match):
        run_hvp(emulated, cost, direction, layout, params)


def test_workspace_too_small(emulated):
    cost, direction, layout = batched((2, 3, 4), [3, 2], [4, 4])
    params = Params(gamma=0.3, smoothing=0.1, threshold=0.5)
    need = emulated.hvp_workspace_bytes("float64", Problem(layout, params))
    with pytest.raises(RuntimeError, match="workspace too small"):
        run_hvp(emulated, cost, direction, layout, params, workspace_size=need - 1)


BAD = ([5, 0, 3, -1, 6, 10**15], [4, 4, 0, 4, 4, 4])  # lengths against a padded 5 x 4: pairs 1, 3, 4, 5 are bad


def untrusted_child(out: str) -> None:
    """Run in a subprocess by test_untrusted_lengths: a kernel that trusted the lengths would crash."""
    gen = torch.Generator().manual_seed(5)
    cost, direction = torch.randn(2, 6, 5, 4, generator=gen, dtype=torch.float64)
    layout = Layout.batched(cost, torch.tensor(BAD[0]), torch.tensor(BAD[1]))
    params = Params(gamma=0.3, smoothing=0.1, threshold=0.5)
    module = build.load()
    torch.save({regime: run_hvp(module, cost, direction, layout, params, regime) for regime in ("thread", "block")},
               out)


def test_untrusted_lengths(emulated, tmp_path):
    """A pair length outside [1, padded extent] zeroes that pair's region; the others are right and nothing
    outside the output is written. In a subprocess, so that an out-of-bounds access fails this test."""
    out = tmp_path / "untrusted.pt"
    results = run_child("test_cuda_emulation_second", "untrusted_child", out, timeout=120)
    assert sorted(results) == ["block", "thread"]
    gen = torch.Generator().manual_seed(5)
    cost, direction = torch.randn(2, 6, 5, 4, generator=gen, dtype=torch.float64)
    params = Params(gamma=0.3, smoothing=0.1, threshold=0.5)
    for regime, result in results.items():
        for b, (n, m) in enumerate(zip(*BAD, strict=True)):
            if not (1 <= n <= 5 and 1 <= m <= 4):
                assert (result[b] == 0).all(), f"{regime}: pair {b} ({n} x {m}) not zeroed"
                continue
            expected = oracle(cost[b, :n, :m].numpy(), direction[b, :n, :m].numpy(), params)
            torch.testing.assert_close(result[b, :n, :m], torch.from_numpy(expected), rtol=1e-9, atol=1e-9)
            assert (result[b, n:] == 0).all() and (result[b, :, m:] == 0).all()
