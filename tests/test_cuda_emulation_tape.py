"""The CUDA block regime's recompute-in-backward mode, run under host emulation (see test_cuda_emulation.py).

$S2DTW_CUDA_TAPE_MIB = 0 forces it wherever a pair has more than one strip (the tape of all pairs exceeds 0
bytes); the default budget (1 GiB) keeps the full tape on these small grids. The recomputed strips run the
forward's own code from checkpoint rows, so values and gradients must equal the full tape's bit for bit, and
the NumPy reference within test_cuda_emulation's tolerances; the workspace it asks for must be smaller.
"""

from __future__ import annotations

import pytest
import torch
from cuda_emulation import build
from cuda_emulation.layouts import layouts_of
from helpers import VARIANTS
from test_cuda_emulation import TOL, batched, reference, run_emulated, set_regime, variant_params

from s2dtw import _dispatch
from s2dtw._problem import Layout, Params, Problem

pytestmark = pytest.mark.cuda_emulation

if build.compiler() is None:
    pytest.skip("no C++ compiler to build the CUDA emulation", allow_module_level=True)


@pytest.fixture(scope="module")
def emulated():
    return build.load()


def workspace(module, cost: torch.Tensor, layout: Layout, params: Params) -> int:
    return module.workspace_bytes(_dispatch._DTYPE_NAMES[cost.dtype], True, Problem(layout, params))


def check_recompute(module, monkeypatch, cost, layout, params, exact_reference=False):
    """Recomputing against the full tape (bit-equal, smaller workspace) and against the NumPy reference."""
    monkeypatch.delenv("S2DTW_CUDA_TAPE_MIB", raising=False)
    full_value, full_grad = run_emulated(module, cost, layout, params, need_grad=True)
    full_bytes = workspace(module, cost, layout, params)
    monkeypatch.setenv("S2DTW_CUDA_TAPE_MIB", "0")
    value, grad = run_emulated(module, cost, layout, params, need_grad=True)
    assert workspace(module, cost, layout, params) < full_bytes
    assert torch.equal(value, full_value) and torch.equal(grad, full_grad), "recomputing changed the results"
    ref_value, ref_grad = reference(cost, layout, params)
    value_tol, grad_tol = (dict(rtol=0, atol=0),) * 2 if exact_reference else TOL[cost.dtype]
    torch.testing.assert_close(value, ref_value.to(value.dtype), **value_tol)
    torch.testing.assert_close(grad.double(), ref_grad, **grad_tol)


CASES = [(v, torch.float64) for v in VARIANTS] + [(v, torch.float32) for v in ("s2dtw", "soft-dtw")]


@pytest.mark.parametrize("variant,dtype", CASES, ids=[f"{v}-{str(d)[-7:]}" for v, d in CASES])
def test_variants_variable_lengths(emulated, monkeypatch, variant, dtype):
    """Three pairs: 40 rows (two 32-row strips; 81 on the weak grid: three), 33 rows (the last alone in its
    strip on the plain grid), one row (a single strip: nothing to checkpoint)."""
    set_regime(monkeypatch, "block", 32)
    cost, layout = batched((3, 40, 11), [40, 33, 1], [11, 4, 11], dtype=dtype, seed=21)
    check_recompute(emulated, monkeypatch, cost, layout, Params(gamma=0.2, **VARIANTS[variant]))


@pytest.mark.parametrize("gamma,open_", [(0.0, "open_both"), (0.0, "open_end"), (0.3, "open_begin"), (0.3, "open_end")])
def test_open_flags(emulated, monkeypatch, gamma, open_):
    """The open end's softmin over the last row reads that row from the last checkpoint; hard minima on
    integer costs are exact sums, so there the reference must match bit for bit too."""
    set_regime(monkeypatch, "block", 32)
    params = variant_params("s2dtw", "hard" if gamma == 0 else "own", gamma, open_)
    gen = torch.Generator().manual_seed(22)
    shape = (2, 23, 7)
    exact = gamma == 0
    cost = (torch.randint(0, 4, shape, generator=gen) if exact else torch.randn(shape, generator=gen)).double()
    layout = Layout.batched(cost, torch.tensor([23, 17]), torch.tensor([7, 5]))
    check_recompute(emulated, monkeypatch, cost, layout, params, exact_reference=exact)


@pytest.mark.parametrize("variant", ["s2dtw", "soft-dtw"])
def test_band_and_taller_strips(emulated, monkeypatch, variant):
    """A narrow band over several 32-row strips (most steps skipped); 64-row strips on 70- and 40-row pairs
    (141 and 81 rows on the weak grid)."""
    set_regime(monkeypatch, "block", 32)
    cost, layout = batched((1, 60, 50), seed=23)
    check_recompute(emulated, monkeypatch, cost, layout, Params(gamma=0.2, bandwidth=3.0, **VARIANTS[variant]))
    set_regime(monkeypatch, "block", 64)
    cost, layout = batched((2, 70, 5), [70, 40], [5, 5], seed=24)
    check_recompute(emulated, monkeypatch, cost, layout, Params(gamma=0.5, **VARIANTS[variant]))


def test_budget_decides(emulated, monkeypatch):
    """The full tape of one 260 x 260 float64 soft-DTW pair is 260^2 x 16 B = 1.08 MB: a 1 MiB budget
    recomputes (workspace below the full tape), 2 MiB keeps it; the thread regime always keeps its tape."""
    cost, layout = batched((1, 260, 260), seed=25)
    params = Params(gamma=0.3, smoothing=None, threshold=None)
    tape = 260 * 260 * 16
    sizes = {}
    for mib in ("1", "2"):
        monkeypatch.setenv("S2DTW_CUDA_TAPE_MIB", mib)
        set_regime(monkeypatch, "block", 32)
        sizes["block", mib] = workspace(emulated, cost, layout, params)
        set_regime(monkeypatch, "thread")
        sizes["thread", mib] = workspace(emulated, cost, layout, params)
    assert sizes["block", "1"] < tape < sizes["block", "2"]
    assert sizes["thread", "1"] == sizes["thread", "2"] > tape


def test_bad_budget_env(monkeypatch):
    from s2dtw._problem import read_switches

    for bad in ("-1", "1.5", "lots", str(2**30 + 1)):
        with pytest.raises(ValueError, match="S2DTW_CUDA_TAPE_MIB"):
            read_switches({"S2DTW_CUDA_TAPE_MIB": bad})
    assert read_switches({"S2DTW_CUDA_TAPE_MIB": "0"}).cuda_tape_mib == 0
    assert read_switches({}).cuda_tape_mib == 1024


@pytest.mark.parametrize("weak,recomputes", [(True, True), (False, False)], ids=["s2dtw", "soft-dtw"])
def test_8192_workspace_under_the_default_budget(emulated, monkeypatch, weak, recomputes):
    """The issue's long cases (workspace_bytes only, nothing runs; the multi-block regime, chosen there): 1 x 8192^2
    float32 S2DTW (16385^2 weak grid, a 2 GiB full tape) recomputes and asks for <= 0.5 GiB; soft-DTW (0.5 GiB of
    tape, under 1 GiB) keeps it, with 16 MiB at most for the checkpoint rows, the column ring and the flags."""
    for name in ("S2DTW_CUDA_REGIME", "S2DTW_CUDA_STRIP", "S2DTW_CUDA_TAPE_MIB"):
        monkeypatch.delenv(name, raising=False)
    lengths = torch.tensor([8192])
    layout = Layout.batched(torch.empty(1, 8192, 8192, dtype=torch.float32), lengths, lengths)
    params = Params(gamma=0.1, smoothing=0.1 if weak else None, threshold=0.5 if weak else None)
    grid = 16385 if weak else 8192
    full = grid * grid * 8
    got = emulated.workspace_bytes("float32", True, Problem(layout, params))
    assert (got <= 2**29) if recomputes else (full <= got < full + 2**24), got
    # choose_plan caps the blocks by the tape budget per strip height before it compares them: a quarter of 1 GiB
    # holds 15 blocks' tapes of 128-row strips (7 of 256), and 15 x 128 is the model's best (plan.cuh).
    assert layouts_of(grid, grid, got) == ([(128, 15, True)] if recomputes else [(256, 32, False)]), got
