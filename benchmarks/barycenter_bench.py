"""Soft-DTW barycenters: s2dtw.barycenter against tslearn.barycenters.softdtw_barycenter.

Same data, same initialisation (tslearn's default: the resampled weighted mean, handed to both), same gamma.
tslearn runs scipy's L-BFGS-B on NumPy/Numba (tol=1e-3, max_iter=50, its defaults); s2dtw runs its batched
L-BFGS twice: with tslearn's tol/max_iter (the same stopping rule) and with its own defaults. Both final
objectives are evaluated by the same float64 function. K > 1 rows: K sets; tslearn takes one call per set,
s2dtw one call for all. Times are the best of --repeats runs, after a warm-up (numba's compilation).

    python benchmarks/barycenter_bench.py            # writes benchmarks/results/barycenter_<date>.md
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

THREADS = 1  # both single-threaded: tslearn's numba kernels are serial (n_jobs=None)
for _var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = str(THREADS)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import s2dtw  # noqa: E402
from s2dtw._problem import Params  # noqa: E402

torch.set_num_threads(THREADS)
bary = importlib.import_module("s2dtw.barycenter")  # the module (s2dtw.barycenter is the function)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # tslearn warns that h5py is missing
    import tslearn
    from tslearn.barycenters import softdtw_barycenter

# (K sets, S sequences per set, shortest, longest, D)
CASES = [(1, 10, 64, 128, 1), (1, 10, 64, 128, 8), (1, 50, 128, 256, 1), (1, 50, 128, 256, 8),
         (8, 10, 64, 128, 1), (8, 10, 64, 128, 8)]
TSLEARN = dict(tol=1e-3, max_iter=50)


def make_sets(k: int, s: int, shortest: int, longest: int, d: int, seed: int):
    """(K, S, longest, D) noisy time-shifted sines (a different shape per set), (K, S) lengths."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(shortest, longest + 1, size=(k, s))
    x = np.zeros((k, s, longest, d))
    for i in range(k):
        for j in range(s):
            n = lengths[i, j]
            phase = np.linspace(0, 1 + i / 4, n)[:, None] + 0.1 * rng.standard_normal() + np.arange(d) / (d + 1)
            x[i, j, :n] = np.sin(2 * np.pi * phase) + 0.2 * rng.standard_normal((n, d))
    return torch.from_numpy(x), torch.from_numpy(lengths)


def best_time(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def run_case(case, gamma: float, repeats: int, seed: int) -> dict:
    k, s, _, longest, d = case
    x, lengths = make_sets(*case, seed=seed)
    weights = torch.ones(k, s, dtype=x.dtype)
    z_len = lengths.amax(1)
    init = bary.resampled_mean(x, lengths, weights, z_len)  # tslearn's default init, for both
    values = bary.set_values(x, lengths, weights, z_len, Params(gamma, None, None), "sqeuclidean", None)

    def objective(z: torch.Tensor) -> torch.Tensor:
        return values(z, torch.arange(k))

    sets = [[x[i, j, :n].numpy() for j, n in enumerate(lengths[i].tolist())] for i in range(k)]

    def theirs():
        return [softdtw_barycenter(sets[i], gamma=gamma, init=init[i, : z_len[i]].numpy(), **TSLEARN)
                for i in range(k)]

    def ours(**options):
        return lambda: s2dtw.barycenter(x, lengths=lengths, gamma=gamma, init=init, length=z_len, **options)

    row = {"case": case}
    row["tslearn_s"], out = best_time(theirs, repeats)
    z = torch.zeros_like(init)
    for i, b in enumerate(out):
        z[i, : z_len[i]] = torch.from_numpy(b)
    row["tslearn_f"] = float(objective(z).sum())
    for name, options in (("same_rule", TSLEARN), ("defaults", {})):
        row[f"{name}_s"], result = best_time(ours(**options), repeats)
        row[f"{name}_f"] = float(objective(result.barycenter).sum())
        row[f"{name}_iter"] = "/".join(str(v) for v in result.n_iter.tolist()) if k <= 2 else \
            f"{int(result.n_iter.min())}-{int(result.n_iter.max())}"
    return row


def machine() -> dict:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = {a.strip(): b.strip() for a, b in (line.split(":", 1) for line in lscpu.splitlines() if ":" in line)}
        model, cpus = fields.get("Model name", "?"), fields.get("CPU(s)", "?")
    except (OSError, subprocess.CalledProcessError):
        model, cpus = platform.processor() or "?", "?"
    return {"cpu": model, "cpus": cpus, "simd": importlib.import_module("s2dtw._cpu").simd_level(), "load": load()}


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def report(rows: list[dict], info: dict, gamma: float, repeats: int, started: str, load_after: str) -> str:
    lines = [
        f"# Soft-DTW barycenters: s2dtw vs tslearn {tslearn.__version__} ({started} UTC)",
        "",
        f"- Command: `python benchmarks/barycenter_bench.py --gamma {gamma} --repeats {repeats}`",
        f"- CPU: {info['cpu']} ({info['cpus']} CPUs), s2dtw SIMD level {info['simd']}, {THREADS} thread for both "
        f"(torch.set_num_threads, OMP/NUMBA_NUM_THREADS); torch {torch.__version__}, "
        f"Python {platform.python_version()}",
        f"- Load average (1, 5, 15 min) before: {info['load']}; after: {load_after}. The machine is shared with "
        "other jobs running at the same time: absolute times are inflated and noisy; the ratios compare runs of "
        "the same process, interleaved, and are the figures to read.",
        f"- Data: K sets of S noisy time-shifted sines, lengths uniform in [shortest, longest], gamma={gamma}, "
        "weights 1. Init: tslearn's default (each sequence resampled to the set's longest, then averaged), "
        "handed to both. Objective: sum over sets of sum_s sdtw(z_k, x_ks), by one float64 function for both.",
        f"- tslearn: `softdtw_barycenter` (scipy L-BFGS-B, tol={TSLEARN['tol']}, max_iter={TSLEARN['max_iter']}), "
        "one call per set. s2dtw: `s2dtw.barycenter`, one call for all K sets; \"same rule\": tol=1e-3, "
        "max_iter=50 (scipy's stopping rule); \"defaults\": tol=1e-5, max_iter=100. Best of "
        f"{repeats} runs each, after a warm-up.",
        "",
        "| K x S, lengths, D | tslearn s | tslearn objective | s2dtw same rule s | speed-up | objective | iters "
        "| s2dtw defaults s | speed-up | objective | iters |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        k, s, lo, hi, d = r["case"]
        lines.append(
            f"| {k} x {s}, {lo}-{hi}, {d} | {r['tslearn_s']:.3f} | {r['tslearn_f']:.4f} | {r['same_rule_s']:.3f} | "
            f"{r['tslearn_s'] / r['same_rule_s']:.1f}x | {r['same_rule_f']:.4f} | {r['same_rule_iter']} | "
            f"{r['defaults_s']:.3f} | {r['tslearn_s'] / r['defaults_s']:.1f}x | {r['defaults_f']:.4f} | "
            f"{r['defaults_iter']} |")
    lines += ["", "Speed-up: tslearn's time / s2dtw's. iters: L-BFGS iterations per set (a range for K sets).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="report path (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    info = machine()
    run_case((1, 3, 8, 12, 2), args.gamma, 1, args.seed)  # warm-up: numba compiles tslearn's kernels
    rows = []
    for case in CASES:
        rows.append(run_case(case, args.gamma, args.repeats, args.seed))
        print(rows[-1], file=sys.stderr)
    text = report(rows, info, args.gamma, args.repeats, started, load())
    out = args.out or Path(__file__).resolve().parent / "results" / f"barycenter_{started.split()[0]}.md"
    out.write_text(text)
    print(text)
    return out


if __name__ == "__main__":
    main()
