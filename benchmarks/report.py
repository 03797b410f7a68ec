"""The markdown report of a cpu_bench.py run: this run's machine, settings and numbers.

What is measured and how is benchmarks/README.md's, linked from the report rather than repeated in it.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import contention
import torch
from machine import simd_level
from measure import Row, repeat_plan
from peers import KNOWN_CAUSES
from workloads import GAMMA, SEED, SKIP_SECONDS, SMOOTHING, THRESHOLD, TOLERANCES, Shape

# Links relative to benchmarks/results/, where --write puts the report.
README = "../README.md"
HOW = f"[benchmarks/README.md, What is measured]({README}#what-is-measured-and-how)"


@dataclass
class Run:
    """Everything about one run that the report shows besides the rows."""

    started: str
    opts: argparse.Namespace
    machine: dict
    versions: dict[str, str]
    exp_rates: dict[str, float]  # torch.exp elements/s by dtype name
    oracle_err: float  # the vectorised oracle against s2dtw._reference at start-up
    memory_calibration: float | None  # what peak memory reports for a 64 MiB buffer
    loads: tuple[str, str]  # load average at start and end
    ref_sources: dict[str, str]  # shape key -> which oracle checked it
    subsets: dict[str, int]  # shape key -> how many pairs were checked


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "—"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def fmt_err(x: float | None) -> str:
    return "—" if x is None else ("0" if x == 0 else f"{x:.1e}")


def best_peer(rows: list[Row], shape: str, dtype: str, checked: bool = True) -> Row | None:
    peers = [r for r in rows if r.shape == shape and r.dtype == dtype and r.peer and r.fwdbwd_ms is not None
             and (r.status == "ok" or (not checked and r.status == "check failed"))]
    return min(peers, key=lambda r: r.fwdbwd_ms) if peers else None


def s2dtw_row(rows: list[Row], shape: str, dtype: str, name: str = "s2dtw cpp") -> Row | None:
    for r in rows:
        if r.shape == shape and r.dtype == dtype and r.library == name and r.fwdbwd_ms is not None:
            return r
    return None


def _machine(run: Run) -> list[str]:
    info, loads = run.machine, run.loads
    return [
        "## Machine",
        "",
        f"- CPU: {info.get('model')} — {info.get('cpus')} logical CPUs ({info.get('sockets')} socket(s) x "
        f"{info.get('cores_per_socket')} cores x {info.get('threads_per_core')} threads/core); "
        f"avx2: {'yes' if info['avx2'] else 'no'}, avx512f: {'yes' if info['avx512f'] else 'no'}, "
        f"fma: {'yes' if info['fma'] else 'no'}",
        f"- {info['platform']}, Python {info['python']}",
        f"- threads: {info['threads_used']} (torch.set_num_threads, OMP_NUM_THREADS, NUMBA_NUM_THREADS)",
        f"- s2dtw SIMD level: {simd_level()} (S2DTW_SIMD={os.environ.get('S2DTW_SIMD', 'unset')})",
        f"- load average (1/5/15 min) at start: {loads[0]}; at end: {loads[1]} — other processes on this machine "
        "compete for the same cores, so absolute times are noisy; the ratios come from the same run",
        "",
        "## Versions",
        "",
        *[f"- {k}: {v}" for k, v in run.versions.items()],
    ]


def _settings(run: Run) -> list[str]:
    opts = run.opts
    budget, min_reps, max_reps = repeat_plan(opts)
    return [
        "",
        "## Settings",
        "",
        f"How each number is measured (fwd, fwd+bwd, times, Mcells/s, peak memory, the check, the ratio): {HOW}.",
        "",
        f"- mode: {'quick (smoke run)' if opts.quick else 'full'}; gamma = {GAMMA}; S2DTW workload: "
        f"smoothing = {SMOOTHING}, threshold = {THRESHOLD}; costs from torch.Generator seed {SEED}",
        f"- repeats: about {budget:g} s per library and mode, {min_reps} to {max_reps} repeats; a library whose "
        f"single fwd+bwd call exceeds {SKIP_SECONDS:.0f} s is skipped on that shape",
        f"- peak memory self-test: a call that allocates and fills a 64 MiB torch buffer is measured as "
        f"{fmt(run.memory_calibration)} MiB",
        f"- check tolerances |value - ref| <= tv (1 + |ref|), max |grad - ref| <= tg: float32 (tv, tg) = "
        f"{TOLERANCES[torch.float32]}, float64 {TOLERANCES[torch.float64]}; the vectorised "
        f"float64 oracle used for (c) and (d) matches s2dtw._reference.align to {run.oracle_err:.1e} at start-up",
        "- ratio column: this row's fwd+bwd time / s2dtw cpp's fwd+bwd time on the same shape and dtype "
        "(> 1: s2dtw cpp is faster)",
        "",
        "Reference per shape: "
        + "; ".join(f"({k}) {v}, first {run.subsets[k]} pair(s)" for k, v in run.ref_sources.items()),
    ]


def _results(rows: list[Row], shapes: list[Shape], dtypes: list[str]) -> list[str]:
    lines = [
        "",
        "## Results",
        "",
        "| shape | dtype | library | check | fwd ms | fwd+bwd ms | fwd+bwd min ms | Mcells/s (fwd+bwd) "
        "| peak mem MiB | max abs err value / grad | fwd+bwd time ÷ s2dtw cpp | reps | note |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for shape in shapes:
        for dtype in dtypes:
            mine = s2dtw_row(rows, shape.key, dtype)
            for r in rows:
                if r.shape != shape.key or r.dtype != dtype:
                    continue
                ratio = "—"
                if mine is not None and r.fwdbwd_ms is not None:
                    ratio = f"{r.fwdbwd_ms / mine.fwdbwd_ms:.2f}x"
                lines.append(
                    f"| {shape.label} | {dtype} | {r.library} | {r.status} | {fmt(r.fwd_ms)} | "
                    f"{fmt(r.fwdbwd_ms)} | {fmt(r.fwdbwd_min_ms)} | {fmt(r.mcells_per_s)} | "
                    f"{fmt(r.peak_mib)} | {fmt_err(r.value_err)} / {fmt_err(r.grad_err)} | {ratio} | "
                    f"{r.reps or '—'} | {r.note} |")
    return lines


def _against_best_peer(rows: list[Row], shapes: list[Shape], dtypes: list[str]) -> list[str]:
    lines = [
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
        for dtype in dtypes:
            mine, peer = s2dtw_row(rows, shape.key, dtype), best_peer(rows, shape.key, dtype)
            if mine is None:
                continue
            fastest = best_peer(rows, shape.key, dtype, checked=False)
            any_peer = "—" if fastest is None else f"{fastest.library}: {fastest.fwdbwd_ms / mine.fwdbwd_ms:.2f}x"
            if peer is None:
                lines.append(f"| {shape.label} | {dtype} | {fmt(mine.fwdbwd_ms)} | none passed | — | — | — "
                             f"| {any_peer} |")
            else:
                lines.append(f"| {shape.label} | {dtype} | {fmt(mine.fwdbwd_ms)} | {peer.library} | "
                             f"{fmt(peer.fwdbwd_ms)} | {peer.fwdbwd_ms / mine.fwdbwd_ms:.2f}x | "
                             f"{peer.fwdbwd_min_ms / mine.fwdbwd_min_ms:.2f}x | {any_peer} |")
    return lines


def _machine_limit(rows: list[Row], shapes: list[Shape], run: Run) -> list[str]:
    rates = run.exp_rates
    bound32, bound64 = rates["float32"] / 3, rates["float64"] / 3
    lines = [
        "",
        "## Machine limit estimate",
        "",
        f"torch.exp throughput on {run.machine['threads_used']} threads: float32 {rates['float32'] / 1e6:.0f} M "
        f"elements/s, float64 {rates['float64'] / 1e6:.0f} M elements/s; a cell's bound is exp throughput / 3 "
        f"(why, and which bound applies: [benchmarks/README.md, Machine limit estimate]({README}"
        "#what-is-measured-and-how)).",
        "",
        "| shape | dtype | s2dtw cpp Mcells/s (fwd+bwd) | bound f64 exp / 3 (Mcells/s) | fraction | "
        "bound f32 exp / 3 (Mcells/s) | fraction |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for shape in shapes:
        for dtype in run.opts.dtype_names:
            mine = s2dtw_row(rows, shape.key, dtype)
            if mine is None:
                continue
            rate = mine.mcells_per_s * 1e6
            lines.append(f"| {shape.label} | {dtype} | {fmt(mine.mcells_per_s)} | {bound64 / 1e6:.0f} | "
                         f"{rate / bound64:.0%} | {bound32 / 1e6:.0f} | {rate / bound32:.0%} |")
    return lines


def _problems(rows: list[Row]) -> list[str]:
    problems = [r for r in rows if r.status != "ok"]
    lines = ["", "## Libraries that did not pass or did not run", ""]
    if not problems:
        return [*lines, "- none"]
    lines += [f"- {r.library}, ({r.shape}) {r.dtype}: {r.status} — {r.note}" for r in problems]
    causes = [name for name in KNOWN_CAUSES
              if any(r.library == name and r.status == "check failed" for r in problems)]
    if causes:
        lines += ["", "Causes, from the peers' source at the versions above:", ""]
        lines += [f"- {name}: {KNOWN_CAUSES[name]}" for name in causes]
    return lines


def render(rows: list[Row], shapes: list[Shape], run: Run) -> str:
    """The whole report: machine, versions, settings, the tables, what failed and why."""
    dtypes = run.opts.dtype_names
    lines = [f"# s2dtw CPU benchmark — {run.started}", ""]
    lines += _machine(run) + _settings(run) + _results(rows, shapes, dtypes) + _against_best_peer(rows, shapes, dtypes)
    lines += _machine_limit(rows, shapes, run)
    if run.opts.contention:
        lines += contention.render(rows, {s.key: s.label for s in shapes}, contention.BusyProcess().cpu,
                                   run.opts.worst_of)
    lines += _problems(rows)
    lines += [
        "",
        "## How each library receives the cost",
        "",
        f"The same cost tensor for every library, as [benchmarks/README.md, Libraries]({README}#libraries) says; "
        f"the S2DTW workload's dense grid for the peers as in [Workloads]({README}#workloads).",
    ]
    return "\n".join(lines) + "\n"
