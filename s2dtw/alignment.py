"""Soft alignments to look at: where the expected path goes, and what it skips."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from . import _torch_reference, functional
from ._band import dense_grid_bandwidth, grid_extent
from ._cost import Metric, compute_dtype, cost_matrix
from ._validation import Lengths, check_cost, check_lengths, check_options, check_params, check_sequences, uses_cost


class SoftAlignment(NamedTuple):
    """What :func:`soft_alignment` returns (tensors detached, in the compute dtype)."""

    value: torch.Tensor  # (B,) the S2DTW / soft-DTW values
    alignment: torch.Tensor  # (B, N, M) expected alignment, d value / d cost
    x_skipped: torch.Tensor | None  # (B, N) mass on each x element's null cells (weak alignment only)
    y_skipped: torch.Tensor | None  # (B, M) mass on each y element's null cells (weak alignment only)


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
    backend: str | None = None,
) -> SoftAlignment:
    """The expected alignment of each pair and, for S2DTW, how much each element was skipped.

    Arguments as :func:`s2dtw.s2dtw`. ``alignment[b, i, j]`` is d value / d C[b, i, j]: the
    probability-weighted share of the soft path through (i, j). With the weak alignment on,
    ``x_skipped[b, i]`` is the expected number of null cells the path takes in x_i's row of the
    (2N+1, 2M+1) grid (how much x_i is skipped rather than matched), ``y_skipped`` likewise for
    columns. For looking at: the skip masses come from the dense grid, built explicitly.
    """
    check_params(gamma, smoothing, threshold, bandwidth)
    check_options(metric, False, backend)
    if not uses_cost(x, y, cost):
        x, y = check_sequences(x, y)
        compute = compute_dtype(x.dtype)
        cost = cost_matrix(x.detach().to(compute), y.detach().to(compute), metric)
    cost = check_cost(cost).detach()
    cost = cost.to(compute_dtype(cost.dtype)).requires_grad_()
    common: dict[str, Any] = dict(gamma=gamma, x_lengths=x_lengths, y_lengths=y_lengths, backend=backend)
    with torch.enable_grad():
        value = functional.s2dtw(cost=cost, smoothing=smoothing, threshold=threshold, bandwidth=bandwidth, **common)
        (alignment,) = torch.autograd.grad(value.sum(), cost)
    if threshold is None:
        return SoftAlignment(value.detach(), alignment, None, None)

    batch, n, m = cost.shape
    grid = _torch_reference.dense_grid(cost.detach(), smoothing, threshold).requires_grad_()
    common["x_lengths"] = grid_extent(True, check_lengths("x_lengths", x_lengths, batch, n, cost.device))
    common["y_lengths"] = grid_extent(True, check_lengths("y_lengths", y_lengths, batch, m, cost.device))
    with torch.enable_grad():
        dense = functional.soft_dtw(cost=grid, bandwidth=dense_grid_bandwidth(bandwidth), **common)
        (expected,) = torch.autograd.grad(dense.sum(), grid)
    return SoftAlignment(
        value.detach(), alignment, expected[:, 1::2, 0::2].sum(-1), expected[:, 0::2, 1::2].sum(-2)
    )


def plot_alignment(cost: torch.Tensor, result: SoftAlignment, index: int = 0, path: str | None = None) -> Any:
    """Draw pair `index`'s cost and expected alignment side by side (and skip masses, if any).

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
    if skips:
        x_skip, y_skip = result.x_skipped[index].cpu().numpy(), result.y_skipped[index].cpu().numpy()
        axes[2].bar(range(len(x_skip)), x_skip, label="x elements (rows)", alpha=0.7)
        axes[2].bar(range(len(y_skip)), y_skip, label="y elements (columns)", alpha=0.7)
        axes[2].set(title="skipped mass (null cells)", xlabel="index")
        axes[2].legend()
    fig.suptitle(f"pair {index}: value {result.value[index].item():.4f}")
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
