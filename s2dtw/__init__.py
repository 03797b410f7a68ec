"""s2dtw: exact, differentiable S2DTW (VT-TWINS, CVPR 2022) and soft-DTW for PyTorch.

    >>> from s2dtw import S2DTWLoss
    >>> loss = S2DTWLoss()(video, text)   # video (B, N, d), text (B, M, d)

See docs/semantics.md for the exact definition.
"""

from pathlib import Path as _Path

from ._dispatch import backends
from ._source_tree import warn_if_stale as _warn_if_stale
from .alignment import AlignmentPath, SoftAlignment, alignment_path, plot_alignment, soft_alignment
from .barycenter import barycenter
from .functional import pairwise, s2dtw, soft_dtw
from .losses import S2DTWContrastiveLoss, S2DTWLoss, SoftDTWLoss

__all__ = [
    "AlignmentPath",
    "S2DTWContrastiveLoss",
    "S2DTWLoss",
    "SoftAlignment",
    "SoftDTWLoss",
    "alignment_path",
    "backends",
    "barycenter",
    "pairwise",
    "plot_alignment",
    "s2dtw",
    "soft_alignment",
    "soft_dtw",
]
__version__ = "0.1.0"  # the one place the version is written (pyproject.toml reads it)

_warn_if_stale(_Path(__file__).resolve().parent)
