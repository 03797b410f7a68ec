#!/usr/bin/env python
"""Two builds of s2dtw against each other on cpu_bench's shapes: does a change make any shape slower?

    python benchmarks/compare_builds.py OLD_CHECKOUT NEW_CHECKOUT [--rounds 7] [--write]

Each checkout must hold a built package (its s2dtw/ folder with the compiled _cpu module, as an
editable install leaves it). Every round runs both builds, in fresh processes and in alternating
order, on the same costs (cpu_bench's shapes, float32 and float64, forward + backward of the cpp
backend, best of a few calls); the report gives each build's median over rounds and the ratio
new / old. Only the ratio means anything on a shared machine: both builds see the same load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from workloads import GAMMA, SHAPES

# Runs in the child, whose sys.path starts with the checkout under test.
_CHILD = r"""
import json, sys, time, torch, s2dtw
checkout, cases, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
assert s2dtw.__file__.startswith(checkout), f"imported {s2dtw.__file__}, not the build in {checkout}"
torch.set_num_threads(threads)
out = {"simd": s2dtw.backends()["simd"], "times": {}}
for name, (batch, n, m, s2, dtype, reps, gamma) in cases.items():
    g = torch.Generator().manual_seed(0)
    cost0 = torch.rand(batch, n, m, generator=g, dtype=getattr(torch, dtype))
    best = float("inf")
    for _ in range(reps + 1):  # the first call warms the workspace cache
        cost = cost0.clone().requires_grad_(True)
        start = time.perf_counter()
        value = s2dtw.s2dtw(cost=cost, gamma=gamma, backend="cpp") if s2 else s2dtw.soft_dtw(
            cost=cost, gamma=gamma, backend="cpp")
        value.sum().backward()
        best = min(best, time.perf_counter() - start)
    out["times"][name] = best
print(json.dumps(out))
"""


def cases() -> dict[str, list]:
    """Every shape x dtype: (batch, n, m, S2DTW workload, dtype, calls per round, gamma)."""
    table = {}
    for shape in SHAPES.values():
        reps = 3 if shape.n * shape.m > 512 * 512 else 7
        for dtype in ("float32", "float64"):
            table[f"({shape.key}) {shape.label.split(') ', 1)[1]} {dtype}"] = [
                shape.batch, shape.n, shape.m, shape.s2dtw_workload, dtype, reps, GAMMA]
    return table


def run_build(checkout: Path, table: dict, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS=str(threads))
    env.pop("S2DTW_SIMD", None)
    done = subprocess.run([sys.executable, "-c", _CHILD, str(checkout), json.dumps(table), str(threads)],
                          env=env, capture_output=True, text=True, cwd="/", check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the build in {checkout} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def revision(checkout: Path) -> str:
    done = subprocess.run(["git", "-C", str(checkout), "log", "-1", "--format=%h %s"], capture_output=True,
                          text=True, check=False)
    return done.stdout.strip()[:90] or "(not a git checkout)"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def report(old: Path, new: Path, results: dict[str, list[dict]], threads: int, loads: list[float]) -> str:
    simd = {results["old"][0]["simd"], results["new"][0]["simd"]}
    lines = [
        "# Two s2dtw builds, forward + backward (cpp backend)", "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu_model()}, {os.cpu_count()} CPUs, SIMD level {'/'.join(sorted(simd))}, "
        f"{threads} threads; load average {min(loads):.1f} to {max(loads):.1f} during the run",
        f"- old: `{revision(old)}`", f"- new: `{revision(new)}`",
        f"- {len(results['old'])} rounds, both builds in fresh processes in alternating order; per round the best "
        "of a few calls; below the median over rounds (ms) and new / old",
        "- command: `python benchmarks/compare_builds.py OLD NEW --write`", "",
        "| shape | old ms | new ms | new / old |", "|---|---:|---:|---:|",
    ]
    for name in results["old"][0]["times"]:
        t_old = statistics.median(r["times"][name] for r in results["old"]) * 1e3
        t_new = statistics.median(r["times"][name] for r in results["new"]) * 1e3
        lines.append(f"| {name} | {t_old:.2f} | {t_new:.2f} | {t_new / t_old:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="checkout with the baseline build")
    parser.add_argument("new", type=Path, help="checkout with the changed build")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true",
                        help="also write benchmarks/results/builds_<date>_<threads>t.md")
    args = parser.parse_args()
    table, results, loads = cases(), {"old": [], "new": []}, []
    for round_ in range(args.rounds):
        order = [("old", args.old), ("new", args.new)][:: 1 if round_ % 2 == 0 else -1]
        for key, checkout in order:
            results[key].append(run_build(checkout.resolve(), table, args.threads))
            loads.append(os.getloadavg()[0])
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    text = report(args.old.resolve(), args.new.resolve(), results, args.threads, loads)
    print(text)
    if args.write:
        name = f"builds_{datetime.date.today():%Y-%m-%d}_{args.threads}t.md"
        out = Path(__file__).resolve().parent / "results" / name
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
