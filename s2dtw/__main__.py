"""``python -m s2dtw``: what is installed, a demo, and a short micro-benchmark on this machine."""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time

import torch

import s2dtw
from s2dtw._band import grid_extent

PICTURE = "s2dtw_demo_alignment.png"


def _time_fwd_bwd(fn, min_repeats: int, seconds: float, device: torch.device) -> list[float]:
    """Seconds of each fn().sum().backward(), after two warm-up runs: at least `min_repeats` of them, and more
    until `seconds` have passed (a median of many is stable where one of five is not)."""
    times: list[float] = []
    spent = 0.0
    for i in range(2 + min_repeats + 100_000):
        if i >= 2 + min_repeats and spent >= seconds:
            break
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        if i >= 2:
            times.append(elapsed)
            spent += elapsed
    return times


def _load_note() -> str:
    """The 1-minute load average against the CPUs this process may use: other work makes timings noisy."""
    if not hasattr(os, "getloadavg"):
        return "load average unknown"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = os.getloadavg()[0]
    verdict = "idle enough" if load < 0.5 * cpus else "BUSY: other processes share the cores, times are inflated"
    return f"load average {load:.2f} on {cpus} CPU(s): {verdict}"


def demo() -> None:
    """Eight videos of 8 clips against their captions (5 to 8 sentences), every backend."""
    torch.manual_seed(0)
    video = torch.nn.functional.normalize(torch.randn(8, 8, 64, dtype=torch.float64), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(8, 8, 64, dtype=torch.float64), dim=-1)
    lengths = torch.tensor([8, 7, 5, 8, 6, 8, 5, 7])
    print("demo: S2DTW of 8 video/caption pairs (8 clips, 5-8 captions, d=64), float64")
    results = {}
    for name in ("cpp", "numba", "numpy"):
        if not s2dtw.backends()[name]:
            continue
        v = video.clone().requires_grad_()
        value = s2dtw.s2dtw(v, text, y_lengths=lengths, backend=name)
        value.sum().backward()
        results[name] = (value.detach(), v.grad)
    want_value, want_grad = results["numpy"]
    for name, (value, grad) in results.items():
        err = max((value - want_value).abs().max().item(), (grad - want_grad).abs().max().item())
        print(f"  {name:6s} values {value[:3].numpy().round(4)} ...  max |diff| vs numpy reference {err:.1e}")

    # The third pair has 8 clips but 5 captions: some clips must be skipped.
    result = s2dtw.soft_alignment(video, text, y_lengths=lengths)
    print(f"  pair 2: clips skipped (mass on null cells) {result.x_skipped[2].numpy().round(2)}")
    try:
        s2dtw.plot_alignment(-video @ text.transpose(1, 2), result, index=2, path=PICTURE)
        print(f"  wrote {PICTURE} (cost, expected alignment and skipped mass of pair 2)")
    except ImportError as err:
        print(f"  no picture: {err}")


def benchmark(min_repeats: int, seconds: float) -> None:
    """Forward+backward medians; cells are those of the grid the recursion walks."""
    cases = [
        ("S2DTW, 1024 pairs of 8x8 (17x17 grids)", dict(smoothing=0.1, threshold=0.5), 1024, 8, 8, 0.1),
        ("soft-DTW, 8 pairs of 256x256", dict(smoothing=None, threshold=None), 8, 256, 256, 1.0),
    ]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if s2dtw.backends()["cuda"] else [])
    info = s2dtw.backends()
    print(f"\nmicro-benchmark: forward+backward, float32, {torch.get_num_threads()} CPU threads, "
          f"C++ SIMD level {info['simd']}; median of >= {min_repeats} repeats and >= {seconds:g} s")
    print(f"  before: {_load_note()}")
    print(f"  {'case':42s} {'backend':8s} {'median ms':>9s} {'min ms':>8s} {'max ms':>8s} {'reps':>5s} "
          f"{'Mcells/s':>9s}")
    for title, variant, batch, n, m, gamma in cases:
        weak = variant["threshold"] is not None
        grid_cells = batch * grid_extent(weak, n) * grid_extent(weak, m)
        for device in devices:
            names = ["cuda"] if device.type == "cuda" else [b for b in ("cpp", "numba") if s2dtw.backends()[b]]
            for name in names:
                cost = torch.randn(batch, n, m, device=device, requires_grad=True)
                run = functools.partial(s2dtw.s2dtw, cost=cost, gamma=gamma, backend=name, **variant)
                times = _time_fwd_bwd(run, min_repeats, seconds, device)
                median = statistics.median(times)
                print(f"  {title:42s} {name:8s} {median * 1e3:9.2f} {min(times) * 1e3:8.2f} {max(times) * 1e3:8.2f} "
                      f"{len(times):5d} {grid_cells / median / 1e6:9.1f}")
    print(f"  after:  {_load_note()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m s2dtw", description=__doc__)
    parser.add_argument("--no-demo", action="store_true", help="skip the demo (and its picture)")
    parser.add_argument("--no-benchmark", action="store_true", help="skip the micro-benchmark")
    parser.add_argument("--repeats", type=int, default=20, help="minimum timed repeats per case (default 20)")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="keep repeating a case until this many seconds were timed (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.seconds < 0:
        parser.error("--repeats must be >= 1 and --seconds >= 0")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    info = s2dtw.backends()
    cuda_name = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"s2dtw {s2dtw.__version__}, torch {torch.__version__}, Python {platform.python_version()}")
    print(f"machine: {platform.machine()} {platform.processor() or ''}, GPU: {cuda_name}")
    print("backends: " + ", ".join(f"{k}={v}" for k, v in info.items() if k != "default"))
    print(f"default backend per device: {info['default']}\n")
    if not args.no_demo:
        demo()
    if not args.no_benchmark:
        benchmark(args.repeats, args.seconds)


if __name__ == "__main__":
    main()
