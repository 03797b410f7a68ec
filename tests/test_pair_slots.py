"""Pair slots (Layout.slots): some regions of a layout, in any order, on every CPU backend; and pairwise(x), which
aligns the slots i <= j of one cost, the all-pairs cost's block-upper triangle folded (s2dtw._cost.symmetric_cost)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import require_backend

import s2dtw
from s2dtw import _cost, _dispatch, _op, functional
from s2dtw._problem import Layout, Params, Problem

BACKENDS = ["cpp", "numba", "numpy"]
GRIDS = {"s2dtw": Params(0.4, 0.1, 0.5), "soft-dtw": Params(0.5, None, None)}


def all_pairs(bx: int = 3, by: int = 4, n: int = 3, m: int = 4) -> tuple[torch.Tensor, Layout]:
    """A random (bx * n, by * m) float64 cost and its all-pairs layout, with variable lengths."""
    cost = torch.randn(bx * n, by * m, dtype=torch.float64, requires_grad=True)
    x_len, y_len = torch.randint(1, n + 1, (bx,)), torch.randint(1, m + 1, (by,))
    return cost, Layout.all_pairs(cost, x_len, y_len)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grid", GRIDS)
def test_slots_give_the_strided_pairs_values_and_gradients(backend, grid):
    require_backend(backend)
    torch.manual_seed(1)
    cost, full = all_pairs()
    slots = torch.randperm(full.n_pairs)[:7]  # a subset, out of order
    weights = torch.randn(7, dtype=torch.float64)
    want = _op.align(cost, full, GRIDS[grid], "numpy")  # the reference, on the strided layout
    (want_grad,) = torch.autograd.grad((want[slots] * weights).sum(), cost)
    got = _op.align(cost, full.select(slots), GRIDS[grid], backend)
    (grad,) = torch.autograd.grad((got * weights).sum(), cost)
    torch.testing.assert_close(got, want[slots].detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-12)
    chosen = torch.zeros(full.n_pairs, dtype=torch.bool)
    chosen[slots] = True  # each region (pairs_per_x = 4 per row of regions) chosen or not
    outside = ~chosen.reshape(3, 1, 4, 1).expand(3, 3, 4, 4).reshape(cost.shape)
    assert (grad[outside] == 0).all() and (grad[~outside] != 0).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_hessian_vector_products_with_slots(backend):
    require_backend(backend)
    torch.manual_seed(2)
    cost, full = all_pairs()
    cost, direction = cost.detach(), torch.randn(cost.shape, dtype=torch.float64)
    slots = torch.tensor([5, 0, 11, 6])
    params = GRIDS["s2dtw"]
    want = _dispatch.run_hvp("numpy", cost, direction, Problem(full, params))
    got = _dispatch.run_hvp(backend, cost, direction, Problem(full.select(slots), params))
    regions = torch.zeros(full.n_pairs, dtype=cost.dtype)
    regions[slots] = 1
    mask = regions.reshape(3, 1, 4, 1).expand(3, 3, 4, 4).reshape(cost.shape)
    torch.testing.assert_close(got, want * mask, rtol=1e-10, atol=1e-12)


def test_gradgradcheck_with_slots():
    cost, full = all_pairs(2, 2, 2, 3)
    layout = full.select(torch.tensor([3, 0, 1]))
    assert torch.autograd.gradgradcheck(lambda c: _op.align(c, layout, Params(0.5, 0.3, 0.5), "cpp"), (cost,))


@pytest.mark.parametrize("slots, why", [([0, 12], "out of range"), ([0, 2**40], "far out of range"),
                                        ([-1, 2], "negative"), ([3, 3], "duplicate")])
def test_check_fits_refuses_bad_slots(slots, why):
    cost, full = all_pairs()
    layout = dataclasses.replace(full.select(torch.tensor([0, 1])), slots=torch.tensor(slots))
    with pytest.raises(ValueError, match="slots .* must be distinct and inside"):
        layout.check_fits(cost.numel())
    with pytest.raises(ValueError, match="slots"):
        _op.align(cost, layout, GRIDS["s2dtw"], "cpp")


@pytest.mark.parametrize("bad", ["int32", "count", "strided"])
def test_cpp_module_refuses_malformed_slots(bad):
    """The C++ module checks the slots tensor before any kernel reads it (no crash possible: it raises first)."""
    require_backend("cpp")
    cost, full = all_pairs()
    layout = full.select(torch.tensor([0, 5]))
    slots = {"int32": torch.tensor([0, 5], dtype=torch.int32), "count": torch.tensor([0, 5, 6]),
             "strided": torch.tensor([0, 9, 5, 9])[::2]}[bad]
    object.__setattr__(layout, "slots", slots)  # past __post_init__'s normalisation, as a broken caller would
    cost = cost.detach()
    with pytest.raises(ValueError, match="slots must be a contiguous int64 tensor of n_pairs values"):
        _dispatch._run_cpp(cost, cost.new_empty(2), None, Problem(layout, GRIDS["s2dtw"]))


# (batch, n, MIN_GROUP_ROWS): g groups of `rows` rows; g = 1, even, odd with a short last group, even with one
FOLDS = {"one group": (4, 2, 128), "4 groups": (6, 3, 4), "3, last short": (7, 1, 2), "2, last short": (5, 2, 4)}


@pytest.mark.parametrize("fold", FOLDS)
@pytest.mark.parametrize("metric", ["neg_dot", "sqeuclidean"])
def test_folded_cost_holds_every_pair_i_le_j(monkeypatch, fold, metric):
    """Each pair i <= j's region of the folded cost, found by its slot, is the all-pairs cost's region (i, j); the
    cells no block covers are zero (torch.empty fills with NaN here, which the finite check would refuse)."""
    batch, n, min_rows = FOLDS[fold]
    monkeypatch.setattr(_cost, "MIN_GROUP_ROWS", min_rows)
    torch.manual_seed(4)
    x = torch.randn(batch, n, 3, dtype=torch.float64)
    rows, cols = torch.triu_indices(batch, batch)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # with fill_uninitialized_memory (default): empty tensors hold NaN
    try:
        cost, slots = _cost.symmetric_cost(x, metric, rows, cols)
    finally:
        torch.use_deterministic_algorithms(was)
    full = functional._all_pairs_cost(x, x, metric).reshape(batch, n, batch, n)
    lengths = torch.full((rows.numel(),), n)
    layout = Layout.in_grid(cost, n, n, lengths, lengths, slots)
    layout.check_fits(cost.numel())  # in range and distinct
    for k, (i, j) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        region = cost.reshape(-1)[layout.offset(k):].as_strided((n, n), (layout.stride_i, 1))
        torch.testing.assert_close(region, full[i, :, j], rtol=1e-13, atol=1e-13)
    if min_rows < batch * n:  # several groups: less than the all-pairs buffer
        assert cost.numel() < (batch * n) ** 2


@pytest.mark.parametrize("fold", ["4 groups", "3, last short"])
def test_folded_gram_gradient(fold):
    batch, n, min_rows = FOLDS[fold]
    place = _cost._Fold(batch * n, -(-batch // max(1, min(batch, batch * n // min_rows))) * n)
    a, b = (torch.randn(batch * n, 2, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(lambda u, v: _cost._FoldedGram.apply(u, v, place, -2.0), (a, b))
    assert torch.autograd.gradgradcheck(lambda u, v: _cost._FoldedGram.apply(u, v, place, -2.0), (a, b))
    assert torch.autograd.gradcheck(lambda u: _cost._FoldedGram.apply(u, u, place, -1.0), (a,))  # x x^T


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("metric", ["neg_dot", "neg_cosine", "sqeuclidean", "callable"])
def test_symmetric_pairwise_equals_pairwise_of_x_with_x(monkeypatch, backend, metric):
    require_backend(backend)
    monkeypatch.setattr(_cost, "MIN_GROUP_ROWS", 1)  # one group per sequence: several GEMM blocks at this size
    torch.manual_seed(3)
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    lengths = [3, 1, 2, 3]
    options = dict(backend=backend, metric=(lambda a, b: torch.cdist(a, b)) if metric == "callable" else metric)
    got = s2dtw.pairwise(x, x_lengths=lengths, **options)
    want = s2dtw.pairwise(x, x, x_lengths=lengths, y_lengths=lengths, **options)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    weights = torch.randn(4, 4, dtype=torch.float64)
    (grad,) = torch.autograd.grad((got * weights).sum(), x)
    (want_grad,) = torch.autograd.grad((want * weights).sum(), x)
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-12)


def test_gradgradcheck_symmetric_pairwise(monkeypatch):
    monkeypatch.setattr(_cost, "MIN_GROUP_ROWS", 1)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a: s2dtw.pairwise(a, gamma=0.5, x_lengths=[2, 1, 2], backend="cpp"),
                                        (x,))


def test_select_keeps_the_strides():
    _, full = all_pairs()
    chosen = full.select(torch.tensor([7, 2]))
    assert chosen.ints() == full.ints() and torch.equal(chosen.pair_n, full.pair_n[[7, 2]])
    assert [chosen.offset(0), chosen.offset(1)] == [full.offset(7), full.offset(2)]
