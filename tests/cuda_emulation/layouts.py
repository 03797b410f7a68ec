"""Which block-regime plan a workspace size stands for: the plan (strip height, blocks per pair, recomputing) is not
returned by the CUDA module, but workspace_bytes is a function of it (csrc/cuda/plan.cuh, `sizes`, restated here for
one pair, float32, with a gradient, closed ends), so the layouts whose size matches are what choose_plan picked.
"""

from __future__ import annotations

import math

ALIGN = 256  # plan.cuh's kAlign
TAPE_ENTRY = 8  # Tape2<float>: two floats


def _aligned(size: int) -> int:
    return (size + ALIGN - 1) // ALIGN * ALIGN


def workspace_of(P: int, Q: int, strip: int, blocks: int, recompute: bool) -> int:
    """Bytes `sizes` asks for one P x Q grid pair laid out as (strip, blocks, recompute)."""
    strips = math.ceil(P / strip)
    tape = _aligned((blocks * strip * Q if recompute else P * Q) * TAPE_ENTRY)
    scratch = 4 * Q  # the backward's column buffer (one Pub per column)
    if recompute or blocks > 1:
        scratch += (strips + 1) * (Q + 1)  # checkpoint rows
    if blocks > 1:
        scratch += blocks * 4 * Q  # the ring of column buffers
    flags = _aligned(2 * strips * 4) if blocks > 1 else 0
    return tape + _aligned(scratch * 8) + flags + ALIGN


def layouts_of(P: int, Q: int, size: int) -> list[tuple[int, int, bool]]:
    """The (strip, blocks, recompute) layouts of one pair whose workspace is `size` bytes."""
    return [(strip, blocks, recompute) for strip in (32, 64, 128, 256, 512, 1024)
            for blocks in range(1, math.ceil(P / strip) + 1) for recompute in (False, True)
            if (P > strip * blocks or not recompute) and workspace_of(P, Q, strip, blocks, recompute) == size]
