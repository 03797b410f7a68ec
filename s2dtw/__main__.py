"""``python -m s2dtw``: what is installed, a demo, and a short micro-benchmark on this machine."""

from __future__ import annotations

import functools
import platform
import statistics
import time

import torch

import s2dtw

PICTURE = "s2dtw_demo_alignment.png"


def _time_fwd_bwd(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of fn().sum().backward() after one warm-up run."""
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


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


def benchmark() -> None:
    """Forward+backward medians; cells are those of the grid the recursion walks."""
    cases = [
        ("S2DTW, 1024 pairs of 8x8 (17x17 grids)", dict(smoothing=0.1, threshold=0.5), 1024, 8, 8, 0.1),
        ("soft-DTW, 8 pairs of 256x256", dict(smoothing=None, threshold=None), 8, 256, 256, 1.0),
    ]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if s2dtw.backends()["cuda"] else [])
    print(f"\nmicro-benchmark: forward+backward, median, float32, {torch.get_num_threads()} CPU threads")
    print(f"  {'case':42s} {'backend':8s} {'ms':>9s} {'Mcells/s':>9s}")
    for title, variant, batch, n, m, gamma in cases:
        grid_cells = batch * ((2 * n + 1) * (2 * m + 1) if variant["threshold"] is not None else n * m)
        for device in devices:
            names = ["cuda"] if device.type == "cuda" else [b for b in ("cpp", "numba") if s2dtw.backends()[b]]
            for name in names:
                cost = torch.randn(batch, n, m, device=device, requires_grad=True)
                run = functools.partial(s2dtw.s2dtw, cost=cost, gamma=gamma, backend=name, **variant)
                seconds = _time_fwd_bwd(run, 5, device)
                print(f"  {title:42s} {name:8s} {seconds * 1e3:9.2f} {grid_cells / seconds / 1e6:9.1f}")


def main() -> None:
    info = s2dtw.backends()
    cuda_name = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"s2dtw {s2dtw.__version__}, torch {torch.__version__}, Python {platform.python_version()}")
    print(f"machine: {platform.machine()} {platform.processor() or ''}, GPU: {cuda_name}")
    print("backends: " + ", ".join(f"{k}={v}" for k, v in info.items() if k != "default"))
    print(f"default backend per device: {info['default']}\n")
    demo()
    benchmark()


if __name__ == "__main__":
    main()
