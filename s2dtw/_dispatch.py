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
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._problem import BACKENDS, SIMD_NAMES, Layout, Problem, Switches, read_switches
from ._validation import compiling

_CPU_BACKENDS = ("cpp", "numba", "numpy")
_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64"}


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


def _simd_level(best: str) -> str:
    """The instruction set a C++ call made now runs at: the CPU's best, at most $S2DTW_SIMD's."""
    return SIMD_NAMES[min(SIMD_NAMES.index(best), read_switches().max_simd)]


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
        "simd": _simd_level(cpp.best_simd_level()) if cpp is not None else None,
        "cuda": _available("cuda"),
        "cuda_module_built": _load("cuda") is not None,
        "numba": _numba_installed(),
        "numpy": True,
        "default": {"cpu": default_cpu, "cuda": "cuda" if _available("cuda") else None},
    }


def resolve_backend(device: torch.device, requested: str | None, switches: Switches | None = None) -> str:
    """The backend for tensors on `device`: `requested`, else $S2DTW_BACKEND (`switches`, read now when None),
    else the fastest one."""
    source = "backend="
    if requested is None:
        requested, source = (read_switches() if switches is None else switches).backend, "S2DTW_BACKEND="
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


def plain(t: torch.Tensor) -> bool:
    """Whether `t` is a plain tensor in an eager call: not traced (torch.compile / torch.export), under no dispatch
    mode (FakeTensorMode, ...) and of no tensor subclass, whose data pointers are not theirs to hand out."""
    return (not compiling() and torch._C._len_torch_dispatch_stack() == 0
            and not torch._C._dispatch_keys(t).has(torch._C.DispatchKey.Python))


def _plain_cpu(t: torch.Tensor) -> bool:
    """Whether the C++ module may read `t` by its data pointer: a plain, contiguous float32 / float64 CPU tensor."""
    return (t.device.type == "cpu" and t.dtype in _DTYPE_NAMES and t.layout == torch.strided
            and not t._is_zerotensor() and t.is_contiguous() and plain(t))


def all_finite(t: torch.Tensor) -> bool | None:
    """Whether every value of `t` is finite, by one C++ pass on the kernels' threads; None when the C++ module
    cannot read `t` (_plain_cpu) or is not available (the caller then asks torch). Issue #14: torch's
    aminmax is a parallel op of its own, whose threads wait for preempted ones beside a busy process."""
    module = _load("cpp") if _plain_cpu(t) else None
    if getattr(module, "all_finite", None) is None:  # (an older build of the module has no such pass)
        return None
    return module.all_finite(_DTYPE_NAMES[t.dtype], t.data_ptr(), t.numel(), torch.get_num_threads())


def scale_grad(layout: Layout, grad: torch.Tensor, grad_value: torch.Tensor) -> torch.Tensor:
    """layout.scale_grad(grad, grad_value), bit for bit, by one C++ pass on the kernels' threads where the C++
    module can read both tensors (else by torch's ops)."""
    module = _load("cpp") if _plain_cpu(grad) else None
    regions = layout.regions(grad.numel())
    region_size = layout.padded_n * layout.padded_m
    if (getattr(module, "scale_grad", None) is None or grad_value.dim() != 1 or grad_value.dtype != grad.dtype
            or grad_value.device != grad.device
            or regions * region_size != grad.numel() or regions % layout.pairs_per_x):
        return layout.scale_grad(grad, grad_value)
    factor = layout.region_factors(grad.numel(), grad_value)
    if factor.numel() != regions or factor.layout != torch.strided or factor._is_zerotensor() or not plain(factor):
        return layout.scale_grad(grad, grad_value)
    out = torch.empty_like(grad)
    module.scale_grad(_DTYPE_NAMES[grad.dtype], grad.data_ptr(), factor.data_ptr(), factor.stride(0), out.data_ptr(),
                      regions, layout.padded_n, layout.pairs_per_x, layout.padded_m, torch.get_num_threads())
    return out


def _run_cpp(cost: torch.Tensor, value: torch.Tensor, grad: torch.Tensor | None, problem: Problem) -> None:
    module, threads = _load("cpp"), torch.get_num_threads()
    if threads > 1 and not module.openmp:
        _warn_single_threaded()
    module.run(_DTYPE_NAMES[cost.dtype], cost.data_ptr(), value.data_ptr(), 0 if grad is None else grad.data_ptr(),
               threads, problem)


def _check_lengths_device(layout: Layout, cost: torch.Tensor) -> None:
    """The CUDA kernels read the pair lengths (and slots) on the cost's device."""
    if layout.pair_n.device != cost.device or layout.pair_m.device != cost.device:
        raise ValueError(f"pair lengths on {layout.pair_n.device} / {layout.pair_m.device} for a cost on {cost.device}")
    if layout.slots is not None and layout.slots.device != cost.device:
        raise ValueError(f"pair slots on {layout.slots.device} for a cost on {cost.device}")


def _run_cuda(cost: torch.Tensor, value: torch.Tensor, grad: torch.Tensor | None, problem: Problem) -> None:
    _check_lengths_device(problem.layout, cost)
    module, dtype = _load("cuda"), _DTYPE_NAMES[cost.dtype]
    with torch.cuda.device(cost.device):
        workspace = torch.empty(module.workspace_bytes(dtype, grad is not None, problem), dtype=torch.uint8,
                                device=cost.device)
        module.run(dtype, cost.data_ptr(), value.data_ptr(), 0 if grad is None else grad.data_ptr(),
                   workspace.data_ptr(), workspace.numel(), torch.cuda.current_stream(cost.device).cuda_stream,
                   problem)


def _run_numba(cost: torch.Tensor, value: torch.Tensor, grad: torch.Tensor | None, problem: Problem) -> None:
    problem.layout.check_pairs_fit()
    _load("numba").run(cost.reshape(-1).numpy(), value.numpy(), None if grad is None else grad.reshape(-1).numpy(),
                       problem, torch.get_num_threads())


def _run_numpy(cost: torch.Tensor, value: torch.Tensor, grad: torch.Tensor | None, problem: Problem) -> None:
    from . import _reference

    layout, params = problem.layout, problem.params
    layout.check_pairs_fit()
    flat = cost.reshape(-1).numpy()
    grad_flat = None if grad is None else grad.reshape(-1).numpy()
    if grad_flat is not None:
        grad_flat[:] = 0
    strides = (layout.stride_i * flat.itemsize, layout.stride_j * flat.itemsize)
    for b in range(layout.n_pairs):
        n, m, offset = int(layout.pair_n[b]), int(layout.pair_m[b]), layout.offset(b)
        region = np.lib.stride_tricks.as_strided(flat[offset:], shape=(n, m), strides=strides)
        value[b], region_grad = _reference.align_one(region, params.gamma, params.smoothing, params.threshold,
                                                     params.bandwidth, open_begin=params.open_begin,
                                                     open_end=params.open_end)
        if grad_flat is not None:
            np.lib.stride_tricks.as_strided(grad_flat[offset:], shape=(n, m), strides=strides)[:] = region_grad


_RUNNERS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, Problem], None]] = {
    "cuda": _run_cuda,
    "cpp": _run_cpp,
    "numba": _run_numba,
    "numpy": _run_numpy,
}


def run(backend: str, cost: torch.Tensor, problem: Problem,
        need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Values (n_pairs,) and, if `need_grad`, d value / d cost (shaped like `cost`).

    `cost` must be contiguous float32 / float64 on the backend's device.
    """
    layout = problem.layout
    layout.check_fits(cost.numel())
    value = torch.empty(layout.n_pairs, dtype=cost.dtype, device=cost.device)
    # The kernels write their own pairs' regions only: with slots, the regions no pair holds must be 0.
    new = torch.zeros_like if layout.slots is not None else torch.empty_like
    grad = new(cost) if need_grad else None
    _RUNNERS[backend](cost, value, grad, problem)
    return value, grad


def _hvp_cpp(cost: torch.Tensor, direction: torch.Tensor, out: torch.Tensor, problem: Problem) -> None:
    _load("cpp").hvp(_DTYPE_NAMES[cost.dtype], cost.data_ptr(), direction.data_ptr(), out.data_ptr(),
                     torch.get_num_threads(), problem)


def _hvp_cuda(cost: torch.Tensor, direction: torch.Tensor, out: torch.Tensor, problem: Problem) -> None:
    _check_lengths_device(problem.layout, cost)
    module, dtype = _load("cuda"), _DTYPE_NAMES[cost.dtype]
    with torch.cuda.device(cost.device):
        workspace = torch.empty(module.hvp_workspace_bytes(dtype, problem), dtype=torch.uint8, device=cost.device)
        module.hvp(dtype, cost.data_ptr(), direction.data_ptr(), out.data_ptr(), workspace.data_ptr(),
                   workspace.numel(), torch.cuda.current_stream(cost.device).cuda_stream, problem)


def _hvp_numba(cost: torch.Tensor, direction: torch.Tensor, out: torch.Tensor, problem: Problem) -> None:
    problem.layout.check_pairs_fit()
    importlib.import_module("s2dtw._numba_second").hvp(cost.reshape(-1).numpy(), direction.reshape(-1).numpy(),
                                                       out.reshape(-1).numpy(), problem)


def _hvp_numpy(cost: torch.Tensor, direction: torch.Tensor, out: torch.Tensor, problem: Problem) -> None:
    from . import _reference_second

    problem.layout.check_pairs_fit()
    _reference_second.run(cost.reshape(-1).numpy(), direction.reshape(-1).numpy(), out.reshape(-1).numpy(),
                          problem.layout, problem.params)


_HVP_RUNNERS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Problem], None]] = {
    "cuda": _hvp_cuda,
    "cpp": _hvp_cpp,
    "numba": _hvp_numba,
    "numpy": _hvp_numpy,
}


def run_hvp(backend: str, cost: torch.Tensor, direction: torch.Tensor, problem: Problem) -> torch.Tensor:
    """Hessian-vector products H·Z of every pair's value w.r.t. the cost, Z = `direction` (shaped like `cost`).

    Returns a tensor shaped like `cost`: each pair's padded region holds its H·Z, zero outside the pair's
    lengths (docs/semantics.md, "Second order"). `cost` and `direction` must be contiguous, of one float32 /
    float64 dtype, on the backend's device. gamma == 0 or smoothing == 0 raise ValueError (the hard forms are
    piecewise linear: no Hessian), before any kernel runs.
    """
    params, layout = problem.params, problem.layout
    params.check_second_order()
    if direction.shape != cost.shape or direction.dtype != cost.dtype or direction.device != cost.device:
        raise ValueError(f"s2dtw: the direction ({tuple(direction.shape)}, {direction.dtype}, {direction.device}) "
                         f"must match the cost ({tuple(cost.shape)}, {cost.dtype}, {cost.device})")
    if not (cost.is_contiguous() and direction.is_contiguous()):
        raise ValueError("s2dtw: run_hvp needs a contiguous cost and direction")
    layout.check_fits(cost.numel())
    out = torch.zeros_like(cost)  # a layout need not cover the whole buffer: the rest is zero, not garbage
    _HVP_RUNNERS[backend](cost, direction, out, problem)
    return out
