"""Contention mode of cpu_bench.py: the same calls while one busy process shares a core.

In training, data-loader workers or a second job keep cores busy while the loss runs. A kernel that hands its
work out in fixed halves waits for its slowest thread, and a descheduled thread makes that a whole time slice;
the median hardly moves but the worst case explodes. This mode measures that worst case: every library of a
(shape, dtype) runs `rounds` fwd+bwd calls (interleaved, as the idle timing) while a pure-Python busy loop is
pinned to one of the CPUs the benchmark uses.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence


class BusyProcess:
    """A `while True: pass` process pinned to one CPU for the duration of a `with` block."""

    def __init__(self) -> None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
        self.cpu = cpus[-1]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> BusyProcess:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(self.proc.pid, {self.cpu})
        time.sleep(0.2)  # let it start spinning
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def time_contended(calls: Sequence[Callable[[], object]], rounds: int) -> list[list[float]]:
    """fwd+bwd times in ms of each call, `rounds` interleaved rounds in a rotating order."""
    times: list[list[float]] = [[] for _ in calls]
    for r in range(rounds):
        for k in range(len(calls)):
            i = (k + r) % len(calls)
            start = time.perf_counter()
            calls[i]()
            times[i].append((time.perf_counter() - start) * 1e3)
    return times


def render(rows: list, labels: dict[str, str], cpu: int, rounds: int) -> list[str]:
    """The report section: idle median against the median and worst of `rounds` calls beside the busy process."""
    lines = [
        "",
        f"## Contention: one busy process pinned to CPU {cpu}",
        "",
        f"Each library's fwd+bwd, {rounds} calls (interleaved rounds) while `python -c 'while True: pass'` runs "
        f"pinned to CPU {cpu} (os.sched_setaffinity); the idle median is the one of the table above. "
        "worst ÷ idle median is the number to watch: how much longer the slowest call of the batch took than a "
        "typical call on a quiet machine.",
        "",
        "| shape | dtype | library | idle median ms | busy median ms | busy worst ms | worst ÷ idle median |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if not r.busy_times_ms or r.fwdbwd_ms is None:
            continue
        worst = max(r.busy_times_ms)
        lines.append(f"| {labels[r.shape]} | {r.dtype} | {r.library} | {r.fwdbwd_ms:.3g} | "
                     f"{statistics.median(r.busy_times_ms):.3g} | {worst:.3g} | {worst / r.fwdbwd_ms:.1f}x |")
    return lines
