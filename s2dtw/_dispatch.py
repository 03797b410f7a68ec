"""The one place that picks a backend and calls it.

Backends, fastest first: ``cuda`` (CUDA tensors), ``cpp`` (C++/OpenMP), ``numba``,
``numpy`` (the reference). Extension modules and numba are imported lazily, on
first use. Nothing is ever moved between devices here: a CUDA tensor runs on the
CUDA backend or raises.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

BACKENDS = ("cuda", "cpp", "numba", "numpy")
_CPU_BACKENDS = ("cpp", "numba", "numpy")
_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64"}


@dataclass(frozen=True)
class Params:
    """The alignment's hyper-parameters; ``None`` turns smoothing / the weak grid / the band off."""

    gamma: float
    smoothing: float | None
    threshold: float | None
    bandwidth: float | None = None


@dataclass(frozen=True)
class Layout:
    """Where each pair's cost block lives in the cost buffer (see csrc/s2dtw_cell.h, Problem)."""

    pair_n: torch.Tensor  # (n_pairs,) int64, on the cost's device
    pair_m: torch.Tensor
    pairs_per_x: int
    padded_n: int
    padded_m: int
    stride_x: int
    stride_y: int
    stride_i: int
    stride_j: int

    def __post_init__(self) -> None:
        # The kernels get the lengths as raw pointers to int64[n_pairs]: an expanded or
        # strided tensor (lengths.expand(B), lengths[::2]) would be read as contiguous.
        for name in ("pair_n", "pair_m"):
            lengths = getattr(self, name)
            if lengths.dtype != torch.int64 or not lengths.is_contiguous():  # else as is: no op that returns its input
                object.__setattr__(self, name, lengths.to(torch.int64).contiguous())

    @property
    def n_pairs(self) -> int:
        return self.pair_n.numel()

    @staticmethod
    def batched(cost: torch.Tensor, x_lengths: torch.Tensor, y_lengths: torch.Tensor) -> Layout:
        """A contiguous (B, N, M) cost: pair b is cost[b]."""
        _, n, m = cost.shape
        return Layout(x_lengths, y_lengths, 1, n, m, n * m, 0, m, 1)

    @staticmethod
    def all_pairs(cost: torch.Tensor, x_lengths: torch.Tensor, y_lengths: torch.Tensor) -> Layout:
        """A contiguous (Bx * N, By * M) cost of every x against every y: pair (i, j) is number i * By + j."""
        bx, by = x_lengths.numel(), y_lengths.numel()
        n, m = cost.shape[0] // bx, cost.shape[1] // by
        pair_n, pair_m = x_lengths.unsqueeze(1).expand(bx, by), y_lengths.unsqueeze(0).expand(bx, by)
        return Layout(pair_n.reshape(-1), pair_m.reshape(-1), by, n, m, n * by * m, m, by * m, 1)

    def extent(self) -> int:
        """Elements of the buffer the blocks span: 1 + the offset of the last cell any pair can reach."""
        last_x, last_y = (self.n_pairs - 1) // self.pairs_per_x, min(self.n_pairs, self.pairs_per_x) - 1
        return 1 + last_x * self.stride_x + last_y * self.stride_y + (self.padded_n - 1) * self.stride_i + (
            self.padded_m - 1) * self.stride_j

    def ints(self) -> list[int]:
        """Everything but the lengths, as a list (what the custom op takes)."""
        return [self.pairs_per_x, self.padded_n, self.padded_m, self.stride_x, self.stride_y, self.stride_i,
                self.stride_j]

    @staticmethod
    def from_ints(pair_n: torch.Tensor, pair_m: torch.Tensor, ints: list[int]) -> Layout:
        return Layout(pair_n, pair_m, *ints)

    def scale_grad(self, grad: torch.Tensor, grad_value: torch.Tensor) -> torch.Tensor:
        """grad (shaped like the cost) times d loss / d value of the pair each block belongs to.

        Both layouts are blocks of (rows of x) x (pairs_per_x) x (columns of y).
        """
        if grad.dim() == 3 and self.pairs_per_x == 1:  # a (B, N, M) batch: a plain broadcast, no 4-d view
            return grad * grad_value.reshape(-1, 1, 1)
        blocks = grad.reshape(-1, self.padded_n, self.pairs_per_x, self.padded_m)
        return (blocks * grad_value.reshape(-1, 1, self.pairs_per_x, 1)).reshape(grad.shape)


def compiling() -> bool:
    """Whether torch.compile is tracing this call (False on torch without torch.compiler)."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def _problem_kwargs(layout: Layout, params: Params) -> dict[str, Any]:
    return dict(
        n_pairs=layout.n_pairs,
        pairs_per_x=layout.pairs_per_x,
        stride_x=layout.stride_x,
        stride_y=layout.stride_y,
        stride_i=layout.stride_i,
        stride_j=layout.stride_j,
        padded_n=layout.padded_n,
        padded_m=layout.padded_m,
        gamma=params.gamma,
        smoothing=params.smoothing,
        threshold=params.threshold,
        bandwidth=params.bandwidth,
    )


_IMPORT_ERRORS: dict[str, str] = {}


@functools.cache
def _load(name: str) -> Any:
    """The module behind a backend, or None when it is not available here (the reason in _IMPORT_ERRORS)."""
    module = {"cpp": "s2dtw._cpu", "cuda": "s2dtw._cuda", "numba": "s2dtw._numba"}[name]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        _IMPORT_ERRORS[name] = str(err)
        return None


def _available(name: str) -> bool:
    if name == "numpy":
        return True
    if name == "cuda" and not torch.cuda.is_available():
        return False
    return _load(name) is not None


def _numba_installed() -> bool:
    """Whether numba is installed, without importing it (that takes seconds; only its backend needs it)."""
    return importlib.util.find_spec("numba") is not None


def backends() -> dict[str, Any]:
    """What this installation can run, and which backend each device uses by default.

    Example: ``{"cpp": True, "openmp": True, "simd": "avx512", "cuda": False, "numba": True,
    "numpy": True, "default": {"cpu": "cpp", "cuda": None}}``. ``cuda`` is True only when the CUDA module
    was built and a CUDA device is visible; ``openmp`` False means the C++ kernels run single-threaded;
    ``numba`` says whether the optional numba (``pip install "s2dtw[numba]"``) is installed.
    """
    cpp = _load("cpp")
    default_cpu = next(name for name in _CPU_BACKENDS if _available(name))
    return {
        "cpp": cpp is not None,
        "openmp": bool(cpp is not None and cpp.openmp),
        "simd": cpp.simd_level() if cpp is not None else None,
        "cuda": _available("cuda"),
        "cuda_module_built": _load("cuda") is not None,
        "numba": _numba_installed(),
        "numpy": True,
        "default": {"cpu": default_cpu, "cuda": "cuda" if _available("cuda") else None},
    }


def resolve_backend(device: torch.device, requested: str | None) -> str:
    """The backend for tensors on `device`: `requested`, else $S2DTW_BACKEND, else the fastest one."""
    source = "backend="
    if requested is None and os.environ.get("S2DTW_BACKEND"):
        requested, source = os.environ["S2DTW_BACKEND"], "S2DTW_BACKEND="
    if requested is not None and requested not in BACKENDS:
        raise ValueError(f"{source}{requested!r} is not one of {BACKENDS}")

    if device.type == "cuda":
        if requested not in (None, "cuda"):
            raise ValueError(
                f"{source}{requested!r} runs on CPU tensors but the inputs are on {device}; "
                "move them with .cpu() if that is what you want"
            )
        if not _available("cuda"):
            raise RuntimeError(
                f"inputs are on {device} but s2dtw was built without its CUDA module; reinstall with "
                "nvcc on the PATH (or S2DTW_CUDA=1) to build it. s2dtw never copies to the CPU silently."
            )
        return "cuda"
    if device.type != "cpu":
        raise ValueError(f"s2dtw runs on CPU and CUDA tensors, got a tensor on {device}")
    if requested == "cuda":
        raise ValueError(f"{source}'cuda' needs CUDA tensors, got tensors on {device}")
    if requested is not None:
        if not _available(requested):
            raise RuntimeError(f"{source}{requested!r} is not available: {_MISSING_HINTS[requested]} "
                               f"({_IMPORT_ERRORS.get(requested)})")
        return requested
    name = next(name for name in _CPU_BACKENDS if _available(name))
    if name == "numpy":
        _warn_slow_fallback()
    return name


_MISSING_HINTS = {
    "cpp": "the C++ extension s2dtw._cpu was not built or does not load; reinstall with pip install -e .",
    "numba": 'numba is an optional extra: pip install "s2dtw[numba]"',
}


@functools.cache
def _warn_slow_fallback() -> None:
    warnings.warn(
        "s2dtw: neither the C++ extension nor numba is available; using the pure-NumPy reference, "
        "which is orders of magnitude slower",
        RuntimeWarning,
        stacklevel=4,
    )


@functools.cache
def _warn_single_threaded() -> None:
    warnings.warn(
        "s2dtw: more than one thread requested (torch.get_num_threads()) but the C++ extension was built without "
        "OpenMP, so its kernels run single-threaded; rebuild with a compiler that has OpenMP (see docs/building.md)",
        RuntimeWarning,
        stacklevel=2,
    )


def _run_cpp(cost: torch.Tensor, value: torch.Tensor, grad: torch.Tensor | None, layout: Layout,
             params: Params) -> None:
    module, threads = _load("cpp"), torch.get_num_threads()
    if threads > 1 and not module.openmp:
        _warn_single_threaded()
    module.run(
        dtype=_DTYPE_NAMES[cost.dtype],
        cost=cost.data_ptr(),
        value=value.data_ptr(),
        grad=0 if grad is None else grad.data_ptr(),
        num_threads=threads,
        pair_n=layout.pair_n.data_ptr(),
        pair_m=layout.pair_m.data_ptr(),
        **_problem_kwargs(layout, params),
    )


def _run_cuda(cost: torch.Tensor, value: torch.Tensor, grad: torch.Tensor | None, layout: Layout,
              params: Params) -> None:
    if layout.pair_n.device != cost.device or layout.pair_m.device != cost.device:  # the kernel reads them there
        raise ValueError(f"pair lengths on {layout.pair_n.device} / {layout.pair_m.device} for a cost on {cost.device}")
    module = _load("cuda")
    dtype = _DTYPE_NAMES[cost.dtype]
    problem = dict(pair_n=layout.pair_n.data_ptr(), pair_m=layout.pair_m.data_ptr(),
                   **_problem_kwargs(layout, params))
    with torch.cuda.device(cost.device):
        workspace = torch.empty(module.workspace_bytes(dtype, grad is not None, **problem),
                                dtype=torch.uint8, device=cost.device)
        module.run(
            dtype=dtype,
            cost=cost.data_ptr(),
            value=value.data_ptr(),
            grad=0 if grad is None else grad.data_ptr(),
            workspace=workspace.data_ptr(),
            workspace_size=workspace.numel(),
            stream=torch.cuda.current_stream(cost.device).cuda_stream,
            **problem,
        )


def _check_pairs_fit(layout: Layout) -> None:
    """The Python kernels' copy of the C++ kernels' check: every pair inside its block (never trust lengths)."""
    for lengths, block, name in ((layout.pair_n, layout.padded_n, "x"), (layout.pair_m, layout.padded_m, "y")):
        if layout.n_pairs and not (int(lengths.min()) >= 1 and int(lengths.max()) <= block):
            raise ValueError(f"s2dtw: {name} lengths must lie in [1, {block}] (the padded length), got values in "
                             f"[{int(lengths.min())}, {int(lengths.max())}]")


def _run_numba(cost: torch.Tensor, value: torch.Tensor, grad: torch.Tensor | None, layout: Layout,
               params: Params) -> None:
    _check_pairs_fit(layout)
    _load("numba").run(
        cost.reshape(-1).numpy(),
        value.numpy(),
        None if grad is None else grad.reshape(-1).numpy(),
        pair_n=layout.pair_n.numpy(),
        pair_m=layout.pair_m.numpy(),
        num_threads=torch.get_num_threads(),
        **_problem_kwargs(layout, params),
    )


def _run_numpy(cost: torch.Tensor, value: torch.Tensor, grad: torch.Tensor | None, layout: Layout,
               params: Params) -> None:
    from . import _reference

    _check_pairs_fit(layout)
    flat = cost.reshape(-1).numpy()
    grad_flat = None if grad is None else grad.reshape(-1).numpy()
    if grad_flat is not None:
        grad_flat[:] = 0
    itemsize = flat.itemsize
    for b in range(layout.n_pairs):
        n, m = int(layout.pair_n[b]), int(layout.pair_m[b])
        offset = (b // layout.pairs_per_x) * layout.stride_x + (b % layout.pairs_per_x) * layout.stride_y
        strides = (layout.stride_i * itemsize, layout.stride_j * itemsize)
        block = np.lib.stride_tricks.as_strided(flat[offset:], shape=(n, m), strides=strides)
        value[b], block_grad = _reference.align_one(block, params.gamma, params.smoothing, params.threshold,
                                                    params.bandwidth)
        if grad_flat is not None:
            np.lib.stride_tricks.as_strided(grad_flat[offset:], shape=(n, m), strides=strides)[:] = block_grad


_RUNNERS: dict[str, Callable[..., None]] = {
    "cuda": _run_cuda,
    "cpp": _run_cpp,
    "numba": _run_numba,
    "numpy": _run_numpy,
}


def run(backend: str, cost: torch.Tensor, layout: Layout, params: Params,
        need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Values (n_pairs,) and, if `need_grad`, d value / d cost (shaped like `cost`).

    `cost` must be contiguous float32 / float64 on the backend's device.
    """
    if min(layout.ints()) < 0 or (layout.n_pairs and layout.extent() > cost.numel()):
        raise ValueError(f"s2dtw: the layout {layout.ints()} of {layout.n_pairs} pairs does not fit a cost "
                         f"buffer of {cost.numel()} elements")
    value = torch.empty(layout.n_pairs, dtype=cost.dtype, device=cost.device)
    grad = torch.empty_like(cost) if need_grad else None
    _RUNNERS[backend](cost, value, grad, layout, params)
    return value, grad
