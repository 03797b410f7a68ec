"""Public API: costs, losses, dtypes, dispatch rules and the errors users get."""

import numpy as np
import pytest
import torch

import s2dtw
from s2dtw import S2DTWLoss, SoftDTWLoss


def test_top_level_exports():
    from s2dtw import S2DTWLoss as Loss  # the one-line import users write

    assert Loss is S2DTWLoss
    info = s2dtw.backends()
    assert info["numpy"] and info["default"]["cpu"] in ("cpp", "numba", "numpy")


@pytest.mark.parametrize("metric", ["neg_dot", "neg_cosine", "sqeuclidean"])
def test_metrics_build_the_documented_cost(metric):
    x, y = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)
    xn, yn = x.numpy(), y.numpy()
    if metric == "neg_dot":
        cost = -np.einsum("bid,bjd->bij", xn, yn)
    elif metric == "neg_cosine":
        unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
        cost = -np.einsum("bid,bjd->bij", unit(xn), unit(yn))
    else:
        cost = ((xn[:, :, None] - yn[:, None]) ** 2).sum(-1)
    got = s2dtw.s2dtw(x, y, metric=metric)
    torch.testing.assert_close(got, s2dtw.s2dtw(cost=torch.from_numpy(cost)), rtol=1e-12, atol=1e-12)


def test_callable_metric_and_its_shape_check():
    x, y = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)
    l1 = lambda a, b: (a[:, :, None] - b[:, None]).abs().sum(-1)  # noqa: E731
    torch.testing.assert_close(s2dtw.soft_dtw(x, y, metric=l1), s2dtw.soft_dtw(cost=l1(x, y)))
    with pytest.raises(ValueError, match=r"cost must have shape \(B, N, M\)"):
        s2dtw.s2dtw(x, y, metric=lambda a, b: torch.zeros(2, 4))


def test_soft_dtw_is_s2dtw_without_smoothing_and_weak_alignment():
    cost = torch.randn(3, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(
        s2dtw.soft_dtw(cost=cost, gamma=0.7), s2dtw.s2dtw(cost=cost, gamma=0.7, smoothing=None, threshold=None)
    )


def test_unequal_lengths_and_gradients_reach_both_inputs():
    x = torch.randn(4, 8, 16, requires_grad=True)
    y = torch.randn(4, 3, 16, requires_grad=True)
    loss = S2DTWLoss()(x, y)
    loss.backward()
    assert loss.shape == () and torch.isfinite(loss)
    assert x.grad.abs().sum() > 0 and y.grad.abs().sum() > 0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_reductions(reduction):
    x, y = torch.randn(3, 4, 2, dtype=torch.float64), torch.randn(3, 6, 2, dtype=torch.float64)
    values = s2dtw.soft_dtw(x, y)
    got = SoftDTWLoss(reduction=reduction)(x, y)
    want = {"mean": values.mean(), "sum": values.sum(), "none": values}[reduction]
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="reduction"):
        S2DTWLoss(reduction="avg")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_float32(dtype):
    x, y = torch.randn(2, 5, 4).to(dtype), torch.randn(2, 3, 4).to(dtype)
    x.requires_grad_()
    got = s2dtw.s2dtw(x, y)
    assert got.dtype == dtype
    want = s2dtw.s2dtw(x.detach().float(), y.float())
    torch.testing.assert_close(got.float(), want.to(dtype).float())
    got.sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()


def test_inputs_are_not_modified():
    x, y = torch.randn(2, 5, 4, requires_grad=True), torch.randn(2, 3, 4, requires_grad=True)
    lengths = torch.tensor([5, 2])
    saved = [t.detach().clone() for t in (x, y, lengths)]
    s2dtw.s2dtw(x, y, x_lengths=lengths).sum().backward()
    for before, after in zip(saved, (x, y, lengths), strict=True):
        assert torch.equal(before, after.detach())


def test_no_grad_path_matches_grad_path(cpu_backend):
    cost = torch.randn(3, 6, 4, dtype=torch.float64)
    with torch.no_grad():
        plain = s2dtw.s2dtw(cost=cost, backend=cpu_backend)
    tracked = s2dtw.s2dtw(cost=cost.clone().requires_grad_(), backend=cpu_backend)
    torch.testing.assert_close(plain, tracked.detach(), rtol=0, atol=0)


def test_backend_selection(monkeypatch):
    cost = torch.randn(2, 3, 3, dtype=torch.float64)
    monkeypatch.setenv("S2DTW_BACKEND", "numpy")
    assert s2dtw._dispatch.resolve_backend(cost.device, None) == "numpy"
    assert s2dtw._dispatch.resolve_backend(cost.device, "cpp" if s2dtw.backends()["cpp"] else "numpy") in (
        "cpp", "numpy")
    monkeypatch.setenv("S2DTW_BACKEND", "fortran")
    with pytest.raises(ValueError, match="S2DTW_BACKEND='fortran'"):
        s2dtw.s2dtw(cost=cost)
    monkeypatch.delenv("S2DTW_BACKEND")
    with pytest.raises(ValueError, match="backend='tpu'"):
        s2dtw.s2dtw(cost=cost, backend="tpu")
    with pytest.raises(ValueError, match="'cuda' needs CUDA tensors"):
        s2dtw.s2dtw(cost=cost, backend="cuda")


@pytest.mark.parametrize("name, value", [("S2DTW_SIMD", "sse2"), ("S2DTW_CUDA_REGIME", "warp"),
                                         ("S2DTW_CUDA_STRIP", "48"), ("S2DTW_CUDA_STRIP", "2048"),
                                         ("S2DTW_CUDA_STRIP", "-32"), ("S2DTW_CUDA_STRIP", "big")])
def test_bad_switch_raises_naming_it(monkeypatch, cpu_backend, name, value):
    """The switches are read in one place (s2dtw/_problem.py, read_switches) for every backend."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        s2dtw.s2dtw(cost=torch.randn(1, 3, 3), backend=cpu_backend)


def test_switches_reach_the_description(monkeypatch):
    from s2dtw._problem import Switches, read_switches

    assert read_switches({}) == Switches()
    env = dict(S2DTW_BACKEND="numpy", S2DTW_SIMD="avx2", S2DTW_CUDA_REGIME="block", S2DTW_CUDA_STRIP="96")
    assert read_switches(env) == Switches("numpy", 1, 2, 96)
    assert read_switches(dict(S2DTW_SIMD="scalar", S2DTW_CUDA_REGIME="thread")) == Switches(None, 0, 1, 0)


@pytest.mark.skipif(not s2dtw.backends()["cpp"], reason="the C++ extension was not built")
@pytest.mark.parametrize("switches", [dict(max_simd=3), dict(max_simd=-1), dict(cuda_regime=4),
                                      dict(cuda_strip=48), dict(cuda_strip=2048), dict(max_simd=2**40)])
def test_the_extension_checks_the_switches_it_is_handed(switches):
    """Never trust what crosses the boundary: C++ checks the description's switches itself."""
    from s2dtw import _cpu
    from s2dtw._problem import Layout, Params, Problem, Switches

    cost, value = torch.rand(1, 3, 3, dtype=torch.float64), torch.empty(1, dtype=torch.float64)
    problem = Problem(Layout.batched(cost, torch.tensor([3]), torch.tensor([3])), Params(1.0, None, None),
                      Switches(**switches))
    with pytest.raises(ValueError, match="invalid problem description"):
        _cpu.run("float64", cost.data_ptr(), value.data_ptr(), 0, 1, problem)


@pytest.mark.skipif(not s2dtw.backends()["cpp"], reason="the C++ extension was not built")
@pytest.mark.parametrize("lengths", ["int32", "strided", "short"])
def test_the_extension_checks_the_lengths_it_is_handed(lengths):
    """A description whose lengths the kernels would misread (any object with the fields) is refused."""
    from types import SimpleNamespace

    from s2dtw import _cpu
    from s2dtw._problem import Layout, Params, Problem

    cost, value = torch.rand(2, 3, 3, dtype=torch.float64), torch.empty(2, dtype=torch.float64)
    good = Layout.batched(cost, torch.tensor([3, 3]), torch.tensor([3, 3]))
    bad = {"int32": torch.tensor([3, 3], dtype=torch.int32), "strided": torch.tensor([3, 0, 3])[::2],
           "short": torch.tensor([3])}[lengths]
    layout = SimpleNamespace(**{f: getattr(good, f) for f in ("n_pairs", "pairs_per_x", "stride_x", "stride_y",
                                                               "stride_i", "stride_j", "padded_n", "padded_m",
                                                               "pair_n")}, pair_m=bad)
    problem = SimpleNamespace(layout=layout, params=Params(1.0, None, None), switches=Problem(good, None).switches)
    with pytest.raises(ValueError, match="pair_m must be a contiguous int64 tensor"):
        _cpu.run("float64", cost.data_ptr(), value.data_ptr(), 0, 1, problem)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_device_without_cuda_backend_raises_instead_of_copying():
    with pytest.raises(RuntimeError, match="never copies to the CPU"):
        s2dtw._dispatch.resolve_backend(torch.device("cuda"), None)
    with pytest.raises(ValueError, match="runs on CPU tensors"):
        s2dtw._dispatch.resolve_backend(torch.device("cuda"), "cpp")


X, Y = torch.randn(2, 4, 3), torch.randn(2, 5, 3)
BAD_INPUTS = [
    (dict(x=X[0], y=Y), ValueError, r"x must have shape \(B, N, d\), got \(4, 3\)"),
    (dict(x=X, y=torch.randn(3, 5, 3)), ValueError, r"same batch size, got x \(2, 4, 3\) and y \(3, 5, 3\)"),
    (dict(x=X, y=torch.randn(2, 5, 4)), ValueError, r"same feature size d, got x \(2, 4, 3\) and y \(2, 5, 4\)"),
    (dict(x=torch.randn(2, 0, 3), y=Y), ValueError, r"x must not be empty, got shape \(2, 0, 3\)"),
    (dict(x=X, y=Y.double()), TypeError, "same dtype"),
    (dict(x=X.long(), y=Y), TypeError, "x must be a floating-point tensor"),
    (dict(x=X.numpy(), y=Y), TypeError, "x must be a torch.Tensor"),
    (dict(x=X, y=Y, x_lengths=[5, 1]), ValueError, r"x_lengths must lie in \[1, 4\]"),
    (dict(x=X, y=Y, y_lengths=[0, 1]), ValueError, r"y_lengths must lie in \[1, 5\]"),
    (dict(x=X, y=Y, x_lengths=[1, 2, 3]), ValueError, r"x_lengths must have shape \(2,\)"),
    (dict(x=X, y=Y, x_lengths=torch.tensor([1.0, 2.0])), TypeError, "x_lengths must hold integers"),
    (dict(x=X, y=Y, gamma=-0.1), ValueError, "gamma must be a finite number >= 0"),
    (dict(x=X, y=Y, gamma=float("nan")), ValueError, "gamma must be a finite number >= 0"),
    (dict(x=X, y=Y, gamma=float("inf")), ValueError, "gamma must be a finite number >= 0"),
    (dict(x=X, y=Y, gamma=1e-310), ValueError, "1/gamma overflows float64"),
    (dict(x=X, y=Y, smoothing=-1.0), ValueError, "smoothing must be a finite number >= 0"),
    (dict(x=X, y=Y, smoothing=5e-324), ValueError, "1/smoothing overflows float64"),
    (dict(x=X, y=Y, open_end=1), TypeError, "open_end must be a bool"),
    (dict(x=X, y=Y, threshold=float("inf")), ValueError, "threshold must be a finite number or None"),
    (dict(x=X.clone().fill_(float("nan")), y=Y), ValueError, "x contains NaN or inf"),
    (dict(cost=torch.tensor([[[float("inf")]]])), ValueError, "cost contains NaN or inf"),
    (dict(x=X, y=Y, cost=torch.randn(2, 4, 5)), ValueError, "either the sequences x, y or a precomputed cost"),
    (dict(x=X), ValueError, "pass the sequences x"),
    (dict(x=X, y=Y, metric="manhattan"), ValueError, "metric must be one of"),
    (dict(cost=torch.randn(4, 5)), ValueError, r"cost must have shape \(B, N, M\)"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD_INPUTS)
def test_bad_inputs_raise_documented_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        s2dtw.s2dtw(**kwargs)


def test_mixed_devices_are_rejected():
    meta = torch.randn(2, 5, 3, device="meta")
    with pytest.raises(ValueError, match="same device"):
        s2dtw.s2dtw(X, meta)


def test_gradient_scaling_and_repeated_backward(cpu_backend):
    cost = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    value = s2dtw.s2dtw(cost=cost, backend=cpu_backend)
    value.sum().backward(retain_graph=True)  # d loss / d value = 1 broadcast: the saved gradient as is
    once = cost.grad.clone()
    value.sum().backward(retain_graph=True)  # must not have been changed by the first backward
    torch.testing.assert_close(cost.grad, 2 * once, rtol=0, atol=0)
    weights = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    (scaled,) = torch.autograd.grad((value * weights).sum(), cost)
    torch.testing.assert_close(scaled, once * weights[:, None, None], rtol=0, atol=0)
