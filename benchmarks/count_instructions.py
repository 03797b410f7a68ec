#!/usr/bin/env python
"""Instructions the C++ kernels execute, two builds side by side (valgrind's callgrind): a speed check that
machine noise cannot blur, for a refactor that should not change the generated work.

    python benchmarks/count_instructions.py OLD_CHECKOUT NEW_CHECKOUT

Each checkout holds a built package (its s2dtw/ folder with the compiled _cpu module). Per workload and build,
one process under callgrind makes `calls` forward + backward calls on one thread; reported is the inclusive
instruction count of the _cpu module's entry (the kernels and everything they call). Slow: minutes per run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# name: (batch, n, S2DTW workload, calls)
WORKLOADS = {
    "diagonal: 1 x 1024x1024 soft-DTW float64, 3 calls": (1, 1024, False, 3),
    "lockstep: 4096 x S2DTW 8x8 float64, 2 calls": (4096, 8, True, 2),
}

_CHILD = r"""
import sys, torch, s2dtw
batch, n, s2, calls = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
torch.set_num_threads(1)
cost0 = torch.rand(batch, n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
for _ in range(calls):
    cost = cost0.clone().requires_grad_(True)
    (s2dtw.s2dtw if s2 else s2dtw.soft_dtw)(cost=cost, gamma=0.1, backend="cpp").sum().backward()
"""


def count(checkout: Path, workload: tuple) -> int:
    """Inclusive instructions of the hottest entry into checkout's _cpu module."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS="1")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c", _CHILD,
                        *map(str, (workload[0], workload[1], int(workload[2]), workload[3]))],
                       env=env, cwd="/", check=True, capture_output=True)
        annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(out)], capture_output=True,
                                   text=True, check=True).stdout
    for line in annotated.splitlines():
        if f"{checkout}/s2dtw/_cpu." in line:
            return int(re.match(r"\s*([\d,]+)", line).group(1).replace(",", ""))
    raise RuntimeError(f"no instructions of {checkout}/s2dtw/_cpu in the profile")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args()
    print("| workload | old instructions | new instructions | new / old |\n|---|---:|---:|---:|")
    for name, workload in WORKLOADS.items():
        old, new = count(args.old.resolve(), workload), count(args.new.resolve(), workload)
        print(f"| {name} | {old:,} | {new:,} | {new / old:.4f} |", flush=True)


if __name__ == "__main__":
    main()
