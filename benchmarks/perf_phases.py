#!/usr/bin/env python
"""Where one C++ kernel call's time goes: `perf record -e cpu-clock` of a loop of raw kernel calls, the module's
samples attributed to source functions through the inlined frames (addr2line -i).

    python benchmarks/perf_phases.py SO SHAPE DTYPE CALLS [--top 12]

SO: a `_cpu` module built with line information (a RelWithDebInfo build, see
benchmarks/results/cpu_profile_2026-12-02_avx512_avx2.md; the package's Release module is stripped). The loop
calls the kernel as benchmarks/kernel_ab.py does (cpu_bench's shape and settings, forward + backward, 1 thread;
`$S2DTW_SIMD` caps the instruction set). Printed: the share of the module's samples by innermost source function,
and by phase (the outermost kernel function of simd_lockstep.h / simd_diagonal*.h under the drivers). perf's
software clock needs no hardware counters; shares are relative within the process, so other load matters less.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

_LOOP = r"""
import importlib.util, sys
sys.path.insert(0, sys.argv[1])
import kernel_ab
spec = importlib.util.spec_from_file_location("_cpu", sys.argv[2])
cpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cpu)
cost, value, grad, pb = kernel_ab.case(sys.argv[3], sys.argv[4])
for _ in range(int(sys.argv[5])):
    cpu.run(sys.argv[4], cost.ctypes.data, value.ctypes.data, grad.ctypes.data, 1, pb)
"""
_DRIVERS = ("lockstep_group", "run_lockstep", "run_diagonal", "diagonal_pair", "operator()")


def _short(function: str) -> str:
    return function.replace("(anonymous namespace)::", "").split("(")[0].split("::")[-1]


def _frames(so: Path, addresses: list[int]) -> list[list[tuple[str, str]]]:
    """Each address's inlined frames (function, file:line), innermost first."""
    text = "\n".join(hex(a) for a in addresses)
    lines = subprocess.run(["addr2line", "-a", "-i", "-f", "-C", "-e", str(so)], input=text, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    out: list[list[tuple[str, str]]] = []
    k = 0
    while k < len(lines):
        if lines[k].startswith("0x"):
            out.append([])
            k += 1
        else:
            out[-1].append((lines[k], lines[k + 1]))
            k += 2
    return out


def _samples(data: Path, so: Path) -> list[int]:
    """The module's sampled addresses, relative to its load base."""
    text = subprocess.run(["perf", "script", "-i", str(data), "--show-mmap-events", "-F", "ip,dso"],
                          capture_output=True, text=True, check=True).stdout
    base, ips = None, []
    for line in text.splitlines():
        if "MMAP" in line:
            found = re.search(r"\[(0x[0-9a-f]+)\((0x[0-9a-f]+)\) @ (0x[0-9a-f]+|0) ", line)
            if base is None and found and so.name in line and "r-xp" in line:
                base = int(found.group(1), 16) - int(found.group(3), 16)
        elif so.name in line:
            ips.append(int(line.split()[0], 16))
    if base is None:
        raise SystemExit(f"{so.name} not mapped in {data}")
    return [ip - base for ip in ips]


def attribute(so: Path, data: Path) -> tuple[collections.Counter, collections.Counter, int]:
    """Samples by innermost csrc function and by phase."""
    by_function: collections.Counter = collections.Counter()
    by_phase: collections.Counter = collections.Counter()
    frames = _frames(so, _samples(data, so))
    for stack in frames:
        ours = [(_short(f), loc.split("/csrc/")[1].split(":")[0]) for f, loc in stack if "/csrc/" in loc]
        by_function[f"{ours[0][1]}: {ours[0][0]}" if ours else "(outside csrc)"] += 1
        kernels = [f for f, file in reversed(ours)
                   if ("lockstep" in file or "diagonal" in file) and f.split("<")[0] not in _DRIVERS]
        by_phase[kernels[0] if kernels else ours[-1][0] if ours else "(outside csrc)"] += 1
    return by_function, by_phase, len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("so", type=Path)
    parser.add_argument("shape")
    parser.add_argument("dtype")
    parser.add_argument("calls", type=int)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "4000", "-o", str(data), sys.executable,
                        "-c", _LOOP, str(Path(__file__).parent), str(args.so.resolve()), args.shape, args.dtype,
                        str(args.calls)], env=env, check=True, stdout=subprocess.DEVNULL)
        by_function, by_phase, total = attribute(args.so.resolve(), data)
    print(f"({args.shape}) {args.dtype}, S2DTW_SIMD={os.environ.get('S2DTW_SIMD', '')!r}, {total} samples, "
          f"load average {os.getloadavg()[0]:.1f}")
    for title, counts in (("by phase", by_phase), ("by source function", by_function)):
        print(f"| {title} | share |\n|---|---:|")
        for name, n in counts.most_common(args.top):
            print(f"| {name} | {100 * n / total:.1f} % |")


if __name__ == "__main__":
    main()
