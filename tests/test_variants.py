"""The variants of docs/semantics.md (V1-V5) through the public API, on every CPU backend, against the NumPy
reference: exact DTW (gamma=0), hard smoothing (smoothing=0), subsequence alignment (open_begin/open_end),
alignment_path, and the symmetric pairwise(x)."""

import itertools

import numpy as np
import pytest
import torch
from helpers import VARIANTS

import s2dtw
from s2dtw import _reference

GRIDS = dict(VARIANTS, **{"hard smoothing": dict(smoothing=0.0, threshold=0.5),
                          "hard smoothing, plain": dict(smoothing=0.0, threshold=None)})
OPEN = [(False, False), (True, False), (False, True), (True, True)]
OPEN_IDS = ["closed", "open begin", "open end", "open both"]
X_LENGTHS, Y_LENGTHS = [4, 2, 3, 1], [5, 3, 1, 4]


def public_value_grad(cost: np.ndarray, backend: str, **kwargs):
    c = torch.tensor(cost, requires_grad=True)
    value = s2dtw.s2dtw(cost=c, x_lengths=X_LENGTHS, y_lengths=Y_LENGTHS, backend=backend, **kwargs)
    (grad,) = torch.autograd.grad((value * torch.arange(1.0, 5.0, dtype=value.dtype)).sum(), c)
    return value.detach().numpy(), grad.numpy()


def reference_value_grad(cost: np.ndarray, gamma, smoothing, threshold, open_begin=False, open_end=False):
    value, grad = _reference.align(cost, X_LENGTHS, Y_LENGTHS, gamma, smoothing, threshold, open_begin=open_begin,
                                   open_end=open_end)
    return value, grad * np.arange(1.0, 5.0)[:, None, None]


@pytest.mark.parametrize("gamma", [0.0, 0.3])
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("opened", OPEN, ids=OPEN_IDS)
def test_values_and_gradients_match_the_reference(cpu_backend, gamma, grid, opened):
    """Random costs (no ties), variable lengths, float64, a non-uniform upstream gradient."""
    cost = np.random.default_rng(3).normal(size=(4, 4, 5))
    options = dict(gamma=gamma, open_begin=opened[0], open_end=opened[1], **GRIDS[grid])
    value, grad = public_value_grad(cost, cpu_backend, **options)
    want_value, want_grad = reference_value_grad(cost, **options)
    np.testing.assert_allclose(value, want_value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("smoothing", [None, 0.0])
@pytest.mark.parametrize("threshold", [None, 1.0])
@pytest.mark.parametrize("opened", OPEN, ids=OPEN_IDS)
def test_integer_costs_at_gamma_zero_are_exact_with_the_tie_rule(cpu_backend, smoothing, threshold, opened):
    """Small integers: exact sums and many ties, so the value and the 0/1 gradient must be the reference's
    bit for bit (diagonal, then up, then left; smoothing: left, up, diagonal)."""
    cost = np.random.default_rng(4).integers(-2, 3, size=(4, 4, 5)).astype(np.float64)
    options = dict(gamma=0.0, smoothing=smoothing, threshold=threshold, open_begin=opened[0], open_end=opened[1])
    value, grad = public_value_grad(cost, cpu_backend, **options)
    want_value, want_grad = reference_value_grad(cost, **options)
    np.testing.assert_array_equal(value, want_value)
    np.testing.assert_array_equal(grad, want_grad)


@pytest.mark.parametrize("threshold", [None, 1.0])
def test_float32_integer_costs_at_gamma_zero_are_exact(cpu_backend, threshold):
    """float32 costs, float32 transition weights: small integer sums and 0/1 weights are still exact."""
    cost = np.random.default_rng(8).integers(-2, 3, size=(4, 4, 5)).astype(np.float64)
    options = dict(gamma=0.0, smoothing=0.0, threshold=threshold, open_begin=True, open_end=True)
    c = torch.tensor(cost, dtype=torch.float32, requires_grad=True)
    value = s2dtw.s2dtw(cost=c, x_lengths=X_LENGTHS, y_lengths=Y_LENGTHS, backend=cpu_backend, **options)
    (grad,) = torch.autograd.grad(value.sum(), c)
    want_value, want_grad = _reference.align(cost, X_LENGTHS, Y_LENGTHS, 0.0, 0.0, threshold, open_begin=True,
                                             open_end=True)
    assert value.dtype == grad.dtype == torch.float32
    np.testing.assert_array_equal(value.detach().double().numpy(), want_value)
    np.testing.assert_array_equal(grad.double().numpy(), want_grad)


@pytest.mark.parametrize("gamma", [0.0, 0.5])
@pytest.mark.parametrize("opened", OPEN[1:], ids=OPEN_IDS[1:])
def test_pairwise_all_pairs_layout(cpu_backend, gamma, opened):
    """pairwise(x, y) with the variants: entry [i, j] is the reference on x_i's and y_j's cost."""
    x = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 5, 2, dtype=torch.float64)
    x_len, y_len = [4, 2, 3], [5, 3]
    options = dict(gamma=gamma, smoothing=0.2, threshold=0.3, open_begin=opened[0], open_end=opened[1])
    got = s2dtw.pairwise(x, y, x_lengths=x_len, y_lengths=y_len, backend=cpu_backend, **options)
    weights = torch.randn(3, 2, dtype=torch.float64)
    (grad,) = torch.autograd.grad((got * weights).sum(), x)
    want_grad = torch.zeros_like(x)
    for i, j in itertools.product(range(3), range(2)):
        xi, yj = x[i, : x_len[i]].detach(), y[j, : y_len[j]]
        value, dc = _reference.align_one(-(xi @ yj.T).numpy(), **options)
        assert got[i, j].item() == pytest.approx(value, rel=1e-12, abs=1e-12)
        want_grad[i, : x_len[i]] -= weights[i, j] * torch.from_numpy(dc) @ yj  # d(-x y^T) / dx
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("grid", ["s2dtw", "soft-dtw"])
@pytest.mark.parametrize("gamma", [0.0, 0.4])
def test_symmetric_pairwise_equals_pairwise_of_x_with_itself(cpu_backend, grid, gamma):
    x = torch.randn(4, 5, 3, dtype=torch.float64, requires_grad=True)
    lengths = [5, 2, 4, 3]
    options = dict(gamma=gamma, backend=cpu_backend, **VARIANTS[grid])
    got = s2dtw.pairwise(x, x_lengths=lengths, **options)
    want = s2dtw.pairwise(x, x, x_lengths=lengths, y_lengths=lengths, **options)
    assert torch.equal(got, got.T)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    weights = torch.randn(4, 4, dtype=torch.float64)  # not symmetric: g[i, j] and g[j, i] must both count
    (grad,) = torch.autograd.grad((got * weights).sum(), x)
    (want_grad,) = torch.autograd.grad((want * weights).sum(), x)
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-12)


def test_symmetric_pairwise_gradcheck(cpu_backend):
    x = torch.randn(3, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: s2dtw.pairwise(a, x_lengths=[3, 2, 3], backend=cpu_backend), (x,))


@pytest.mark.parametrize("grid", ["s2dtw", "soft-dtw"])
def test_symmetric_pairwise_divergence_has_an_exactly_zero_diagonal(cpu_backend, grid):
    x = torch.randn(5, 6, 4, dtype=torch.float64, requires_grad=True)
    lengths = [6, 3, 5, 1, 4]
    got = s2dtw.pairwise(x, x_lengths=lengths, normalize=True, backend=cpu_backend, **VARIANTS[grid])
    assert (got.diagonal() == 0).all() and torch.equal(got, got.T)
    (grad,) = torch.autograd.grad(got.diagonal().sum(), x)
    assert (grad == 0).all()
    values = s2dtw.pairwise(x, x_lengths=lengths, backend=cpu_backend, **VARIANTS[grid]).detach()
    want = values - (values.diagonal()[:, None] + values.diagonal()[None, :]) / 2
    torch.testing.assert_close(got.detach(), want, rtol=0, atol=0)


def test_losses_and_soft_alignment_take_the_open_flags(cpu_backend):
    x, y = torch.randn(3, 4, 2, dtype=torch.float64), torch.randn(3, 6, 2, dtype=torch.float64)
    options = dict(open_begin=True, open_end=True, backend=cpu_backend)
    values = s2dtw.s2dtw(x, y, **options)
    torch.testing.assert_close(s2dtw.S2DTWLoss(**options)(x, y), values.mean(), rtol=1e-14, atol=0)
    soft = s2dtw.soft_dtw(x, y, gamma=0.5, **options)
    torch.testing.assert_close(s2dtw.SoftDTWLoss(gamma=0.5, **options)(x, y), soft.mean(), rtol=1e-14, atol=0)
    assert torch.isfinite(s2dtw.S2DTWContrastiveLoss(**options)(x, y))
    result = s2dtw.soft_alignment(x, y, **options)
    _, want = _reference.align(-(x @ y.transpose(1, 2)).numpy(), [4] * 3, [6] * 3, 0.1, 0.1, 0.5, open_begin=True,
                               open_end=True)
    np.testing.assert_allclose(result.alignment.numpy(), want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(result.value, values, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("smoothing", [None, 0.0, 0.2])
@pytest.mark.parametrize("threshold", [None, 1.0])
@pytest.mark.parametrize("opened", OPEN, ids=OPEN_IDS)
def test_alignment_path_is_the_reference_path(cpu_backend, smoothing, threshold, opened):
    """Integer costs (ties everywhere; random ones with smoothing > 0, whose D is rounded differently by torch
    and NumPy), variable lengths: path, skipped counts and grid cells as the reference's; soft_alignment at
    gamma=0 gives the same skipped counts."""
    rng = np.random.default_rng(5)
    cost = rng.integers(-2, 3, size=(4, 4, 5)).astype(np.float64) if smoothing in (None, 0.0) else rng.normal(
        size=(4, 4, 5))
    options = dict(smoothing=smoothing, threshold=threshold, open_begin=opened[0], open_end=opened[1])
    got = s2dtw.alignment_path(cost=torch.from_numpy(cost), x_lengths=X_LENGTHS, y_lengths=Y_LENGTHS,
                               backend=cpu_backend, **options)
    want = _reference.paths(cost, X_LENGTHS, Y_LENGTHS, **options)
    soft = s2dtw.soft_alignment(cost=torch.from_numpy(cost), gamma=0.0, x_lengths=X_LENGTHS, y_lengths=Y_LENGTHS,
                                backend=cpu_backend, **options)
    assert len(got) == len(want) == 4
    for b, (path, ref) in enumerate(zip(got, want, strict=True)):
        assert path.path.dtype == torch.int64 and path.path.shape[1] == 2
        assert path.path.tolist() == ref.cells.tolist() and path.grid_cells.tolist() == ref.grid_cells.tolist()
        assert path.value.item() == pytest.approx(ref.value, rel=1e-12, abs=1e-12)
        if threshold is None:
            assert path.x_skipped is None and path.y_skipped is None
            continue
        assert path.x_skipped.tolist() == ref.x_skipped.tolist() and path.y_skipped.tolist() == ref.y_skipped.tolist()
        assert soft.x_skipped[b, : X_LENGTHS[b]].tolist() == ref.x_skipped.tolist()
        assert soft.y_skipped[b, : Y_LENGTHS[b]].tolist() == ref.y_skipped.tolist()


@pytest.mark.parametrize("grid", ["weak only", "hard smoothing", "soft-dtw"])
def test_alignment_path_in_a_band(cpu_backend, grid):
    cost = np.random.default_rng(6).integers(-2, 3, size=(4, 4, 5)).astype(np.float64)
    got = s2dtw.alignment_path(cost=torch.from_numpy(cost), x_lengths=X_LENGTHS, y_lengths=Y_LENGTHS, bandwidth=1.0,
                               backend=cpu_backend, **GRIDS[grid])
    want = _reference.paths(cost, X_LENGTHS, Y_LENGTHS, bandwidth=1.0, **GRIDS[grid])
    assert [p.grid_cells.tolist() for p in got] == [w.grid_cells.tolist() for w in want]
    with pytest.raises(ValueError, match=r"lengths \(4, 2\)"):  # in elements, not the explicit grid's cells
        s2dtw.alignment_path(cost=torch.from_numpy(cost), y_lengths=[2] * 4, bandwidth=0.0, **GRIDS[grid])


BAD = [
    (dict(bandwidth=1.0, open_begin=True), "cannot be combined with a band"),
    (dict(bandwidth=1.0, open_end=True), "cannot be combined with a band"),
    (dict(normalize=True, open_end=True), "normalize=True cannot be combined with open_begin/open_end"),
    (dict(gamma=-1e-3), "gamma must be a finite number >= 0"),
    (dict(smoothing=float("nan")), "smoothing must be a finite number >= 0"),
]


@pytest.mark.parametrize("kwargs, message", BAD)
def test_errors(kwargs, message):
    x, y = torch.randn(2, 3, 2), torch.randn(2, 4, 2)
    for call in (lambda: s2dtw.s2dtw(x, y, **kwargs), lambda: s2dtw.pairwise(x, y, **kwargs),
                 lambda: s2dtw.S2DTWLoss(**kwargs)):
        with pytest.raises(ValueError, match=message):
            call()
    if "normalize" not in kwargs:
        with pytest.raises(ValueError, match=message):
            s2dtw.soft_alignment(x, y, **kwargs)
        with pytest.raises(ValueError, match=message):
            s2dtw.alignment_path(x, y, **kwargs)


def test_errors_of_the_symmetric_pairwise_alignment_path_and_barycenter():
    x = torch.randn(3, 4, 2)
    for flags in (dict(open_begin=True), dict(open_end=True)):
        with pytest.raises(ValueError, match=r"not symmetric: pass pairwise\(x, x\)"):
            s2dtw.pairwise(x, **flags)
    with pytest.raises(ValueError, match="pass x_lengths only"):
        s2dtw.pairwise(x, y_lengths=[4, 4, 4])
    with pytest.raises(ValueError, match="exact"):
        s2dtw.alignment_path(x, x, gamma=0.1)
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        s2dtw.barycenter(x, gamma=0.0)


def test_plot_alignment_draws_the_optimal_path(tmp_path):
    pytest.importorskip("matplotlib")
    cost = torch.randn(2, 4, 6, dtype=torch.float64)
    best = s2dtw.alignment_path(cost=cost)
    fig = s2dtw.plot_alignment(cost, s2dtw.soft_alignment(cost=cost), index=1, optimal=best)
    (line,) = fig.axes[0].lines
    np.testing.assert_array_equal(line.get_xydata(), best[1].path.numpy()[:, ::-1])




@pytest.fixture(scope="module")
def tslearn_metrics():
    """tslearn.metrics (the comparisons with it skip where it is not installed; nothing else does)."""
    return pytest.importorskip("tslearn.metrics")


def tslearn(fn, x, y):
    """tslearn's torch backend (its default, numba, takes half a minute to compile): path and value."""
    path, value = fn(torch.from_numpy(x), torch.from_numpy(y), be="pytorch")
    return [[int(p), int(q)] for p, q in path], float(value)


@pytest.mark.parametrize("integer", [False, True])
def test_exact_dtw_and_path_are_tslearns(cpu_backend, integer, tslearn_metrics):
    """soft_dtw(gamma=0) is tslearn's dtw squared (sqeuclidean); alignment_path its dtw_path, ties included."""
    rng = np.random.default_rng(6)
    for n, m in [(1, 3), (5, 5), (4, 7), (6, 2)]:
        x, y = (rng.integers(0, 3, size=(k, 2)) if integer else rng.normal(size=(k, 2)) for k in (n, m))
        x, y = x.astype(np.float64), y.astype(np.float64)
        tx, ty = torch.from_numpy(x)[None], torch.from_numpy(y)[None]
        value = s2dtw.soft_dtw(tx, ty, gamma=0.0, backend=cpu_backend).item()
        distance = float(tslearn_metrics.dtw(torch.from_numpy(x), torch.from_numpy(y), be="pytorch"))
        assert value == pytest.approx(distance**2, rel=1e-12, abs=1e-12)
        (path,) = s2dtw.alignment_path(tx, ty, smoothing=None, threshold=None, metric="sqeuclidean",
                                       backend=cpu_backend)
        assert path.path.tolist() == tslearn(tslearn_metrics.dtw_path, x, y)[0]


def test_subsequence_path_is_tslearns(cpu_backend, tslearn_metrics):
    """Non-negative costs: open_begin + open_end is tslearn's subsequence DTW (earliest end, latest start)."""
    rng = np.random.default_rng(7)
    x, y = rng.integers(0, 3, size=(3, 1)).astype(np.float64), rng.integers(0, 3, size=(9, 1)).astype(np.float64)
    tx, ty = torch.from_numpy(x)[None], torch.from_numpy(y)[None]
    (path,) = s2dtw.alignment_path(tx, ty, smoothing=None, threshold=None, metric="sqeuclidean", open_begin=True,
                                   open_end=True, backend=cpu_backend)
    want_path, want = tslearn(tslearn_metrics.dtw_subsequence_path, x, y)
    assert path.path.tolist() == want_path
    value = s2dtw.soft_dtw(tx, ty, gamma=0.0, open_begin=True, open_end=True, backend=cpu_backend).item()
    assert value == path.value.item() == pytest.approx(want**2, rel=1e-6)


def test_training_md_examples_run(cpu_backend, capsys, monkeypatch):
    """The three blocks of docs/training.md's variants section run and print what their comments say."""
    monkeypatch.setenv("S2DTW_BACKEND", cpu_backend)
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
    section = text.split("## Exact DTW, subsequences and the symmetric matrix")[1].split("\n## ")[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    for block in blocks:
        exec(compile(block, "docs/training.md", "exec"), {})
        printed = capsys.readouterr().out.splitlines()
        promised = [line.split("# ")[1].split(":")[0].strip() for line in block.splitlines()
                    if line.startswith("print(")]
        assert printed == promised
