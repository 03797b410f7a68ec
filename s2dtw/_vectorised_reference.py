"""Plain soft-DTW in float64 NumPy, vectorised over the batch and each anti-diagonal.

The same recursions as :mod:`s2dtw._reference` (Cuturi & Blondel 2017), value and expected alignment, only
vectorised so that 512x512 and 2048x2048 pairs take seconds instead of minutes: the benchmarks' oracle for
pairs too long for the plain reference. Full-length pairs, no smoothing, no weak alignment, no band. Checked
against :mod:`s2dtw._reference` by tests/test_reference.py and by :func:`max_error_against_reference` (the
CPU benchmark runs it at start-up).
"""

from __future__ import annotations

import numpy as np

from . import _reference


def soft_dtw(cost: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Soft-DTW value (B,) and d value / d cost (B, N, M) of each (N, M) cost matrix of `cost` (B, N, M)."""
    cost = np.asarray(cost, dtype=np.float64)
    b, n, m = cost.shape
    table = np.full((b, n + 2, m + 2), np.inf)  # R, with a border row and column beyond the end
    table[:, 0, 0] = 0.0
    for d in range(2, n + m + 1):
        p = np.arange(max(1, d - m), min(n, d - 1) + 1)
        q = d - p
        prev = np.stack([table[:, p - 1, q - 1], table[:, p - 1, q], table[:, p, q - 1]])
        lo = prev.min(axis=0)
        table[:, p, q] = cost[:, p - 1, q - 1] + lo - gamma * np.log(np.exp(-(prev - lo) / gamma).sum(axis=0))
    value = table[:, n, m].copy()
    padded = np.zeros((b, n + 2, m + 2))
    padded[:, 1 : n + 1, 1 : m + 1] = cost
    table[:, n + 1, :] = -np.inf  # successors beyond the end: weight exp(-inf) = 0
    table[:, :, m + 1] = -np.inf
    expected = np.zeros((b, n + 2, m + 2))
    expected[:, n, m] = 1.0
    for d in range(n + m - 1, 1, -1):
        p = np.arange(max(1, d - m), min(n, d - 1) + 1)
        q = d - p
        here = table[:, p, q]
        total = np.zeros_like(here)
        for sp, sq in ((p + 1, q), (p, q + 1), (p + 1, q + 1)):
            total += expected[:, sp, sq] * np.exp((table[:, sp, sq] - padded[:, sp, sq] - here) / gamma)
        expected[:, p, q] = total
    return value, expected[:, 1 : n + 1, 1 : m + 1]


def max_error_against_reference(gamma: float, seed: int = 1) -> float:
    """Max abs difference of values and gradients between :func:`soft_dtw` and ``_reference.align``.

    On a few small random shapes (one of them a single row), costs uniform in [0, 1).
    """
    rng = np.random.default_rng(seed)
    worst = 0.0
    for b, n, m in ((3, 7, 5), (2, 16, 16), (1, 33, 20), (2, 1, 9)):
        cost = rng.random((b, n, m))
        value, grad = soft_dtw(cost, gamma)
        ref_value, ref_grad = _reference.align(cost, np.full(b, n), np.full(b, m), gamma, None, None)
        worst = max(worst, float(np.abs(value - ref_value).max()), float(np.abs(grad - ref_grad).max()))
    return worst
