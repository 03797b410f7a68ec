"""GPU benchmark of the s2dtw CUDA backend: forward + backward time and peak memory.

    python benchmarks/gpu_bench.py            # prints a markdown table, writes $OUT/gpu_bench.md

Cases:
1. VT-TWINS loss step: b = 16 videos x 16 captions, 8 clips each, d = 512, all b^2 pairs,
   cost (neg_dot) included; s2dtw vs the VT-TWINS pipeline (smoothed cost and dense
   (2N+1) x (2M+1) weak grid built with torch ops, then pysdtw's Maghoumi-style soft-DTW).
2. The same with b = 256, 32 clips (65,536 pairs); out-of-memory is reported, not fatal.
3. Plain soft-DTW on a given cost: B=64 512x512, B=8 2048x2048, B=1 8192x8192, vs pysdtw.
4. Cells per second (W cells of every pair, forward + backward) and what bounds them.

Every baseline's values are checked against s2dtw before its time is reported. Times are
medians of CUDA-event timings after warm-up; memory is torch.cuda.max_memory_allocated over
one step after a reset (inputs included).
"""

from __future__ import annotations

import datetime
import math
import os
import statistics
import time
import traceback

import torch

import s2dtw

DEV = torch.device("cuda")
LN3 = math.log(3.0)

try:  # the baseline; never vendored here
    import pysdtw  # type: ignore

    PYSDTW = True
except Exception:  # noqa: BLE001 - any import failure means "not available"
    PYSDTW = False


def timed(step, budget_s: float = 0.6, max_reps: int = 15) -> tuple[float, float]:
    """(median ms, peak MiB) of step() (forward + backward)."""
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    one = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20
    reps = max(3, min(max_reps, int(budget_s / max(one, 1e-6))))
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), peak


def smoothed_cost_torch(cost: torch.Tensor, s: float) -> torch.Tensor:
    """D = C + softmin_s(C[i,j-1], C[i-1,j], C[i-1,j-1]) with torch ops (VT-TWINS style)."""
    big = 1e4  # stands for +inf without NaN gradients through logsumexp
    padded = torch.nn.functional.pad(cost, (1, 0, 1, 0), value=big)
    left, up, diag = padded[:, 1:, :-1], padded[:, :-1, 1:], padded[:, :-1, :-1]
    soft = -s * torch.logsumexp(torch.stack([-left, -up, -diag]) / s, dim=0)
    corner = torch.zeros_like(soft)
    corner[:, 0, 0] = 1
    soft = torch.where(corner.bool(), torch.full_like(soft, -s * LN3), soft)
    return cost + soft


def weak_grid_torch(d: torch.Tensor, threshold: float) -> torch.Tensor:
    b, n, m = d.shape
    w = torch.full((b, 2 * n + 1, 2 * m + 1), threshold, dtype=d.dtype, device=d.device)
    w[:, 1::2, 1::2] = d
    return w


def pysdtw_on_grid(grid: torch.Tensor, gamma: float) -> torch.Tensor:
    """pysdtw's soft-DTW on a precomputed grid (its distance function returns the grid)."""
    sdtw = pysdtw.SoftDTW(gamma=gamma, dist_func=lambda a, b: a, use_cuda=True)
    dummy = torch.zeros(grid.shape[0], grid.shape[2], 1, device=grid.device, dtype=grid.dtype)
    return sdtw(grid, dummy)


ROWS: list[dict] = []


def record(case: str, method: str, ms=None, mib=None, cells=None, note: str = "") -> None:
    row = dict(case=case, method=method, ms=ms, mib=mib, cells=cells, note=note)
    ROWS.append(row)
    ms_s = "-" if ms is None else f"{ms:.3f}"
    print(f"{case:34s} {method:28s} {ms_s:>10s} ms  {note}", flush=True)


def run_case(case: str, method: str, step, cells: float, check=None, regime: str | None = None) -> None:
    old = os.environ.get("S2DTW_CUDA_REGIME")
    if regime is not None:
        os.environ["S2DTW_CUDA_REGIME"] = regime
    try:
        if check is not None:
            msg = check()
            if msg:
                record(case, method, note=f"values differ from s2dtw: {msg}; not timed")
                return
        ms, mib = timed(step)
        record(case, method, ms, mib, cells)
    except torch.cuda.OutOfMemoryError:
        record(case, method, note="out of memory")
    except Exception as err:  # noqa: BLE001 - a failing baseline is a result, not a crash
        record(case, method, note=f"fails: {type(err).__name__}: {str(err).splitlines()[0][:120]}")
    finally:
        if regime is not None:
            if old is None:
                os.environ.pop("S2DTW_CUDA_REGIME", None)
            else:
                os.environ["S2DTW_CUDA_REGIME"] = old
        torch.cuda.empty_cache()


def vt_twins(
    b: int, clips: int, d: int = 512, gamma: float = 0.1, smoothing: float = 0.1, threshold: float = 0.5
) -> None:
    case = f"VT-TWINS b={b}, {clips} clips ({b * b} pairs)"
    gen = torch.Generator(device=DEV).manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(b, clips, d, device=DEV, generator=gen), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(b, clips, d, device=DEV, generator=gen), dim=-1)
    x.requires_grad_(True)
    y.requires_grad_(True)

    def all_pairs_cost():
        # neg_dot of every video against every caption: (b*b, clips, clips)
        return -torch.einsum("ind,jmd->ijnm", x, y).reshape(b * b, clips, clips)

    def ours():
        value = s2dtw.s2dtw(
            cost=all_pairs_cost(), gamma=gamma, smoothing=smoothing, threshold=threshold, backend="cuda"
        )
        value.sum().backward()
        return value

    def baseline():
        grid = weak_grid_torch(smoothed_cost_torch(all_pairs_cost(), smoothing), threshold)
        value = pysdtw_on_grid(grid, gamma)
        value.sum().backward()
        return value

    cells = b * b * (2 * clips + 1) ** 2
    run_case(case, "s2dtw (auto)", ours, cells)
    run_case(case, "s2dtw (thread per pair)", ours, cells, regime="thread")
    run_case(case, "s2dtw (block per pair)", ours, cells, regime="block")
    if not PYSDTW:
        record(case, "VT-TWINS pipeline + pysdtw", note="pysdtw not installed")
        return

    def check():
        with torch.no_grad():
            ref = s2dtw.s2dtw(
                cost=all_pairs_cost(), gamma=gamma, smoothing=smoothing, threshold=threshold, backend="cuda"
            )
            got = pysdtw_on_grid(weak_grid_torch(smoothed_cost_torch(all_pairs_cost(), smoothing), threshold), gamma)
        err = (got.float() - ref.float()).abs().max().item()
        return "" if err <= 1e-3 * (1 + ref.abs().max().item()) else f"max |diff| {err:.3g}"

    run_case(case, "VT-TWINS pipeline + pysdtw", baseline, cells, check=check)


def plain(batch: int, n: int, gamma: float = 1.0) -> None:
    case = f"soft-DTW B={batch}, {n}x{n}"
    gen = torch.Generator(device=DEV).manual_seed(1)
    cost = torch.rand(batch, n, n, device=DEV, generator=gen).requires_grad_(True)

    def ours():
        value = s2dtw.soft_dtw(cost=cost, gamma=gamma, backend="cuda")
        value.sum().backward()
        cost.grad = None
        return value

    cells = batch * n * n
    run_case(case, "s2dtw", ours, cells)
    if not PYSDTW:
        record(case, "pysdtw", note="pysdtw not installed")
        return

    def baseline():
        value = pysdtw_on_grid(cost, gamma)
        value.sum().backward()
        cost.grad = None
        return value

    def check():
        with torch.no_grad():
            ref = s2dtw.soft_dtw(cost=cost, gamma=gamma, backend="cuda")
            got = pysdtw_on_grid(cost.detach(), gamma)
        err = (got.float() - ref.float()).abs().max().item()
        return "" if err <= 1e-4 * (1 + ref.abs().max().item()) else f"max |diff| {err:.3g}"

    run_case(case, "pysdtw", baseline, cells, check=check)


def main() -> None:
    if not torch.cuda.is_available() or not s2dtw.backends()["cuda"]:
        raise SystemExit("needs a CUDA device and the s2dtw CUDA module")
    t_start = time.perf_counter()
    props = torch.cuda.get_device_properties(DEV)
    header = [
        "# s2dtw GPU benchmark",
        "",
        f"- device: {props.name} ({props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB)",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- torch {torch.__version__}, CUDA {torch.version.cuda}, pysdtw {'installed' if PYSDTW else 'not installed'}",
        "- forward + backward, float32, median of CUDA-event timings after warm-up; peak = "
        "torch.cuda.max_memory_allocated over one step (inputs included)",
        "",
    ]
    print("\n".join(header), flush=True)

    for name, fn in [
        ("vt16", lambda: vt_twins(16, 8)),
        ("vt256", lambda: vt_twins(256, 32)),
        ("p512", lambda: plain(64, 512)),
        ("p2048", lambda: plain(8, 2048)),
        ("p8192", lambda: plain(1, 8192)),
    ]:
        try:
            fn()
        except Exception:  # noqa: BLE001 - keep the other cases
            traceback.print_exc()
            record(name, "-", note="case crashed (see log)")

    lines = header + [
        "| case | method | fwd+bwd ms | peak MiB | W cells/s | note |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in ROWS:
        ms = "-" if r["ms"] is None else f"{r['ms']:.3f}"
        mib = "-" if r["mib"] is None else f"{r['mib']:.0f}"
        rate = "-" if r["ms"] is None or not r["cells"] else f"{r['cells'] / (r['ms'] * 1e-3):.3g}"
        lines.append(f"| {r['case']} | {r['method']} | {ms} | {mib} | {rate} | {r['note']} |")
    lines += [
        "",
        "Bounds (W cells/s counts every cell of every pair's soft-DTW grid, forward + backward):",
        "- thread-per-pair regime (many tiny grids): every lane busy, no barriers; bound by the",
        "  per-cell dependency chain (float64 adds, float32 exp/log) and the tape's memory traffic",
        "  (8 bytes per cell written then read in float32).",
        "- block-per-pair regime (long pairs): one SM per pair, one __syncthreads per anti-diagonal",
        "  step; bound by the step latency x (P + Q) steps per strip. B=1 uses one SM only, so",
        "  8192x8192 runs at a single SM's rate; B >= #SMs fills the GPU.",
        f"- whole benchmark: {time.perf_counter() - t_start:.0f} s",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = os.environ.get("OUT") or "."
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "gpu_bench.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
