"""The C++ CPU kernels' variants (docs/semantics.md, "Variants" V1, V2, V4) against the NumPy reference.

gamma = 0 (hard minimum), smoothing = 0 (hard local minimum) and open_begin / open_end, on every SIMD level
this CPU runs, both dtypes, with gradients: the lockstep regime (small pairs, variable lengths, the all-pairs
layout) and the diagonal regime (one large pair, its strips pipelined over two threads). The public API does
not take these yet, so the kernels are called through s2dtw._dispatch.run.

With gamma = 0 and integer costs (no smoothing, or smoothing = 0) every path sum is exact, so ties are decided
by the tie rule alone and the results must be bitwise the reference's; with smoothing > 0 the smoothed costs
round differently per backend, so those cases draw real-valued costs (no ties).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import VARIANTS, require_backend

from s2dtw import _dispatch, _reference
from s2dtw._problem import Layout, Params, Problem, Switches

try:
    from s2dtw import _cpu
except ImportError:  # the tests then fail (or skip with S2DTW_ALLOW_NO_CPP=1) in _needs_cpp
    _cpu = None

OPEN = {"closed": (False, False), "open_begin": (True, False), "open_end": (False, True), "both": (True, True)}
# Each variant of helpers.VARIANTS, with the smoothing at 0.1 and at 0 where it has one.
CONFIGS = {
    f"{name}, smoothing={s}" if s is not None else name: (s, kw["threshold"])
    for name, kw in VARIANTS.items()
    for s in ((0.1, 0.0) if kw["smoothing"] is not None else (None,))
}
SIMD = {"scalar": 0, "avx2": 1, "avx512": 2}


@pytest.fixture(autouse=True)
def _needs_cpp():
    require_backend("cpp")


def _levels() -> list[str]:
    """The SIMD levels this CPU runs (check_math says False for one it has not)."""
    if _cpu is None:
        return ["scalar", "avx2"]
    x = np.zeros(32)
    return ["scalar"] + [lv for lv in ("avx2", "avx512") if _cpu.check_math(lv, *(x.ctypes.data,) * 3, 0)]


LEVELS = _levels()


@pytest.fixture
def simd_levels() -> list[str]:
    if len(LEVELS) == 1:
        pytest.skip("this CPU has no SIMD level (the regimes are the SIMD kernels')")
    return LEVELS[1:]


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng([ord(c) for c in repr(key)])


def _costs(rng, shape, exact: bool) -> np.ndarray:
    """Small integers (exact path sums, many ties) or real values (no ties); float32 values either way, so
    that both dtypes align the same costs."""
    costs = rng.integers(-2, 3, size=shape) if exact else rng.uniform(-1, 1, size=shape)
    return costs.astype(np.float32).astype(np.float64)


def _run(cost, layout_of, x_lengths, y_lengths, params: Params, level: str, dtype, threads: int = 2):
    c = torch.tensor(cost, dtype=dtype)
    problem = Problem(layout_of(c, torch.tensor(x_lengths), torch.tensor(y_lengths)), params,
                      Switches(None, SIMD[level], 0, 0))
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        value, grad = _dispatch.run("cpp", c, problem, True)
    finally:
        torch.set_num_threads(old)
    return value.double().numpy(), grad.double().numpy()


def _check(got, want, dtype, exact: bool) -> None:
    (value, grad), (ref_value, ref_grad) = got, want
    if dtype == torch.float32:
        np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-5)
    elif exact:
        np.testing.assert_array_equal(value, ref_value)
        np.testing.assert_array_equal(grad, ref_grad)
    else:
        np.testing.assert_allclose(value, ref_value, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-12)


def _params(config: str, gamma: float, open_: str) -> tuple[Params, bool]:
    smoothing, threshold = CONFIGS[config]
    exact = gamma == 0 and not smoothing
    return Params(gamma, smoothing, threshold, None, *OPEN[open_]), exact


@pytest.mark.parametrize("open_", sorted(OPEN))
@pytest.mark.parametrize("gamma", [0.0, 0.3])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_lockstep_batched(config, gamma, open_):
    # 5 pairs of variable lengths (some of length 1: one walked row on the weak grid with both ends open)
    params, exact = _params(config, gamma, open_)
    rng = _rng(config, gamma, open_)
    cost = _costs(rng, (5, 4, 5), exact)
    x_lengths, y_lengths = np.array([4, 1, 3, 4, 2]), np.array([5, 3, 1, 2, 5])
    want = _reference.align(cost, x_lengths, y_lengths, gamma, params.smoothing, params.threshold,
                            open_begin=params.open_begin, open_end=params.open_end)
    assert np.all(np.isfinite(want[0]))
    for level in LEVELS:
        for dtype in (torch.float64, torch.float32):
            _check(_run(cost, Layout.batched, x_lengths, y_lengths, params, level, dtype), want, dtype, exact)


@pytest.mark.parametrize("open_", sorted(OPEN))
@pytest.mark.parametrize("gamma", [0.0, 0.3])
@pytest.mark.parametrize("config", ["s2dtw, smoothing=0.0", "soft-dtw"])
def test_lockstep_all_pairs(config, gamma, open_):
    # every x (2) against every y (3) in one (2 * 4, 3 * 5) buffer, each pair with its own lengths
    params, exact = _params(config, gamma, open_)
    rng = np.random.default_rng(7)
    x_lengths, y_lengths, n, m = np.array([4, 2]), np.array([5, 1, 3]), 4, 5
    cost = _costs(rng, (2 * n, 3 * m), exact)
    blocks = cost.reshape(2, n, 3, m).transpose(0, 2, 1, 3).reshape(6, n, m)
    value, grad = _reference.align(blocks, np.repeat(x_lengths, 3), np.tile(y_lengths, 2), gamma,
                                   params.smoothing, params.threshold, open_begin=params.open_begin,
                                   open_end=params.open_end)
    want = value, grad.reshape(2, 3, n, m).transpose(0, 2, 1, 3).reshape(2 * n, 3 * m)
    for level in LEVELS:
        for dtype in (torch.float64, torch.float32):
            _check(_run(cost, Layout.all_pairs, x_lengths, y_lengths, params, level, dtype), want, dtype, exact)


def _diagonal_shape(threshold) -> tuple[int, int]:
    # the SIMD kernels take the diagonal regime for a few pairs whose grid has more than 4096 cells
    # (csrc/cpu/simd_per_isa.h, run); two threads cut it into strips of 32 rows, pipelined
    return (33, 34) if threshold is not None else (66, 67)


@pytest.mark.parametrize("open_", ["open_begin", "open_end", "both"])
@pytest.mark.parametrize("gamma", [0.0, 0.3])
@pytest.mark.parametrize("config", ["s2dtw, smoothing=0.0", "weak only", "soft-dtw"])  # D from ws.d / the cost
def test_diagonal_regime(config, gamma, open_, simd_levels):
    params, exact = _params(config, gamma, open_)
    n, m = _diagonal_shape(params.threshold)
    rng = _rng(config, gamma, open_, "diagonal")
    cost = _costs(rng, (1, n, m), exact)
    want = _reference.align(cost, [n], [m], gamma, params.smoothing, params.threshold,
                            open_begin=params.open_begin, open_end=params.open_end)
    for level in simd_levels:
        for dtype in (torch.float64, torch.float32):
            one = _run(cost, Layout.batched, [n], [m], params, level, dtype, threads=1)  # a single strip
            two = _run(cost, Layout.batched, [n], [m], params, level, dtype, threads=2)  # pipelined strips
            _check(two, want, dtype, exact)
            np.testing.assert_array_equal(one[0], two[0])
            np.testing.assert_array_equal(one[1], two[1])


@pytest.mark.parametrize("gamma", [0.0, 0.3])
def test_diagonal_regime_lengths(gamma, simd_levels):
    # two pairs of different lengths, one per thread; the shorter one's padding gets exactly zero gradient
    params, exact = _params("s2dtw, smoothing=0.0", gamma, "both")
    n, m = _diagonal_shape(params.threshold)
    cost = _costs(np.random.default_rng(11), (2, n, m), exact)
    x_lengths, y_lengths = np.array([n, n - 7]), np.array([m - 4, m])
    want = _reference.align(cost, x_lengths, y_lengths, gamma, params.smoothing, params.threshold,
                            open_begin=True, open_end=True)
    for level in simd_levels:
        for dtype in (torch.float64, torch.float32):
            got = _run(cost, Layout.batched, x_lengths, y_lengths, params, level, dtype)
            _check(got, want, dtype, exact)
            assert np.all(got[1][1, n - 7:] == 0) and np.all(got[1][0, :, m - 4:] == 0)
