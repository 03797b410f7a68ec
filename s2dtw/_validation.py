"""Input validation: every check on user input lives here, with messages that name
the argument and the shapes. Nothing here modifies its inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import torch

from ._dispatch import Params

Lengths = Union[torch.Tensor, Sequence[int], None]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_params(gamma: float, smoothing: float | None, threshold: float | None) -> Params:
    def positive(name: str, v: object) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        return float(v)

    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold)
    ):
        raise ValueError(f"threshold must be a finite number or None, got {threshold!r}")
    return Params(
        gamma=positive("gamma", gamma),
        smoothing=None if smoothing is None else positive("smoothing", smoothing),
        threshold=None if threshold is None else float(threshold),
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
    # One reduction (and, for a GPU tensor, one synchronisation): NaN or inf would
    # otherwise come back as a silently wrong value or gradient.
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")


def check_sequences(x: object, y: object) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, N, d) and y (B, M, d): same batch, features, device and dtype."""
    x = _check_tensor("x", x, 3, "(B, N, d)")
    y = _check_tensor("y", y, 3, "(B, M, d)")
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got x on {x.device} and y on {y.device}")
    if x.dtype != y.dtype:
        raise TypeError(f"x and y must have the same dtype, got {x.dtype} and {y.dtype}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same batch size, got x {tuple(x.shape)} and y {tuple(y.shape)}")
    if x.shape[2] != y.shape[2]:
        raise ValueError(
            f"x and y must have the same feature size d, got x {tuple(x.shape)} and y {tuple(y.shape)}"
        )
    _check_finite("x", x)
    _check_finite("y", y)
    return x, y


def check_cost(cost: object, batch: int | None = None) -> torch.Tensor:
    """A cost of shape (B, N, M) (from the user or a metric callable)."""
    cost = _check_tensor("cost", cost, 3, "(B, N, M)")
    if batch is not None and cost.shape[0] != batch:
        raise ValueError(f"cost must have batch size {batch}, got shape {tuple(cost.shape)}")
    _check_finite("cost", cost)
    return cost


def check_lengths(name: str, lengths: Lengths, batch: int, full: int, device: torch.device) -> torch.Tensor:
    """(B,) int64 lengths in [1, full] on `device`; None means every sequence is `full` long.

    Reading the values of lengths given on a GPU synchronises with it once.
    """
    if lengths is None:
        return torch.full((batch,), full, dtype=torch.int64, device=device)
    if isinstance(lengths, torch.Tensor):
        if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
            raise TypeError(f"{name} must hold integers, got dtype {lengths.dtype}")
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
    return values.to(device)

