"""The C++ CPU kernels: float32 accuracy, and every SIMD level against the scalar path."""

import numpy as np
import pytest
import torch
from helpers import require_backend

import s2dtw

try:
    from s2dtw import _cpu
except ImportError:  # every test below then fails (or skips with S2DTW_ALLOW_NO_CPP=1) in _needs_cpp
    _cpu = None


@pytest.fixture(autouse=True)
def _needs_cpp():
    require_backend("cpp")


def _levels():
    if _cpu is None:
        return ["avx2", "avx512"]  # so that the SIMD tests are collected and fail rather than vanish
    out = []
    for level in ("avx2", "avx512"):
        x = np.zeros(32)
        if _cpu.check_math(level, x.ctypes.data, x.ctypes.data, x.ctypes.data, 0):
            out.append(level)
    return out


LEVELS = _levels()


def _run(monkeypatch, level, fn, cost, threads=2, **kw):
    monkeypatch.setenv("S2DTW_SIMD", level)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        c = cost.clone().requires_grad_()
        v = fn(cost=c, backend="cpp", **kw)
        v.sum().backward()
        return v.detach(), c.grad
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("level", ["scalar"] + LEVELS)
@pytest.mark.parametrize("gamma, tol", [(0.01, 1e-3), (0.001, 1e-2)])
def test_float32_gradient_accuracy(monkeypatch, level, gamma, tol):
    # float32 inputs: the SIMD kernels take the softmin's exp / log in float32 lanes
    monkeypatch.setenv("S2DTW_SIMD", level)
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(1, 512, 512, generator=g, dtype=torch.float64) * 20
    kw = dict(gamma=gamma)
    c64 = cost.clone().requires_grad_()
    v64 = s2dtw.soft_dtw(cost=c64, backend="cpp", **kw)
    v64.backward()
    c32 = cost.float().requires_grad_()
    v32 = s2dtw.soft_dtw(cost=c32, backend="cpp", **kw)
    v32.backward()
    assert abs(v32.item() - v64.item()) <= 1e-5 * abs(v64.item())
    assert (c32.grad.double() - c64.grad).abs().max().item() <= tol


CASES = {
    "mixed_small": dict(shape=(70, 9, 11), lengths=True, fn="s2dtw", kw={}),
    "large": dict(shape=(1, 700, 650), lengths=False, fn="soft_dtw", kw=dict(gamma=0.1)),
    "large_three": dict(shape=(3, 300, 260), lengths=True, fn="soft_dtw", kw=dict(gamma=0.5)),
    "weak_smooth_large": dict(shape=(2, 90, 80), lengths=True, fn="s2dtw", kw=dict(gamma=0.1)),
    "band_small": dict(shape=(50, 12, 15), lengths=False, fn="soft_dtw", kw=dict(gamma=0.3, bandwidth=0.7)),
    "band_large": dict(shape=(2, 400, 400), lengths=False, fn="soft_dtw", kw=dict(gamma=0.3, bandwidth=0.05)),
    "band_weak": dict(shape=(40, 10, 10), lengths=False, fn="s2dtw", kw=dict(bandwidth=0.3)),
    # one pair shared by the threads (strips of rows in a pipeline), with a band / the weak grid
    "band_one": dict(shape=(1, 480, 480), lengths=False, fn="soft_dtw", kw=dict(gamma=0.3, bandwidth=0.05)),
    "weak_smooth_one": dict(shape=(1, 160, 140), lengths=True, fn="s2dtw", kw=dict(gamma=0.1)),
    "weak_band_one": dict(shape=(1, 160, 160), lengths=False, fn="s2dtw", kw=dict(gamma=0.1, bandwidth=0.1)),
    # plain soft-DTW in lanes with ragged lengths (register-tile transposes, tails of
    # columns and lanes) and by diagonals with ragged lengths (skewed cost, tiled write-back)
    "plain_small": dict(shape=(70, 13, 19), lengths=True, fn="soft_dtw", kw=dict(gamma=0.1)),
    "plain_mid": dict(shape=(40, 100, 90), lengths=True, fn="soft_dtw", kw=dict(gamma=0.1)),
    "plain_diag": dict(shape=(4, 300, 333), lengths=True, fn="soft_dtw", kw=dict(gamma=0.1)),
    # large costs, small gamma: R grows to thousands while the float32 lanes see only the
    # min-shifted differences (lockstep and diagonal)
    "large_r_small": dict(shape=(40, 30, 28), lengths=True, fn="soft_dtw", kw=dict(gamma=0.01), scale=50),
    "large_r_diag": dict(shape=(1, 400, 380), lengths=False, fn="soft_dtw", kw=dict(gamma=0.01), scale=50),
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_simd_matches_scalar(monkeypatch, level, case, dtype, threads):
    spec = CASES[case]
    g = torch.Generator().manual_seed(1)
    b, n, m = spec["shape"]
    cost = ((torch.rand(b, n, m, generator=g, dtype=torch.float64) * 2 - 1) * spec.get("scale", 1)).to(dtype)
    kw = dict(spec["kw"])
    if spec["lengths"]:
        kw["x_lengths"] = torch.randint(max(1, n // 2), n + 1, (b,), generator=g)
        kw["y_lengths"] = torch.randint(max(1, m // 2), m + 1, (b,), generator=g)
    fn = getattr(s2dtw, spec["fn"])
    v_ref, g_ref = _run(monkeypatch, "scalar", fn, cost, threads, **kw)
    v, gr = _run(monkeypatch, level, fn, cost, threads, **kw)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v, v_ref, **tol)
    torch.testing.assert_close(gr, g_ref, **tol)
    if spec["lengths"]:  # padding gets exactly zero gradient
        for k in range(b):
            assert torch.all(gr[k, kw["x_lengths"][k]:] == 0)
            assert torch.all(gr[k, :, kw["y_lengths"][k]:] == 0)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("shape", [(40, 21, 13), (3, 200, 150)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_simd_strided_cost(monkeypatch, level, shape, dtype):
    # a transposed (non-contiguous) cost view: the kernels' strided paths
    g = torch.Generator().manual_seed(3)
    b, n, m = shape
    cost = (torch.rand(b, m, n, generator=g, dtype=torch.float64) * 2 - 1).to(dtype).transpose(1, 2)
    v_ref, g_ref = _run(monkeypatch, "scalar", s2dtw.soft_dtw, cost, 2, gamma=0.1)
    v, gr = _run(monkeypatch, level, s2dtw.soft_dtw, cost, 2, gamma=0.1)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v, v_ref, **tol)
    torch.testing.assert_close(gr, g_ref, **tol)


@pytest.mark.parametrize("level", LEVELS)
def test_simd_pairwise(monkeypatch, level):
    g = torch.Generator().manual_seed(2)
    x = torch.nn.functional.normalize(torch.randn(5, 7, 4, generator=g, dtype=torch.float64), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(9, 6, 4, generator=g, dtype=torch.float64), dim=-1)
    out = {}
    for lv in ("scalar", level):
        monkeypatch.setenv("S2DTW_SIMD", lv)
        xx, yy = x.clone().requires_grad_(), y.clone().requires_grad_()
        v = s2dtw.pairwise(xx, yy, backend="cpp")
        v.sum().backward()
        out[lv] = (v.detach(), xx.grad, yy.grad)
    for a, b in zip(out["scalar"], out[level], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("level", LEVELS)
def test_vector_exp_log(level):
    rng = np.random.default_rng(0)
    x = np.concatenate([-rng.uniform(0, 708, 1 << 16), -rng.uniform(0, 1, 1 << 16)])
    ex, lx = np.empty_like(x), np.empty_like(x)
    assert _cpu.check_math(level, x.ctypes.data, ex.ctypes.data, lx.ctypes.data, x.size)
    assert np.max(np.abs(ex - np.exp(x)) / np.exp(x)) <= 4.5e-16
    s = rng.uniform(1, 3, 1 << 16)
    es, ls = np.empty_like(s), np.empty_like(s)
    _cpu.check_math(level, s.ctypes.data, es.ctypes.data, ls.ctypes.data, s.size)
    assert np.max(np.abs(ls - np.log(s))) <= 4.5e-16


@pytest.mark.parametrize("level", LEVELS)
def test_vector_exp_log_float32(level):
    # the float32 lanes of float32 inputs: exp of the min-shifted arguments, log of their sum in [1, 3]
    rng = np.random.default_rng(0)
    x = np.concatenate([-rng.uniform(0, 87, 1 << 16), -rng.uniform(0, 1, 1 << 16), [0.0] * 16]).astype(np.float32)
    ex, lx = np.empty_like(x), np.empty_like(x)
    assert _cpu.check_math(level, x.ctypes.data, ex.ctypes.data, lx.ctypes.data, x.size, dtype="float32")
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(ex - want) / want) <= 3e-7
    assert np.all(ex[-16:] == 1.0)  # the minimum's own term is exactly 1
    tiny = np.array([-np.inf, -88.0, -100.0] * 16, dtype=np.float32)
    et, lt = np.empty_like(tiny), np.empty_like(tiny)
    _cpu.check_math(level, tiny.ctypes.data, et.ctypes.data, lt.ctypes.data, tiny.size, dtype="float32")
    assert np.all(et == 0.0)
    s = rng.uniform(1, 3, 1 << 16).astype(np.float32)
    es, ls = np.empty_like(s), np.empty_like(s)
    _cpu.check_math(level, s.ctypes.data, es.ctypes.data, ls.ctypes.data, s.size, dtype="float32")
    assert np.max(np.abs(ls - np.log(s.astype(np.float64)))) <= 2e-7


def test_simd_level_reported(monkeypatch):
    assert _cpu.best_simd_level() in ("avx512", "avx2", "scalar")
    monkeypatch.delenv("S2DTW_SIMD", raising=False)  # (the sanitizer run sets it)
    assert s2dtw.backends()["simd"] == _cpu.best_simd_level()
    monkeypatch.setenv("S2DTW_SIMD", "scalar")  # the level a call runs at, after $S2DTW_SIMD
    assert s2dtw.backends()["simd"] == "scalar"
