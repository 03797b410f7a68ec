"""The C++ CPU kernels' threads: fewer threads than asked for, repeatable results under dynamic scheduling."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import s2dtw

pytest.importorskip("s2dtw._cpu")

# One pair shared by every thread (the pipelined strips of the diagonal regime), with and
# without the smoothing passes (their own barriers and work counters); then a pair per
# thread (diagonal) and groups of pairs (lockstep).
SCRIPT = textwrap.dedent("""
    import hashlib, sys, torch, s2dtw
    torch.set_num_threads(int(sys.argv[1]))
    g = torch.Generator().manual_seed(0)
    cases = [((1, 300, 280), {}), ((1, 150, 140), {"smoothing": 0.1, "threshold": 0.5}),
             ((3, 200, 180), {}), ((300, 17, 17), {"smoothing": 0.1, "threshold": 0.5})]
    for shape, kw in cases:
        kw = dict(kw, gamma=0.1)
        c = (torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_()
        fn = s2dtw.s2dtw if "smoothing" in kw else s2dtw.soft_dtw
        v = fn(cost=c, backend="cpp", **kw)
        v.sum().backward()
        # The gradient's bytes, not a torch sum of it: torch's own reduction order follows the thread count.
        print(*(hashlib.sha1(t.detach().numpy().tobytes()).hexdigest() for t in (v, c.grad)))
""")


def _run(env_extra: dict, threads: int) -> list[str]:
    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(threads)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.parametrize("limit", [{"OMP_THREAD_LIMIT": "1"}, {"OMP_DYNAMIC": "true"}])
def test_fewer_threads_than_requested(limit):
    # OpenMP may start fewer threads than num_threads asks for: the pair's waits must count
    # the team that runs (this hung forever when they counted the request).
    assert _run(limit, 2) == _run({}, 1)


def test_thread_count_does_not_change_results():
    # The kernels may run fewer threads than asked for when other processes hold cores
    # (thread_team.h, CoreShare): that is only safe while the bits do not depend on the count.
    assert _run({}, 2) == _run({}, 1)


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
