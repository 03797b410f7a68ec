"""Alignments to look at: where the expected (soft) or optimal (exact) path goes, and what it skips."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from . import _torch_reference, functional
from ._band import dense_grid_bandwidth, grid_extent
from ._cost import Metric, compute_dtype, cost_matrix
from ._validation import (
    Lengths,
    check_band,
    check_cost,
    check_lengths,
    check_options,
    check_params,
    check_sequences,
    uses_cost,
)


class SoftAlignment(NamedTuple):
    """What :func:`soft_alignment` returns, in the compute dtype: in the autograd graph of the inputs when they
    require grad and grad mode is on (a loss on the alignment trains, by second order), else detached."""

    value: torch.Tensor  # (B,) the S2DTW / soft-DTW values
    alignment: torch.Tensor  # (B, N, M) expected alignment, d value / d cost
    x_skipped: torch.Tensor | None  # (B, N) mass on each x element's null cells (weak alignment only)
    y_skipped: torch.Tensor | None  # (B, M) mass on each y element's null cells (weak alignment only)


class AlignmentPath(NamedTuple):
    """One pair's optimal (gamma = 0) path, from :func:`alignment_path` (int64 tensors on the input's device)."""

    value: torch.Tensor  # () the exact DTW / S2DTW value of the path
    path: torch.Tensor  # (L, 2) the cost cells (i, j) walked, in order (L = 0 possible with the weak grid)
    x_skipped: torch.Tensor | None  # (n,) null cells walked in each x_i's row of the weak grid (else None)
    y_skipped: torch.Tensor | None  # (m,) null cells walked in each y_j's column of the weak grid (else None)
    grid_cells: torch.Tensor  # (L_W, 2) every cell (p, q) of the grid walked (the (2n+1, 2m+1) weak grid's)


def _cost_of(x: Any, y: Any, cost: Any, metric: Metric) -> torch.Tensor:
    """The (B, N, M) cost of the call, checked, in the compute dtype, in the graph of x, y or the given cost."""
    if not uses_cost(x, y, cost):
        x, y = check_sequences(x, y)
        compute = compute_dtype(x.dtype)
        cost = cost_matrix(x.to(compute), y.to(compute), metric)
    cost = check_cost(cost)
    return cost.to(compute_dtype(cost.dtype))


def _grid_alignment(cost: torch.Tensor, x_len: torch.Tensor, y_len: torch.Tensor, gamma: float,
                    smoothing: float | None, threshold: float | None, bandwidth: float | None, open_begin: bool,
                    open_end: bool, backend: str | None,
                    create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Values (B,) and d value / d grid of the grid the recursion walks, built explicitly as a plain cost
    (`create_graph`: both in the graph of `cost`, else detached).

    On the weak grid an open begin / end drops W's null row 0 / 2n (docs/semantics.md, "Variants" V4), so the
    returned (B, rows, cols) gradient starts at W's row `top`; pair b's walked grid is its top-left corner.
    """
    grid = _torch_reference.dense_grid(cost, smoothing, threshold)
    rows, cols, top = x_len, y_len, 0
    if threshold is not None:
        top = int(open_begin)
        rows, cols = grid_extent(True, x_len) - top - int(open_end), grid_extent(True, y_len)
        grid, bandwidth = grid[:, top:], dense_grid_bandwidth(bandwidth)
    grid = grid.contiguous()
    if not grid.requires_grad:
        grid.requires_grad_()
    with torch.enable_grad():
        value = functional.soft_dtw(cost=grid, gamma=gamma, x_lengths=rows, y_lengths=cols, bandwidth=bandwidth,
                                    open_begin=open_begin, open_end=open_end, backend=backend)
        (expected,) = torch.autograd.grad(value.sum(), grid, create_graph=create_graph)
    return (value if create_graph else value.detach()), expected, top


def soft_alignment(
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    *,
    cost: torch.Tensor | None = None,
    gamma: float = 0.1,
    smoothing: float | None = 0.1,
    threshold: float | None = 0.5,
    metric: Metric = "neg_dot",
    x_lengths: Lengths = None,
    y_lengths: Lengths = None,
    bandwidth: float | None = None,
    open_begin: bool = False,
    open_end: bool = False,
    backend: str | None = None,
) -> SoftAlignment:
    """The expected alignment of each pair and, for S2DTW, how much each element was skipped.

    Arguments as :func:`s2dtw.s2dtw`. ``alignment[b, i, j]`` is d value / d C[b, i, j]: the
    probability-weighted share of the soft path through (i, j). With the weak alignment on,
    ``x_skipped[b, i]`` is the expected number of null cells the path takes in x_i's row of the
    (2N+1, 2M+1) grid (how much x_i is skipped rather than matched), ``y_skipped`` likewise for
    columns (the skip masses come from the dense grid, built explicitly).

    When x, y (or `cost`) require grad and grad mode is on, every returned tensor stays in their graph, so a
    loss on the alignment trains (e.g. DILATE's temporal term ``(alignment * (i - j) ** 2).sum()``): its
    backward is one Hessian-vector product per pair (docs/second_order.md; needs gamma > 0 and smoothing None
    or > 0). Otherwise the results are detached.
    """
    check_options(metric, False, backend, check_params(gamma, smoothing, threshold, bandwidth, open_begin, open_end))
    cost = _cost_of(x, y, cost, metric)
    differentiable = torch.is_grad_enabled() and cost.requires_grad
    if not differentiable:
        cost = cost.detach().requires_grad_()
    options: dict[str, Any] = dict(gamma=gamma, x_lengths=x_lengths, y_lengths=y_lengths, bandwidth=bandwidth,
                                   open_begin=open_begin, open_end=open_end, backend=backend)
    with torch.enable_grad():
        value = functional.s2dtw(cost=cost, smoothing=smoothing, threshold=threshold, **options)
        (alignment,) = torch.autograd.grad(value.sum(), cost, create_graph=differentiable)
    value = value if differentiable else value.detach()
    if threshold is None:
        return SoftAlignment(value, alignment, None, None)
    batch, n, m = cost.shape
    x_len = check_lengths("x_lengths", x_lengths, batch, n, cost.device)
    y_len = check_lengths("y_lengths", y_lengths, batch, m, cost.device)
    _, expected, top = _grid_alignment(cost if differentiable else cost.detach(), x_len, y_len, gamma, smoothing,
                                       threshold, bandwidth, open_begin, open_end, backend, differentiable)
    # x_i's row of W is 2i+1, i.e. row 2i+1-top of `expected`; y_j's column is 2j+1
    x_rows = expected[:, 1 - top :: 2, 0::2].sum(-1)[:, :n]
    return SoftAlignment(value, alignment, x_rows, expected[:, top::2, 1::2].sum(-2))


def alignment_path(
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    *,
    cost: torch.Tensor | None = None,
    gamma: float = 0.0,
    smoothing: float | None = 0.1,
    threshold: float | None = 0.5,
    metric: Metric = "neg_dot",
    x_lengths: Lengths = None,
    y_lengths: Lengths = None,
    bandwidth: float | None = None,
    open_begin: bool = False,
    open_end: bool = False,
    backend: str | None = None,
) -> list[AlignmentPath]:
    """The optimal path of each pair: exact DTW / S2DTW (gamma = 0), docs/semantics.md "Variants" V3.

    Arguments as :func:`s2dtw.s2dtw` (``smoothing=None, threshold=None``: plain DTW); ``gamma`` must be 0
    (for gamma > 0, :func:`soft_alignment` gives the expected alignment). Ties go to the diagonal, then up,
    then left, as ``tslearn.metrics.dtw_path``. It is the indicator of the ``gamma=0`` gradient on the grid
    (computed on any backend).

    Returns:
        A list of B :class:`AlignmentPath` (value, path (L, 2), x_skipped (n,), y_skipped (m,), grid_cells),
        one per pair, L differing between pairs; indices lie inside each pair's lengths.
    """
    params = check_params(gamma, smoothing, threshold, bandwidth, open_begin, open_end)
    check_options(metric, False, backend, params)
    if params.gamma != 0:
        raise ValueError(f"alignment_path is the exact (gamma=0) path, got gamma={gamma!r}; for gamma > 0 "
                         "soft_alignment gives the expected alignment")
    cost = _cost_of(x, y, cost, metric).detach()
    batch, n, m = cost.shape
    x_len = check_lengths("x_lengths", x_lengths, batch, n, cost.device)
    y_len = check_lengths("y_lengths", y_lengths, batch, m, cost.device)
    check_band(params, x_len, y_len)  # in sequence elements, before the explicit grid's own check
    value, indicator, top = _grid_alignment(cost, x_len, y_len, 0.0, params.smoothing, params.threshold,
                                            params.bandwidth, open_begin, open_end, backend)
    return [_path_of(value[b], indicator[b], top, int(x_len[b]), int(y_len[b]), params.threshold is not None)
            for b in range(batch)]


def _path_of(value: torch.Tensor, indicator: torch.Tensor, top: int, n: int, m: int, weak: bool) -> AlignmentPath:
    """One pair's path from the 0/1 indicator of the grid cells walked (rows from W's row `top`)."""
    cells = indicator.nonzero()  # row-major order is path order: both indices are non-decreasing
    cells[:, 0] += top
    if not weak:
        return AlignmentPath(value, cells, None, None, cells)
    p, q = cells[:, 0], cells[:, 1]
    on_cost = (p % 2 == 1) & (q % 2 == 1)
    x_null, y_null = (p % 2 == 1) & (q % 2 == 0), (p % 2 == 0) & (q % 2 == 1)
    return AlignmentPath(value, cells[on_cost] // 2, torch.bincount(p[x_null] // 2, minlength=n),
                         torch.bincount(q[y_null] // 2, minlength=m), cells)


def plot_alignment(cost: torch.Tensor, result: SoftAlignment, index: int = 0, path: str | None = None,
                   optimal: Sequence[AlignmentPath] | None = None) -> Any:
    """Draw pair `index`'s cost and expected alignment side by side (and skip masses, if any).

    `optimal`: :func:`alignment_path`'s result, whose pair `index` is drawn over the cost.
    Needs matplotlib (``pip install "s2dtw[plot]"``). Returns the figure; saves it to `path` if given.
    """
    try:
        # A Figure of its own, not pyplot's: the user's backend and pyplot's list of open
        # figures stay as they were (nothing to close, nothing leaks).
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError('plot_alignment needs matplotlib: pip install "s2dtw[plot]"') from err
    skips = result.x_skipped is not None
    fig = Figure(figsize=(13 if skips else 9, 4), constrained_layout=True)
    axes = fig.subplots(1, 3 if skips else 2)
    panels = [(cost[index], "cost C", "viridis"), (result.alignment[index], "expected alignment dV/dC", "magma")]
    for ax, (matrix, title, cmap) in zip(axes, panels, strict=False):  # a third axis is the skip panel
        image = ax.imshow(matrix.detach().cpu().float().numpy(), cmap=cmap, aspect="auto")
        ax.set(title=title, xlabel="y (e.g. caption)", ylabel="x (e.g. clip)")
        fig.colorbar(image, ax=ax)
    if optimal is not None:
        cells = optimal[index].path.cpu().numpy()
        axes[0].plot(cells[:, 1], cells[:, 0], "w.-", label="optimal path (gamma=0)")
        axes[0].legend(loc="lower left")
    if skips:
        x_skip, y_skip = (t[index].detach().cpu().numpy() for t in (result.x_skipped, result.y_skipped))
        axes[2].bar(range(len(x_skip)), x_skip, label="x elements (rows)", alpha=0.7)
        axes[2].bar(range(len(y_skip)), y_skip, label="y elements (columns)", alpha=0.7)
        axes[2].set(title="skipped mass (null cells)", xlabel="index")
        axes[2].legend()
    fig.suptitle(f"pair {index}: value {result.value[index].item():.4f}")
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
