"""Second order on the CPU backends: the kernels' Hessian-vector products (_dispatch.run_hvp) against the
oracle (_reference_second) and finite differences of the first-order reference's gradient, gradgradcheck
of the public functions (double backward through _op), the DILATE term, and the errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import VARIANTS, require_backend
from test_robustness import assert_prints_ok

import s2dtw
from s2dtw import _cpu, _dispatch, _op, _reference, _reference_second
from s2dtw._problem import Layout, Params, Problem

BACKENDS = ["cpp", "numba", "numpy"]
X_LENGTHS, Y_LENGTHS = [3, 2], [4, 3]
# (params, shape of a batch of 2): every piece, a band, the subsequence variants (open flags, no band)
CONFIGS = {
    "s2dtw": Params(0.3, 0.2, 0.4),
    "soft-dtw": Params(0.7, None, None),
    "band": Params(0.3, 0.2, 0.4, bandwidth=1.0),
    "open both": Params(0.3, 0.2, 0.4, open_begin=True, open_end=True),
    "open begin, plain": Params(0.5, None, None, open_begin=True),
    "open end, smoothing": Params(0.4, 0.3, None, open_end=True),
}


@pytest.fixture(params=BACKENDS)
def backend(request):
    require_backend(request.param)
    return request.param


def batch(seed, shape=(2, 3, 4), dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) for _ in range(2))


def oracle(cost, direction, params, x_lengths=X_LENGTHS, y_lengths=Y_LENGTHS):
    out = np.zeros(cost.shape)
    for b, (n, m) in enumerate(zip(x_lengths, y_lengths, strict=True)):
        out[b, :n, :m] = _reference_second.hvp(cost[b, :n, :m].numpy(), direction[b, :n, :m].numpy(), params.gamma,
                                                params.smoothing, params.threshold, params.bandwidth,
                                                open_begin=params.open_begin, open_end=params.open_end)[2]
    return out


def problem(cost, params, x_lengths=X_LENGTHS, y_lengths=Y_LENGTHS):
    return Problem(Layout.batched(cost, torch.tensor(x_lengths), torch.tensor(y_lengths)), params)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hvp_matches_the_oracle_and_finite_differences_of_the_gradient(backend, name):
    params = CONFIGS[name]
    cost, direction = batch(1)
    product = _dispatch.run_hvp(backend, cost, direction, problem(cost, params)).numpy()
    np.testing.assert_allclose(product, oracle(cost, direction, params), rtol=1e-10, atol=1e-12)
    kwargs = dict(open_begin=params.open_begin, open_end=params.open_end)
    h = 1e-5
    for b, (n, m) in enumerate(zip(X_LENGTHS, Y_LENGTHS, strict=True)):
        c, z = cost[b, :n, :m].numpy(), direction[b, :n, :m].numpy()
        grads = [_reference.align_one(c + s * h * z, params.gamma, params.smoothing, params.threshold,
                                      params.bandwidth, **kwargs)[1] for s in (1, -1)]
        np.testing.assert_allclose(product[b, :n, :m], (grads[0] - grads[1]) / (2 * h), rtol=1e-6, atol=1e-7)
        assert np.abs(product[b, :n, :m]).max() > 1e-3  # not trivially zero
    assert not product[0, :, 4:].any() and not product[1, 2:].any() and not product[1, :, 3:].any()


def test_hvp_of_the_all_pairs_layout(backend):
    x_lengths, y_lengths = torch.tensor([3, 2]), torch.tensor([2, 4, 1])
    gen = torch.Generator().manual_seed(3)
    cost, direction = (torch.randn(2 * 3, 3 * 4, generator=gen, dtype=torch.float64) for _ in range(2))
    layout = Layout.all_pairs(cost, x_lengths, y_lengths)
    product = _dispatch.run_hvp(backend, cost, direction, Problem(layout, CONFIGS["s2dtw"]))
    as_batch = lambda t: t.reshape(2, 3, 3, 4).transpose(1, 2).reshape(6, 3, 4)  # noqa: E731
    pair_n, pair_m = layout.pair_n.tolist(), layout.pair_m.tolist()
    expected = oracle(as_batch(cost), as_batch(direction), CONFIGS["s2dtw"], pair_n, pair_m)
    np.testing.assert_allclose(as_batch(product).numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["s2dtw", "open both"])
def test_float32_hvp_is_close_to_float64(backend, name):
    cost, direction = batch(4)
    product = _dispatch.run_hvp(backend, cost, direction, problem(cost, CONFIGS[name]))
    single = _dispatch.run_hvp(backend, cost.float(), direction.float(), problem(cost, CONFIGS[name]))
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), product, rtol=1e-4, atol=1e-5 * product.abs().max().item())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradgradcheck_of_the_public_function(backend, variant):
    cost = next(batch(5)).requires_grad_()
    fn = lambda c: s2dtw.s2dtw(cost=c, x_lengths=X_LENGTHS, y_lengths=Y_LENGTHS, gamma=0.4,  # noqa: E731
                               backend=backend, **VARIANTS[variant])
    assert torch.autograd.gradgradcheck(fn, (cost,))


def test_gradgradcheck_pairwise_and_a_band_through_the_features():
    require_backend("cpp")
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 4, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    lengths = dict(x_lengths=[3, 2], y_lengths=[4, 2])
    assert torch.autograd.gradgradcheck(lambda a, b: s2dtw.pairwise(a, b, gamma=0.5, backend="cpp", **lengths),
                                        (x, y))
    assert torch.autograd.gradgradcheck(
        lambda a, b: s2dtw.s2dtw(a, b, gamma=0.5, bandwidth=1.0, backend="cpp", **lengths), (x, y))


@pytest.mark.parametrize("name", ["open both", "open end, smoothing"])
def test_gradgradcheck_with_open_begin_and_end(backend, name):
    cost = next(batch(8)).requires_grad_()
    layout = Layout.batched(cost, torch.tensor(X_LENGTHS), torch.tensor(Y_LENGTHS))
    assert torch.autograd.gradgradcheck(lambda c: _op.align(c, layout, CONFIGS[name], backend), (cost,))


def test_the_op_path_and_the_eager_path_agree_on_second_order(monkeypatch):
    require_backend("cpp")
    cost, upstream = batch(9)
    cost.requires_grad_()
    weights = torch.tensor([1.0, -2.0], dtype=torch.float64)

    def penalty_grad():
        value = s2dtw.s2dtw(cost=cost, x_lengths=X_LENGTHS, y_lengths=Y_LENGTHS, backend="cpp")
        (grad,) = torch.autograd.grad(value @ weights, cost, create_graph=True)
        return torch.autograd.grad((grad * upstream).sum(), cost)[0]

    eager = penalty_grad()
    monkeypatch.setattr(_op, "_eager", lambda cost: False)
    torch.testing.assert_close(penalty_grad(), eager, rtol=0, atol=0)
    expected = oracle(cost.detach(), upstream, Params(0.1, 0.1, 0.5)) * weights.numpy()[:, None, None]
    np.testing.assert_allclose(eager.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_hvp_op_passes_opcheck():
    require_backend("cpp")
    cost, direction = batch(10)
    layout = Layout.batched(cost, torch.tensor(X_LENGTHS), torch.tensor(Y_LENGTHS))
    torch.library.opcheck(_op.hvp_op, (cost, direction, layout.pair_n, layout.pair_m, layout.ints(),
                                       CONFIGS["s2dtw"].floats(), "cpp"))


def omega(n, m):
    i, j = torch.meshgrid(torch.arange(n), torch.arange(m), indexing="ij")
    return ((i - j) ** 2).double()


def test_dilate_temporal_term_gradient_matches_finite_differences():
    """T = sum_ij A_ij (i - j)^2 on the expected alignment A = d value / d C (Le Guen & Thome, 2019), A taken with
    create_graph=True through the public API: dT / dC by autograd (one HVP) against central differences of T."""
    require_backend("cpp")
    x_lengths, y_lengths = [4, 3], [5, 5]
    cost = next(batch(11, (2, 4, 5)))

    def temporal(c, create_graph):
        value = s2dtw.s2dtw(cost=c, x_lengths=x_lengths, y_lengths=y_lengths, gamma=0.3, backend="cpp")
        (alignment,) = torch.autograd.grad(value.sum(), c, create_graph=create_graph)
        return (alignment * omega(4, 5)).sum()

    c = cost.clone().requires_grad_()
    (analytic,) = torch.autograd.grad(temporal(c, True), c)
    h, numeric = 1e-5, torch.zeros_like(cost)
    for idx in np.ndindex(cost.shape):
        bumps = [cost.clone().requires_grad_() for _ in range(2)]
        with torch.no_grad():
            bumps[0][idx] += h
            bumps[1][idx] -= h
        numeric[idx] = (temporal(bumps[0], False) - temporal(bumps[1], False)) / (2 * h)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-7)
    assert analytic.abs().max() > 1e-2 and not analytic[1, 3:].any()


def test_soft_alignment_is_differentiable(backend):
    """soft_alignment keeps the graph of inputs that require grad: its alignment is the create_graph gradient above
    (so DILATE's term trains through it) and its skip masses pass gradcheck; without grad it is detached."""
    cost = next(batch(15, (2, 3, 4))).requires_grad_()
    options = dict(gamma=0.4, smoothing=0.2, threshold=0.3, x_lengths=X_LENGTHS, y_lengths=Y_LENGTHS, backend=backend)
    result = s2dtw.soft_alignment(cost=cost, **options)
    (through_value,) = torch.autograd.grad(s2dtw.s2dtw(cost=cost, **options).sum(), cost, create_graph=True)
    weights = omega(3, 4)
    (want,) = torch.autograd.grad((through_value * weights).sum(), cost)
    (got,) = torch.autograd.grad((result.alignment * weights).sum(), cost)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    assert torch.autograd.gradcheck(lambda c: s2dtw.soft_alignment(cost=c, **options).x_skipped, (cost,))
    assert torch.autograd.gradcheck(lambda c: s2dtw.soft_alignment(cost=c, **options).y_skipped, (cost,))
    assert not any(t.requires_grad for t in s2dtw.soft_alignment(cost=cost.detach(), **options))
    with torch.no_grad():
        assert not s2dtw.soft_alignment(cost=cost, **options).alignment.requires_grad


def test_a_gradient_penalty_through_the_features_trains():
    """A gradient penalty on the features (x, y -> cost -> value): its gradient is finite, nonzero and
    matches finite differences on a tiny problem."""
    require_backend("cpp")
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(1, 3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 4, 2, generator=gen, dtype=torch.float64)

    def penalty(a):
        (grad,) = torch.autograd.grad(s2dtw.s2dtw(a, y, backend="cpp").sum(), a, create_graph=True)
        return grad.pow(2).sum()

    (analytic,) = torch.autograd.grad(penalty(x), x)
    with torch.no_grad():
        numeric = torch.zeros_like(x)
        for idx in np.ndindex(x.shape):
            up, down = x.detach().clone(), x.detach().clone()
            up[idx] += 1e-6
            down[idx] -= 1e-6
            with torch.enable_grad():
                numeric[idx] = (penalty(up.requires_grad_()) - penalty(down.requires_grad_())) / 2e-6
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)
    assert analytic.abs().max() > 1e-3


@pytest.mark.parametrize("params", [Params(0.0, None, None), Params(0.5, 0.0, 0.5), Params(0.0, 0.1, 0.5)])
def test_hard_forms_raise_before_any_kernel(backend, params, monkeypatch):
    cost = next(batch(13)).requires_grad_()
    layout = Layout.batched(cost, torch.tensor(X_LENGTHS), torch.tensor(Y_LENGTHS))
    (grad,) = torch.autograd.grad(_op.align(cost, layout, params, backend).sum(), cost, create_graph=True)
    monkeypatch.setitem(_dispatch._HVP_RUNNERS, backend, None)  # a kernel call would raise TypeError
    with pytest.raises(ValueError, match="second-order gradients .*need gamma > 0 and smoothing None or > 0"):
        grad.pow(2).sum().backward()
    with pytest.raises(ValueError, match="need gamma > 0 and smoothing None or > 0"):
        _dispatch.run_hvp(backend, cost.detach(), cost.detach(), Problem(layout, params))


def test_unreachable_ends_raise(backend):
    cost, direction = batch(14)
    with pytest.raises(ValueError, match="no monotone path reaches the last cell"):
        _dispatch.run_hvp(backend, cost, direction, problem(cost, Params(0.5, None, None, bandwidth=0.0)))


def test_the_cpp_kernel_itself_refuses_hard_forms():
    require_backend("cpp")
    cost, direction = batch(14)
    out = torch.empty_like(cost)
    for params in (Params(0.0, None, None), Params(0.5, 0.0, None)):
        with pytest.raises(ValueError, match="second order needs gamma > 0"):
            _cpu.hvp("float64", cost.data_ptr(), direction.data_ptr(), out.data_ptr(), 1, problem(cost, params))


def test_bad_lengths_and_layouts_raise_in_a_subprocess():
    """Past the Python checks, the HVP kernels check every pair's lengths (a regression would write outside the
    buffer: run in a subprocess), and run_hvp checks that the layout fits the buffer, on every CPU backend."""
    backends = [name for name in BACKENDS if s2dtw.backends()[name]]
    assert "cpp" in backends
    assert_prints_ok(f"""
        import torch
        from s2dtw import _cpu, _dispatch
        from s2dtw._problem import Layout, Params, Problem

        cost = torch.rand(4, 6, 5, dtype=torch.float64)
        layout = Layout.batched(torch.empty(3, 6, 5), torch.full((3,), 6), torch.full((3,), 5))
        small = cost[:2].contiguous()
        for backend in {backends}:
            for bad in ([6, 3, 4, 600], [6, 0, 4, 5], [7, 6, 6, 6], [-3, 6, 6, 6]):
                problem = Problem(Layout.batched(cost, torch.tensor(bad), torch.full((4,), 5)), Params(0.5, 0.1, 0.5))
                try:
                    if backend == "cpp":  # the kernel itself, not only the dispatcher's check
                        _cpu.hvp("float64", cost.data_ptr(), cost.data_ptr(), torch.empty_like(cost).data_ptr(), 1,
                                 problem)
                    else:
                        _dispatch.run_hvp(backend, cost, cost, problem)
                except ValueError as err:
                    assert "[1, 6]" in str(err), err
                else:
                    raise AssertionError(f"{{backend}}: lengths {{bad}} were accepted")
            try:
                _dispatch.run_hvp(backend, small, small, Problem(layout, Params(0.5, None, None)))
            except ValueError as err:
                assert "does not fit a cost buffer of 60 elements" in str(err), err
            else:
                raise AssertionError(f"{{backend}}: a layout of 3 pairs was run on a buffer of 2")
    """)


def test_third_order_raises():
    require_backend("cpp")
    cost = next(batch(15)).requires_grad_()
    value = s2dtw.s2dtw(cost=cost, backend="cpp").sum()
    (grad,) = torch.autograd.grad(value, cost, create_graph=True)
    (second,) = torch.autograd.grad(grad.pow(2).sum(), cost, create_graph=True)
    with pytest.raises(RuntimeError, match="third-order gradients .* are not implemented"):
        second.sum().backward()


def test_the_dilate_example_trains_and_its_gradient_check_agrees(monkeypatch):
    require_backend("cpp")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "examples"))
    import dilate_term

    result = dilate_term.main(steps=21)
    assert result["last temporal"] < 0.2 * result["first temporal"]
    assert result["autograd"] == pytest.approx(result["central difference"], rel=1e-6)
