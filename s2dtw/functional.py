"""Functional API: S2DTW and soft-DTW values of pairs of sequences, differentiable."""

from __future__ import annotations

import torch

from . import _op
from ._cost import Metric, compute_dtype, cost_matrix, symmetric_cost
from ._problem import Layout, Params
from ._validation import (
    Lengths,
    check_band,
    check_cost,
    check_lengths,
    check_options,
    check_params,
    check_sequences,
    compiling,
    poison_non_finite,
    uses_cost,
)


def _run(cost: torch.Tensor, layout: Layout, params: Params, backend: str | None) -> torch.Tensor:
    value = _op.align(cost.contiguous(), layout, params, backend)
    if cost.is_cuda or compiling():  # where the inputs' finiteness was not checked on the host
        value = poison_non_finite(value, cost)
    return value


def _paired_values(cost: torch.Tensor, x_len: torch.Tensor, y_len: torch.Tensor, params: Params,
                   backend: str | None) -> torch.Tensor:
    """(B,) values of a (B, N, M) cost; lengths (B,) on the cost's device."""
    check_band(params, x_len, y_len)
    layout = Layout.batched(cost, x_len, y_len)
    return _run(cost, layout, params, backend)


def _sequence_values(x: torch.Tensor, y: torch.Tensor, x_len: torch.Tensor, y_len: torch.Tensor,
                     params: Params, metric: Metric, backend: str | None) -> torch.Tensor:
    compute = compute_dtype(x.dtype)
    cost = cost_matrix(x.to(compute), y.to(compute), metric).to(compute)
    return _paired_values(cost, x_len, y_len, params, backend)


def _divergence(value: torch.Tensor, self_x: torch.Tensor, self_y: torch.Tensor) -> torch.Tensor:
    return value - (self_x + self_y) / 2


def _align(x, y, cost, params: Params, metric: Metric, x_lengths: Lengths, y_lengths: Lengths,
           normalize: bool, backend: str | None) -> torch.Tensor:
    if uses_cost(x, y, cost):
        if normalize:
            raise ValueError("normalize=True needs the sequences x and y (it aligns each with itself), not cost=")
        cost = check_cost(cost)
        batch, n, m = cost.shape
        x_len = check_lengths("x_lengths", x_lengths, batch, n, cost.device)
        y_len = check_lengths("y_lengths", y_lengths, batch, m, cost.device)
        value = _paired_values(cost.to(compute_dtype(cost.dtype)), x_len, y_len, params, backend)
        return value.to(cost.dtype)
    x, y = check_sequences(x, y)
    x_len = check_lengths("x_lengths", x_lengths, x.shape[0], x.shape[1], x.device)
    y_len = check_lengths("y_lengths", y_lengths, y.shape[0], y.shape[1], x.device)
    value = _sequence_values(x, y, x_len, y_len, params, metric, backend)
    if normalize:
        value = _divergence(
            value,
            _sequence_values(x, x, x_len, x_len, params, metric, backend),
            _sequence_values(y, y, y_len, y_len, params, metric, backend),
        )
    return value.to(x.dtype)


def s2dtw(
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
    normalize: bool = False,
    open_begin: bool = False,
    open_end: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """S2DTW (VT-TWINS): soft-DTW with local neighbourhood smoothing and weak alignment.

    Args:
        x: (B, N, d) sequences, e.g. video clips.
        y: (B, M, d) sequences, e.g. captions.
        cost: (B, N, M) precomputed cost, instead of ``x``, ``y``.
        gamma: soft-DTW temperature (>= 0; 0 is exact DTW: the minimum over paths, its gradient the optimal
            path's indicator, ties to the diagonal, then up, then left).
        smoothing: temperature of the local neighbourhood smoothing (>= 0; 0 is a hard minimum);
            ``None`` turns it off.
        threshold: null cost of skipping a clip or caption in the weak-alignment grid;
            ``None`` turns the weak alignment off.
        metric: ``"neg_dot"``, ``"neg_cosine"``, ``"sqeuclidean"`` or ``f(x, y) -> (B, N, M)``.
        x_lengths, y_lengths: (B,) integers; pair b uses ``x[b, :x_lengths[b]]``, ``y[b, :y_lengths[b]]``.
        bandwidth: Sakoe-Chiba band half-width in sequence elements, following the diagonal of each
            pair (scaled for unequal lengths, docs/semantics.md); ``None``: no band. A band that cuts
            every path off raises ``ValueError``.
        normalize: return the divergence ``S(x, y) - (S(x, x) + S(y, y)) / 2`` (zero for x == y).
        open_begin, open_end: subsequence alignment: the path may start anywhere in the first row / end
            anywhere in the last row of the grid (x aligned to a contiguous part of y). Not with a band or
            ``normalize`` (``ValueError``). docs/semantics.md, "Variants" V4.
        backend: ``"cuda"``, ``"cpp"``, ``"numba"`` or ``"numpy"``; default: the fastest for the device
            (or ``$S2DTW_BACKEND``).

    Returns:
        (B,) values, in the input's dtype and on its device. Differentiable w.r.t. x, y (or cost).
    """
    params = check_params(gamma, smoothing, threshold, bandwidth, open_begin, open_end)
    check_options(metric, normalize, backend, params)
    return _align(x, y, cost, params, metric, x_lengths, y_lengths, normalize, backend)


def soft_dtw(
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    *,
    cost: torch.Tensor | None = None,
    gamma: float = 1.0,
    metric: Metric = "sqeuclidean",
    x_lengths: Lengths = None,
    y_lengths: Lengths = None,
    bandwidth: float | None = None,
    normalize: bool = False,
    open_begin: bool = False,
    open_end: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Plain soft-DTW (Cuturi & Blondel 2017): :func:`s2dtw` with no smoothing and no weak alignment.

    Args and returns as :func:`s2dtw`; the defaults are soft-DTW's customary ``gamma=1`` and the
    squared Euclidean cost. ``normalize=True`` gives the soft-DTW divergence (Blondel, Mensch &
    Vert 2021), which is zero for identical sequences. ``gamma=0`` is exact DTW: with the default
    metric, ``tslearn.metrics.dtw(x, y) ** 2``.
    """
    params = check_params(gamma, None, None, bandwidth, open_begin, open_end)
    check_options(metric, normalize, backend, params)
    return _align(x, y, cost, params, metric, x_lengths, y_lengths, normalize, backend)


def pairwise(
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    gamma: float = 0.1,
    smoothing: float | None = 0.1,
    threshold: float | None = 0.5,
    metric: Metric = "neg_dot",
    x_lengths: Lengths = None,
    y_lengths: Lengths = None,
    bandwidth: float | None = None,
    normalize: bool = False,
    open_begin: bool = False,
    open_end: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Every x against every y: entry [i, j] is ``s2dtw(x[i], y[j])`` (with their lengths).

    Args:
        x: (Bx, N, d); y: (By, M, d) or ``None``: x against itself; x_lengths: (Bx,); y_lengths: (By,).
        Other keywords as :func:`s2dtw` (``smoothing=None, threshold=None`` gives plain soft-DTW).

    Returns:
        (Bx, By) values. The cost of all pairs is ONE (Bx*N, By*M) GEMM that the kernels read
        pair by pair, in place: neither the inputs nor the cost are copied Bx*By times.
        ``pairwise(x)`` aligns only the pairs i <= j (Bx(Bx+1)/2) and mirrors them into the symmetric
        (Bx, Bx) matrix; with ``normalize=True`` its diagonal is exactly 0. Not with ``open_begin`` /
        ``open_end`` (not symmetric: pass ``pairwise(x, x)``). docs/semantics.md, "Variants" V5.
    """
    params = check_params(gamma, smoothing, threshold, bandwidth, open_begin, open_end)
    check_options(metric, normalize, backend, params)
    if y is None:
        return _symmetric_pairwise(x, x_lengths, y_lengths, params, metric, normalize, backend)
    x, y = check_sequences(x, y, same_batch=False)
    x_len = check_lengths("x_lengths", x_lengths, x.shape[0], x.shape[1], x.device)
    y_len = check_lengths("y_lengths", y_lengths, y.shape[0], y.shape[1], x.device)
    check_band(params, x_len, y_len, all_pairs=True)
    values = _all_pairs_values(_all_pairs_cost(x, y, metric), x_len, y_len, params, backend)
    if normalize:
        self_x = _sequence_values(x, x, x_len, x_len, params, metric, backend)
        self_y = _sequence_values(y, y, y_len, y_len, params, metric, backend)
        values = _divergence(values, self_x.unsqueeze(1), self_y.unsqueeze(0))
    return values.to(x.dtype)


def _all_pairs_cost(x: torch.Tensor, y: torch.Tensor, metric: Metric) -> torch.Tensor:
    """The (Bx*N, By*M) cost of every x (Bx, N, d) against every y (By, M, d), in the compute dtype."""
    (bx, n, d), (by, m, _) = x.shape, y.shape
    compute = compute_dtype(x.dtype)
    # A metric is per pair of rows, so one "batch" of all rows gives every pair's region at once.
    cost = cost_matrix(x.to(compute).reshape(1, bx * n, d), y.to(compute).reshape(1, by * m, d), metric).squeeze(0)
    return cost.to(compute)


def _all_pairs_values(cost: torch.Tensor, x_len: torch.Tensor, y_len: torch.Tensor, params: Params,
                      backend: str | None) -> torch.Tensor:
    """(Bx, By) values of an all-pairs cost (Bx*N, By*M)."""
    layout = Layout.all_pairs(cost, x_len, y_len)
    return _run(cost, layout, params, backend).reshape(x_len.numel(), y_len.numel())


def _symmetric_pairwise(x: torch.Tensor, x_lengths: Lengths, y_lengths: Lengths, params: Params, metric: Metric,
                        normalize: bool, backend: str | None) -> torch.Tensor:
    """``pairwise(x)``: the pairs i <= j only, mirrored (docs/semantics.md, "Variants" V5)."""
    if y_lengths is not None:
        raise ValueError("pairwise(x) aligns x with itself: pass x_lengths only (y_lengths is for pairwise(x, y))")
    if params.open_begin or params.open_end:
        raise ValueError("pairwise(x) mirrors the pairs i <= j, but open_begin/open_end alignments are not symmetric: "
                         "pass pairwise(x, x) instead")
    x, _ = check_sequences(x, x, same_batch=False)
    batch, n, _ = x.shape
    x_len = check_lengths("x_lengths", x_lengths, batch, n, x.device)
    check_band(params, x_len, x_len, all_pairs=True)
    # One cost (for a built-in metric, the all-pairs cost's block-upper triangle, folded), in whose grid of N x N
    # regions pair k = (rows[k], cols[k]) lies in slot slots[k]: the kernels read it in place.
    rows, cols = torch.triu_indices(batch, batch, device=x.device)
    if callable(metric):
        cost, slots = _all_pairs_cost(x, x, metric), rows * batch + cols
    else:
        cost, slots = symmetric_cost(x, metric, rows, cols)
    computed = _run(cost, Layout.in_grid(cost, n, n, x_len[rows], x_len[cols], slots), params, backend)
    # index[i, j] is pair (min(i, j), max(i, j))'s number: autograd's gather backward folds g[j, i] onto it
    index = torch.zeros(batch, batch, dtype=torch.int64, device=x.device)
    index[rows, cols] = torch.arange(rows.numel(), device=x.device)
    index = torch.maximum(index, index.T)
    values = computed[index]
    if normalize:  # the computed diagonal itself: S - (S + S) / 2 is exactly 0, its gradient too
        diagonal = values.diagonal()
        values = _divergence(values, diagonal.unsqueeze(1), diagonal.unsqueeze(0))
    return values.to(x.dtype)
