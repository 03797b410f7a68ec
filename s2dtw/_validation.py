"""Input validation: every check on user input lives here, with messages that name
the argument and the shapes. Nothing here modifies its inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ._dispatch import Params, compiling

Lengths = torch.Tensor | Sequence[int] | None

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _is_number(v: object) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def check_positive(name: str, v: object) -> float:
    if not _is_number(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return float(v)


def check_params(
    gamma: float, smoothing: float | None, threshold: float | None, bandwidth: float | None = None
) -> Params:
    if bandwidth is not None and (not _is_number(bandwidth) or bandwidth < 0):
        raise ValueError(f"bandwidth must be a finite number >= 0 or None, got {bandwidth!r}")
    if threshold is not None and not _is_number(threshold):
        raise ValueError(f"threshold must be a finite number or None, got {threshold!r}")
    return Params(
        gamma=check_positive("gamma", gamma),
        smoothing=None if smoothing is None else check_positive("smoothing", smoothing),
        threshold=None if threshold is None else float(threshold),
        bandwidth=None if bandwidth is None else float(bandwidth),
    )


def _check_tensor(name: str, t: object, ndim: int, layout: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(t.shape)} ({t.dim()} dims)")
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)} {layout}")
    return t


def _check_finite(name: str, t: torch.Tensor) -> None:
    # NaN or inf would otherwise come back as a silently wrong value or gradient. Raising
    # needs the answer on the host: a GPU tensor would synchronise, and torch.compile
    # cannot trace the branch. Those get poison_non_finite instead (docs/semantics.md).
    if t.is_cuda or compiling():
        return
    low, high = torch.aminmax(t.detach())  # one pass, no mask tensor; NaN propagates into both
    if not bool(torch.isfinite(low) & torch.isfinite(high)):
        raise ValueError(f"{name} contains NaN or inf")


def check_sequences(x: object, y: object, same_batch: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, N, d) and y (B, M, d): same features, device and dtype (and batch, if `same_batch`)."""
    x = _check_tensor("x", x, 3, "(B, N, d)" if same_batch else "(Bx, N, d)")
    y = _check_tensor("y", y, 3, "(B, M, d)" if same_batch else "(By, M, d)")
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got x on {x.device} and y on {y.device}")
    if x.dtype != y.dtype:
        raise TypeError(f"x and y must have the same dtype, got {x.dtype} and {y.dtype}")
    if same_batch and x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same batch size, got x {tuple(x.shape)} and y {tuple(y.shape)}")
    if x.shape[2] != y.shape[2]:
        raise ValueError(
            f"x and y must have the same feature size d, got x {tuple(x.shape)} and y {tuple(y.shape)}"
        )
    _check_finite("x", x)
    _check_finite("y", y)
    return x, y


def poison_non_finite(value: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
    """`value`, made NaN wherever the call saw a non-finite cost, without leaving the device."""
    low, high = torch.aminmax(cost.detach())
    return value + (low * 0 + high * 0)  # 0 * (+-inf or NaN) is NaN; 0 * finite is 0


def check_cost(cost: object, batch: int | None = None) -> torch.Tensor:
    """A cost of shape (B, N, M) (from the user or a metric callable)."""
    cost = _check_tensor("cost", cost, 3, "(B, N, M)")
    if batch is not None and cost.shape[0] != batch:
        raise ValueError(f"cost must have batch size {batch}, got shape {tuple(cost.shape)}")
    _check_finite("cost", cost)
    return cost


def check_lengths(name: str, lengths: Lengths, batch: int, full: int) -> torch.Tensor:
    """(B,) int64 lengths in [1, full], on the CPU; None means every sequence is `full` long.

    Reading the values of lengths given on a GPU synchronises with it once. Under torch.compile
    only the shape is checked and the tensor stays where it is.
    """
    if lengths is None:
        return torch.full((batch,), full, dtype=torch.int64)
    if isinstance(lengths, torch.Tensor):
        if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
            raise TypeError(f"{name} must hold integers, got dtype {lengths.dtype}")
        if compiling():  # shape only: the range check would read the values on the host
            if lengths.shape != (batch,):
                raise ValueError(f"{name} must have shape ({batch},) (one length per pair), got {tuple(lengths.shape)}")
            return lengths.to(torch.int64)
        values = lengths.detach().to("cpu", torch.int64)
    else:
        try:
            values = torch.as_tensor(list(lengths), dtype=torch.int64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be a 1-D tensor or sequence of integers") from err
    if values.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) (one length per pair), got {tuple(values.shape)}")
    low, high = int(values.min()), int(values.max())
    if low < 1 or high > full:
        raise ValueError(f"{name} must lie in [1, {full}] (the padded length), got values in [{low}, {high}]")
    return values


def _band_connects(rows: int, cols: int, width: float) -> bool:
    """Whether a monotone path from (0, 0) to the last cell stays inside the band (docs/semantics.md)."""
    if rows == 1:
        return True
    centre = np.arange(rows) * (cols - 1)
    lo = np.maximum(0, -((np.floor(width) - centre) // (rows - 1)))
    hi = np.minimum(cols - 1, (centre + np.floor(width)) // (rows - 1))
    return bool(np.all(lo[1:] <= np.minimum(hi[:-1] + 1, hi[1:])))


def check_band(params: Params, x_lengths: torch.Tensor, y_lengths: torch.Tensor, all_pairs: bool = False) -> None:
    """Raise if the Sakoe-Chiba band leaves some pair's end cell unreachable (its value would be +inf).

    Pairs are (x_lengths[b], y_lengths[b]), or every combination when `all_pairs`.
    """
    if params.bandwidth is None or compiling():  # traced code cannot branch on the lengths' values
        return
    xs, ys = x_lengths.tolist(), y_lengths.tolist()
    pairs = {(a, b) for a in set(xs) for b in set(ys)} if all_pairs else set(zip(xs, ys, strict=True))
    cells = 1 if params.threshold is None else 2  # grid cells per sequence element
    for n, m in sorted(pairs):
        rows, cols = (2 * n + 1, 2 * m + 1) if params.threshold is not None else (n, m)
        shorter = min(rows - 1, cols - 1)
        if _band_connects(rows, cols, cells * params.bandwidth * shorter):
            continue
        low, high = params.bandwidth, float(max(n, m))
        for _ in range(40):  # the narrowest band that connects, to say what would work
            mid = (low + high) / 2
            low, high = (low, mid) if _band_connects(rows, cols, cells * mid * shorter) else (mid, high)
        raise ValueError(
            f"bandwidth={params.bandwidth} cuts every path off for a pair of lengths ({n}, {m}): "
            f"the value would be +inf. Use bandwidth >= {high:.4g} (or None)."
        )

