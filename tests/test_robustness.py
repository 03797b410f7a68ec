"""Issue #10: what the kernels are handed is checked, and every documented precondition raises
a clear error. The cases that used to crash run in a subprocess, so that a regression fails
the test instead of killing pytest."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import s2dtw
from s2dtw import _reference


def run_python(code: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter; returns the finished process (a crash is a nonzero returncode).

    It runs in its own process group, killed whole on timeout: a hung forked grandchild must not outlive it.
    """
    with subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def assert_prints_ok(code: str, timeout: float = 120, env: dict | None = None) -> None:
    done = run_python(textwrap.dedent(code) + "\nprint('ok')", timeout, env)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), (done.returncode, done.stderr[-2000:])


def test_expanded_and_strided_lengths_are_read_as_given_in_a_subprocess(cpu_backend):
    assert_prints_ok(f"""
        import torch, s2dtw
        cost = torch.rand(4, 6, 5, dtype=torch.float64)
        # An expanded tensor has stride 0: read as contiguous it runs past its one element.
        expanded = s2dtw.s2dtw(cost=cost, y_lengths=torch.tensor([3]).expand(4), backend="{cpu_backend}")
        want = s2dtw.s2dtw(cost=cost, y_lengths=[3] * 4, backend="{cpu_backend}")
        assert torch.equal(expanded, want), (expanded, want)
        # Validated as [6, 6, 6, 6]; read as contiguous it was [6, 3, 6, 3].
        strided = s2dtw.s2dtw(cost=cost, x_lengths=torch.tensor([6, 3] * 4)[::2], backend="{cpu_backend}")
        assert torch.equal(strided, s2dtw.s2dtw(cost=cost, backend="{cpu_backend}")), strided
        x, y = torch.randn(4, 6, 3, dtype=torch.float64), torch.randn(4, 5, 3, dtype=torch.float64)
        lengths = torch.tensor([2, 5, 4, 3, 1, 5, 2, 4])[1::2]
        loss = s2dtw.S2DTWLoss(reduction="none", backend="{cpu_backend}")(x, y, y_lengths=lengths)
        assert torch.equal(loss, s2dtw.s2dtw(x, y, y_lengths=lengths.tolist(), backend="{cpu_backend}"))
        aligned = s2dtw.soft_alignment(cost=cost, y_lengths=lengths, backend="{cpu_backend}")
        assert torch.all(aligned.alignment[0, :, 5:] == 0) and torch.all(aligned.alignment[1, :, 4:] == 0)
    """)


def test_kernels_reject_pairs_outside_their_region_or_buffer_in_a_subprocess(cpu_backend):
    """Past the Python checks (as under torch.compile), the kernels check every pair themselves."""
    assert_prints_ok(f"""
        import torch
        from s2dtw._dispatch import run
        from s2dtw._problem import Layout, Params, Problem

        def raises(message, cost, pair_n, pair_m, need_grad=True):
            try:
                layout = Layout.batched(cost, torch.tensor(pair_n), torch.tensor(pair_m))
                run("{cpu_backend}", cost, Problem(layout, Params(0.1, 0.1, 0.5)), need_grad)
            except ValueError as err:
                assert message in str(err), err
            else:
                raise AssertionError(f"lengths {{pair_n}} x {{pair_m}} were accepted")

        cost = torch.rand(4, 6, 5, dtype=torch.float64)
        for bad in ([6, 3, 4, 600], [6, 0, 4, 5], [6, -3, 4, 5], [7, 6, 6, 6]):
            raises("[1, 6]", cost, bad, [5] * 4)
            raises("[1, 5]", cost, [6] * 4, [min(max(v, -3), 600) - 1 for v in bad], need_grad=False)
        layout = Layout.batched(torch.empty(3, 6, 5), torch.full((3,), 6), torch.full((3,), 5))
        try:
            run("{cpu_backend}", cost[:2].contiguous(), Problem(layout, Params(0.1, None, None)), True)
        except ValueError as err:
            assert "does not fit a cost buffer of 60 elements" in str(err), err
        else:
            raise AssertionError("a layout of 3 pairs was run on a buffer of 2")
    """)


def test_torch_compile_with_lengths_outside_the_padding_raises_in_a_subprocess():
    assert_prints_ok("""
        import torch, s2dtw
        f = torch.compile(lambda c, xl: s2dtw.s2dtw(cost=c, x_lengths=xl), fullgraph=True)
        cost = torch.rand(4, 6, 5, dtype=torch.float64)
        assert torch.equal(f(cost, torch.tensor([6, 3, 4, 2])), s2dtw.s2dtw(cost=cost, x_lengths=[6, 3, 4, 2]))
        for bad in ([6, 3, 4, 600], [6, 0, 4, 5], [-1, 3, 4, 5]):
            try:
                f(cost, torch.tensor(bad))
            except Exception as err:
                assert "outside [1, 6]" in str(err), err
            else:
                raise AssertionError(f"lengths {bad} were accepted")
    """, timeout=300)


def test_metric_callables_must_return_exactly_b_n_m_in_a_subprocess():
    assert_prints_ok("""
        import torch, s2dtw
        x, y = torch.randn(2, 4, 3), torch.randn(2, 5, 3)
        for metric in (lambda a, b: torch.cdist(b, a), lambda a, b: torch.zeros(2, 6, 7)):
            try:
                s2dtw.s2dtw(x, y, metric=metric)
            except ValueError as err:
                assert "the metric must return a cost of shape (B, N, M) = (2, 4, 5)" in str(err), err
            else:
                raise AssertionError("a wrong-shaped metric was accepted")
    """)


@pytest.mark.parametrize("lengths", [[2.7, 3.9], [True, True], np.array([2.0, 3.0]), [2, 3.5]])
def test_lengths_lists_of_non_integers_are_rejected_like_tensors(lengths):
    with pytest.raises(TypeError, match="x_lengths must hold integers"):
        s2dtw.s2dtw(cost=torch.rand(2, 4, 3), x_lengths=lengths)


def test_lengths_of_numpy_integers_still_work():
    cost = torch.rand(2, 4, 3, dtype=torch.float64)
    want = s2dtw.s2dtw(cost=cost, x_lengths=[2, 3])
    torch.testing.assert_close(s2dtw.s2dtw(cost=cost, x_lengths=np.array([2, 3])), want, rtol=0, atol=0)
    torch.testing.assert_close(s2dtw.s2dtw(cost=cost, x_lengths=[np.int32(2), 3]), want, rtol=0, atol=0)


@pytest.mark.parametrize("metric", ["neg_dot", "sqeuclidean", "neg_cosine"])
def test_finite_inputs_that_overflow_the_cost_raise(cpu_backend, metric):
    x, y = torch.full((1, 3, 2), 1e20), torch.full((1, 4, 2), 1e20)
    if metric == "neg_cosine":  # normalised rows cannot overflow: it must just work
        assert torch.isfinite(s2dtw.s2dtw(x, y, metric=metric, backend=cpu_backend)).all()
        return
    with pytest.raises(ValueError, match="cost contains NaN or inf"):
        s2dtw.s2dtw(x, y, metric=metric, backend=cpu_backend)
    with pytest.raises(ValueError, match="cost contains NaN or inf"):
        s2dtw.pairwise(x, y, metric=metric, backend=cpu_backend)


@pytest.mark.parametrize("name", ["gamma", "smoothing"])
def test_subnormal_temperatures_are_rejected(name):
    with pytest.raises(ValueError, match=f"{name}=1e-310 is too small: 1/{name} overflows"):
        s2dtw.s2dtw(cost=torch.rand(1, 3, 3), **{name: 1e-310})
    with pytest.raises(ValueError, match="temperature=1e-310 is too small"):
        s2dtw.S2DTWContrastiveLoss(temperature=1e-310)
    assert torch.isfinite(s2dtw.s2dtw(cost=torch.rand(1, 3, 3), **{name: 1e-300})).all()


@pytest.mark.parametrize("value", [np.float32(0.5), np.float64(0.5), np.int64(1), torch.tensor(0.5),
                                   torch.tensor(1, dtype=torch.int32), 1])
def test_real_number_types_are_accepted(value):
    cost = torch.rand(2, 3, 4, dtype=torch.float64)
    got = s2dtw.s2dtw(cost=cost, gamma=value, smoothing=value, threshold=value, bandwidth=value + 2)
    want = s2dtw.s2dtw(cost=cost, gamma=float(value), smoothing=float(value), threshold=float(value),
                       bandwidth=float(value) + 2)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    s2dtw.S2DTWContrastiveLoss(temperature=value)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(gamma=True), TypeError, "gamma must be a real number, got the bool True"),
    (dict(smoothing=np.bool_(True)), TypeError, "smoothing must be a real number, got the bool"),
    (dict(threshold=torch.tensor(True)), TypeError, "threshold must be a real number, got the bool"),
    (dict(gamma="0.1"), TypeError, r"gamma must be a real number \(int, float, NumPy scalar or 0-d tensor\)"),
    (dict(gamma=torch.tensor([0.5, 0.5])), TypeError, r"gamma must be a real number or a 0-d"),
    (dict(gamma=torch.tensor(0.5, device="meta")), TypeError, "on meta"),
    (dict(bandwidth=False), TypeError, "bandwidth must be a real number, got the bool"),
    (dict(backend=1), ValueError, r"backend=1 is not one of"),
    (dict(normalize="no"), TypeError, "normalize must be a bool, got 'no'"),
    (dict(metric="bogus"), ValueError, "metric must be one of"),
])
def test_option_types_get_clear_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        s2dtw.s2dtw(torch.randn(1, 3, 2), torch.randn(1, 4, 2), **kwargs)


def test_losses_check_their_options_at_construction():
    with pytest.raises(ValueError, match="metric must be one of"):
        s2dtw.S2DTWLoss(metric="bogus")
    with pytest.raises(TypeError, match="normalize must be a bool"):
        s2dtw.SoftDTWLoss(normalize="no")
    with pytest.raises(ValueError, match="backend=1 is not one of"):
        s2dtw.S2DTWContrastiveLoss(backend=1)


def test_meta_tensors_get_a_clear_error():
    meta = torch.randn(2, 4, 3, device="meta")
    with pytest.raises(ValueError, match="s2dtw runs on CPU and CUDA tensors, got x on meta"):
        s2dtw.s2dtw(meta, meta)
    with pytest.raises(ValueError, match="got cost on meta"):
        s2dtw.s2dtw(cost=meta)
    with pytest.raises(ValueError, match="got x_lengths on meta"):
        s2dtw.s2dtw(cost=torch.rand(2, 4, 3), x_lengths=torch.ones(2, dtype=torch.int64, device="meta"))


def test_contrastive_loss_rejects_lists_clearly():
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        s2dtw.S2DTWContrastiveLoss()([torch.randn(3, 2)], [torch.randn(3, 2)])


def test_soft_alignment_rejects_sequences_and_a_cost_together():
    x, y = torch.randn(1, 3, 2), torch.randn(1, 4, 2)
    with pytest.raises(ValueError, match="not both"):
        s2dtw.soft_alignment(x, y, cost=torch.rand(1, 3, 4))
    with pytest.raises(ValueError, match="metric must be one of"):
        s2dtw.soft_alignment(x, y, metric="bogus")


def test_suggested_bandwidth_really_works():
    for n, m, weak in [(2, 10, False), (6, 1, True), (7, 3, False), (12, 5, True), (3, 17, True)]:
        kwargs = dict(cost=torch.rand(1, n, m), threshold=0.5 if weak else None, smoothing=None)
        with pytest.raises(ValueError, match="Use bandwidth >= ") as info:
            s2dtw.s2dtw(bandwidth=0, **kwargs)
        suggested = float(str(info.value).split("Use bandwidth >= ")[1].split(" ")[0])
        assert torch.isfinite(s2dtw.s2dtw(bandwidth=suggested, **kwargs)).all(), (n, m, suggested)


def test_double_backward_is_the_hessian_and_a_third_order_raises(cpu_backend):
    """create_graph=True differentiates again through the second-order kernels (tests/test_second_order.py checks
    them); a third derivative raises instead of a silently zero term."""
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 5, 3, dtype=torch.float64)
    value = s2dtw.s2dtw(x, y, backend=cpu_backend).sum()
    (grad,) = torch.autograd.grad(value, x, create_graph=True)
    (plain,) = torch.autograd.grad(s2dtw.s2dtw(x, y, backend=cpu_backend).sum(), x)
    torch.testing.assert_close(grad, plain, rtol=0, atol=0)  # first order with create_graph=True is unchanged
    (penalty,) = torch.autograd.grad(grad.pow(2).sum(), x, create_graph=True)  # a gradient penalty
    assert torch.isfinite(penalty).all() and penalty.abs().max() > 0
    with pytest.raises(RuntimeError, match="third-order gradients .* are not implemented"):
        penalty.sum().backward()


@pytest.mark.parametrize("cost_scale", [-1e30, 1e30, 1e307])
def test_reference_gradient_is_finite_and_matches_the_kernels_for_extreme_costs(cost_scale):
    rng = np.random.default_rng(3)
    cost = cost_scale * (1 + rng.random((2, 3, 4)) / 10)
    value, grad = _reference.align(cost, np.array([3, 2]), np.array([4, 3]), 0.1, None, None)
    assert np.all(np.isfinite(grad)) and not np.any(np.isnan(value))
    if s2dtw.backends()["cpp"]:
        c = torch.tensor(cost, requires_grad=True)
        kernel = s2dtw.soft_dtw(cost=c, gamma=0.1, x_lengths=[3, 2], y_lengths=[4, 3], backend="cpp")
        (kernel_grad,) = torch.autograd.grad(kernel.sum(), c)
        np.testing.assert_allclose(kernel.detach().numpy(), value, rtol=1e-12)
        np.testing.assert_allclose(kernel_grad.numpy(), grad, rtol=1e-10, atol=1e-12)


def test_plot_alignment_leaves_the_backend_and_pyplot_alone(tmp_path):
    assert_prints_ok(f"""
        import matplotlib
        matplotlib.use("svg")
        import matplotlib.pyplot as plt
        import torch, s2dtw
        cost = torch.rand(1, 4, 5)
        result = s2dtw.soft_alignment(cost=cost)
        for _ in range(3):
            fig = s2dtw.plot_alignment(cost, result, path={str(tmp_path / "a.png")!r})
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        assert plt.get_fignums() == [], plt.get_fignums()
        assert len(fig.axes) >= 3
    """)


@pytest.mark.parametrize("backend", ["cpp", "numba"])
def test_forked_children_compute_instead_of_hanging_or_aborting_in_a_subprocess(backend):
    """DataLoader workers: the parent has run its thread pool, then forks; each child asks for 2 threads."""
    if not s2dtw.backends()[backend]:
        pytest.skip(f"{backend} is not available")
    assert_prints_ok(f"""
        import os, torch, s2dtw
        torch.set_num_threads(2)
        small, large = torch.rand(8, 6, 5, dtype=torch.float64), torch.rand(1, 150, 140, dtype=torch.float64)
        want = [s2dtw.s2dtw(cost=c, backend="{backend}") for c in (small, large)]  # starts the thread pools
        children = []
        for _ in range(2):
            pid = os.fork()
            if pid == 0:
                torch.set_num_threads(2)
                ok = all(torch.allclose(s2dtw.s2dtw(cost=c, backend="{backend}"), w, rtol=1e-12, atol=0)
                         for c, w in zip((small, large), want))
                os._exit(0 if ok else 3)
            children.append(pid)
        for pid in children:
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    """, timeout=240)


@pytest.mark.skipif(not s2dtw.backends()["cpp"], reason="the C++ extension was not built")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="under ASan (tests/sanitize.sh) running out of memory aborts in ASan's own report")
@pytest.mark.parametrize("simd", ["scalar", "best"])
def test_out_of_memory_says_the_size_and_pins_nothing_in_a_subprocess(simd):
    env = {name: value for name, value in os.environ.items() if name != "S2DTW_SIMD"}
    if simd == "scalar":
        env["S2DTW_SIMD"] = "scalar"
    assert_prints_ok("""
        import re, resource, torch, s2dtw

        def vm(key):  # bytes of address space (VmSize) or memory in use (VmRSS)
            return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) << 10

        cost = torch.rand(1, 6000, 6000, requires_grad=True)  # its tape: 2 x 12001^2 floats, 1.15 GB
        s2dtw.s2dtw(cost=torch.rand(1, 300, 300, requires_grad=True))  # starts the threads: their stacks, arenas
        before = vm("VmRSS")
        resource.setrlimit(resource.RLIMIT_AS, (vm("VmSize") + (900 << 20), resource.RLIM_INFINITY))
        try:
            s2dtw.s2dtw(cost=cost, backend="cpp")
        except MemoryError as err:
            assert re.search(r"out of memory allocating a workspace of \\d+ bytes", str(err)), err
        else:
            raise AssertionError("no MemoryError")
        assert vm("VmRSS") - before < 64 << 20, (vm("VmRSS") - before) >> 20  # nothing stays pinned
        assert s2dtw._cpu.workspace_bytes() < 64 << 20
        s2dtw.s2dtw(cost=torch.rand(2, 30, 20), backend="cpp")  # and it still works
    """, env=env)


@pytest.mark.skipif(not s2dtw.backends()["cpp"] or s2dtw.backends()["simd"] == "scalar",
                    reason="the workspace cache belongs to the SIMD kernels")
def test_the_workspace_cache_bound_holds_over_threads_and_dtypes_in_a_subprocess():
    assert_prints_ok("""
        import re, threading, torch, s2dtw

        def rss():
            return int(re.search(r"VmRSS:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) << 10

        done, release = [], threading.Event()

        def call(dtype):  # ~120 MB of tape each (a 2741 x 2741 weak grid), kept by an idle thread
            s2dtw.s2dtw(cost=torch.rand(1, 1370, 1370, dtype=dtype, requires_grad=True), backend="cpp")
            done.append(s2dtw._cpu.workspace_bytes() if hasattr(s2dtw._cpu, "workspace_bytes") else 1)
            release.wait()

        threads = [threading.Thread(target=call, args=(dtype,)) for dtype in [torch.float64] * 3 + [torch.float32]]
        s2dtw.s2dtw(cost=torch.rand(1, 300, 300, requires_grad=True), backend="cpp")  # OpenMP threads, arenas
        before = rss()
        for t in threads:  # one after the other: each call finds the others' caches
            t.start()
            while len(done) < threads.index(t) + 1:
                t.join(0.05)
        grown = rss() - before
        kept = s2dtw._cpu.workspace_bytes() if hasattr(s2dtw._cpu, "workspace_bytes") else grown
        release.set()
        for t in threads:
            t.join()
        assert grown < (256 + 64) << 20, (grown, done, kept)  # the cache's 256 MiB, and a little more
        assert 0 < max(done) <= 256 << 20 and 0 < kept <= 256 << 20, (grown, done, kept)
        # Ended threads free theirs. Thread.join returns once the Python thread state is gone, a moment
        # before the OS thread runs its C++ thread_local destructors: wait for those (at most 10 s).
        import time
        deadline = time.monotonic() + 10
        while s2dtw._cpu.workspace_bytes() >= kept and time.monotonic() < deadline:
            time.sleep(0.01)
        assert s2dtw._cpu.workspace_bytes() < kept, (s2dtw._cpu.workspace_bytes(), kept)
    """, timeout=300, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 17)})  # freed tensors go back to the OS


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is missing")
def test_gather_checks_its_preconditions_on_every_rank_in_a_subprocess(tmp_path):
    """Two gloo processes that disagree raise the same ValueError on both, instead of one aborting in
    a collective and the other hanging."""
    assert_prints_ok(f"""
        import datetime, os, torch, torch.distributed as dist, torch.multiprocessing as mp
        import s2dtw
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        CASES = {{  # per case, rank -> (batch, video_lengths)
            "batch": {{0: (4, None), 1: (3, None)}},
            "lengths on one rank": {{0: (2, [4, 3]), 1: (2, None)}},
            "bad lengths on one rank": {{0: (2, [4, 3]), 1: (2, [4, 0])}},
        }}

        def worker(rank, case, init_file):
            dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=2,
                                    timeout=datetime.timedelta(seconds=60))
            torch.set_num_threads(1)
            batch, lengths = CASES[case][rank]
            try:
                s2dtw.S2DTWContrastiveLoss(gather=True)(torch.randn(batch, 4, 8), torch.randn(batch, 3, 8),
                                                        video_lengths=lengths)
                outcome = "no error"
            except ValueError as err:
                outcome = str(err)
            with open(f"{{init_file}}.{{rank}}", "w") as f:
                f.write(outcome)
            dist.destroy_process_group()

        for k, case in enumerate(CASES):
            init_file = os.path.join({str(tmp_path)!r}, f"rendezvous{{k}}")
            mp.start_processes(worker, args=(case, init_file), nprocs=2, join=True, start_method="fork")
            outcomes = [open(f"{{init_file}}.{{rank}}").read() for rank in range(2)]
            if case == "bad lengths on one rank":
                assert "must lie in [1, 4]" in outcomes[1] and "rank(s) [1] failed" in outcomes[0], outcomes
            else:
                assert outcomes[0] == outcomes[1] and "on every rank" in outcomes[0], outcomes
    """, timeout=300)


TRANSFORMS = {
    "func.grad": lambda f, x: torch.func.grad(lambda a: f(a).sum())(x),
    "vmap": lambda f, x: torch.func.vmap(lambda a: f(a[None]))(x),
    "jacrev": lambda f, x: torch.func.jacrev(f)(x),
    "jacfwd": lambda f, x: torch.func.jacfwd(f)(x),  # used to return a silently zero Jacobian
    "jvp": lambda f, x: torch.func.jvp(f, (x,), (torch.ones_like(x),)),
}


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_torch_func_transforms_raise_a_clear_error(transform):
    y = torch.randn(2, 5, 3, dtype=torch.float64)
    f = lambda a: s2dtw.s2dtw(a, y[: a.shape[0]])  # noqa: E731
    with pytest.raises(RuntimeError, match="s2dtw does not support torch.func transforms"):
        TRANSFORMS[transform](f, torch.randn(2, 4, 3, dtype=torch.float64))


def test_forward_mode_ad_and_jit_trace_raise_and_supported_ways_work():
    import torch.autograd.forward_ad as fwAD

    x, y = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)
    with fwAD.dual_level(), pytest.raises(RuntimeError, match="no forward-mode derivative: x is a dual tensor"):
        s2dtw.s2dtw(fwAD.make_dual(x, torch.ones_like(x)), y)
    with pytest.raises(RuntimeError, match="does not support torch.jit.trace"):
        torch.jit.trace(s2dtw.S2DTWLoss(), (x, y))
    with pytest.raises(torch.jit.frontend.NotSupportedError):  # torch's own error, at scripting time
        torch.jit.script(s2dtw.S2DTWLoss())
    loss = s2dtw.S2DTWLoss()
    torch.testing.assert_close(torch.func.functional_call(loss, {}, (x, y)), loss(x, y))
    torch.testing.assert_close(torch.export.export(loss, (x, y)).module()(x, y), loss(x, y))
