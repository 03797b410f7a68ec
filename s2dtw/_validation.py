"""Input validation: every check on user input lives here, with messages that name
the argument and the shapes. Nothing here modifies its inputs."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

from ._band import band_connects, band_width, grid_extent
from ._problem import BACKENDS, Params, check_length_range

Lengths = torch.Tensor | Sequence[int] | None

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
METRICS = ("neg_dot", "neg_cosine", "sqeuclidean")


def compiling() -> bool:
    """Whether torch.compile is tracing this call (False on torch without torch.compiler)."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def _real(name: str, v: object) -> float:
    """`v` as a float: Python, NumPy and 0-d tensor integers and floats are accepted; bools are not."""
    if isinstance(v, (bool, np.bool_)) or (isinstance(v, torch.Tensor) and v.dtype == torch.bool):
        raise TypeError(f"{name} must be a real number, got the bool {v!r}")
    if isinstance(v, torch.Tensor):
        if v.dim() != 0 or v.is_complex() or v.device.type not in ("cpu", "cuda"):
            raise TypeError(f"{name} must be a real number or a 0-d CPU/CUDA tensor, got a tensor of shape "
                            f"{tuple(v.shape)}, dtype {v.dtype} on {v.device}")
        v = v.item()
    if not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number (int, float, NumPy scalar or 0-d tensor), "
                        f"got {type(v).__name__}")
    return float(v)


def check_positive(name: str, v: object, allow_zero: bool = False) -> float:
    """A finite number > 0 (or exactly 0 with `allow_zero`: the hard minimum) whose reciprocal is finite too
    (the kernels divide by it)."""
    value = _real(name, v)
    if allow_zero and value == 0:
        return 0.0
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {v!r}")
    if not math.isfinite(1 / value):
        raise ValueError(f"{name}={v!r} is too small: 1/{name} overflows float64 (use {name} >= 1e-300"
                         f"{' or exactly 0' if allow_zero else ''})")
    return value


def _flag(name: str, v: object) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {v!r}")
    return bool(v)


def check_params(
    gamma: float, smoothing: float | None, threshold: float | None, bandwidth: float | None = None,
    open_begin: bool = False, open_end: bool = False, *, allow_zero: bool = True,
) -> Params:
    """The alignment's parameters (docs/semantics.md); `gamma` / `smoothing` 0 are the hard minima
    ("Variants" V1, V2) unless `allow_zero` is False (a caller that needs a smooth objective)."""
    width = None if bandwidth is None else _real("bandwidth", bandwidth)
    if width is not None and not (math.isfinite(width) and width >= 0):
        raise ValueError(f"bandwidth must be a finite number >= 0 or None, got {bandwidth!r}")
    null_cost = None if threshold is None else _real("threshold", threshold)
    if null_cost is not None and not math.isfinite(null_cost):
        raise ValueError(f"threshold must be a finite number or None, got {threshold!r}")
    open_begin, open_end = _flag("open_begin", open_begin), _flag("open_end", open_end)
    if width is not None and (open_begin or open_end):
        raise ValueError("open_begin/open_end cannot be combined with a band (bandwidth): the band follows the "
                         "diagonal from the first to the last cell, which an open (subsequence) path need not touch")
    return Params(
        gamma=check_positive("gamma", gamma, allow_zero),
        smoothing=None if smoothing is None else check_positive("smoothing", smoothing, allow_zero),
        threshold=null_cost,
        bandwidth=width,
        open_begin=open_begin,
        open_end=open_end,
    )


def check_options(metric: object, normalize: object, backend: object, params: Params | None = None) -> None:
    """The non-numeric options, checked when given (a loss's constructor), not at the first forward.

    With `params`, also the rule that the divergence has no subsequence form (docs/semantics.md, V4).
    """
    if not callable(metric) and metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS} or a callable, got {metric!r}")
    _flag("normalize", normalize)
    if normalize and params is not None and (params.open_begin or params.open_end):
        raise ValueError("normalize=True cannot be combined with open_begin/open_end: a subsequence value treats x "
                         "and y differently, so the divergence's S(x, x) and S(y, y) have no matching meaning")
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS} (or None: the default)")


def uses_cost(x: object, y: object, cost: object) -> bool:
    """Whether the call aligns a precomputed `cost` (True) or the sequences `x`, `y` (False); never both."""
    if cost is not None:
        if x is not None or y is not None:
            raise ValueError("pass either the sequences x, y or a precomputed cost=, not both")
        return True
    if x is None or y is None:
        raise ValueError("pass the sequences x (B, N, d) and y (B, M, d), or a precomputed cost=")
    return False


def _check_tensor(name: str, t: object, ndim: int, layout: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(t.shape)} ({t.dim()} dims)")
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)} {layout}")
    if not compiling():
        _check_transforms(name, t)
    return t


def _check_transforms(name: str, t: torch.Tensor) -> None:
    """Transforms the kernels have no rule for raise here, instead of deep inside torch or, for
    forward-mode AD, with a silently zero tangent (docs/semantics.md lists what is supported)."""
    functorch = getattr(torch._C, "_functorch", None)
    if functorch is not None and functorch.peek_interpreter_stack() is not None:
        raise RuntimeError("s2dtw does not support torch.func transforms (grad, vmap, jvp, jacrev, jacfwd, "
                           "hessian); use torch.autograd.grad or .backward(), and a batch instead of vmap")
    if torch.autograd.forward_ad.unpack_dual(t).tangent is not None:
        raise RuntimeError(f"s2dtw has no forward-mode derivative: {name} is a dual tensor (forward_ad); "
                           "use reverse mode (torch.autograd.grad or .backward())")
    if torch.jit.is_tracing():
        raise RuntimeError("s2dtw does not support torch.jit.trace (the tracer cannot record its custom op); "
                           "use torch.compile or torch.export")


def _check_device(name: str, t: torch.Tensor) -> None:
    if t.device.type not in ("cpu", "cuda"):  # meta tensors have no values to align
        raise ValueError(f"s2dtw runs on CPU and CUDA tensors, got {name} on {t.device}")


def _check_finite(name: str, t: torch.Tensor) -> None:
    # NaN or inf would otherwise come back as a silently wrong value or gradient. Raising
    # needs the answer on the host: a GPU tensor would synchronise, and torch.compile
    # cannot trace the branch. Those get poison_non_finite instead (docs/semantics.md).
    # On the CPU the C++ module's pass (_dispatch.all_finite) where it can read the tensor: torch's ops would
    # add their own parallel regions around the kernel's (issue #14).
    if t.is_cuda or compiling():
        return
    from . import _dispatch  # here: _dispatch imports this module

    finite = _dispatch.all_finite(t.detach())
    if finite is None:
        low, high = torch.aminmax(t.detach())  # one pass, no mask tensor; NaN propagates into both
        finite = bool(torch.isfinite(low) & torch.isfinite(high))
    if not finite:
        raise ValueError(f"{name} contains NaN or inf")


def check_sequences(x: object, y: object, same_batch: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, N, d) and y (B, M, d): same features, device and dtype (and batch, if `same_batch`)."""
    x = _check_tensor("x", x, 3, "(B, N, d)" if same_batch else "(Bx, N, d)")
    y = _check_tensor("y", y, 3, "(B, M, d)" if same_batch else "(By, M, d)")
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got x on {x.device} and y on {y.device}")
    _check_device("x", x)
    if x.dtype != y.dtype:
        raise TypeError(f"x and y must have the same dtype, got {x.dtype} and {y.dtype}")
    if same_batch and x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same batch size, got x {tuple(x.shape)} and y {tuple(y.shape)}")
    if x.shape[2] != y.shape[2]:
        raise ValueError(
            f"x and y must have the same feature size d, got x {tuple(x.shape)} and y {tuple(y.shape)}"
        )
    _check_finite("x", x)
    if y is not x:  # pairwise(x) and pairwise(x, x) pass x twice: one pass over it
        _check_finite("y", y)
    return x, y


def poison_non_finite(value: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
    """`value`, made NaN wherever the call saw a non-finite cost, without leaving the device."""
    low, high = torch.aminmax(cost.detach())
    return value + (low * 0 + high * 0)  # 0 * (+-inf or NaN) is NaN; 0 * finite is 0


def check_cost(cost: object, shape: tuple[int, int, int] | None = None) -> torch.Tensor:
    """A finite cost of shape (B, N, M) (from the user, or exactly `shape` from a metric)."""
    cost = _check_tensor("cost", cost, 3, "(B, N, M)")
    if shape is not None and tuple(cost.shape) != tuple(shape):
        raise ValueError(f"the metric must return a cost of shape (B, N, M) = {tuple(shape)}, "
                         f"got {tuple(cost.shape)}")
    _check_device("cost", cost)
    _check_finite("cost", cost)
    return cost


def check_lengths(name: str, lengths: Lengths, batch: int, full: int,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """(B,) int64 lengths in [1, full] on `device` (the inputs'); None means every sequence is `full` long.

    Nothing here reads a GPU value on the host (docs/semantics.md, "CUDA: no host synchronisation"):
    lengths on the CUDA inputs' device, and any tensor under torch.compile, are checked for shape and
    dtype only, and the kernels check their range themselves. Lengths held on the host for CUDA inputs
    are checked here and sent with one non-blocking copy from pinned memory (refused during CUDA-graph
    capture, where the copy would replay from a freed buffer).
    """
    device = torch.device(device)
    if lengths is None:
        return torch.full((batch,), full, dtype=torch.int64, device=device)
    traced = compiling() and isinstance(lengths, torch.Tensor)  # a list's values are known while tracing
    if not isinstance(lengths, torch.Tensor):
        try:  # no dtype given: [2.7, 3.9] and [True, True] must fail below as the same tensors do
            lengths = torch.as_tensor(list(lengths))
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be a 1-D tensor or sequence of integers") from err
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {lengths.dtype}")
    _check_device(name, lengths)
    if lengths.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) (one length per pair), got {tuple(lengths.shape)}")
    on_device = device.type == "cuda" and lengths.is_cuda
    if on_device and lengths.device != device:
        raise ValueError(f"{name} is on {lengths.device} but the inputs are on {device}")
    if traced or on_device:  # shape only: the range check would read the values on the host
        return lengths.to(device, torch.int64)
    values = lengths.detach().to("cpu", torch.int64)
    check_length_range(name, values, full)
    if device.type != "cuda":
        return values
    if compiling():  # traced: the copy is the graph's to schedule (no pinning, no capture query in a trace)
        return values.to(device)
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        raise ValueError(f"{name} is on the host while a CUDA graph is being captured: pass it as a CUDA tensor "
                         "(or None), so that the graph reads it from the device on every replay")
    return values.pin_memory().to(device, non_blocking=True)


def _connects(weak: bool, rows: int, cols: int, bandwidth: float) -> bool:
    """Whether a band of `bandwidth` elements leaves a path through the rows x cols grid (s2dtw/_band.py)."""
    return band_connects(rows, cols, band_width(weak, True, bandwidth, rows, cols))


def _round_up(v: float) -> float:
    """`v` > 0 rounded UP to 4 significant digits: a suggested bandwidth must itself work."""
    scale = 10.0 ** (math.floor(math.log10(v)) - 3)
    return math.ceil(v / scale) * scale


def check_band(params: Params, x_lengths: torch.Tensor, y_lengths: torch.Tensor, all_pairs: bool = False) -> None:
    """Raise if the Sakoe-Chiba band leaves some pair's end cell unreachable (its value would be +inf).

    Pairs are (x_lengths[b], y_lengths[b]), or every combination when `all_pairs`.
    """
    # Traced code cannot branch on the lengths' values, and reading CUDA lengths would synchronise
    # with the GPU: there an unreachable end cell gives a +inf value instead (docs/semantics.md).
    if params.bandwidth is None or compiling() or x_lengths.is_cuda:
        return
    xs, ys = x_lengths.tolist(), y_lengths.tolist()
    pairs = {(a, b) for a in set(xs) for b in set(ys)} if all_pairs else set(zip(xs, ys, strict=True))
    weak = params.threshold is not None
    for n, m in sorted(pairs):
        rows, cols = grid_extent(weak, n), grid_extent(weak, m)
        if _connects(weak, rows, cols, params.bandwidth):
            continue
        low, high = params.bandwidth, float(max(n, m))
        for _ in range(40):  # the narrowest band that connects, to say what would work
            mid = (low + high) / 2
            low, high = (low, mid) if _connects(weak, rows, cols, mid) else (mid, high)
        raise ValueError(
            f"bandwidth={params.bandwidth} cuts every path off for a pair of lengths ({n}, {m}): "
            f"the value would be +inf. Use bandwidth >= {_round_up(high):.4g} (or None)."
        )
