"""Shared by the tests: run a backend on a cost and get value and gradient as NumPy."""

from __future__ import annotations

import numpy as np
import torch

import s2dtw
from s2dtw import _reference


def backend_value_grad(cost: np.ndarray, backend: str, dtype=torch.float64, device="cpu", **kwargs):
    """Value (B,) and d sum(value) / d cost (B, N, M) from `backend`, as float64 NumPy."""
    c = torch.tensor(cost, dtype=dtype, device=device, requires_grad=True)
    value = s2dtw.s2dtw(cost=c, backend=backend, **kwargs)
    (grad,) = torch.autograd.grad(value.sum(), c)
    return value.detach().cpu().double().numpy(), grad.cpu().double().numpy()


def reference_value_grad(cost: np.ndarray, x_lengths=None, y_lengths=None, *, gamma, smoothing, threshold,
                         bandwidth=None):
    batch, n, m = cost.shape
    pair_n = np.full(batch, n) if x_lengths is None else np.asarray(x_lengths)
    pair_m = np.full(batch, m) if y_lengths is None else np.asarray(y_lengths)
    return _reference.align(cost, pair_n, pair_m, gamma, smoothing, threshold, bandwidth)
