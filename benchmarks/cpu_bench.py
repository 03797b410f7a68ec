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

This file is the command line and the run; beside it: workloads.py (settings, shapes, the reference each shape is
checked against), peers.py (the libraries, wrapped alike), measure.py (timing, peak memory, the check),
machine.py (machine and versions), report.py (the markdown report), contention.py (--contention).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
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

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contention  # noqa: E402
import machine  # noqa: E402
from measure import Row, calibrate_memory, exp_throughput, prepare, time_interleaved  # noqa: E402
from peers import make_libs  # noqa: E402
from report import Run, fmt, fmt_err, render  # noqa: E402
from workloads import SEED, SHAPES, Shape, draw_costs, reference, validate_oracle  # noqa: E402

torch.set_num_threads(THREADS)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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


def run_dtype(shape: Shape, dname: str, cost64: torch.Tensor, ref: tuple, subset: int, opts: argparse.Namespace,
              per_cell_s: dict) -> list[Row]:
    """Every selected library on one (shape, dtype): prepared and checked, then timed together."""
    dtype = getattr(torch, dname)
    base = cost64.to(dtype).contiguous()
    rows, prepared = [], []
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
        log(f"  {dname:7s} {r.library:36s} {r.status:13s} fwd {fmt(r.fwd_ms):>7s} ms  "
            f"fwd+bwd {fmt(r.fwdbwd_ms):>7s} ms (min {fmt(r.fwdbwd_min_ms)})  "
            f"mem {fmt(r.peak_mib):>6s} MiB  err {fmt_err(r.value_err)}/{fmt_err(r.grad_err)}  "
            f"reps {r.reps} {r.note}")
    log(f"  ({time.perf_counter() - start:.1f} s of timing rounds)")
    return rows


def run_shapes(shapes: list[Shape], opts: argparse.Namespace) -> tuple[list[Row], dict[str, str], dict[str, int]]:
    """The rows of every shape and dtype, with each shape's oracle and number of checked pairs."""
    rows: list[Row] = []
    ref_sources: dict[str, str] = {}
    subsets: dict[str, int] = {}
    per_cell_s: dict = {}
    gen = torch.Generator().manual_seed(SEED)
    for shape in sorted(shapes, key=lambda s: s.cells / s.batch):  # small pairs first: skip extrapolation
        cost64 = draw_costs(shape, gen)
        small = shape.n * shape.m <= 17 * 17
        subset = min(shape.batch, (1 if opts.quick else 2) * (8 if small else 1))
        subsets[shape.key] = subset
        start = time.perf_counter()
        ref = reference(shape, cost64[:subset].numpy())
        ref_sources[shape.key] = ref[2]
        log(f"{shape.label}: reference for {subset} pair(s) in {time.perf_counter() - start:.1f} s")
        for dname in opts.dtype_names:
            rows += run_dtype(shape, dname, cost64, ref, subset, opts, per_cell_s)
    return rows, ref_sources, subsets


def write_results(report: str, run: Run, rows: list[Row]) -> None:
    """benchmarks/results/cpu_<date>_<simd level>[_contention].md (or --out), and the raw numbers as .json."""
    suffix = "_contention" if run.opts.contention else ""
    out = Path(run.opts.out) if run.opts.out else (
        Path(__file__).resolve().parent / "results" / f"cpu_{run.started.split()[0]}_{machine.simd_level()}{suffix}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    raw = {"started": run.started, "machine": run.machine, "versions": run.versions, "exp_throughput": run.exp_rates,
           "rows": [r.__dict__ for r in rows]}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str))
    log(f"wrote {out} and {out.with_suffix('.json')}")


def main() -> None:
    opts = parse_args()
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load_start = machine.load_average()
    shapes = [SHAPES[s] for s in opts.shapes.split(",")]

    vers = machine.versions()  # now: the s2dtw build that this process loaded
    oracle_err = validate_oracle()
    memory_calibration = calibrate_memory()
    exp_rates = {name: exp_throughput(getattr(torch, name)) for name in ("float32", "float64")}
    log(f"exp throughput: { {k: f'{v / 1e6:.0f} M/s' for k, v in exp_rates.items()} }")

    rows, ref_sources, subsets = run_shapes(shapes, opts)
    build_now = machine.s2dtw_build()
    if build_now != vers["s2dtw build"]:
        vers["s2dtw build"] += f" (WARNING: rebuilt during the run, now {build_now}; this run used the former)"
    run = Run(started, opts, machine.machine_info(THREADS), vers, exp_rates, oracle_err, memory_calibration,
              (load_start, machine.load_average()), ref_sources, subsets)
    report = render(rows, [s for s in SHAPES.values() if s in shapes], run)
    print(report)
    if opts.write:
        write_results(report, run, rows)


if __name__ == "__main__":
    main()
