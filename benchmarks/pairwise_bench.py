"""Symmetric all-pairs: ``s2dtw.pairwise(x)`` (the pairs i <= j, mirrored) against ``pairwise(x, x)`` (all B²).

Both run in the same process, interleaved round by round (one call of each per round, in alternating order), so
load on the machine hits both alike; the figure to read is the ratio of the medians, time(pairwise(x)) /
time(pairwise(x, x)): the B(B+1)/2 alignments of B² predict (B+1)/(2B), a little over one half, for the
dynamic programme (both build the same all-pairs cost GEMM). Wall-clock and process CPU time are both
recorded: on a loaded machine the CPU time (all threads of this process) is the steadier one.

    python benchmarks/pairwise_bench.py              # writes benchmarks/results/pairwise_<date>.md
    python benchmarks/pairwise_bench.py --rounds 5 --out /tmp/pairwise.md
    python benchmarks/pairwise_bench.py --kernel     # and the kernel call alone (where the ratio's floor is)

`--kernel` adds a table of the kernel call alone (s2dtw._dispatch.run, forward + backward), on what each call
hands it (pairwise(x): the folded cost and its pairs' slots; pairwise(x, x): the all-pairs cost) and on the same
pairs packed into a (K, N, N) batch: K = B(B+1)/2 against B², which the lockstep kernel runs in groups of its
SIMD lanes (a last, partly filled group costs a whole one).
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from machine import load_average, machine_info, s2dtw_build, simd_level

import s2dtw
from s2dtw import _cost, _dispatch
from s2dtw._problem import Layout, Params, Problem

# (B, N, d): S2DTW defaults (weak grid), float32, x of B sequences of N elements
SHAPES = [(64, 8, 512), (32, 32, 64), (16, 64, 16)]
RESULTS = Path(__file__).resolve().parent / "results"


def timed(call) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(calls: dict, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall-clock and process CPU seconds of each call over `rounds` rounds, in rotating order, after one
    warm-up call of each."""
    for call in calls.values():
        call()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(timed(calls[name]))
    return ({name: statistics.median(t[0] for t in runs) for name, runs in times.items()},
            {name: statistics.median(t[1] for t in runs) for name, runs in times.items()})


def measure(shape: tuple[int, int, int], rounds: int, backward: bool, backend: str | None) -> dict:
    """Medians (s) of both calls over `rounds` interleaved rounds, after one warm-up call of each."""
    b, n, d = shape
    x = torch.nn.functional.normalize(torch.randn(b, n, d), dim=-1).requires_grad_(backward)

    def half() -> None:
        value = s2dtw.pairwise(x, backend=backend)
        if backward:
            value.sum().backward()

    def full() -> None:
        value = s2dtw.pairwise(x, x, backend=backend)
        if backward:
            value.sum().backward()

    wall, cpu = interleaved({"half": half, "full": full}, rounds)
    return {"half": wall["half"], "full": wall["full"], "ratio": wall["half"] / wall["full"],
            "cpu_ratio": cpu["half"] / cpu["full"], "predicted": (b + 1) / (2 * b)}


def measure_kernel(shape: tuple[int, int, int], rounds: int) -> dict:
    """The kernel call alone, forward + backward, as `--kernel` describes (S2DTW defaults, C++ backend)."""
    b, n, d = shape
    x = torch.nn.functional.normalize(torch.randn(b, n, d), dim=-1)
    rows, cols = torch.triu_indices(b, b)
    folded, slots = _cost.symmetric_cost(x, "neg_dot", rows, cols)
    full = _cost.cost_matrix(x.reshape(1, b * n, d), x.reshape(1, b * n, d), "neg_dot").squeeze(0)
    blocks = full.reshape(b, n, b, n).transpose(1, 2)
    lengths = torch.full((b * b,), n)
    k = rows.numel()
    problems = {
        "half": (folded, Layout.in_grid(folded, n, n, lengths[:k], lengths[:k], slots)),
        "full": (full, Layout.in_grid(full, n, n, lengths, lengths)),
        "packed_half": (blocks[rows, cols].contiguous(), None),
        "packed_full": (blocks.reshape(b * b, n, n).contiguous(), None),
    }
    params = Params(0.1, 0.1, 0.5)

    def call(cost: torch.Tensor, layout: Layout | None):
        layout = layout or Layout.batched(cost, lengths[:cost.shape[0]], lengths[:cost.shape[0]])
        return lambda: _dispatch.run("cpp", cost, Problem(layout, params), True)

    calls = {name: call(*problem) for name, problem in problems.items()}
    # Two by two, as the whole calls are (four in turn leave each call a colder cache).
    return {name: seconds for names in (("half", "full"), ("packed_half", "packed_full"))
            for name, seconds in interleaved({name: calls[name] for name in names}, rounds)[0].items()}


def kernel_report(rows: list[tuple[tuple[int, int, int], dict]]) -> list[str]:
    lines = [
        "",
        "The kernel call alone, forward + backward (`--kernel`): on the layout each call hands it, and on the same "
        "pairs packed into (K, N, N).",
        "",
        "| B, N, d | pairwise(x) ms | pairwise(x, x) ms | ratio | packed B(B+1)/2 ms | packed B² ms | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (b, n, d), t in rows:
        lines.append(f"| {b}, {n}, {d} | {1e3 * t['half']:.2f} | {1e3 * t['full']:.2f} | {t['half'] / t['full']:.2f} | "
                     f"{1e3 * t['packed_half']:.2f} | {1e3 * t['packed_full']:.2f} | "
                     f"{t['packed_half'] / t['packed_full']:.2f} |")
    return lines


def report(rows: list[tuple[tuple[int, int, int], str, dict]], command: str, started: str, load_before: str,
           rounds: int, threads: int, kernel_rows: list[tuple[tuple[int, int, int], dict]]) -> str:
    info = machine_info(threads)
    lines = [
        f"# pairwise(x) vs pairwise(x, x) ({started} UTC)",
        "",
        f"- Command: `{command}`",
        f"- Machine: {info['model']} ({info['cpus']} CPUs), s2dtw SIMD level {simd_level()}, {threads} torch "
        f"thread(s); torch {torch.__version__}, Python {info['python']}; s2dtw {s2dtw_build()}",
        f"- Load average (1, 5, 15 min) before: {load_before}; after: {load_average()}. Absolute times on a "
        "shared machine are noisy; the ratio compares interleaved calls of the same process.",
        f"- S2DTW defaults (gamma 0.1, smoothing 0.1, threshold 0.5, neg_dot), float32, L2-normalised random x; "
        f"median of {rounds} interleaved rounds after a warm-up. Predicted ratio: (B+1)/(2B) alignments.",
        "",
        "| B, N, d | pass | pairwise(x) ms | pairwise(x, x) ms | ratio (wall) | ratio (CPU time) | predicted |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (b, n, d), kind, row in rows:
        lines.append(f"| {b}, {n}, {d} | {kind} | {1e3 * row['half']:.2f} | {1e3 * row['full']:.2f} | "
                     f"{row['ratio']:.2f} | {row['cpu_ratio']:.2f} | {row['predicted']:.2f} |")
    if kernel_rows:
        lines += kernel_report(kernel_rows)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per shape (default 15)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--backend", default=None, help="s2dtw backend (default: the CPU default)")
    parser.add_argument("--kernel", action="store_true", help="add the kernel call alone (see the module doc)")
    parser.add_argument("--out", type=Path, default=None, help="the report (default results/pairwise_<date>.md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    load_before = load_average()
    rows = []
    for shape in SHAPES:
        for backward, kind in ((False, "forward"), (True, "forward + backward")):
            rows.append((shape, kind, measure(shape, args.rounds, backward, args.backend)))
            print(shape, kind, f"ratio {rows[-1][2]['ratio']:.3f} (CPU time {rows[-1][2]['cpu_ratio']:.3f})",
                  flush=True)
    kernel_rows = [(shape, measure_kernel(shape, args.rounds)) for shape in SHAPES] if args.kernel else []
    command = "python benchmarks/pairwise_bench.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    out = args.out or RESULTS / f"pairwise_{started[:10]}.md"
    out.write_text(report(rows, command.strip(), started, load_before, args.rounds, args.threads, kernel_rows))
    print(out.read_text())
    return out


if __name__ == "__main__":
    main()
