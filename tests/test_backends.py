"""Every CPU backend against the NumPy reference: values and gradients, float64 and float32."""

import numpy as np
import pytest
import torch
from helpers import VARIANTS, backend_value_grad, reference_value_grad, require_backend
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import s2dtw
from s2dtw import _torch_reference


@st.composite
def problems(draw):
    batch = draw(st.integers(1, 3))
    n, m = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    gamma = 10 ** draw(st.floats(-3, 2))
    smoothing = draw(st.one_of(st.none(), st.floats(0.01, 10)))
    threshold = draw(st.one_of(st.none(), st.floats(-1, 2)))
    bandwidth = draw(st.one_of(st.none(), st.none(), st.floats(0, 6)))
    x_lengths = draw(st.lists(st.integers(1, n), min_size=batch, max_size=batch))
    y_lengths = draw(st.lists(st.integers(1, m), min_size=batch, max_size=batch))
    seed = draw(st.integers(0, 2**32 - 1))
    cost = np.random.default_rng(seed).normal(size=(batch, n, m))
    return cost, dict(gamma=gamma, smoothing=smoothing, threshold=threshold, bandwidth=bandwidth), x_lengths, y_lengths


@pytest.fixture(params=["cpp", "numba"])
def compiled_backend(request) -> str:
    require_backend(request.param)
    return request.param


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problem=problems())
def test_matches_reference_float64(compiled_backend, problem):
    cost, params, x_lengths, y_lengths = problem
    try:
        value, grad = backend_value_grad(cost, compiled_backend, x_lengths=x_lengths, y_lengths=y_lengths, **params)
    except ValueError as err:  # a band too narrow for these lengths is refused; tested elsewhere
        assume("cuts every path off" not in str(err))
        raise
    ref_value, ref_grad = reference_value_grad(cost, x_lengths, y_lengths, **params)
    assert np.all(np.isfinite(ref_value))
    np.testing.assert_allclose(value, ref_value, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("gamma", [1e-3, 0.1, 1.0, 100.0])
def test_float32_matches_reference(cpu_backend, variant, gamma):
    cost32 = np.random.default_rng(4).normal(size=(3, 7, 5)).astype(np.float32)
    params = dict(gamma=gamma, **VARIANTS[variant])
    # The reference sees the same float32-rounded numbers, so only the backend's own rounding counts.
    ref_value, ref_grad = reference_value_grad(cost32.astype(np.float64), **params)
    value, grad = backend_value_grad(cost32, cpu_backend, dtype=torch.float32, **params)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_lengths_one(cpu_backend, variant):
    for shape in [(2, 1, 1), (2, 1, 5), (2, 4, 1)]:
        cost = np.random.default_rng(5).normal(size=shape)
        ref_value, ref_grad = reference_value_grad(cost, gamma=0.3, **VARIANTS[variant])
        value, grad = backend_value_grad(cost, cpu_backend, gamma=0.3, **VARIANTS[variant])
        np.testing.assert_allclose(value, ref_value, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-12)


def test_padding_gets_exactly_zero_gradient_and_no_influence(cpu_backend):
    x = torch.randn(3, 6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    x_lengths, y_lengths = torch.tensor([6, 2, 4]), torch.tensor([1, 5, 3])
    value = s2dtw.s2dtw(x, y, x_lengths=x_lengths, y_lengths=y_lengths, backend=cpu_backend)
    value.sum().backward()
    for b in range(3):
        n, m = int(x_lengths[b]), int(y_lengths[b])
        assert torch.all(x.grad[b, n:] == 0) and torch.all(y.grad[b, m:] == 0)
        alone = s2dtw.s2dtw(x[b : b + 1, :n], y[b : b + 1, :m], backend=cpu_backend)
        torch.testing.assert_close(value[b : b + 1], alone, rtol=1e-13, atol=1e-13)
    # garbage in the padding changes nothing
    x2, y2 = x.detach().clone(), y.detach().clone()
    x2[1, 2:] = 1e3
    y2[0, 1:] = -1e3
    torch.testing.assert_close(
        s2dtw.s2dtw(x2, y2, x_lengths=x_lengths, y_lengths=y_lengths, backend=cpu_backend), value.detach()
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck(cpu_backend, variant):
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    params = dict(gamma=0.5, **VARIANTS[variant])
    assert torch.autograd.gradcheck(
        lambda a, b: s2dtw.s2dtw(a, b, x_lengths=[4, 2], backend=cpu_backend, **params), (x, y)
    )


def test_backends_agree_on_a_larger_batch():
    require_backend("cpp")
    require_backend("numba")
    cost = np.random.default_rng(6).normal(size=(16, 23, 31))
    results = [backend_value_grad(cost, b) for b in ("cpp", "numba")]
    for value, grad in results[1:]:
        np.testing.assert_allclose(value, results[0][0], rtol=1e-13)
        np.testing.assert_allclose(grad, results[0][1], rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("shape", [(2, 4, 4), (3, 5, 3)])
def test_equals_dense_vt_twins_construction(cpu_backend, shape):
    b, n, m = shape
    x = torch.nn.functional.normalize(torch.randn(b, n, 8, dtype=torch.float64), dim=-1).requires_grad_()
    y = torch.nn.functional.normalize(torch.randn(b, m, 8, dtype=torch.float64), dim=-1).requires_grad_()
    # The VT-TWINS construction written out densely with torch ops, differentiated by autograd.
    dense = _torch_reference.s2dtw(-x @ y.transpose(1, 2))
    fused = s2dtw.s2dtw(x, y, backend=cpu_backend)  # the defaults are VT-TWINS' settings
    torch.testing.assert_close(fused, dense, rtol=1e-12, atol=1e-12)
    dense_grads = torch.autograd.grad(dense.sum(), (x, y))
    fused_grads = torch.autograd.grad(fused.sum(), (x, y))
    for got, want in zip(fused_grads, dense_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
