#!/usr/bin/env python
"""The passes around the cpp kernel, torch's ops against the C++ module's (issue #14).

    python benchmarks/around_ops.py [--shapes a,s2] [--threads 2] [--calls 200]

For each shape (cpu_bench's, float32): the finite check (torch.aminmax and its isfinite test, as s2dtw ran it
before, against _cpu.all_finite) and the backward's scaling (Layout.scale_grad's torch product against
_dispatch.scale_grad), timed in alternation in one process; median and worst us of --calls calls each.
Prints the load (/proc/loadavg): the numbers mean little on a loaded machine.
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
from workloads import SHAPES, draw_costs  # noqa: E402

from s2dtw import _dispatch  # noqa: E402
from s2dtw._problem import Layout  # noqa: E402


def _torch_finite(cost: torch.Tensor) -> bool:
    low, high = torch.aminmax(cost)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def _times(calls: int, *fns: Callable[[], object]) -> list[list[float]]:
    """us per call of each fn, the fns called in turn."""
    for fn in fns:
        fn()
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(calls):
        for fn, times in zip(fns, out, strict=True):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e6)
    return out


def _shape_times(name: str, calls: int) -> list[list[float]]:
    cost = draw_costs(SHAPES[name], torch.Generator().manual_seed(0)).float()
    batch, n, m = cost.shape
    layout = Layout.batched(cost, torch.full((batch,), n), torch.full((batch,), m))
    factor = torch.rand(batch)
    return _times(calls, lambda: _torch_finite(cost), lambda: _dispatch.all_finite(cost),
                  lambda: layout.scale_grad(cost, factor), lambda: _dispatch.scale_grad(layout, cost, factor))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="a,s2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=200)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    print(f"{opts.threads} threads, {opts.calls} calls each, median / worst us")
    print("| shape | load | aminmax check | C++ all_finite | torch scale_grad | C++ scale_grad |")
    print("|---|---|---:|---:|---:|---:|")
    for name in opts.shapes.split(","):
        load = Path("/proc/loadavg").read_text().split()[0]
        row = " | ".join(f"{statistics.median(t):.1f} / {max(t):.1f}" for t in _shape_times(name, opts.calls))
        print(f"| {name} | {load} | {row} |")

if __name__ == "__main__":
    main()
