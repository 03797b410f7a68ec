"""What cpu_bench.py measures: its settings, its shapes, and the float64 reference each shape is checked against."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from s2dtw import _reference, _vectorised_reference

GAMMA = 0.1
SMOOTHING = 0.1  # S2DTW workload (VT-TWINS defaults)
THRESHOLD = 0.5
SEED = 0
SKIP_SECONDS = 20.0  # a library whose single fwd+bwd call takes longer than this is skipped on that shape
# Reference check tolerances: |value - ref| <= tol_value * (1 + |ref|), max |grad - ref_grad| <= tol_grad.
TOLERANCES = {torch.float32: (1e-4, 1e-3), torch.float64: (1e-9, 1e-7)}


@dataclass(frozen=True)
class Shape:
    key: str
    batch: int
    n: int
    m: int
    s2dtw_workload: bool = False

    @property
    def label(self) -> str:
        if self.s2dtw_workload:
            return f"({self.key}) {self.batch} x S2DTW {self.n}x{self.m} (grid {2 * self.n + 1}x{2 * self.m + 1})"
        return f"({self.key}) {self.batch} x {self.n}x{self.m}"

    @property
    def cells(self) -> int:
        """DP cells per call: the (2N+1)x(2M+1) grid for the S2DTW workload."""
        if self.s2dtw_workload:
            return self.batch * (2 * self.n + 1) * (2 * self.m + 1)
        return self.batch * self.n * self.m


SHAPES = {
    "a": Shape("a", 1024, 17, 17),
    "b": Shape("b", 64, 128, 128),
    "c": Shape("c", 8, 512, 512),
    "d": Shape("d", 1, 2048, 2048),
    "s2": Shape("s2", 4096, 8, 8, s2dtw_workload=True),
}


def validate_oracle() -> float:
    """Max abs difference between the vectorised float64 oracle and s2dtw._reference.align (small shapes)."""
    worst = _vectorised_reference.max_error_against_reference(GAMMA)
    if worst > 1e-9:
        raise RuntimeError(f"the vectorised float64 oracle disagrees with s2dtw._reference by {worst:.3g}")
    return worst


def reference(shape: Shape, cost64: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Float64 value and gradient of the pairs in cost64, and which oracle produced them."""
    b, n, m = cost64.shape
    if shape.s2dtw_workload:
        value, grad = _reference.align(cost64, np.full(b, n), np.full(b, m), GAMMA, SMOOTHING, THRESHOLD)
        return value, grad, "s2dtw._reference.align"
    if n * m <= 128 * 128:
        value, grad = _reference.align(cost64, np.full(b, n), np.full(b, m), GAMMA, None, None)
        return value, grad, "s2dtw._reference.align"
    value, grad = _vectorised_reference.soft_dtw(cost64, GAMMA)
    return value, grad, "vectorised float64 oracle (checked against s2dtw._reference at start-up)"


def draw_costs(shape: Shape, generator: torch.Generator) -> torch.Tensor:
    """The shape's float64 cost (B, N, M): uniform in [0, 1), or in [-1, 1) (cosine-like) for the S2DTW workload."""
    cost64 = torch.rand(shape.batch, shape.n, shape.m, generator=generator, dtype=torch.float64)
    return cost64 * 2 - 1 if shape.s2dtw_workload else cost64
