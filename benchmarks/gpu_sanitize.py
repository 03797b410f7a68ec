"""One tiny problem per CUDA regime and dtype, for compute-sanitizer (benchmarks/gpu_check.sh).

    compute-sanitizer --tool memcheck python3 benchmarks/gpu_sanitize.py

Each call runs the fused forward + backward kernel on a batch with ragged lengths (the block regime
with 32-row strips over a 41-row weak grid, so two strips and a strip boundary), once more with a
band, and checks the values and gradients against the C++ backend; exits 1 on a mismatch.
"""

from __future__ import annotations

import os
import sys

import torch

import s2dtw


def main() -> int:
    if not torch.cuda.is_available() or not s2dtw.backends()["cuda"]:
        print("no GPU (or no CUDA module): nothing to sanitize")
        return 0
    gen = torch.Generator().manual_seed(0)
    cost = torch.randn(3, 20, 9, generator=gen, dtype=torch.float64)
    lengths = dict(x_lengths=[20, 7, 1], y_lengths=[9, 9, 4])
    failures = 0
    for regime in ("thread", "block"):
        os.environ["S2DTW_CUDA_REGIME"] = regime
        os.environ["S2DTW_CUDA_STRIP"] = "32" if regime == "block" else ""
        for dtype in (torch.float32, torch.float64):
            for bandwidth in (None, 2.0):
                out = {}
                for backend, device in (("cuda", "cuda"), ("cpp", "cpu")):
                    c = cost.to(device=device, dtype=dtype).requires_grad_()
                    value = s2dtw.s2dtw(cost=c, gamma=0.3, bandwidth=bandwidth, backend=backend, **lengths)
                    value.sum().backward()
                    out[backend] = value.detach().cpu().double(), c.grad.cpu().double()
                tol = 1e-9 if dtype == torch.float64 else 1e-4
                ok = all(torch.allclose(a, b, rtol=tol, atol=tol) for a, b in zip(out["cuda"], out["cpp"], strict=True))
                failures += not ok
                print(f"{regime:6s} {str(dtype):14s} band={bandwidth}: {'ok' if ok else 'MISMATCH'}", flush=True)
    torch.cuda.synchronize()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
