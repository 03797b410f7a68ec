#!/usr/bin/env python
"""Instructions the C++ kernels execute, two builds side by side (valgrind's callgrind): a speed check that
machine noise cannot blur, for a refactor that should not change the generated work.

    python benchmarks/count_instructions.py OLD_CHECKOUT NEW_CHECKOUT

Each checkout holds a built package (its s2dtw/ folder with the compiled _cpu module). Per workload and build,
one process under callgrind loads that _cpu module file directly, with NumPy buffers and no torch (importing torch
under valgrind takes minutes), and makes `calls` forward + backward calls on one thread; reported is the inclusive
instruction count of the hottest entry into the _cpu module (the pybind11 dispatcher of `run`: the kernels and
everything they call), summed from the callgrind output itself. About a minute per workload and build.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

# name: (batch, n, S2DTW workload, calls)
WORKLOADS = {
    "diagonal: 1 x 1024x1024 soft-DTW float64, 3 calls": (1, 1024, False, 3),
    "lockstep: 4096 x S2DTW 8x8 float64, 2 calls": (4096, 8, True, 2),
}

# The child: the module file by path (s2dtw/__init__ imports torch), a Problem as plain attributes (what
# csrc/bindings/problem_args.h problem_from reads), the lengths as a stand-in for a contiguous int64 tensor.
_CHILD = r"""
import importlib.util, json, os, sys, types
import numpy as np
path, batch, n, s2, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
spec = importlib.util.spec_from_file_location("_cpu", path)
cpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cpu)

class Lengths:
    dtype = "torch.int64"
    def __init__(self, values): self.values = values
    def numel(self): return self.values.size
    def is_contiguous(self): return self.values.flags.c_contiguous
    def data_ptr(self): return self.values.ctypes.data

lengths = Lengths(np.full(batch, n, dtype=np.int64))
layout = types.SimpleNamespace(pair_n=lengths, pair_m=lengths, n_pairs=batch, pairs_per_x=1, padded_n=n, padded_m=n,
                               stride_x=n * n, stride_y=0, stride_i=n, stride_j=1, slots=None)
params = types.SimpleNamespace(gamma=0.1, smoothing=0.1 if s2 else None, threshold=0.5 if s2 else None,
                               bandwidth=None, open_begin=False, open_end=False)
levels = ("scalar", "avx2", "avx512")
max_simd = levels.index(os.environ.get("S2DTW_SIMD") or "avx512")
switches = types.SimpleNamespace(max_simd=max_simd, cuda_regime=0, cuda_strip=0, cuda_tape_mib=0)
problem = types.SimpleNamespace(layout=layout, params=params, switches=switches)
cost = np.random.default_rng(0).random((batch, n, n))
for _ in range(calls):
    value, grad = np.full(batch, np.nan), np.zeros_like(cost)
    cpu.run("float64", cost.ctypes.data, value.ctypes.data, grad.ctypes.data, 1, problem)
simd = levels[min(max_simd, levels.index(cpu.best_simd_level()))]
print(json.dumps({"simd": simd, "value": float(value.sum()), "grad": float(grad.sum())}))
"""

_NAME_KINDS = {"ob": "ob", "cob": "ob", "fn": "fn", "cfn": "fn", "jfn": "fn"}  # callgrind's name-compression spaces


def _name(kind: str, spec: str, names: dict) -> str:
    """A compressed name: "(id) name" defines id, "(id)" refers to it, a plain name is itself."""
    table = names[_NAME_KINDS[kind]]
    if not spec.startswith("("):
        return spec
    ident, _, name = spec.partition(")")
    if name.strip():
        table[ident] = name.strip()
    return table[ident]


def hottest_entry(profile: str, library: Path) -> int:
    """Instructions (Ir, inclusive) of the function of `library` that code outside it calls the most.

    `profile` is a callgrind output file's text (valgrind's "Callgrind Format Specification"): a `calls=` line
    is followed by the cost line of that call, the callee's inclusive cost; the callee is the last `cfn=`, in the
    object of the `cob=` just before it, or without one in the caller's object (callgrind's dump.c).
    """
    names: dict = {"ob": {}, "fn": {}}
    positions, ir, ob, cob, callee, pending_cob, in_call = 1, None, "", "", "", None, False
    entries: dict = defaultdict(int)
    target = os.path.realpath(library)
    for line in profile.splitlines():
        key, eq, rest = line.partition("=")
        if line.startswith("positions:"):
            positions = len(line.split()[1:])
        elif line.startswith("events:"):
            ir = line.split()[1:].index("Ir")
        elif eq and key in _NAME_KINDS:
            value = _name(key, rest, names)
            if key == "ob":
                ob = value
            elif key == "cob":
                pending_cob = value
            elif key == "cfn":
                cob, callee, pending_cob = pending_cob or ob, value, None
        elif eq and key == "calls":
            in_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if in_call and ob != cob and os.path.realpath(cob) == target:
                fields = line.split()[positions:]
                entries[callee] += int(fields[ir]) if ir < len(fields) else 0
            in_call = False
    if ir is None or not entries:
        raise RuntimeError(f"no call into {library} in the profile")
    return max(entries.values())


def _library(checkout: Path) -> Path:
    found = sorted((checkout / "s2dtw").glob("_cpu*.so"))
    if len(found) != 1:
        raise SystemExit(f"expected one built s2dtw/_cpu*.so in {checkout}, found {[str(p) for p in found]}")
    return found[0]


def count(checkout: Path, workload: tuple) -> tuple[int, dict]:
    """Inclusive instructions of the hottest entry into checkout's _cpu module, and the child's summary."""
    library = _library(checkout)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("PYTHONPATH", None)
        child = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c",
                                _CHILD, str(library), *map(str, (workload[0], workload[1], int(workload[2]),
                                                                 workload[3]))],
                               env=env, cwd="/", capture_output=True, text=True)
        if child.returncode != 0:
            raise RuntimeError(f"the callgrind child failed for {library}:\n{child.stderr[-3000:]}")
        instructions = hottest_entry(out.read_text(), library)
    if instructions <= 0:
        raise RuntimeError(f"zero instructions counted inside {library}")
    return instructions, json.loads(child.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args()
    print("| workload | old instructions | new instructions | new / old |\n|---|---:|---:|---:|")
    for name, workload in WORKLOADS.items():
        (old, old_run), (new, new_run) = count(args.old.resolve(), workload), count(args.new.resolve(), workload)
        print(f"| {name} | {old:,} | {new:,} | {new / old:.4f} |", flush=True)
        same = "bit-identical" if old_run == new_run else "DIFFERENT"
        print(f"  {name}: SIMD {old_run['simd']} / {new_run['simd']}; value and gradient sums {same} "
              f"(old {old_run}, new {new_run})", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
