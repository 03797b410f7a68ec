#!/usr/bin/env python
"""Where a contended call's time goes: the C++ kernel against the torch ops around it.

    python benchmarks/contention_split.py [--shapes a,b,s2] [--calls 25] [--threads 2]
    PYTHONPATH=/path/to/other/checkout python benchmarks/contention_split.py   # another build

For each shape (cpu_bench's, float32, the cpp backend), idle and then beside the busy process of
cpu_bench --contention: (1) whole fwd+bwd calls, with the time spent inside the C++ kernel's run()
measured in the same calls; (2) the kernel's run() alone, replayed back to back on the same
arguments (no torch op between calls). Median and worst of --calls calls each. Prints the machine
load (/proc/loadavg) before each shape: the numbers mean little on a loaded machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contention  # noqa: E402
from workloads import GAMMA, SHAPES, SMOOTHING, THRESHOLD, Shape, draw_costs  # noqa: E402

import s2dtw  # noqa: E402
from s2dtw import _dispatch  # noqa: E402

_kernel_args: list[tuple] = []
_kernel_ms: list[float] = []
_run_cpp = _dispatch._RUNNERS["cpp"]


def _timed_run_cpp(*args: object) -> None:
    _kernel_args[:] = [args]
    start = time.perf_counter()
    _run_cpp(*args)
    _kernel_ms.append((time.perf_counter() - start) * 1e3)


_dispatch._RUNNERS["cpp"] = _timed_run_cpp


def _call_for(shape: Shape) -> Callable[[], None]:
    cost = draw_costs(shape, torch.Generator().manual_seed(0)).float().requires_grad_(True)

    def call() -> None:
        cost.grad = None
        if shape.s2dtw_workload:
            out = s2dtw.s2dtw(cost=cost, gamma=GAMMA, smoothing=SMOOTHING, threshold=THRESHOLD, backend="cpp")
        else:
            out = s2dtw.soft_dtw(cost=cost, gamma=GAMMA, backend="cpp")
        out.sum().backward()
    return call


def _times(call: Callable[[], object], calls: int) -> tuple[list[float], list[float]]:
    """ms per call, and ms inside the kernel's run() in each call."""
    total, kernel = [], []
    for _ in range(calls):
        _kernel_ms.clear()
        start = time.perf_counter()
        call()
        total.append((time.perf_counter() - start) * 1e3)
        kernel.append(sum(_kernel_ms))
    return total, kernel


def _stat(ms: list[float]) -> str:
    return f"{statistics.median(ms):6.2f} / {max(ms):6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="a,b,s2")
    parser.add_argument("--calls", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    print(f"s2dtw from {Path(s2dtw.__file__).parent}, {opts.threads} threads, simd {s2dtw.backends()['simd']}; "
          "each cell: median / worst ms")
    print("| shape | load | idle call | idle kernel | busy call | busy kernel | kernel alone idle "
          "| kernel alone busy |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in opts.shapes.split(","):
        call = _call_for(SHAPES[name])
        for _ in range(5):
            call()  # warm-up: workspaces, thread team
        replay = (lambda args: lambda: _run_cpp(*args))(_kernel_args[0])
        load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
        idle, idle_kernel = _times(call, opts.calls)
        alone_idle, _ = _times(replay, opts.calls)
        with contention.BusyProcess():
            busy, busy_kernel = _times(call, opts.calls)
            alone_busy, _ = _times(replay, opts.calls)
        print(f"| {name} | {load} | {_stat(idle)} | {_stat(idle_kernel)} | {_stat(busy)} | {_stat(busy_kernel)} | "
              f"{_stat(alone_idle)} | {_stat(alone_busy)} |")


if __name__ == "__main__":
    main()
