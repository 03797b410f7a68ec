"""The Sakoe-Chiba band rule, once for the Python side (docs/semantics.md, "Band").

On a P x Q grid the band keeps the cells (p, q) with |p (Q-1) - q (P-1)| <= width: it follows the
diagonal from (0, 0) to (P-1, Q-1), and width = floor(cells * bandwidth * min(P-1, Q-1)) makes
`bandwidth` a distance in sequence elements, `cells` grid cells each (two on the weak-alignment grid).
The C++/CUDA kernels hold the same rule in csrc/s2dtw_cell.h (band_width, band_columns); the numba
kernel compiles these functions; _validation.check_band asks `band_connects`. The NumPy reference
(_reference.band_mask) keeps its own, independent copy on purpose: it is the oracle.
"""

from __future__ import annotations

import math

import numpy as np

WEAK_CELLS = 2  # grid cells per sequence element on the weak-alignment grid: n elements, 2n + 1 rows


def grid_extent(weak: bool, length: int) -> int:
    """Rows (or columns) of the grid the soft-DTW recursion walks for a sequence of `length` elements."""
    return WEAK_CELLS * length + 1 if weak else length


def band_width(weak: bool, banded: bool, bandwidth: float, rows: int, cols: int) -> int:
    """The band's width on a rows x cols grid, in the units of |p (cols-1) - q (rows-1)| (no band: all cells)."""
    full = (rows - 1) * (cols - 1)
    if not banded:
        return full
    raw = (WEAK_CELLS if weak else 1) * bandwidth * min(rows - 1, cols - 1)
    return full if raw >= full else int(math.floor(raw))


def band_columns(rows: int, cols: int, width: int, p):
    """First and last column (inclusive) of grid row `p` inside the band; `p` an int or an int array."""
    if rows == 1:
        return 0, cols - 1
    centre = p * (cols - 1)
    return np.maximum(0, -((width - centre) // (rows - 1))), np.minimum(cols - 1, (centre + width) // (rows - 1))


def band_connects(rows: int, cols: int, width: int) -> bool:
    """Whether a monotone path from (0, 0) to (rows-1, cols-1) stays inside a band of `width`."""
    if rows == 1:
        return True
    lo, hi = band_columns(rows, cols, width, np.arange(rows))
    return bool(np.all(lo[1:] <= np.minimum(hi[:-1] + 1, hi[1:])))


def dense_grid_bandwidth(bandwidth: float | None) -> float | None:
    """The bandwidth that keeps the same cells of the weak grid when it is built explicitly, as a plain
    (2n+1, 2m+1) cost (one cell per element there): `WEAK_CELLS` times the elements' bandwidth."""
    return None if bandwidth is None else WEAK_CELLS * bandwidth
