#!/usr/bin/env python
"""Two builds' C++ kernels, interleaved call by call: CPU time ratio new / old per shape, and whether their values
and gradients are bit-identical.

    python benchmarks/kernel_ab.py OLD_CHECKOUT NEW_CHECKOUT [--shapes a,b,s2] [--rounds 41] [--threads 1]
    python benchmarks/kernel_ab.py . . --simd avx2,avx512    # one build, AVX2 arm against AVX-512 arm

Each checkout holds a built package (its s2dtw/_cpu*.so). One worker process per build loads that module by path
(no torch, no s2dtw/__init__; two builds cannot share one process, CPython would hand the second load of `_cpu` the
first module), the Problem passed as plain attributes as benchmarks/count_instructions.py does, on the same costs
(cpu_bench's shapes and settings, forward + backward). A round times one call of each build, in alternating order,
with `time.thread_time()` in the worker (CPU time of the calling thread: with --threads 1 other processes' load
enters only through shared caches and frequency); reported are the medians over rounds and their ratio, and whether
the two builds' value and gradient bytes are identical. `$S2DTW_SIMD` caps the instruction set as in s2dtw.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads import GAMMA, SHAPES, SMOOTHING, THRESHOLD  # noqa: E402

LEVELS = ("scalar", "avx2", "avx512")


class _Lengths:
    """The tensor methods problem_args.h reads from a lengths tensor, over a NumPy int64 array."""

    dtype = "torch.int64"

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def numel(self) -> int:
        return self.values.size

    def is_contiguous(self) -> bool:
        return self.values.flags.c_contiguous

    def data_ptr(self) -> int:
        return self.values.ctypes.data


# The worker: one build's module, loaded by path (two builds' modules cannot share a process: CPython hands the
# second load of an extension named _cpu the first one's module). Reads "shape dtype threads" lines, answers with
# the CPU time of one forward + backward call and a digest of the value and gradient bytes.
_WORKER = r"""
import hashlib, importlib.util, json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
import kernel_ab
found = sys.argv[1]
spec = importlib.util.spec_from_file_location("_cpu", found)
cpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cpu)
cases = {}
for line in sys.stdin:
    key, dtype, threads = line.split()
    if (key, dtype) not in cases:
        cases[key, dtype] = kernel_ab.case(key, dtype)
    cost, value, grad, pb = cases[key, dtype]
    start = time.thread_time()
    cpu.run(dtype, cost.ctypes.data, value.ctypes.data, grad.ctypes.data, int(threads), pb)
    elapsed = time.thread_time() - start
    digest = hashlib.sha256(value.tobytes() + grad.tobytes()).hexdigest()
    print(json.dumps([elapsed, digest]), flush=True)
"""


def case(key: str, dtype: str) -> tuple:
    """cpu_bench's costs of shape `key`, output buffers and the Problem."""
    shape = SHAPES[key]
    cost = np.random.default_rng(0).random((shape.batch, shape.n, shape.m)).astype(dtype)
    lengths = _Lengths(np.full(shape.batch, shape.n, dtype=np.int64))
    layout = types.SimpleNamespace(pair_n=lengths, pair_m=lengths, n_pairs=shape.batch, pairs_per_x=1,
                                   padded_n=shape.n, padded_m=shape.m, stride_x=shape.n * shape.m, stride_y=0,
                                   stride_i=shape.m, stride_j=1, slots=None)
    s2 = shape.s2dtw_workload
    params = types.SimpleNamespace(gamma=GAMMA, smoothing=SMOOTHING if s2 else None,
                                   threshold=THRESHOLD if s2 else None, bandwidth=None, open_begin=False,
                                   open_end=False)
    switches = types.SimpleNamespace(max_simd=LEVELS.index(os.environ.get("S2DTW_SIMD") or "avx512"), cuda_regime=0,
                                     cuda_strip=0, cuda_tape_mib=0)
    pb = types.SimpleNamespace(layout=layout, params=params, switches=switches)
    return cost, np.full(shape.batch, np.nan, dtype=dtype), np.zeros_like(cost), pb


class Worker:
    """One build's worker process."""

    def __init__(self, checkout: Path, simd: str | None = None) -> None:
        found = sorted((checkout / "s2dtw").glob("_cpu*.so"))
        if len(found) != 1:
            raise SystemExit(f"expected one built s2dtw/_cpu*.so in {checkout}, found {found}")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if simd:
            env["S2DTW_SIMD"] = simd
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(found[0]), str(Path(__file__).parent)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd="/")

    def call(self, key: str, dtype: str, threads: int) -> tuple[float, str]:
        self.proc.stdin.write(f"{key} {dtype} {threads}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a worker died")
        elapsed, digest = json.loads(line)
        return elapsed, digest

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--shapes", default="a,b,s2")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--simd", default="", metavar="OLD,NEW",
                        help="each arm's $S2DTW_SIMD, e.g. avx2,avx512 (one build against itself at two levels)")
    args = parser.parse_args()
    simd = args.simd.split(",") if args.simd else [os.environ.get("S2DTW_SIMD")] * 2
    builds = {"old": Worker(args.old.resolve(), simd[0]), "new": Worker(args.new.resolve(), simd[1])}
    print(f"load average {os.getloadavg()[0]:.1f}, {args.threads} thread(s), {args.rounds} rounds, "
          f"S2DTW_SIMD old={simd[0]!r} new={simd[1]!r}")
    print("| shape | dtype | old ms | new ms | new / old | bit-identical |\n|---|---|---:|---:|---:|---|")
    for key in args.shapes.split(","):
        shape = SHAPES[key]
        for dtype in args.dtypes.split(","):
            rounds = max(3, args.rounds if shape.n * shape.m <= 512 * 512 else args.rounds // 8)
            times: dict = {k: [] for k in builds}
            digests = {k: builds[k].call(key, dtype, args.threads)[1] for k in builds}  # warms the workspaces
            for r in range(rounds):
                for k in ("old", "new") if r % 2 == 0 else ("new", "old"):
                    times[k].append(builds[k].call(key, dtype, args.threads)[0])
            t_old, t_new = (statistics.median(times[k]) * 1e3 for k in ("old", "new"))
            same = digests["old"] == digests["new"]
            print(f"| ({key}) | {dtype} | {t_old:.3f} | {t_new:.3f} | {t_new / t_old:.3f} | {same} |", flush=True)
    for worker in builds.values():
        worker.close()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
