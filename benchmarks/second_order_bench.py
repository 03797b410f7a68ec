#!/usr/bin/env python
"""What second order costs next to first order, cpp backend, measured in one run.

    python benchmarks/second_order_bench.py [--repeats 7] [--threads N] [--write]

Per shape and dtype (S2DTW with the defaults gamma 0.1, smoothing 0.1, threshold 0.5, on a cost tensor):

- first: one value + gradient call, ``s2dtw.s2dtw(cost=c)`` then ``torch.autograd.grad(value.sum(), c)``;
- second: one double-backward step, the same with ``create_graph=True`` then ``torch.autograd.grad(<grad, U>, c)``
  (what a gradient penalty or the DILATE term costs: the forward, the first backward and one HVP per pair);
- hvp: the HVP kernel call alone (``_dispatch.run_hvp``).

The three calls are interleaved, `--repeats` rounds after a warm-up, and each is reported as its median; the
ratios divide medians of the same run. Memory, two ways: the kernels' own accounting (the first-order SIMD
kernels' cached workspace after one call in a fresh process, ``_cpu.workspace_bytes()``, and the bytes the HVP
kernel allocates, ``_cpu.hvp_workspace_bytes``), and the peak RSS one call adds over the process's RSS just
before it, in a fresh process per call kind warmed up on a tiny shape (VmHWM, benchmarks/measure.py's
peak_rss_delta: every allocation, tensors and workspaces included). `--write` saves the Markdown report to
benchmarks/results/second_order_<date>.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from machine import load_average, machine_info, s2dtw_build, simd_level
from measure import peak_rss_delta

import s2dtw
from s2dtw import _cpu, _dispatch
from s2dtw._problem import Layout, Params, Problem

SHAPES = [(64, 64, 64), (8, 256, 256)]  # (pairs, n, m)
DTYPES = [torch.float32, torch.float64]
PARAMS = Params(0.1, 0.1, 0.5)  # s2dtw.s2dtw's defaults


def calls(cost: torch.Tensor, upstream: torch.Tensor) -> dict:
    """The three measured calls on one cost (B, N, M) and one direction U of its shape."""
    problem = Problem(Layout.batched(cost, torch.full((cost.shape[0],), cost.shape[1]),
                                     torch.full((cost.shape[0],), cost.shape[2])), PARAMS)

    def first():
        c = cost.detach().requires_grad_()
        return torch.autograd.grad(s2dtw.s2dtw(cost=c, backend="cpp").sum(), c)[0]

    def second():
        c = cost.detach().requires_grad_()
        (grad,) = torch.autograd.grad(s2dtw.s2dtw(cost=c, backend="cpp").sum(), c, create_graph=True)
        return torch.autograd.grad((grad * upstream).sum(), c)[0]

    def hvp():
        return _dispatch.run_hvp("cpp", cost, upstream, problem)

    return {"first": first, "second": second, "hvp": hvp}, problem


def inputs(shape: tuple[int, int, int], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=gen).to(dtype), torch.randn(shape, generator=gen).to(dtype)


def memory_child(shape: tuple[int, int, int], dtype: torch.dtype, kind: str) -> None:
    """In a fresh process (no workspace cached for this shape): the peak RSS one call of `kind` adds after a
    warm-up on a tiny shape, and the first-order kernels' cached workspace after it; printed as JSON."""
    calls(*inputs((2, 8, 8), dtype))[0][kind]()  # pages in the code on a tiny shape: RSS counts libraries too
    fns, _ = calls(*inputs(shape, dtype))
    peak, _ = peak_rss_delta(fns[kind])
    print(json.dumps({"rss_mib": peak, "first_workspace": _cpu.workspace_bytes()}))


def fresh_process_memory(shape: tuple[int, int, int], dtype: torch.dtype, kind: str, threads: int) -> dict:
    args = [sys.executable, __file__, "--memory-child", ",".join(map(str, shape)), str(dtype), kind,
            "--threads", str(threads)]
    return json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout.splitlines()[-1])


def measure(shape: tuple[int, int, int], dtype: torch.dtype, repeats: int, threads: int) -> dict:
    cost, upstream = inputs(shape, dtype)
    fns, problem = calls(cost, upstream)
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    memory = {kind: fresh_process_memory(shape, dtype, kind, threads) for kind in ("first", "second")}
    return {
        "median": {name: statistics.median(t) for name, t in times.items()},
        "rss_mib": {kind: m["rss_mib"] for kind, m in memory.items()},
        "first_workspace": memory["first"]["first_workspace"],
        "hvp_workspace": _cpu.hvp_workspace_bytes(str(dtype).removeprefix("torch."), threads, problem),
        "pair_grid_cells": (2 * shape[1] + 1) * (2 * shape[2] + 1),
    }


def mib(n_bytes: float | None) -> str:
    return "?" if n_bytes is None else f"{n_bytes / 2**20:.1f}"


def report(rows: list[tuple], threads: int, repeats: int, command: str) -> str:
    info = machine_info(threads)
    lines = [
        f"# Second order vs first order, cpp backend ({datetime.date.today().isoformat()})",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {info['model']}, {info['cpus']} CPUs, avx2={info['avx2']}, avx512f={info['avx512f']}; first-order "
        f"kernels at SIMD level {simd_level()}, the HVP kernel is scalar; {threads} threads; load average "
        f"{load_average()} (a shared machine: only the ratios of one run mean much). Build: {s2dtw_build()}; "
        f"torch {torch.__version__}. S2DTW, gamma 0.1, smoothing 0.1, threshold 0.5; medians of {repeats} "
        "interleaved rounds.",
        "",
        "| pairs x n x m | dtype | first (ms) | second (ms) | hvp alone (ms) | second / first | hvp / first | "
        "first-order workspace (MiB) | HVP workspace (MiB) | HVP B / grid cell | peak RSS added: first / second (MiB) "
        "|",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for shape, dtype, r in rows:
        t, rss = r["median"], r["rss_mib"]
        per_cell = r["hvp_workspace"] / min(threads, shape[0]) / r["pair_grid_cells"]  # one thread's, one pair
        peaks = " / ".join("?" if rss[k] is None else f"{rss[k]:.1f}" for k in ("first", "second"))
        lines.append(
            f"| {' x '.join(map(str, shape))} | {str(dtype).removeprefix('torch.')} | {1e3 * t['first']:.1f} | "
            f"{1e3 * t['second']:.1f} | {1e3 * t['hvp']:.1f} | {t['second'] / t['first']:.2f} | "
            f"{t['hvp'] / t['first']:.2f} | {mib(r['first_workspace'])} | {mib(r['hvp_workspace'])} | "
            f"{per_cell:.1f} | {peaks} |"
        )
    lines += [
        "",
        "first: value + gradient; second: value, gradient with create_graph=True, then the gradient of <grad, U> "
        "(one HVP per pair inside); hvp alone: the kernel call. Workspaces by the kernels' own accounting "
        "(first order: the SIMD kernels' workspace, cached after one call; HVP: what one call allocates over its "
        "threads, freed when it returns; B / grid cell: one thread's HVP workspace over one pair's (2n+1)(2m+1) "
        "cells); peak RSS: VmHWM minus the RSS before one call, each kind in a fresh process after a warm-up on a "
        "tiny shape (tensors included).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--memory-child", nargs=3, metavar=("SHAPE", "DTYPE", "KIND"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    if opts.memory_child:
        shape, dtype, kind = opts.memory_child
        return memory_child(tuple(map(int, shape.split(","))), getattr(torch, dtype.removeprefix("torch.")), kind)
    rows = [(shape, dtype, measure(shape, dtype, opts.repeats, opts.threads)) for shape in SHAPES for dtype in DTYPES]
    command = "python benchmarks/second_order_bench.py " + " ".join(sys.argv[1:])
    text = report(rows, opts.threads, opts.repeats, command.strip())
    print(text)
    if opts.write:
        path = Path(__file__).parent / "results" / f"second_order_{datetime.date.today().isoformat()}.md"
        path.write_text(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
