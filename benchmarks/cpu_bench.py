#!/usr/bin/env python
"""CPU benchmark: s2dtw (cpp, numba) against the soft-DTW libraries people use today.

    pip install -r benchmarks/requirements-peers.txt
    python benchmarks/cpu_bench.py            # full run, prints a markdown report
    python benchmarks/cpu_bench.py --write    # ... and writes benchmarks/results/cpu_<date>.md (+ .json)
    python benchmarks/cpu_bench.py --quick --shapes a,s2
    python benchmarks/cpu_bench.py --contention --write   # + worst of 25 calls beside a busy process
    S2DTW_SIMD=avx2 python benchmarks/cpu_bench.py   # the AVX2 kernels on an AVX-512 machine

Every library gets the same random cost tensors (B, N, M) (float32 and float64). Before its time counts,
each library's values and gradients (d value / d cost) are compared with s2dtw's float64 NumPy reference on a
subset of pairs. See benchmarks/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def _threads_from_argv() -> int:
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return 2


# Thread counts must be in the environment before torch / numba / OpenMP start.
THREADS = _threads_from_argv()
for _var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = str(THREADS)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import s2dtw  # noqa: E402
from s2dtw import _reference, _torch_reference, _vectorised_reference  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contention  # noqa: E402

torch.set_num_threads(THREADS)

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


# --------------------------------------------------------------------------------------------------------------
# Float64 oracles
# --------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------
# Libraries
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Lib:
    name: str
    fn: Callable[[torch.Tensor], torch.Tensor] | None  # cost -> (B,) values, or their sum if not per_pair
    per_pair: bool = True
    peer: bool = True
    error: str | None = None
    input_note: str = ""


def build_dense_grid(cost: torch.Tensor) -> torch.Tensor:
    """The VT-TWINS construction with torch ops (s2dtw._torch_reference): the (2N+1)x(2M+1) weak grid."""
    return _torch_reference.dense_grid(cost, SMOOTHING, THRESHOLD)


def _identity_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x  # the "sequence" x *is* the precomputed cost; y only carries the shape checks


def _dummy_y(cost: torch.Tensor) -> torch.Tensor:
    # (B, M, M) zero-stride view: lets a cost (B, N, M) pass a peer's "feature dims must match" assert.
    b, _, m = cost.shape
    return cost.new_zeros(()).detach().expand(b, m, m)


def make_libs(dtype: torch.dtype, s2dtw_workload: bool) -> list[Lib]:
    libs: list[Lib] = []

    def wrap(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        return (lambda cost: fn(build_dense_grid(cost))) if s2dtw_workload else fn

    for backend in ("cpp", "numba"):
        if s2dtw_workload:
            fn = (lambda b: lambda cost: s2dtw.s2dtw(cost=cost, gamma=GAMMA, smoothing=SMOOTHING,
                                                      threshold=THRESHOLD, backend=b))(backend)
            libs.append(Lib(f"s2dtw {backend}", fn, peer=False, input_note="fused S2DTW from the 8x8 cost"))
        else:
            fn = (lambda b: lambda cost: s2dtw.soft_dtw(cost=cost, gamma=GAMMA, backend=b))(backend)
            libs.append(Lib(f"s2dtw {backend}", fn, peer=False, input_note="cost="))
    if s2dtw_workload:
        libs.append(Lib("s2dtw cpp, dense grid", wrap(lambda g: s2dtw.soft_dtw(cost=g, gamma=GAMMA, backend="cpp")),
                        peer=False, input_note="soft_dtw on the torch-built 17x17 grid (not a peer)"))

    try:
        import pysdtw

        sdtw = pysdtw.SoftDTW(gamma=GAMMA, dist_func=_identity_cost, use_cuda=False)
        libs.append(Lib("pysdtw", wrap(lambda c: sdtw(c, _dummy_y(c))), input_note="dist_func returning the cost"))
    except Exception as exc:  # noqa: BLE001 - report any import failure
        libs.append(Lib("pysdtw", None, error=f"import failed: {exc!r}"))

    try:
        from tslearn.metrics import SoftDTWLossPyTorch

        loss = SoftDTWLossPyTorch(gamma=GAMMA, dist_func=_identity_cost)
        libs.append(Lib("tslearn", wrap(lambda c: loss(c, _dummy_y(c))), input_note="dist_func returning the cost"))
    except Exception as exc:  # noqa: BLE001
        libs.append(Lib("tslearn", None, error=f"import failed: {exc!r}"))

    try:
        from dtw_loss_functions.soft_dtw_implementations import soft_dtw_cuda_mag

        mag = soft_dtw_cuda_mag.SoftDTW(use_cuda=False, gamma=GAMMA, dist_func=_identity_cost)
        libs.append(Lib("dtw-loss-functions (Maghoumi CPU)", wrap(lambda c: mag(c, _dummy_y(c))),
                        input_note="dist_func returning the cost"))
    except Exception as exc:  # noqa: BLE001
        libs.append(Lib("dtw-loss-functions (Maghoumi CPU)", None, error=f"import failed: {exc!r}"))

    try:
        import ddtw

        # SDTW returns the batch *mean* (normalization="none": of the raw values); times B gives their sum.
        model = ddtw.SDTW(gamma=GAMMA, normalization="none", backend="cpu_numba", dtype_float=dtype)
        libs.append(Lib("ddtw (cpu_numba)", wrap(lambda c: model(C=c) * c.shape[0]), per_pair=False,
                        input_note="C= (returns the batch mean only)"))
    except Exception as exc:  # noqa: BLE001
        libs.append(Lib("ddtw (cpu_numba)", None, error=f"import failed: {exc!r}"))
    return libs


# --------------------------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------------------------

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
        ref_value, ref_grad, _ = ref
        grad = cost_fb.grad[:subset].detach().double().numpy()
        row.grad_err = float(np.abs(grad - ref_grad).max())
        if lib.per_pair:
            values = out.detach()[:subset].double().numpy()
        else:  # ddtw: one call per checked pair, each returns that pair's value
            with torch.no_grad():
                values = np.array([float(fn(base[i : i + 1].clone())) for i in range(subset)])
        row.value_err = float(np.abs(values - ref_value).max())
        tol_value, tol_grad = TOLERANCES[dtype]
        bad_value = np.abs(values - ref_value) > tol_value * (1 + np.abs(ref_value))
        if not (np.all(np.isfinite(values)) and np.all(np.isfinite(grad))) or bad_value.any() \
                or row.grad_err > tol_grad:
            row.status = "check failed"
            row.note = (f"value err {row.value_err:.2g} (tol {tol_value:g}*(1+|v|)), "
                        f"grad err {row.grad_err:.2g} (tol {tol_grad:g})")
    except Exception as exc:  # noqa: BLE001 - a peer that cannot run a shape is reported, not dropped
        row.status, row.note = "error", _short(exc)
        if opts.verbose:
            traceback.print_exc()
        return row, None
    budget, min_reps, max_reps = (0.3, 2, 5) if opts.quick else (opts.budget, 5, 30)
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
    """Elements per second of torch.exp on THREADS threads (best of an L2- and an L3-sized array)."""
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


# --------------------------------------------------------------------------------------------------------------
# Machine and versions
# --------------------------------------------------------------------------------------------------------------


def machine_info() -> dict:
    info: dict = {"platform": platform.platform(), "python": platform.python_version(), "threads_used": THREADS}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["model"] = fields.get("Model name", "?")
        info["cpus"] = fields.get("CPU(s)", "?")
        info["cores_per_socket"] = fields.get("Core(s) per socket", "?")
        info["threads_per_core"] = fields.get("Thread(s) per core", "?")
        info["sockets"] = fields.get("Socket(s)", "?")
        flags = set(fields.get("Flags", "").split())
    except (OSError, subprocess.CalledProcessError):
        info["model"] = platform.processor() or "?"
        flags = set()
    info["avx2"] = "avx2" in flags
    info["avx512f"] = "avx512f" in flags
    info["fma"] = "fma" in flags
    return info


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("s2dtw", "torch", "numpy", "numba", "scipy", "pysdtw", "tslearn", "scikit-learn",
                 "dtw-loss-functions", "ddtw"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["s2dtw backends"] = json.dumps({k: v for k, v in s2dtw.backends().items() if k != "default"})
    out["s2dtw build"] = s2dtw_build()
    return out


def s2dtw_build() -> str:
    """Which s2dtw was measured: git commit of its checkout (+ dirty flag) and the C++ extension's file time."""
    root = Path(s2dtw.__file__).resolve().parent
    parts = []
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", str(root.parent / "csrc"),
                                str(root)], capture_output=True, text=True, check=True).stdout.strip()
        parts.append(f"git {commit}{' + uncommitted changes in csrc/ or s2dtw/' if dirty else ''}")
    except (OSError, subprocess.CalledProcessError):
        parts.append("not a git checkout")
    for ext in sorted(root.glob("_cpu*.so")):
        stamp = datetime.datetime.fromtimestamp(ext.stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S")
        parts.append(f"{ext.name} built {stamp}")
    return "; ".join(parts)


def simd_level() -> str:
    """The instruction set s2dtw's C++ kernels run at in this process (after $S2DTW_SIMD)."""
    return str(s2dtw.backends()["simd"])


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


# --------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "—"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def _err(x: float | None) -> str:
    return "—" if x is None else ("0" if x == 0 else f"{x:.1e}")


# Why a peer loses accuracy, from reading its source at the pinned version (shown next to its failed checks).
KNOWN_CAUSES = {
    "pysdtw": "sdtw_cpu.py builds R with `torch.Tensor(compute_softdtw(...)).type(dtype)`: torch.Tensor() is float32, "
              "so the float64 R of its Numba kernel is rounded to float32 before the backward uses it (and E too); "
              "float64 inputs get float64 tensors of float32 accuracy, and the gradient error grows with the path "
              "length",
    "dtw-loss-functions (Maghoumi CPU)": "soft_dtw_cuda_mag._SoftDTW has the same `torch.Tensor(...)` float32 "
              "round trip of R and E as pysdtw (the code is Maghoumi's, which pysdtw derives from)",
    "tslearn": "soft_dtw_loss_pytorch.py runs the recursion in the input dtype (a float32 R for float32 inputs, "
               "whose error grows along long paths) and then saves R as `torch.Tensor(R_)`, i.e. float32, so "
               "float64 inputs also get a float32-accurate gradient",
}


def best_peer(rows: list[Row], shape: str, dtype: str, checked: bool = True) -> Row | None:
    peers = [r for r in rows if r.shape == shape and r.dtype == dtype and r.peer and r.fwdbwd_ms is not None
             and (r.status == "ok" or (not checked and r.status == "check failed"))]
    return min(peers, key=lambda r: r.fwdbwd_ms) if peers else None


def s2dtw_row(rows: list[Row], shape: str, dtype: str, name: str = "s2dtw cpp") -> Row | None:
    for r in rows:
        if r.shape == shape and r.dtype == dtype and r.library == name and r.fwdbwd_ms is not None:
            return r
    return None


def render(rows: list[Row], shapes: list[Shape], info: dict, vers: dict, exp_rates: dict, oracle_err: float,
           opts: argparse.Namespace, started: str, loads: tuple[str, str], ref_sources: dict,
           subsets: dict) -> str:
    lines = [f"# s2dtw CPU benchmark — {started}", ""]
    lines += [
        "## Machine",
        "",
        f"- CPU: {info.get('model')} — {info.get('cpus')} logical CPUs ({info.get('sockets')} socket(s) x "
        f"{info.get('cores_per_socket')} cores x {info.get('threads_per_core')} threads/core); "
        f"avx2: {'yes' if info['avx2'] else 'no'}, avx512f: {'yes' if info['avx512f'] else 'no'}, "
        f"fma: {'yes' if info['fma'] else 'no'}",
        f"- {info['platform']}, Python {info['python']}",
        f"- threads: {THREADS} (torch.set_num_threads, OMP_NUM_THREADS, NUMBA_NUM_THREADS)",
        f"- s2dtw SIMD level: {simd_level()} (S2DTW_SIMD={os.environ.get('S2DTW_SIMD', 'unset')})",
        f"- load average (1/5/15 min) at start: {loads[0]}; at end: {loads[1]} — other processes on this machine "
        "compete for the same cores, so absolute times are noisy; the ratios come from the same run",
        "",
        "## Versions",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in vers.items()]
    mode = "quick (smoke run)" if opts.quick else "full"
    lines += [
        "",
        "## Settings",
        "",
        f"- mode: {mode}; gamma = {GAMMA}; S2DTW workload: smoothing = {SMOOTHING}, threshold = {THRESHOLD}",
        f"- costs: torch.Generator seed {SEED}, uniform in [0, 1) for (a)-(d), uniform in [-1, 1) (a cosine-like "
        "cost) for the S2DTW workload; drawn in float64 and cast, so both dtypes see the same numbers; every "
        "library gets the same tensor",
        "- fwd: value only (cost without requires_grad). fwd+bwd: cost.requires_grad_(), "
        "value.sum().backward(); s2dtw computes the gradient inside its forward call when the cost requires "
        "grad, peers in their autograd backward",
        "- times: time.perf_counter around each call; median (and minimum) of `reps` repeats, after warm-up "
        "calls (JIT compilation, thread start-up excluded). The libraries of one (shape, dtype) are timed in "
        "interleaved rounds (round r: each library runs one fwd and one fwd+bwd, in a rotating order), so "
        "load bursts from other processes hit them alike; repeats adapt to the call time (about "
        f"{opts.budget:g} s per library and mode, {'2 to 5' if opts.quick else '5 to 30'} repeats); a library "
        f"whose single fwd+bwd call exceeds {SKIP_SECONDS:.0f} s is skipped on that shape",
        "- Mcells/s = B x N x M / fwd+bwd time (for the S2DTW workload, B x 17 x 17 grid cells for everybody)",
        "- peak memory: peak RSS increase of the process during one fwd+bwd call (Linux VmHWM reset through "
        "/proc/self/clear_refs after malloc_trim(0)); counts every allocation (torch, NumPy, Numba, C++): the "
        "value and gradient outputs and all the method's work buffers, not the input cost. Small calls are "
        "at the page / allocator-granularity noise level. Self-test: a call that allocates and fills a "
        f"64 MiB torch buffer is measured as {_fmt(opts.memory_calibration)} MiB",
        "- check: values and gradients of the first pairs (see per-shape subset) against the float64 "
        f"reference; tolerances |value - ref| <= tv (1 + |ref|), max |grad - ref| <= tg with float32 "
        f"(tv, tg) = {TOLERANCES[torch.float32]}, float64 {TOLERANCES[torch.float64]}. A library that fails "
        "is still timed (shown) but never counts as 'best peer'. The vectorised float64 oracle used for "
        f"(c) and (d) matches s2dtw._reference.align to {oracle_err:.1e} at start-up",
        "- ratio column: this row's fwd+bwd time / s2dtw cpp's fwd+bwd time on the same shape and dtype "
        "(> 1: s2dtw cpp is faster)",
        "",
        "Reference per shape: " + "; ".join(f"({k}) {v}, first {subsets[k]} pair(s)" for k, v in ref_sources.items()),
        "",
        "## Results",
        "",
        "| shape | dtype | library | check | fwd ms | fwd+bwd ms | fwd+bwd min ms | Mcells/s (fwd+bwd) "
        "| peak mem MiB | max abs err value / grad | fwd+bwd time ÷ s2dtw cpp | reps | note |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for shape in shapes:
        for dtype in opts.dtype_names:
            mine = s2dtw_row(rows, shape.key, dtype)
            for r in rows:
                if r.shape != shape.key or r.dtype != dtype:
                    continue
                ratio = "—"
                if mine is not None and r.fwdbwd_ms is not None:
                    ratio = f"{r.fwdbwd_ms / mine.fwdbwd_ms:.2f}x"
                lines.append(
                    f"| {shape.label} | {dtype} | {r.library} | {r.status} | {_fmt(r.fwd_ms)} | "
                    f"{_fmt(r.fwdbwd_ms)} | {_fmt(r.fwdbwd_min_ms)} | {_fmt(r.mcells_per_s)} | "
                    f"{_fmt(r.peak_mib)} | {_err(r.value_err)} / {_err(r.grad_err)} | {ratio} | "
                    f"{r.reps or '—'} | {r.note} |")
    lines += [
        "",
        "## s2dtw cpp against the best peer (fwd+bwd; peers that passed the check)",
        "",
        "The last column ignores the check: the fastest peer that ran, accurate or not.",
        "",
        "| shape | dtype | s2dtw cpp ms | best peer | peer ms | peer ms / s2dtw ms | same, from the minimums "
        "| fastest peer incl. failed checks: ratio |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    for shape in shapes:
        for dtype in opts.dtype_names:
            mine, peer = s2dtw_row(rows, shape.key, dtype), best_peer(rows, shape.key, dtype)
            if mine is None:
                continue
            fastest = best_peer(rows, shape.key, dtype, checked=False)
            any_peer = "—" if fastest is None else f"{fastest.library}: {fastest.fwdbwd_ms / mine.fwdbwd_ms:.2f}x"
            if peer is None:
                lines.append(f"| {shape.label} | {dtype} | {_fmt(mine.fwdbwd_ms)} | none passed | — | — | — "
                             f"| {any_peer} |")
            else:
                lines.append(f"| {shape.label} | {dtype} | {_fmt(mine.fwdbwd_ms)} | {peer.library} | "
                             f"{_fmt(peer.fwdbwd_ms)} | {peer.fwdbwd_ms / mine.fwdbwd_ms:.2f}x | "
                             f"{peer.fwdbwd_min_ms / mine.fwdbwd_min_ms:.2f}x | {any_peer} |")
    bound32, bound64 = exp_rates["float32"] / 3, exp_rates["float64"] / 3
    lines += [
        "",
        "## Machine limit estimate",
        "",
        f"torch.exp throughput on {THREADS} threads: float32 {exp_rates['float32'] / 1e6:.0f} M elements/s, "
        f"float64 {exp_rates['float64'] / 1e6:.0f} M elements/s. A soft-DTW cell needs 3 transcendental ops in "
        "the forward pass (2 exp + 1 log: of the softmin's three exps, the minimum's is exp(0) = 1) and none in "
        "s2dtw's backward (it stores the transition weights), so cells/s <= exp throughput / 3 (counting a log as "
        "an exp; the S2DTW workload's smoothing adds more per cost cell). s2dtw runs the recursion in float64 for "
        "both dtypes (docs/semantics.md), so the float64 bound is the relevant one; the float32 one is what a "
        "float32 recursion could reach. The bound assumes a vectorised (SIMD) exp, as torch.exp uses; a kernel that "
        "calls scalar exp / log cell by cell stays well below it, and a single pair (d) on a pair-parallel kernel "
        "uses one of the threads.",
        "",
        "| shape | dtype | s2dtw cpp Mcells/s (fwd+bwd) | bound f64 exp / 3 (Mcells/s) | fraction | "
        "bound f32 exp / 3 (Mcells/s) | fraction |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for shape in shapes:
        for dtype in opts.dtype_names:
            mine = s2dtw_row(rows, shape.key, dtype)
            if mine is None:
                continue
            rate = mine.mcells_per_s * 1e6
            lines.append(f"| {shape.label} | {dtype} | {_fmt(mine.mcells_per_s)} | {bound64 / 1e6:.0f} | "
                         f"{rate / bound64:.0%} | {bound32 / 1e6:.0f} | {rate / bound32:.0%} |")
    if opts.contention:
        lines += contention.render(rows, {s.key: s.label for s in shapes}, contention.BusyProcess().cpu,
                                   opts.worst_of)
    problems = [r for r in rows if r.status != "ok"]
    lines += ["", "## Libraries that did not pass or did not run", ""]
    if problems:
        lines += [f"- {r.library}, ({r.shape}) {r.dtype}: {r.status} — {r.note}" for r in problems]
        causes = [name for name in KNOWN_CAUSES if any(r.library == name and r.status == "check failed"
                                                       for r in problems)]
        if causes:
            lines += ["", "Causes, from the peers' source at the versions above:", ""]
            lines += [f"- {name}: {KNOWN_CAUSES[name]}" for name in causes]
    else:
        lines.append("- none")
    lines += [
        "",
        "## How each library receives the cost",
        "",
        "- s2dtw: `soft_dtw(cost=C, gamma=0.1, backend=...)`; S2DTW workload: fused `s2dtw(cost=C8, ...)`",
        "- pysdtw `SoftDTW(gamma, dist_func=lambda x, y: x, use_cuda=False)(C, y)`, tslearn "
        "`SoftDTWLossPyTorch(gamma, dist_func=lambda x, y: x)(C, y)` and dtw-loss-functions "
        "`soft_dtw_implementations.soft_dtw_cuda_mag.SoftDTW(use_cuda=False, gamma, dist_func=lambda x, y: x)(C, y)`: "
        "the 'sequence' x is the cost itself and y a zero-stride (B, M, M) view that only satisfies their "
        "shape asserts, so the inputs are exactly the same cost",
        "- ddtw `SDTW(gamma, normalization='none', backend='cpu_numba', dtype_float=dtype)(C=C)`; it returns "
        "the batch mean, multiplied by B here (its values are checked with one call per pair)",
        "- S2DTW workload, peers (and the 's2dtw cpp, dense grid' row): the smoothed cost and the 17x17 "
        "weak-alignment grid are built from the 8x8 cost with torch ops (F.pad, logsumexp, strided "
        "assignment) inside the timed call, then plain soft-DTW runs on the grid; the check compares the "
        "gradient w.r.t. the 8x8 cost with s2dtw._reference.align(..., smoothing, threshold)",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="a,b,c,d,s2", help="comma-separated subset of a,b,c,d,s2")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--libs", default="", help="comma-separated substrings: only libraries matching one")
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer repeats, one checked pair")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds of repeats per measurement (full run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/cpu_<date>.md and .json")
    parser.add_argument("--out", default=None, help="results file (default benchmarks/results/cpu_<date>.md)")
    parser.add_argument("--verbose", action="store_true", help="print tracebacks of failing libraries")
    parser.add_argument("--contention", action="store_true",
                        help="also time every library beside one busy process pinned to a CPU (worst-of-N)")
    parser.add_argument("--worst-of", type=int, default=25,
                        help="calls per library in contention mode (at most 5 with --quick)")
    opts = parser.parse_args()
    unknown = [s for s in opts.shapes.split(",") if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shapes {unknown}; choose from {list(SHAPES)}")
    if opts.worst_of < 1:
        parser.error("--worst-of must be >= 1")
    if opts.quick:
        opts.worst_of = min(opts.worst_of, 5)
    opts.dtype_names = [d.strip() for d in opts.dtypes.split(",") if d.strip()]
    for d in opts.dtype_names:
        if d not in ("float32", "float64"):
            parser.error(f"unknown dtype {d}")
    return opts


def main() -> None:
    opts = parse_args()
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load_start = load_average()
    shapes = [SHAPES[s] for s in opts.shapes.split(",")]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    vers = versions()  # now: the s2dtw build that this process loaded
    oracle_err = validate_oracle()
    opts.memory_calibration = calibrate_memory()
    exp_rates = {name: exp_throughput(getattr(torch, name)) for name in ("float32", "float64")}
    log(f"exp throughput: { {k: f'{v / 1e6:.0f} M/s' for k, v in exp_rates.items()} }")

    rows: list[Row] = []
    ref_sources: dict[str, str] = {}
    subsets: dict[str, int] = {}
    per_cell_s: dict = {}
    gen = torch.Generator().manual_seed(SEED)
    for shape in sorted(shapes, key=lambda s: s.cells / s.batch):  # small pairs first: skip extrapolation
        cost64 = torch.rand(shape.batch, shape.n, shape.m, generator=gen, dtype=torch.float64)
        if shape.s2dtw_workload:
            cost64 = cost64 * 2 - 1
        small = shape.n * shape.m <= 17 * 17
        subset = min(shape.batch, (1 if opts.quick else 2) * (8 if small else 1))
        subsets[shape.key] = subset
        start = time.perf_counter()
        ref = reference(shape, cost64[:subset].numpy())
        ref_sources[shape.key] = ref[2]
        log(f"{shape.label}: reference for {subset} pair(s) in {time.perf_counter() - start:.1f} s")
        for dname in opts.dtype_names:
            dtype = getattr(torch, dname)
            base = cost64.to(dtype).contiguous()
            prepared = []
            for lib in make_libs(dtype, shape.s2dtw_workload):
                if opts.libs and not any(s.strip() in lib.name for s in opts.libs.split(",")):
                    continue
                row, ready = prepare(lib, shape, dtype, base, ref, subset, opts, per_cell_s)
                rows.append(row)
                if ready is not None:
                    prepared.append(ready)
                else:
                    log(f"  {dname:7s} {lib.name:36s} {row.status}: {row.note}")
            start = time.perf_counter()
            time_interleaved(prepared, shape, base, per_cell_s, opts)
            if opts.contention:
                timed = [p for p in prepared if p.row.status != "error"]
                with contention.BusyProcess():
                    busy = contention.time_contended([p.fwdbwd for p in timed], opts.worst_of)
                for p, times in zip(timed, busy, strict=True):
                    p.row.busy_times_ms = times
            for p in prepared:
                r = p.row
                log(f"  {dname:7s} {r.library:36s} {r.status:13s} fwd {_fmt(r.fwd_ms):>7s} ms  "
                    f"fwd+bwd {_fmt(r.fwdbwd_ms):>7s} ms (min {_fmt(r.fwdbwd_min_ms)})  "
                    f"mem {_fmt(r.peak_mib):>6s} MiB  err {_err(r.value_err)}/{_err(r.grad_err)}  "
                    f"reps {r.reps} {r.note}")
            log(f"  ({time.perf_counter() - start:.1f} s of timing rounds)")
    shapes_in_order = [s for s in SHAPES.values() if s in shapes]
    if s2dtw_build() != vers["s2dtw build"]:
        vers["s2dtw build"] += f" (WARNING: rebuilt during the run, now {s2dtw_build()}; this run used the former)"
    report = render(rows, shapes_in_order, machine_info(), vers, exp_rates, oracle_err, opts, started,
                    (load_start, load_average()), ref_sources, subsets)
    print(report)
    if opts.write:
        suffix = "_contention" if opts.contention else ""
        out = Path(opts.out) if opts.out else (
            Path(__file__).resolve().parent / "results" / f"cpu_{started.split()[0]}_{simd_level()}{suffix}.md")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        raw = {"started": started, "machine": machine_info(), "versions": vers, "exp_throughput": exp_rates,
               "rows": [r.__dict__ for r in rows]}
        out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
        log(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
