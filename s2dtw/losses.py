"""Loss modules: thin wrappers over :mod:`s2dtw.functional`."""

from __future__ import annotations

import torch

from . import functional
from ._cost import Metric
from ._validation import Lengths, check_params

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


class S2DTWLoss(torch.nn.Module):
    """S2DTW between paired sequences, reduced over the batch.

    ``loss(x, y)`` with x (B, N, d), y (B, M, d) returns a scalar (or (B,) with
    ``reduction="none"``). Arguments as :func:`s2dtw.s2dtw`.
    """

    def __init__(
        self,
        gamma: float = 0.1,
        smoothing: float | None = 0.1,
        threshold: float | None = 0.5,
        metric: Metric = "neg_dot",
        reduction: str = "mean",
        backend: str | None = None,
    ):
        super().__init__()
        self.gamma, self.smoothing, self.threshold = gamma, smoothing, threshold
        self.metric, self.backend = metric, backend
        self.reduction = _check_reduction(reduction)
        check_params(gamma, smoothing, threshold)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, x_lengths: Lengths = None, y_lengths: Lengths = None
    ) -> torch.Tensor:
        values = functional.s2dtw(
            x, y, gamma=self.gamma, smoothing=self.smoothing, threshold=self.threshold, metric=self.metric,
            x_lengths=x_lengths, y_lengths=y_lengths, backend=self.backend,
        )
        return _reduce(values, self.reduction)

    def extra_repr(self) -> str:
        return (f"gamma={self.gamma}, smoothing={self.smoothing}, threshold={self.threshold}, "
                f"metric={self.metric!r}, reduction={self.reduction!r}")


class SoftDTWLoss(torch.nn.Module):
    """Plain soft-DTW between paired sequences, reduced over the batch. Arguments as :func:`s2dtw.soft_dtw`."""

    def __init__(
        self, gamma: float = 1.0, metric: Metric = "sqeuclidean", reduction: str = "mean",
        backend: str | None = None,
    ):
        super().__init__()
        self.gamma, self.metric, self.backend = gamma, metric, backend
        self.reduction = _check_reduction(reduction)
        check_params(gamma, None, None)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, x_lengths: Lengths = None, y_lengths: Lengths = None
    ) -> torch.Tensor:
        values = functional.soft_dtw(
            x, y, gamma=self.gamma, metric=self.metric, x_lengths=x_lengths, y_lengths=y_lengths,
            backend=self.backend,
        )
        return _reduce(values, self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, metric={self.metric!r}, reduction={self.reduction!r}"
