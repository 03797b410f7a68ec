"""The CUDA kernels, run on the CPU under host emulation, against the C++ CPU kernel.

csrc/cuda/s2dtw_cuda.cu (and its headers) is compiled unchanged as C++ with tests/cuda_emulation/include/cuda_runtime.h
(one OS thread per CUDA thread, a real barrier for __syncthreads, shared memory and workspace filled
with NaN bytes): the result is the `_cuda` module itself, plan choice and launch code included, with
host pointers. So every CI run executes both regimes' device code, values and gradients, with the
tolerances of tests/test_cuda.py. The emulation cannot see GPU-only faults (a missing __syncthreads
only shows where the OS threads happen to interleave, the hardware's memory model, the real exp/log):
tests/test_cuda.py and the compute-sanitizer stage of benchmarks/gpu_check.sh cover those on a GPU.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from cuda_emulation import build
from helpers import VARIANTS, run_child

from s2dtw import _dispatch, _reference
from s2dtw._problem import Layout, Params, Problem

pytestmark = pytest.mark.cuda_emulation

if build.compiler() is None:
    pytest.skip("no C++ compiler to build the CUDA emulation", allow_module_level=True)

TOL = {  # as tests/test_cuda.py
    torch.float64: (dict(rtol=1e-9, atol=1e-10), dict(rtol=1e-9, atol=1e-10)),
    torch.float32: (dict(rtol=1e-6, atol=1e-5), dict(rtol=1e-4, atol=1e-4)),
}
GUARD = 16  # cells of sentinel around the gradient buffer


@pytest.fixture(scope="module")
def emulated():
    return build.load()


def test_build_key_covers_every_included_header():
    """build.py's key hashes every project header that the two units include (as the compiler lists them),
    so that an edited, new or renamed header never leaves a stale emulated module."""
    cxx = build.compiler()
    for source in build.SOURCES:
        deps = subprocess.run([cxx, *build.FLAGS, *build._includes(), "-x", "c++", "-MM", str(source)],
                              capture_output=True, text=True, check=True).stdout
        read = {Path(word).resolve() for word in deps.replace("\\\n", " ").split()[1:]}
        ours = {path for path in read if path.is_relative_to(build.ROOT) and "site-packages" not in path.parts}
        included = ours - {source}
        assert included, f"no project header found in the dependencies of {source.name}"
        assert included <= set(build.headers()), f"not in the build key: {sorted(included - set(build.headers()))}"


def set_regime(monkeypatch, regime: str, strip: int | None = None) -> None:
    monkeypatch.setenv("S2DTW_CUDA_REGIME", regime)
    if strip is None:
        monkeypatch.delenv("S2DTW_CUDA_STRIP", raising=False)
    else:
        monkeypatch.setenv("S2DTW_CUDA_STRIP", str(strip))


def run_emulated(module, cost: torch.Tensor, layout: Layout, params: Params, need_grad: bool):
    """Values and gradient from the emulated CUDA module; the gradient's neighbours are checked untouched."""
    dtype, problem = _dispatch._DTYPE_NAMES[cost.dtype], Problem(layout, params)
    workspace = torch.full((module.workspace_bytes(dtype, need_grad, problem),), 0xFF, dtype=torch.uint8)
    value = torch.full((layout.n_pairs,), 12345.0, dtype=cost.dtype)
    padded = torch.full((cost.numel() + 2 * GUARD,), -777.0, dtype=cost.dtype)
    grad = padded[GUARD:-GUARD].view(cost.shape).fill_(float("nan")) if need_grad else None
    module.run(dtype=dtype, cost=cost.data_ptr(), value=value.data_ptr(), grad=0 if grad is None else grad.data_ptr(),
               workspace=workspace.data_ptr(), workspace_size=workspace.numel(), stream=0, problem=problem)
    assert (padded[:GUARD] == -777).all() and (padded[-GUARD:] == -777).all(), "wrote outside the gradient"
    return value, grad


def check(module, cost, layout, params, need_grad=True):
    """The emulated kernel against the C++ one (values; gradients when `need_grad`)."""
    value, grad = run_emulated(module, cost, layout, params, need_grad)
    ref_value, ref_grad = _dispatch.run("cpp", cost, Problem(layout, params), need_grad)
    value_tol, grad_tol = TOL[cost.dtype]
    torch.testing.assert_close(value, ref_value, **value_tol)
    assert torch.isfinite(value).all()
    if need_grad:
        torch.testing.assert_close(grad, ref_grad, **grad_tol)
    return value, grad


def batched(shape, x_lengths=None, y_lengths=None, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    batch, n, m = shape
    cost = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    xl = torch.full((batch,), n) if x_lengths is None else torch.tensor(x_lengths)
    yl = torch.full((batch,), m) if y_lengths is None else torch.tensor(y_lengths)
    return cost, Layout.batched(cost, xl, yl)


REGIMES = [("thread", None), ("block", 32), ("auto", None)]


@pytest.mark.parametrize("need_grad", [True, False], ids=["grad", "value"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("regime,strip", REGIMES, ids=["thread", "block-32", "auto"])
def test_variants_variable_lengths(emulated, monkeypatch, regime, strip, variant, dtype, need_grad):
    """Variable lengths (full, 1 x 1, ragged), N != M, several strips per pair in the block regime."""
    set_regime(monkeypatch, regime, strip)
    cost, layout = batched((4, 37, 29), [37, 1, 20, 33], [29, 1, 7, 29], dtype=dtype)
    check(emulated, cost, layout, Params(gamma=0.2, **VARIANTS[variant]), need_grad)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("regime,strip,pairs", [("thread", None, 300), ("block", 32, 300), ("auto", None, 40000)],
                         ids=["thread", "block-32", "auto"])
def test_many_tiny_pairs(emulated, monkeypatch, regime, strip, pairs, dtype):
    """The VT-TWINS shape (8 x 8 costs, 17 x 17 weak grids). 300 pairs: three thread blocks in the
    thread regime, the last one part-full; 40,000 pairs is where auto picks the thread regime (with
    the emulation's 132 SMs), 313 blocks."""
    set_regime(monkeypatch, regime, strip)
    cost, layout = batched((pairs, 8, 8), dtype=dtype, seed=6)
    check(emulated, cost, layout, Params(gamma=0.1, smoothing=0.1, threshold=0.5))


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("shape", [(2, 1, 1), (2, 1, 9), (2, 8, 1), (2, 3, 70), (1, 70, 3)])
@pytest.mark.parametrize("regime,strip", REGIMES[:2], ids=["thread", "block-32"])
def test_degenerate_shapes(emulated, monkeypatch, regime, strip, shape, variant):
    set_regime(monkeypatch, regime, strip)
    cost, layout = batched(shape, seed=1)
    check(emulated, cost, layout, Params(gamma=0.3, **VARIANTS[variant]))


@pytest.mark.parametrize(
    "strip,variant,shape",
    [
        (32, "s2dtw", (1, 150, 9)),  # weak grid of 301 rows: ten strips, the last of one row
        (64, "soft-dtw", (2, 129, 20)),  # 129 rows: 64 + 64 + 1
        (128, "weak only", (1, 64, 6)),  # 129 rows: 128 + 1
        (256, "smoothing only", (1, 257, 4)),
        (512, "soft-dtw", (1, 513, 2)),
        (1024, "soft-dtw", (1, 1025, 1)),  # a full 1024-row strip, then one row
        (1024, "s2dtw", (1, 40, 5)),  # a strip much taller than the grid: 943 idle threads at every barrier
    ],
)
def test_strip_heights(emulated, monkeypatch, strip, variant, shape):
    set_regime(monkeypatch, "block", strip)
    cost, layout = batched(shape, seed=strip)
    check(emulated, cost, layout, Params(gamma=0.5, **VARIANTS[variant]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("regime,strip", REGIMES[:2], ids=["thread", "block-32"])
def test_all_pairs_layout(emulated, monkeypatch, regime, strip, dtype):
    set_regime(monkeypatch, regime, strip)
    bx, by, n, m = 3, 4, 19, 13
    cost = torch.randn(bx * n, by * m, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(dtype)
    layout = Layout.all_pairs(cost, torch.tensor([19, 4, 1]), torch.tensor([13, 13, 2, 5]))
    check(emulated, cost, layout, Params(gamma=0.3, smoothing=0.1, threshold=0.5))


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("shape,bandwidth", [((3, 30, 30), 0.0), ((3, 40, 25), 1.0), ((2, 50, 45), 3.0),
                                             ((2, 30, 20), 50.0), ((1, 300, 280), 2.0)])
@pytest.mark.parametrize("regime,strip", REGIMES[:2], ids=["thread", "block-32"])
def test_band(emulated, monkeypatch, regime, strip, shape, bandwidth, variant):
    """Narrow and wide bands; (1, 300, 280) is a narrow band over many strips, most steps skipped."""
    set_regime(monkeypatch, regime, strip)
    cost, layout = batched(shape, seed=3)
    check(emulated, cost, layout, Params(gamma=0.2, bandwidth=bandwidth, **VARIANTS[variant]))


BAD = [0, -1, -(2**62), 10**15]  # lengths the kernels must refuse (padded extent 11 x 9)
UNTRUSTED = ([11, 0, 5, -1, 12, 11] + [3] * len(BAD), [9, 4, 0, 9, 9, 10] + BAD)
UNTRUSTED_PARAMS = Params(gamma=0.3, smoothing=0.1, threshold=0.5)


def untrusted_child(out: str) -> None:
    """Run in a subprocess by test_untrusted_lengths: a kernel that trusted the lengths would crash."""
    module = build.load()
    cost, layout = batched((len(UNTRUSTED[0]), 11, 9), *UNTRUSTED, seed=4)
    results = {}
    for regime, strip in REGIMES[:2]:
        os.environ["S2DTW_CUDA_REGIME"] = regime
        os.environ["S2DTW_CUDA_STRIP"] = str(strip or "")
        for need_grad in (True, False):
            results[regime, need_grad] = run_emulated(module, cost, layout, UNTRUSTED_PARAMS, need_grad)
    torch.save(results, out)


def test_untrusted_lengths(emulated, tmp_path):
    """A pair length outside [1, padded extent] gives that pair NaN and a zero gradient region; the others are
    unaffected and nothing outside the buffers is written (the gradient's guard cells stay). In a
    subprocess, so that a kernel reading out of bounds fails this test instead of killing pytest."""
    out = tmp_path / "untrusted.pt"
    results = run_child("test_cuda_emulation", "untrusted_child", out, timeout=300)
    cost, layout = batched((len(UNTRUSTED[0]), 11, 9), *UNTRUSTED, seed=4)
    bad = torch.tensor([not (1 <= n <= 11 and 1 <= m <= 9) for n, m in zip(*UNTRUSTED, strict=True)])
    ok_layout = Layout.batched(cost, layout.pair_n.clamp(1, 11), layout.pair_m.clamp(1, 9))
    ref_value, ref_grad = _dispatch.run("cpp", cost, Problem(ok_layout, UNTRUSTED_PARAMS), True)
    assert len(results) == 4
    for (regime, need_grad), (value, grad) in results.items():
        assert torch.isnan(value[bad]).all(), regime
        torch.testing.assert_close(value[~bad], ref_value[~bad], **TOL[torch.float64][0])
        if need_grad:
            assert (grad[bad] == 0).all(), regime
            torch.testing.assert_close(grad[~bad], ref_grad[~bad], **TOL[torch.float64][1])


def test_value_alone_equals_value_with_gradient(emulated, monkeypatch):
    """The forward without a tape is the same computation: bit-identical values, both regimes."""
    cost, layout = batched((3, 33, 21), [33, 9, 20], [21, 21, 3], seed=5)
    params = Params(gamma=0.1, smoothing=0.1, threshold=0.5)
    for regime, strip in REGIMES[:2]:
        set_regime(monkeypatch, regime, strip)
        alone, _ = run_emulated(emulated, cost, layout, params, need_grad=False)
        with_grad, _ = run_emulated(emulated, cost, layout, params, need_grad=True)
        assert torch.equal(alone, with_grad)


@pytest.mark.parametrize("variant", ["soft-dtw", "s2dtw"])
def test_float32_accuracy_small_gamma(emulated, monkeypatch, variant):
    """tests/test_cuda.py's accuracy target, emulated: float32 gradients at gamma = 0.01 on 512 x 512 with
    costs ~10 within 1e-3 of float64 (thread regime: one thread, fast here; the same softmin as the block
    regime). Host exp2f / log2f stand in for the GPU's ex2.approx / lg2.approx (~2 ulp), so this checks the
    float32 algebra (two exps, base-2 scaling, what is rounded where), the GPU test the hardware's rounding."""
    set_regime(monkeypatch, "thread")
    gen = torch.Generator().manual_seed(11)
    cost = (torch.rand(1, 512, 512, generator=gen, dtype=torch.float64) * 20).float()
    layout = Layout.batched(cost, torch.tensor([512]), torch.tensor([512]))
    params = Params(gamma=0.01, **VARIANTS[variant])
    v32, g32 = run_emulated(emulated, cost, layout, params, need_grad=True)
    layout64 = Layout.batched(cost.double(), layout.pair_n, layout.pair_m)
    v64, g64 = _dispatch.run("cpp", cost.double(), Problem(layout64, params), True)
    err = (g32.double() - g64).abs().max().item()
    assert err < 1e-3, f"{variant}: float32 gradient off by {err:.3g}"
    torch.testing.assert_close(v32.double(), v64, rtol=1e-6, atol=1e-3)


# docs/semantics.md "Variants" (V1 gamma = 0, V2 smoothing = 0, V4 open_begin / open_end), against the NumPy
# reference directly (the oracle the C++ kernel is tested against too, in tests/test_variants_cpp.py).
OPEN = {"closed": (False, False), "open_begin": (True, False), "open_end": (False, True), "open_both": (True, True)}
# Each variant with its own smoothing and, where it smooths, with the hard one (smoothing = 0).
SMOOTHINGS = [(v, s) for v in VARIANTS for s in ("own", "hard") if s == "own" or VARIANTS[v]["smoothing"]]


def variant_params(variant: str, smoothing: str, gamma: float, open_: str) -> Params:
    kwargs = dict(VARIANTS[variant], **({"smoothing": 0.0} if smoothing == "hard" else {}))
    begin, end = OPEN[open_]
    return Params(gamma=gamma, **kwargs, open_begin=begin, open_end=end)


def variant_cost(shape, params: Params, dtype, seed=0) -> torch.Tensor:
    """Small integer costs (full of ties, every sum exact) where the hard path is defined by exact sums, i.e.
    gamma = 0 without a soft smoothing (docs/semantics.md, V1: the tie rule is tested on exact sums); else
    continuous ones."""
    gen = torch.Generator().manual_seed(seed)
    if params.gamma == 0 and not params.smoothing:
        return torch.randint(0, 4, shape, generator=gen).to(dtype)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)


def reference(cost: torch.Tensor, layout: Layout, params: Params):
    """The NumPy oracle's values (n_pairs,) and gradient (shaped like cost), in either layout."""
    flat = cost.double().reshape(-1)
    value, grad = torch.empty(layout.n_pairs, dtype=torch.float64), torch.zeros_like(flat)
    for b in range(layout.n_pairs):
        n, m = int(layout.pair_n[b]), int(layout.pair_m[b])
        cells = layout.offset(b) + torch.arange(n)[:, None] * layout.stride_i + torch.arange(m) * layout.stride_j
        v, g = _reference.align_one(flat[cells].numpy(), params.gamma, params.smoothing, params.threshold,
                                    params.bandwidth, open_begin=params.open_begin, open_end=params.open_end)
        value[b], grad[cells] = v, torch.from_numpy(g)
    return value, grad.view(cost.shape)


def check_reference(module, cost, layout, params):
    """The emulated kernel (value and gradient) against the reference; exactly equal on exact (integer) sums."""
    value, grad = run_emulated(module, cost, layout, params, need_grad=True)
    ref_value, ref_grad = reference(cost, layout, params)
    exact = params.gamma == 0 and not params.smoothing  # the same sums in the same order: bit-equal R
    value_tol, grad_tol = (dict(rtol=0, atol=0),) * 2 if exact else TOL[cost.dtype]
    torch.testing.assert_close(value, ref_value.to(value.dtype), **value_tol)
    torch.testing.assert_close(grad.double(), ref_grad, **grad_tol)
    assert (run_emulated(module, cost, layout, params, need_grad=False)[0] == value).all(), "value alone differs"


@pytest.mark.parametrize("open_", list(OPEN))
@pytest.mark.parametrize("gamma", [0.0, 0.3], ids=["hard", "soft"])
@pytest.mark.parametrize("variant,smoothing", SMOOTHINGS, ids=[f"{v}-{s}" for v, s in SMOOTHINGS])
@pytest.mark.parametrize("regime,strip", REGIMES[:2], ids=["thread", "block-32"])
def test_variants_against_reference(emulated, monkeypatch, regime, strip, variant, smoothing, gamma, open_):
    """Both dtypes, variable lengths (a 1-row pair, a 1-column one); the 17-row pair's weak grid has 35 rows
    (33..34 walked with open flags), so in block-32 its rows and its open end's last row cross strips."""
    set_regime(monkeypatch, regime, strip)
    params = variant_params(variant, smoothing, gamma, open_)
    for dtype in (torch.float64, torch.float32):
        cost = variant_cost((3, 17, 6), params, dtype)
        check_reference(emulated, cost, Layout.batched(cost, torch.tensor([17, 5, 1]), torch.tensor([6, 1, 3])),
                        params)


@pytest.mark.parametrize("open_", ["open_begin", "open_end", "open_both"])
@pytest.mark.parametrize("gamma", [0.0, 0.3], ids=["hard", "soft"])
@pytest.mark.parametrize("strip,variant,smoothing,shape,x_lengths", [
    (32, "soft-dtw", "own", (2, 40, 5), [40, 33]),  # 40 = 32 + 8 rows, 33 = 32 + 1: the last row alone in a strip
    (32, "s2dtw", "hard", (2, 17, 4), [17, 16]),  # weak: 33..34 rows walked (n = 17), 31..32 (n = 16)
    (64, "smoothing only", "own", (1, 70, 3), [70]),  # 64 + 6
])
def test_variant_strip_heights(emulated, monkeypatch, strip, variant, smoothing, shape, x_lengths, gamma, open_):
    set_regime(monkeypatch, "block", strip)
    params = variant_params(variant, smoothing, gamma, open_)
    cost = variant_cost(shape, params, torch.float64, seed=strip)
    check_reference(emulated, cost, Layout.batched(cost, torch.tensor(x_lengths), torch.full((shape[0],), shape[2])),
                    params)


@pytest.mark.parametrize("open_", list(OPEN))
@pytest.mark.parametrize("gamma", [0.0, 0.3], ids=["hard", "soft"])
@pytest.mark.parametrize("regime,strip", REGIMES[:2], ids=["thread", "block-32"])
def test_variant_all_pairs_layout(emulated, monkeypatch, regime, strip, gamma, open_):
    set_regime(monkeypatch, regime, strip)
    params = variant_params("s2dtw", "hard" if gamma == 0 else "own", gamma, open_)
    for dtype in (torch.float64, torch.float32):
        cost = variant_cost((3 * 7, 2 * 5), params, dtype, seed=9)
        check_reference(emulated, cost, Layout.all_pairs(cost, torch.tensor([7, 3, 1]), torch.tensor([5, 2])), params)


@pytest.mark.parametrize("gamma", [0.0, 0.3], ids=["hard", "soft"])
@pytest.mark.parametrize("regime,strip", REGIMES[:2], ids=["thread", "block-32"])
def test_variant_band(emulated, monkeypatch, regime, strip, gamma):
    """The hard minima inside a band (closed: open ends refuse a band), where band-edge cells have +inf
    predecessors."""
    set_regime(monkeypatch, regime, strip)
    params = Params(gamma=gamma, smoothing=0.0, threshold=0.5, bandwidth=1.0)
    cost = variant_cost((2, 17, 12), params, torch.float64, seed=5)
    check_reference(emulated, cost, Layout.batched(cost, torch.tensor([17, 9]), torch.tensor([12, 12])), params)


@pytest.mark.parametrize("regime,strip", REGIMES[:2], ids=["thread", "block-32"])
def test_pair_slots(emulated, monkeypatch, regime, strip):
    """Some pairs of an all-pairs cost, in slots out of order (pairwise(x)'s layout): pair_offset reads them."""
    set_regime(monkeypatch, regime, strip)
    params = Params(gamma=0.3, smoothing=0.1, threshold=0.5)
    cost = variant_cost((3 * 7, 3 * 7), params, torch.float64, seed=4)
    full = Layout.all_pairs(cost, torch.tensor([7, 3, 1]), torch.tensor([7, 3, 1]))
    slots = torch.tensor([8, 0, 4, 1])
    value, grad = run_emulated(emulated, cost, full.select(slots), params, need_grad=True)
    ref_value, ref_grad = reference(cost, full, params)
    torch.testing.assert_close(value, ref_value[slots], **TOL[torch.float64][0])
    held = torch.zeros(9, dtype=torch.bool)
    held[slots] = True
    regions = held.reshape(3, 1, 3, 1).expand(3, 7, 3, 7).reshape(cost.shape)
    torch.testing.assert_close(grad[regions], ref_grad[regions], **TOL[torch.float64][1])
    assert grad[~regions].isnan().all()  # each kernel writes its own pairs' regions only
