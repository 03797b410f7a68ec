"""How cpu_bench.py measures a library: warm-up, peak memory, the check against the reference, interleaved timing.

What each number means is in benchmarks/README.md ("What is measured, and how").
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from peers import Lib
from workloads import SKIP_SECONDS, TOLERANCES, Shape

_LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def peak_rss_delta(call: Callable[[], object]) -> tuple[float | None, object]:
    """Run call() once; return (peak RSS above the RSS just before it, in MiB; call's result).

    Linux only: freed heap memory is returned to the OS (malloc_trim), the high-water mark VmHWM is reset by
    writing 5 to /proc/self/clear_refs, then VmHWM - VmRSS(before) is what the call added at its peak.
    Sees every allocation of the process (torch, NumPy, Numba, C++), unlike tracemalloc.
    """
    gc.collect()
    try:
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        before = _status_kib("VmRSS")
    except OSError:
        return None, call()
    result = call()
    return max(0, _status_kib("VmHWM") - before) / 1024.0, result


def calibrate_memory(mib: int = 64) -> float | None:
    """What peak_rss_delta reports for a call that allocates and fills a `mib` MiB torch buffer."""
    def call() -> object:
        return float(torch.empty(mib * 2**18, dtype=torch.float32).fill_(1.0)[-1])

    call()  # warm-up: the first use of a torch kernel pages in library code, which RSS counts too
    peak, _ = peak_rss_delta(call)
    return peak


def time_once(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@dataclass
class Row:
    shape: str
    dtype: str
    library: str
    peer: bool
    status: str = "ok"  # ok | check failed | error | skipped | not installed
    note: str = ""
    fwd_ms: float | None = None
    fwdbwd_ms: float | None = None
    fwdbwd_min_ms: float | None = None
    mcells_per_s: float | None = None
    peak_mib: float | None = None
    value_err: float | None = None
    grad_err: float | None = None
    reps: int = 0
    fwd_times_ms: list[float] = field(default_factory=list)
    fwdbwd_times_ms: list[float] = field(default_factory=list)
    busy_times_ms: list[float] = field(default_factory=list)  # fwd+bwd beside a busy process (--contention)


@dataclass
class Prepared:
    """A library ready to be timed on one (shape, dtype): inputs, closures and how many repeats it gets."""

    row: Row
    fwd: Callable[[], object]
    fwdbwd: Callable[[], object]
    inputs: tuple[torch.Tensor, torch.Tensor]
    reps: int


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("|", "/")
    return text[:160]


def repeat_plan(opts: argparse.Namespace) -> tuple[float, int, int]:
    """(seconds of repeats per library and mode, fewest repeats, most repeats)."""
    return (0.3, 2, 5) if opts.quick else (opts.budget, 5, 30)


def check(row: Row, lib: Lib, out: torch.Tensor, grad: torch.Tensor, base: torch.Tensor, ref: tuple, subset: int,
          dtype: torch.dtype) -> None:
    """Compare the first `subset` pairs' values and gradients (out, grad of one fwd+bwd call) with the reference.

    Records the errors in `row`; a non-finite result or one outside TOLERANCES marks it "check failed".
    """
    ref_value, ref_grad, _ = ref
    grad = grad[:subset].detach().double().numpy()
    row.grad_err = float(np.abs(grad - ref_grad).max())
    if lib.per_pair:
        values = out.detach()[:subset].double().numpy()
    else:  # ddtw: one call per checked pair, each returns that pair's value
        with torch.no_grad():
            values = np.array([float(lib.fn(base[i : i + 1].clone())) for i in range(subset)])
    row.value_err = float(np.abs(values - ref_value).max())
    tol_value, tol_grad = TOLERANCES[dtype]
    bad_value = np.abs(values - ref_value) > tol_value * (1 + np.abs(ref_value))
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(grad))) or bad_value.any() or row.grad_err > tol_grad:
        row.status = "check failed"
        row.note = (f"value err {row.value_err:.2g} (tol {tol_value:g}*(1+|v|)), "
                    f"grad err {row.grad_err:.2g} (tol {tol_grad:g})")


def prepare(lib: Lib, shape: Shape, dtype: torch.dtype, base: torch.Tensor, ref: tuple, subset: int,
            opts: argparse.Namespace, per_cell_s: dict) -> tuple[Row, Prepared | None]:
    """Warm up (JIT), decide whether to skip, measure peak memory and check against the reference."""
    dname = str(dtype).replace("torch.", "")
    row = Row(shape.key, dname, lib.name, lib.peer)
    if lib.fn is None:
        row.status, row.note = "not installed", lib.error or ""
        return row, None
    fn = lib.fn
    cost_fb = base.clone().requires_grad_(True)
    cost_f = base.clone()

    # Skip before spending minutes: extrapolate from the largest shape this library already ran at this dtype.
    key = (lib.name, dname)
    if key in per_cell_s and per_cell_s[key] * shape.cells > SKIP_SECONDS:
        row.status = "skipped"
        row.note = (f"one fwd+bwd call estimated at {per_cell_s[key] * shape.cells:.0f} s > {SKIP_SECONDS:.0f} s "
                    "(extrapolated from a smaller shape)")
        return row, None

    def fwd() -> torch.Tensor:
        return fn(cost_f)

    def fwdbwd() -> torch.Tensor:
        cost_fb.grad = None
        out = fn(cost_fb)
        out.sum().backward()
        return out

    try:
        fwdbwd()  # warm-up: JIT compilation, thread pools, first touch
        one_call = time_once(fwdbwd)
        per_cell_s[key] = one_call / shape.cells
        if one_call > SKIP_SECONDS:
            row.status, row.note = "skipped", f"one fwd+bwd call took {one_call:.1f} s > {SKIP_SECONDS:.0f} s"
            return row, None
        fwd()  # warm-up of the forward-only path (it may compile another specialisation)

        # Peak memory and the reference check, on one more fwd+bwd call over the whole batch. The previous
        # gradient is released first, or the call would reuse its pages and look smaller than it is.
        cost_fb.grad = None
        row.peak_mib, out = peak_rss_delta(fwdbwd)
        check(row, lib, out, cost_fb.grad, base, ref, subset, dtype)
    except Exception as exc:  # noqa: BLE001 - a peer that cannot run a shape is reported, not dropped
        row.status, row.note = "error", _short(exc)
        if opts.verbose:
            traceback.print_exc()
        return row, None
    budget, min_reps, max_reps = repeat_plan(opts)
    reps = int(min(max_reps, max(min_reps, budget / max(one_call, 1e-9))))
    return row, Prepared(row, fwd, fwdbwd, (cost_f, cost_fb), reps)


def time_interleaved(prepared: list[Prepared], shape: Shape, base: torch.Tensor, per_cell_s: dict,
                     opts: argparse.Namespace) -> None:
    """Round-robin repeats: in round r every library with more than r repeats runs one fwd and one fwd+bwd, so
    a burst of load from other processes hits all libraries alike instead of one of them."""
    rounds = max((p.reps for p in prepared), default=0)
    for r in range(rounds):
        for k in range(len(prepared)):
            p = prepared[(k + r) % len(prepared)]  # rotate the order too
            if r >= p.reps or p.row.status == "error":
                continue
            try:
                p.row.fwd_times_ms.append(time_once(p.fwd) * 1e3)
                p.row.fwdbwd_times_ms.append(time_once(p.fwdbwd) * 1e3)
            except Exception as exc:  # noqa: BLE001
                p.row.status, p.row.note = "error", _short(exc)
                if opts.verbose:
                    traceback.print_exc()
    for p in prepared:
        row = p.row
        if row.status == "error" or not row.fwdbwd_times_ms:
            continue
        row.reps = len(row.fwdbwd_times_ms)
        row.fwd_ms = statistics.median(row.fwd_times_ms)
        row.fwdbwd_ms = statistics.median(row.fwdbwd_times_ms)
        row.fwdbwd_min_ms = min(row.fwdbwd_times_ms)
        row.mcells_per_s = shape.cells / (row.fwdbwd_ms * 1e-3) / 1e6
        per_cell_s[(row.library, row.dtype)] = row.fwdbwd_ms * 1e-3 / shape.cells
        if not all(torch.equal(x.detach(), base) for x in p.inputs):
            row.note = (row.note + "; " if row.note else "") + "modified its input cost in place"


def exp_throughput(dtype: torch.dtype) -> float:
    """Elements per second of torch.exp on torch's threads (best of an L2- and an L3-sized array)."""
    best = 0.0
    for size in (1 << 18, 1 << 21):
        x = torch.empty(size, dtype=dtype).uniform_(-10.0, 0.0)
        y = torch.empty_like(x)
        for _ in range(5):
            torch.exp(x, out=y)
        reps = max(5, int(2e8 // size))
        seconds = statistics.median(time_once(lambda x=x, y=y: torch.exp(x, out=y)) for _ in range(reps))
        best = max(best, size / seconds)
    return best
