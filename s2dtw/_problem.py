"""The description of one call, the Python twin of csrc/s2dtw_cell.h's Problem.

A :class:`Problem` is what every backend receives, whole: the :class:`Layout` of the pairs in the
cost buffer, the alignment's :class:`Params` and the environment's :class:`Switches`. The C++ and
CUDA modules turn it into their Problem in one function (csrc/bindings/problem_args.h, problem_from),
by attribute name; the numba kernel unpacks it in _numba.run. Adding an option means a field here
and one in the C++ struct and its conversion. This module imports nothing else of s2dtw's.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

BACKENDS = ("cuda", "cpp", "numba", "numpy")
LN3 = math.log(3.0)  # softmin_s(0, 0, 0) = -s ln 3: the smoothing's value at the origin


@dataclass(frozen=True)
class Params:
    """The alignment's hyper-parameters; ``None`` turns smoothing / the weak grid / the band off.

    ``gamma=0`` / ``smoothing=0`` are the hard minima and ``open_begin`` / ``open_end`` the subsequence
    alignment of docs/semantics.md, "Variants".
    """

    gamma: float
    smoothing: float | None
    threshold: float | None
    bandwidth: float | None = None
    open_begin: bool = False
    open_end: bool = False

    def floats(self) -> list[float]:
        """The fields in order, ``None`` as NaN and the flags as 0 / 1 (the custom op's schema has no optional
        list; the validated values are never NaN)."""
        return [math.nan if v is None else float(v) for v in dataclasses.astuple(self)]

    def check_second_order(self) -> None:
        """Second order needs the soft minima: the hard ones (gamma=0, smoothing=0) are piecewise linear in the
        cost, their Hessian zero or undefined (docs/semantics.md, "Second order")."""
        if not self.gamma > 0 or (self.smoothing is not None and not self.smoothing > 0):
            raise ValueError(f"s2dtw: second-order gradients (differentiating a gradient taken with create_graph="
                             f"True) need gamma > 0 and smoothing None or > 0, got gamma={self.gamma} and smoothing="
                             f"{self.smoothing}: the hard minima are piecewise linear in the cost, their Hessian is "
                             "zero or undefined")

    @staticmethod
    def from_floats(values: list[float]) -> Params:
        *numbers, open_begin, open_end = values
        return Params(*(None if math.isnan(v) else v for v in numbers), open_begin=bool(open_begin),
                      open_end=bool(open_end))


@dataclass(frozen=True)
class Layout:
    """Where each pair's padded_n x padded_m region lives in the cost buffer (csrc/s2dtw_cell.h, Problem).

    Pair b lies in slot s = slots[b] (s = b when slots is None): its cell (i, j) is element
    (s // pairs_per_x) * stride_x + (s % pairs_per_x) * stride_y + i * stride_i + j * stride_j of the flat
    buffer; the pair is pair_n[b] x pair_m[b]. Slots let a call align some of a layout's regions only
    (pairwise(x): the pairs i <= j of one all-pairs cost).
    """

    pair_n: torch.Tensor  # (n_pairs,) int64, on the cost's device
    pair_m: torch.Tensor  # (n_pairs,) int64, on the cost's device
    pairs_per_x: int
    padded_n: int
    padded_m: int
    stride_x: int
    stride_y: int
    stride_i: int
    stride_j: int
    slots: torch.Tensor | None = None  # (n_pairs,) int64 distinct slots, on the cost's device; None: slot b

    def __post_init__(self) -> None:
        # The kernels get the lengths and slots as raw pointers to int64[n_pairs]: an expanded or
        # strided tensor (lengths.expand(B), lengths[::2]) would be read as contiguous.
        for name in ("pair_n", "pair_m", "slots"):
            values = getattr(self, name)
            if values is not None and (values.dtype != torch.int64 or not values.is_contiguous()):
                object.__setattr__(self, name, values.to(torch.int64).contiguous())  # else as is: no op

    @property
    def n_pairs(self) -> int:
        return self.pair_n.numel()

    @staticmethod
    def batched(cost: torch.Tensor, x_lengths: torch.Tensor, y_lengths: torch.Tensor) -> Layout:
        """A contiguous (B, N, M) cost: pair b is cost[b]; lengths (B,)."""
        _, n, m = cost.shape
        return Layout(x_lengths, y_lengths, 1, n, m, n * m, 0, m, 1)

    @staticmethod
    def all_pairs(cost: torch.Tensor, x_lengths: torch.Tensor, y_lengths: torch.Tensor) -> Layout:
        """A contiguous (Bx * N, By * M) cost of every x (Bx,) against every y (By,): pair (i, j) is number
        i * By + j."""
        bx, by = x_lengths.numel(), y_lengths.numel()
        pair_n, pair_m = x_lengths.unsqueeze(1).expand(bx, by), y_lengths.unsqueeze(0).expand(bx, by)
        return Layout.in_grid(cost, cost.shape[0] // bx, cost.shape[1] // by, pair_n.reshape(-1), pair_m.reshape(-1))

    @staticmethod
    def in_grid(cost: torch.Tensor, n: int, m: int, pair_n: torch.Tensor, pair_m: torch.Tensor,
                slots: torch.Tensor | None = None) -> Layout:
        """A contiguous 2-d cost tiled by a grid of n x m regions, numbered row-major: pair b in region slots[b]
        (region b without slots), pair_n[b] x pair_m[b]."""
        per_row = cost.shape[1] // m
        return Layout(pair_n, pair_m, per_row, n, m, n * per_row * m, m, per_row * m, 1, slots=slots)

    def select(self, slots: torch.Tensor) -> Layout:
        """The pairs of this (slot-less) layout numbered `slots` only, each in its own region."""
        return dataclasses.replace(self, pair_n=self.pair_n[slots], pair_m=self.pair_m[slots], slots=slots)

    def slot_numbers(self) -> torch.Tensor:
        """Every pair's slot (n_pairs,) int64: `slots`, or 0 .. n_pairs - 1 without them."""
        return torch.arange(self.n_pairs, device=self.pair_n.device) if self.slots is None else self.slots

    def _offsets(self, slots: torch.Tensor | int) -> torch.Tensor | int:
        return (slots // self.pairs_per_x) * self.stride_x + (slots % self.pairs_per_x) * self.stride_y

    def extent(self, pairs: int | None = None) -> int:
        """Elements of the buffer the regions span (without slots): 1 + the offset of the last cell any of the
        first `pairs` pairs (default n_pairs) can reach."""
        pairs = self.n_pairs if pairs is None else pairs
        last_x, last_y = (pairs - 1) // self.pairs_per_x, min(pairs, self.pairs_per_x) - 1
        return 1 + last_x * self.stride_x + last_y * self.stride_y + self._region_span()

    def _region_span(self) -> int:
        return (self.padded_n - 1) * self.stride_i + (self.padded_m - 1) * self.stride_j

    def regions(self, numel: int) -> int:
        """How many padded_n x padded_m regions a buffer of `numel` elements holds: the slots a layout with slots
        may use are 0 .. regions - 1 (scale_grad reads the buffer so)."""
        return numel // (self.padded_n * self.padded_m)

    def check_fits(self, numel: int) -> None:
        """Every pair's region inside a buffer of `numel` elements and, with slots, the slots distinct (two
        pairs in one region would race on its gradient) and each one of the buffer's `regions`, all of which
        fit. Checked before any kernel reads the buffer, in O(n_pairs + regions); CUDA slots by a device-side
        assertion, which reads nothing on the host."""
        pairs = self.n_pairs if self.slots is None else self.regions(numel)
        if min(self.ints()) < 0 or (self.n_pairs and (pairs < 1 or self.extent(pairs) > numel)):
            raise ValueError(f"s2dtw: the layout {self.ints()} of {self.n_pairs} pairs does not fit a cost "
                             f"buffer of {numel} elements")
        if self.slots is None or not self.n_pairs:
            return
        low, high = torch.aminmax(self.slots)
        # Distinct: as many regions marked as there are slots (clamped, so that a bad slot marks one in range).
        marked = self.slots.new_zeros(pairs).scatter_(0, self.slots.clamp(0, pairs - 1), 1).sum()
        fits = (low >= 0) & (high < pairs) & (marked == self.n_pairs)
        message = f"s2dtw: the slots of the layout {self.ints()} must be distinct and inside a buffer of {numel}"
        if self.slots.is_cuda:
            torch._assert_async(fits, message)
        elif not fits:
            raise ValueError(message)

    def ints(self) -> list[int]:
        """The integer fields (pairs_per_x .. stride_j), in order (what the custom op takes with the tensors)."""
        return [getattr(self, f.name) for f in dataclasses.fields(self)[2:-1]]

    @staticmethod
    def from_ints(pair_n: torch.Tensor, pair_m: torch.Tensor, ints: list[int],
                  slots: torch.Tensor | None = None) -> Layout:
        return Layout(pair_n, pair_m, *ints, slots=slots)

    def offset(self, b: int) -> int:
        """Where pair b's region starts in the flat buffer."""
        return int(self._offsets(b if self.slots is None else self.slots[b]))

    def check_pairs_fit(self) -> None:
        """Every pair inside its padded region: the Python backends' boundary check on the lengths they are
        handed (the C++ kernels make their own, check_pair_lengths in csrc/cpu/s2dtw_cpu.cpp)."""
        if self.n_pairs:
            check_length_range("s2dtw: x lengths", self.pair_n, self.padded_n)
            check_length_range("s2dtw: y lengths", self.pair_m, self.padded_m)

    def scale_grad(self, grad: torch.Tensor, grad_value: torch.Tensor) -> torch.Tensor:
        """grad (shaped like the cost) times d loss / d value (n_pairs,) of the pair each region belongs to.

        Both layouts are regions of (rows of x) x (pairs_per_x) x (columns of y). With slots, each slot's
        factor is its pair's, 0 for a slot no pair holds (its region of grad is 0 too).
        """
        grad_value = self.region_factors(grad.numel(), grad_value)
        if grad.dim() == 3 and self.pairs_per_x == 1:  # a (B, N, M) batch: a plain broadcast, no 4-d view
            return grad * grad_value.reshape(-1, 1, 1)
        regions = grad.reshape(-1, self.padded_n, self.pairs_per_x, self.padded_m)
        return (regions * grad_value.reshape(-1, 1, self.pairs_per_x, 1)).reshape(grad.shape)

    def region_factors(self, numel: int, grad_value: torch.Tensor) -> torch.Tensor:
        """d loss / d value (n_pairs,) as one factor per region of a buffer of `numel` elements (scale_grad):
        itself without slots, else each slot's pair's, 0 for a slot no pair holds."""
        if self.slots is None:
            return grad_value
        return grad_value.new_zeros(self.regions(numel)).index_copy(0, self.slots, grad_value)


def check_length_range(name: str, lengths: torch.Tensor, padded: int) -> None:
    """The lengths rule: every value of the (non-empty, host) integer tensor `lengths` lies in [1, `padded`]."""
    low, high = (int(v) for v in torch.aminmax(lengths))
    if low < 1 or high > padded:
        raise ValueError(f"{name} must lie in [1, {padded}] (the padded length), got values in [{low}, {high}]")


SIMD_NAMES = ("scalar", "avx2", "avx512")  # by csrc/cpu/s2dtw_cpu.h's SimdLevel
_SIMD_LEVELS = {"": 2} | {name: level for level, name in enumerate(SIMD_NAMES)}
_CUDA_REGIMES = {"": 0, "auto": 0, "thread": 1, "block": 2, "multi": 3}
_MAX_CUDA_STRIP = 1024
_MAX_CUDA_TAPE_MIB = 2**30  # csrc/bindings/problem_args.h's bound


@dataclass(frozen=True)
class Switches:
    """How to run a call, from the environment (tests and benchmarks pin them; the defaults choose)."""

    backend: str | None = None  # $S2DTW_BACKEND: one of BACKENDS, None = the fastest for the device
    max_simd: int = 2  # $S2DTW_SIMD: the highest CPU instruction set, 0 scalar, 1 avx2, 2 avx512
    # $S2DTW_CUDA_REGIME: 0 the cost model's choice, 1 a thread per pair, 2 a block per pair, 3 several blocks per
    # pair (multi-block: a long pair's strips over many SMs)
    cuda_regime: int = 0
    cuda_strip: int = 0  # $S2DTW_CUDA_STRIP: rows per block strip (a multiple of 32 up to 1024), 0 = chosen
    # $S2DTW_CUDA_TAPE_MIB: most MiB of tape (all pairs) the CUDA block regime keeps for the backward; above it,
    # one strip's per pair, each strip recomputed in the backward (0: recompute whenever that saves memory)
    cuda_tape_mib: int = 1024


def read_switches(environ: Mapping[str, str] = os.environ) -> Switches:
    """The switches as the environment sets them now (read at every call, so a test can change them)."""
    backend = environ.get("S2DTW_BACKEND") or None
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"S2DTW_BACKEND={backend!r} is not one of {BACKENDS}")
    simd = environ.get("S2DTW_SIMD", "")
    if simd not in _SIMD_LEVELS:
        raise ValueError(f"s2dtw: S2DTW_SIMD must be scalar, avx2 or avx512 (or unset), got {simd!r}")
    regime = environ.get("S2DTW_CUDA_REGIME", "")
    if regime not in _CUDA_REGIMES:
        raise ValueError(f"s2dtw (cuda): S2DTW_CUDA_REGIME must be auto, thread, block or multi, got {regime}")
    strip = environ.get("S2DTW_CUDA_STRIP", "")
    rows = int(strip) if strip.isdecimal() else -1
    if strip and not (32 <= rows <= _MAX_CUDA_STRIP and rows % 32 == 0):
        raise ValueError(f"s2dtw (cuda): S2DTW_CUDA_STRIP must be a multiple of 32 in [32, {_MAX_CUDA_STRIP}], "
                         f"got {strip!r}")
    tape = environ.get("S2DTW_CUDA_TAPE_MIB", "")
    if tape and not (tape.isdecimal() and int(tape) <= _MAX_CUDA_TAPE_MIB):
        raise ValueError(f"s2dtw (cuda): S2DTW_CUDA_TAPE_MIB must be an integer in [0, {_MAX_CUDA_TAPE_MIB}], "
                         f"got {tape!r}")
    return Switches(backend, _SIMD_LEVELS[simd], _CUDA_REGIMES[regime], max(rows, 0),
                    int(tape) if tape else Switches.cuda_tape_mib)


@dataclass(frozen=True)
class Problem:
    """One call, whole: what the kernels are asked (the switches are read when it is made)."""

    layout: Layout
    params: Params
    switches: Switches = field(default_factory=read_switches)
