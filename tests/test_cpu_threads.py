"""The C++ CPU kernels' thread pool: results that do not depend on which thread took which piece, on how many
threads ran, on how many calls came before or at the same time; no hang."""

import subprocess
import sys
import textwrap

import pytest
import torch

import s2dtw

pytest.importorskip("s2dtw._cpu")

# Every CPU parallel region: one pair shared by every thread (the pipelined strips of the diagonal regime, with and
# without the smoothing passes), one pair per thread (diagonal regime), groups of pairs (lockstep regime), the
# second order's pairs; with S2DTW_SIMD=scalar, the scalar kernel's pairs. Each line: the SIMD level, the thread
# count, a hash of the bits of every value and gradient.
SCRIPT = textwrap.dedent("""
    import hashlib, os, torch, s2dtw
    S2 = {"gamma": 0.1, "smoothing": 0.1, "threshold": 0.5}
    SOFT = {"gamma": 0.1, "smoothing": None, "threshold": None}
    CASES = (((1, 300, 280), SOFT), ((1, 150, 140), S2), ((3, 120, 100), SOFT), ((300, 9, 9), S2))

    def bits(threads):
        torch.set_num_threads(threads)
        g, h = torch.Generator().manual_seed(0), hashlib.sha256()
        for shape, kw in CASES:
            c = (torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_()
            v = s2dtw.s2dtw(cost=c, backend="cpp", **kw)
            v.sum().backward()
            h.update(v.detach().numpy().tobytes() + c.grad.numpy().tobytes())  # bits, not a torch sum
        c = torch.rand(6, 12, 10, generator=g, dtype=torch.float64).requires_grad_()
        (grad,) = torch.autograd.grad(s2dtw.s2dtw(cost=c, backend="cpp", **S2).sum(), c, create_graph=True)
        (hvp,) = torch.autograd.grad((grad * torch.rand(c.shape, generator=g, dtype=torch.float64)).sum(), c)
        h.update(hvp.numpy().tobytes())
        return h.hexdigest()

    for simd in ("", "scalar"):
        os.environ["S2DTW_SIMD"] = simd
        for threads in (1, 2, 3):
            print(simd or "best", threads, bits(threads))
    os.environ["S2DTW_SIMD"] = ""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # this thread only: one processor for 2 threads
    print("pinned", 2, bits(2))
""")


def test_thread_counts_agree_in_a_subprocess():
    # 1, 2 and 3 threads (3: more than a 2-core runner has; 2 on one processor): the same bits.
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    lines = [line.split() for line in out.stdout.splitlines()]
    assert [line[:2] for line in lines] == [[s, t] for s in ("best", "scalar") for t in "123"] + [["pinned", "2"]]
    assert all(line[2] == lines[0][2] for line in lines[:3] + lines[6:]), lines
    assert all(line[2] == lines[3][2] for line in lines[3:6]), lines


@pytest.mark.parametrize("threads", [2, 8])
@pytest.mark.parametrize("shape", [(1, 400, 350), (3, 200, 180), (300, 17, 17)])
def test_bitwise_repeatable(threads, shape):
    # Whichever thread takes a strip, group or pair, the sums are done in the same order.
    g = torch.Generator().manual_seed(4)
    cost = torch.rand(*shape, generator=g, dtype=torch.float64)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = []
        for _ in range(3):
            c = cost.clone().requires_grad_()
            v = s2dtw.soft_dtw(cost=c, gamma=0.1, backend="cpp")
            v.sum().backward()
            results.append((v.detach(), c.grad))
    finally:
        torch.set_num_threads(old)
    for v, grad in results[1:]:
        assert torch.equal(v, results[0][0]) and torch.equal(grad, results[0][1])


# Many short calls, two Python threads at once (the GIL is released: both reach the pool, one gets it, the other
# runs on its own thread), each call's result against the one computed alone before: a stale pool thread taking a
# piece of the next call, or two calls sharing one call's state, changes bits or hangs.
CONCURRENT = textwrap.dedent("""
    import threading, torch, s2dtw
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(1)
    costs = [torch.rand(*shape, generator=g, dtype=torch.float64) for shape in ((40, 9, 7), (1, 48, 40), (3, 30, 26))]

    def fwd_bwd(c):
        c = c.clone().requires_grad_()
        v = s2dtw.s2dtw(cost=c, gamma=0.1, smoothing=0.1, threshold=0.5, backend="cpp")
        v.sum().backward()
        return v.detach(), c.grad

    want = [fwd_bwd(c) for c in costs]
    bad = []

    def caller(offset):
        for k in range(150):
            i = (k + offset) % len(costs)
            v, grad = fwd_bwd(costs[i])
            if not (torch.equal(v, want[i][0]) and torch.equal(grad, want[i][1])):
                bad.append(i)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    caller(0)  # and once more alone, after the pool served both
    print("ok" if not bad else f"mismatch {bad[:5]}")
""")


def test_repeated_and_concurrent_calls_in_a_subprocess():
    out = subprocess.run([sys.executable, "-c", CONCURRENT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok"]
