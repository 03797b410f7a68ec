"""The reference's variants (docs/semantics.md, "Variants") against brute force over every path.

gamma=0 (exact DTW, the tie rule), smoothing=0, open_begin/open_end, optimal_path; tslearn's dtw as a
second opinion. Ties are built deliberately from small integer costs, whose path sums are exact.
"""

import functools
import itertools

import numpy as np
import pytest
import torch
from helpers import finite_differences

from s2dtw import _reference

STEP_RANK = {(1, 1): 0, (1, 0): 1, (0, 1): 2}  # the tie order: diagonal, up, left


@functools.cache
def path_set(cols: int, first: int, last: int, open_begin: bool, open_end: bool) -> tuple:
    """Every monotone path of a grid with `cols` columns from its start set in row `first` to its end set in row `last`.

    Closed begin starts at (first, 0), open at any (first, a); closed end stops at (last, cols-1), open at any
    (last, b). Steps: down, right, diagonal.
    """
    starts = [(first, a) for a in range(cols)] if open_begin else [(first, 0)]

    def extend(path):
        p, q = path[-1]
        if p == last and (open_end or q == cols - 1):
            yield path
        for dp, dq in ((1, 1), (1, 0), (0, 1)):
            if p + dp <= last and q + dq < cols:
                yield from extend(path + [(p + dp, q + dq)])

    return tuple(tuple(path) for start in starts for path in extend([start]))


def grid_and_rows(cost, smoothing, threshold, open_begin, open_end):
    """W (or D) by brute force and the first/last row a path walks."""
    smoothed = cost if smoothing is None else brute_smoothing(cost, smoothing)[0]
    if threshold is None:
        return smoothed, 0, smoothed.shape[0] - 1
    grid = np.full((2 * cost.shape[0] + 1, 2 * cost.shape[1] + 1), float(threshold))
    grid[1::2, 1::2] = smoothed
    return grid, int(open_begin), grid.shape[0] - 1 - int(open_end)


def brute_smoothing(cost: np.ndarray, s: float):
    """D and, for s = 0, the neighbour each D cell takes its minimum from (first of left, up, diagonal)."""
    n, m = cost.shape
    out, chosen = np.empty_like(cost), {}
    for i, j in itertools.product(range(n), range(m)):
        if i == j == 0:
            out[i, j] = cost[i, j] - s * np.log(3.0)
            continue
        near = [(a, b) for a, b in ((i, j - 1), (i - 1, j), (i - 1, j - 1)) if a >= 0 and b >= 0]
        values = np.array([cost[c] for c in near])
        if s == 0:
            chosen[i, j] = near[int(np.argmin(values))]
            out[i, j] = cost[i, j] + values.min()
        else:
            out[i, j] = cost[i, j] - s * np.logaddexp.reduce(-values / s)
    return out, chosen


def brute_force(cost, gamma, smoothing=None, threshold=None, open_begin=False, open_end=False):
    """(value, paths, path costs) over the variant's path set; gamma = 0 is the minimum."""
    grid, first, last = grid_and_rows(cost, smoothing, threshold, open_begin, open_end)
    paths = path_set(grid.shape[1], first, last, open_begin, open_end)
    costs = np.array([sum(grid[c] for c in path) for path in paths])
    value = costs.min() if gamma == 0 else -gamma * np.logaddexp.reduce(-costs / gamma)
    return value, paths, costs


def tie_rule_path(paths, costs):
    """The optimal path the tie rule picks, found without the recursion.

    Backtracking takes, at each cell, the first of (diagonal, up, left) that is on an optimal path, and an
    open end the smallest column: that is the optimal path whose end column, then reversed step ranks, are
    lexicographically least. Reaching the start ranks as a diagonal step (0): starting here beats coming from the
    left. Exact only on exact sums (integer costs).
    """

    def key(path):
        ranks = [STEP_RANK[(b[0] - a[0], b[1] - a[1])] for a, b in zip(path[:-1], path[1:], strict=True)]
        return [path[-1][1], *ranks[::-1], 0]

    return min((p for p, c in zip(paths, costs, strict=True) if c == costs.min()), key=key)


def indicator_gradient(cost, path, smoothing, threshold):
    """d value / d C of one path by the chain rule: its D cells, each through its hard smoothing choice."""
    cells = path if threshold is None else [((p - 1) // 2, (q - 1) // 2) for p, q in path if p % 2 and q % 2]
    grad = np.zeros_like(cost)
    chosen = brute_smoothing(cost, 0.0)[1] if smoothing == 0 else {}
    for cell in cells:
        grad[cell] += 1.0
        if cell in chosen:
            grad[chosen[cell]] += 1.0
    return grad


SHAPES = [(1, 1), (1, 3), (3, 1), (2, 3), (3, 2), (3, 3)]
WEAK_SHAPES = [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]
OPEN = [(False, False), (True, False), (False, True), (True, True)]


def variant_cases(smoothings=(None, 0.0, 0.3)):
    for shape, smoothing, threshold, opened in itertools.product(SHAPES, smoothings, (None, 0.5), OPEN):
        if threshold is None or shape in WEAK_SHAPES:
            yield shape, smoothing, threshold, opened


@pytest.mark.parametrize(("shape", "smoothing", "threshold", "opened"), list(variant_cases()))
def test_hard_value_is_brute_force_minimum_exactly(shape, smoothing, threshold, opened):
    cost = np.random.default_rng(hash(shape) % 1000).normal(size=shape)
    want, _, _ = brute_force(cost, 0.0, smoothing, threshold, *opened)
    value, _ = _reference.align_one(cost, 0.0, smoothing, threshold, open_begin=opened[0], open_end=opened[1])
    assert value == want
    path = _reference.optimal_path(cost, smoothing, threshold, open_begin=opened[0], open_end=opened[1])
    assert path.value == want


@pytest.mark.parametrize(("shape", "smoothing", "threshold", "opened"), list(variant_cases()))
@pytest.mark.parametrize("gamma", [0.05, 1.0])
def test_soft_value_is_softmin_over_the_path_set(shape, smoothing, threshold, opened, gamma):
    cost = np.random.default_rng(7).normal(size=shape)
    want, _, _ = brute_force(cost, gamma, smoothing, threshold, *opened)
    value, _ = _reference.align_one(cost, gamma, smoothing, threshold, open_begin=opened[0], open_end=opened[1])
    assert value == pytest.approx(want, rel=1e-12, abs=1e-12)


# soft smoothing makes D non-integer, so its ties are not exact: covered by finite differences instead
@pytest.mark.parametrize(("shape", "smoothing", "threshold", "opened"), list(variant_cases((None, 0.0))))
@pytest.mark.parametrize("seed", range(3))
def test_hard_gradient_and_path_follow_the_tie_rule(shape, smoothing, threshold, opened, seed):
    # Costs in {0, 1} (threshold 1 or 0) tie many paths: the rule, not luck, must pick the one.
    rng = np.random.default_rng(seed)
    cost = rng.integers(0, 2, size=shape).astype(np.float64)
    threshold = None if threshold is None else float(seed % 2)
    value, paths, costs = brute_force(cost, 0.0, smoothing, threshold, *opened)
    chosen = tie_rule_path(paths, costs)
    _, grad = _reference.align_one(cost, 0.0, smoothing, threshold, open_begin=opened[0], open_end=opened[1])
    np.testing.assert_array_equal(grad, indicator_gradient(cost, chosen, smoothing, threshold))
    path = _reference.optimal_path(cost, smoothing, threshold, open_begin=opened[0], open_end=opened[1])
    assert path.value == value
    np.testing.assert_array_equal(path.grid_cells, np.array(chosen).reshape(-1, 2))


def test_tie_rule_on_flat_costs():
    """Every path of a zero cost ties; the rule's pick, written out (docs/semantics.md)."""
    _, _, costs = brute_force(np.zeros((3, 3)), 0.0)
    assert (costs == 0).sum() == 13  # all of them compete (Delannoy number D(2, 2))
    assert _reference.optimal_path(np.zeros((3, 3)), None, None).grid_cells.tolist() == [[0, 0], [1, 1], [2, 2]]
    # diagonal first from the end, then row 0 is only reachable from the left
    assert _reference.optimal_path(np.zeros((2, 4)), None, None).grid_cells.tolist() == [[0, 0], [0, 1], [0, 2], [1, 3]]
    # open end: the smallest column; open begin: start rather than come from the left
    flat = _reference.optimal_path(np.zeros((2, 4)), None, None, open_begin=True, open_end=True)
    assert flat.grid_cells.tolist() == [[0, 0], [1, 0]]
    shifted = _reference.optimal_path(np.zeros((2, 4)), None, None, open_begin=True)
    assert shifted.grid_cells.tolist() == [[0, 2], [1, 3]]


@pytest.mark.parametrize("threshold", [None, 0.5])
@pytest.mark.parametrize("opened", OPEN)
def test_soft_value_tends_to_the_hard_one(threshold, opened):
    """0 <= hard - soft <= gamma log(number of paths), and the soft gradient tends to the path indicator."""
    cost = np.random.default_rng(11).normal(size=(2, 3))
    hard, paths, costs = brute_force(cost, 0.0, 0.2, threshold, *opened)
    _, hard_grad = _reference.align_one(cost, 0.0, 0.2, threshold, open_begin=opened[0], open_end=opened[1])
    for gamma in (1.0, 0.1, 0.01, 0.001):
        soft, _ = _reference.align_one(cost, gamma, 0.2, threshold, open_begin=opened[0], open_end=opened[1])
        assert 0.0 <= hard - soft <= gamma * np.log(len(paths)) + 1e-12
    margin = np.partition(costs, 1)[1] - costs.min()  # to the second-best path: unique optimum on random data
    assert margin > 1e-6
    _, soft_grad = _reference.align_one(cost, margin / 60, 0.2, threshold, open_begin=opened[0], open_end=opened[1])
    np.testing.assert_allclose(soft_grad, hard_grad, atol=1e-20 + len(paths) * 2 * np.exp(-60))


@pytest.mark.parametrize("smoothing", [None, 0.0, 0.2])
@pytest.mark.parametrize("threshold", [None, 0.3])
@pytest.mark.parametrize("gamma", [0.0, 0.3])
@pytest.mark.parametrize("opened", OPEN)
def test_gradient_matches_finite_differences(smoothing, threshold, gamma, opened):
    """Away from ties (random costs) the hard forms are differentiable too: the indicator is the gradient."""
    cost = np.random.default_rng(5).normal(size=(3, 4))
    kwargs = dict(open_begin=opened[0], open_end=opened[1])
    _, grad = _reference.align_one(cost, gamma, smoothing, threshold, **kwargs)
    numeric = finite_differences(lambda c: _reference.align_one(c, gamma, smoothing, threshold, **kwargs)[0], cost,
                                 1e-7 if gamma == 0 or smoothing == 0 else 1e-6)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


def in_band(path, rows, cols, bandwidth):
    width = np.floor(bandwidth * min(rows - 1, cols - 1))
    return all(abs(p * (cols - 1) - q * (rows - 1)) <= width for p, q in path)


@pytest.mark.parametrize(("shape", "bandwidth"), [((3, 3), 0.0), ((4, 4), 1.0), ((3, 5), 1.0), ((5, 3), 1.5)])
def test_hard_value_in_a_band_is_the_minimum_over_band_paths(shape, bandwidth):
    cost = np.random.default_rng(3).normal(size=shape)
    every = path_set(shape[1], 0, shape[0] - 1, False, False)
    paths = [p for p in every if in_band(p, *shape, bandwidth)]
    assert 0 < len(paths) < len(every)
    want = min(sum(cost[c] for c in path) for path in paths)
    assert _reference.align_one(cost, 0.0, None, None, bandwidth)[0] == want
    assert _reference.optimal_path(cost, None, None, bandwidth).value == want


@pytest.mark.parametrize("opened", OPEN[1:])
def test_band_with_open_begin_or_end_raises(opened):
    kwargs = dict(open_begin=opened[0], open_end=opened[1])
    with pytest.raises(ValueError, match="band"):
        _reference.align_one(np.zeros((3, 3)), 0.1, None, None, 1.0, **kwargs)
    with pytest.raises(ValueError, match="band"):
        _reference.optimal_path(np.zeros((3, 3)), None, 0.5, 1.0, **kwargs)


@pytest.mark.parametrize(("gamma", "smoothing"), [(-0.1, None), (0.1, -1.0)])
def test_negative_temperatures_raise(gamma, smoothing):
    with pytest.raises(ValueError, match=">= 0"):
        _reference.align_one(np.zeros((2, 2)), gamma, smoothing, None)


def test_weak_path_reports_cost_cells_and_skips():
    cost = np.random.default_rng(4).normal(size=(3, 4))
    path = _reference.optimal_path(cost, 0.1, 0.2)
    rows, cols = path.grid_cells.T
    real = (rows % 2 == 1) & (cols % 2 == 1)
    np.testing.assert_array_equal(path.cells, np.stack([(rows[real] - 1) // 2, (cols[real] - 1) // 2], axis=1))
    for i in range(3):
        assert path.x_skipped[i] == np.sum((rows == 2 * i + 1) & (cols % 2 == 0))
    for j in range(4):
        assert path.y_skipped[j] == np.sum((cols == 2 * j + 1) & (rows % 2 == 0))
    # the W path's indicator is the gamma -> 0 expected alignment soft_alignment sums its skip masses from
    grid = _reference.weak_grid(_reference.smooth(cost, 0.1)[0], 0.2)
    indicator = np.zeros_like(grid)
    indicator[rows, cols] = 1.0
    hard = _reference.soft_dtw_grad(grid, _reference.soft_dtw_table(grid, 0.0), 0.0)
    np.testing.assert_array_equal(hard, indicator)


def test_weak_path_may_match_nothing():
    """Costs far above the null cost: the path walks only null cells, so it has no cost cell (L = 0)."""
    path = _reference.optimal_path(np.full((2, 3), 10.0), None, 0.0)
    assert path.cells.shape == (0, 2)
    # every null path costs 0: from (4, 6) up (the diagonal is a cost cell), then diagonals, then row 0 leftwards
    assert path.grid_cells.tolist() == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 4], [2, 5], [3, 6], [4, 6]]
    assert path.x_skipped.tolist() == [1, 1] and path.y_skipped.tolist() == [1, 1, 1]
    assert path.value == 0.0
    _, grad = _reference.align_one(np.full((2, 3), 10.0), 0.0, None, 0.0)
    assert not grad.any()


@pytest.mark.parametrize("opened", OPEN)
def test_batched_variants_use_each_pairs_lengths(opened):
    cost = np.random.default_rng(6).normal(size=(3, 4, 5))
    pair_n, pair_m = np.array([4, 2, 1]), np.array([5, 3, 1])
    kwargs = dict(open_begin=opened[0], open_end=opened[1])
    value, grad = _reference.align(cost, pair_n, pair_m, 0.0, 0.1, 0.5, **kwargs)
    found = _reference.paths(cost, pair_n, pair_m, 0.1, 0.5, **kwargs)
    for b, (n, m) in enumerate(zip(pair_n, pair_m, strict=True)):
        one_value, one_grad = _reference.align_one(cost[b, :n, :m], 0.0, 0.1, 0.5, **kwargs)
        assert value[b] == one_value == found[b].value
        np.testing.assert_array_equal(grad[b, :n, :m], one_grad)
        assert not grad[b, n:].any() and not grad[b, :, m:].any()
        assert found[b].x_skipped.shape == (n,) and found[b].y_skipped.shape == (m,)




@pytest.fixture(scope="module")
def tslearn_metrics():
    """tslearn.metrics (the comparisons with it skip where it is not installed; nothing else does)."""
    return pytest.importorskip("tslearn.metrics")


def sqeuclidean(x, y):
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def tslearn(fn, x, y):
    """tslearn's torch backend: the same algorithm as its default, without numba's half-minute compile."""
    path, value = fn(torch.from_numpy(x), torch.from_numpy(y), be="pytorch")
    return [[int(p), int(q)] for p, q in path], float(value)


@pytest.mark.parametrize(("n", "m", "d"), [(1, 1, 1), (5, 5, 2), (4, 9, 3), (8, 3, 1)])
@pytest.mark.parametrize("integer", [False, True])
def test_hard_dtw_is_tslearns_dtw_squared_with_its_path(n, m, d, integer, tslearn_metrics):
    """tslearn's dtw is the square root of the gamma=0 value on the sqeuclidean cost; its dtw_path backtracks with
    the same preference (diagonal, up, left), so on integer data (many exact ties) the paths agree too."""
    rng = np.random.default_rng(n * 100 + m)
    x, y = (rng.integers(0, 3, size=(k, d)) if integer else rng.normal(size=(k, d)) for k in (n, m))
    x, y = x.astype(np.float64), y.astype(np.float64)
    value, _ = _reference.align_one(sqeuclidean(x, y), 0.0, None, None)
    distance = float(tslearn_metrics.dtw(torch.from_numpy(x), torch.from_numpy(y), be="pytorch"))
    assert value == pytest.approx(distance**2, rel=1e-12, abs=1e-12)
    want_path, _ = tslearn(tslearn_metrics.dtw_path, x, y)
    assert _reference.optimal_path(sqeuclidean(x, y), None, None).grid_cells.tolist() == want_path


@pytest.mark.parametrize(("n", "m"), [(1, 4), (3, 9), (4, 4)])
@pytest.mark.parametrize("integer", [False, True])
def test_open_begin_and_end_is_tslearns_subsequence_dtw(n, m, integer, tslearn_metrics):
    """Non-negative costs: walking the first row before the start only adds cost, so tslearn's subsequence DTW
    (which never walks it) gives the same path (earliest end, latest start on ties). Its torch backend sums in
    float32: the value is checked along its path in float64, and loosely against its own."""
    rng = np.random.default_rng(n + m)
    x, y = (rng.integers(0, 3, size=(k, 1)) if integer else rng.normal(size=(k, 1)) for k in (n, m))
    x, y = x.astype(np.float64), y.astype(np.float64)
    path = _reference.optimal_path(sqeuclidean(x, y), None, None, open_begin=True, open_end=True)
    want_path, want = tslearn(tslearn_metrics.dtw_subsequence_path, x, y)
    assert path.grid_cells.tolist() == want_path
    assert path.value == sum(sqeuclidean(x, y)[p, q] for p, q in want_path)
    assert path.value == pytest.approx(want**2, rel=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.4])
@pytest.mark.parametrize("opened", OPEN[1:])
def test_open_alignment_is_the_softmin_over_contiguous_parts_of_y(gamma, opened):
    """Plain grid: x against y[a..b], closed, for every part an open begin / end allows, combined by softmin."""
    cost = np.random.default_rng(9).normal(size=(3, 5))
    m = cost.shape[1]
    parts = [(a, b) for a in range(m) for b in range(a, m) if (opened[0] or a == 0) and (opened[1] or b == m - 1)]
    closed = np.array([_reference.align_one(cost[:, a : b + 1], gamma, None, None)[0] for a, b in parts])
    want = closed.min() if gamma == 0 else -gamma * np.logaddexp.reduce(-closed / gamma)
    value, _ = _reference.align_one(cost, gamma, None, None, open_begin=opened[0], open_end=opened[1])
    assert value == pytest.approx(want, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("smoothing", [None, 0.0, 0.2])
@pytest.mark.parametrize("threshold", [None, 0.5])
@pytest.mark.parametrize("bandwidth", [None, 1.0])
def test_transposed_cost_gives_the_same_value(smoothing, threshold, bandwidth):
    """The symmetry pairwise(x) relies on (docs/semantics.md, V5): exact for gamma=0, up to rounding otherwise."""
    cost = np.random.default_rng(8).normal(size=(3, 4))
    hard, grad = _reference.align_one(cost, 0.0, smoothing, threshold, bandwidth)
    hard_t, grad_t = _reference.align_one(cost.T.copy(), 0.0, smoothing, threshold, bandwidth)
    assert hard == hard_t
    np.testing.assert_array_equal(grad, grad_t.T)  # no ties on random data: one optimal path, transposed
    soft, _ = _reference.align_one(cost, 0.3, smoothing, threshold, bandwidth)
    soft_t, _ = _reference.align_one(cost.T.copy(), 0.3, smoothing, threshold, bandwidth)
    assert soft == pytest.approx(soft_t, rel=1e-13)
