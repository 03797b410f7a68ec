"""Training-scale features: all pairs, the contrastive loss, divergence, soft alignments,
the band, torch.compile / custom op, autocast, and the multi-process gather."""

import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import backend_value_grad, reference_value_grad

import s2dtw
from s2dtw import _reference
from s2dtw._problem import Layout, Params

VARIANTS = {"s2dtw": dict(), "soft-dtw": dict(smoothing=None, threshold=None)}


def loop_pairwise(x, y, x_lengths, y_lengths, **kwargs):
    return torch.stack([
        torch.cat([
            s2dtw.s2dtw(x[i : i + 1, : x_lengths[i]], y[j : j + 1, : y_lengths[j]], **kwargs)
            for j in range(y.shape[0])
        ])
        for i in range(x.shape[0])
    ])


@pytest.mark.parametrize("variant", VARIANTS)
def test_pairwise_equals_loop_over_pairs(cpu_backend, variant):
    x = torch.randn(3, 6, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 4, 5, dtype=torch.float64, requires_grad=True)
    x_lengths, y_lengths = [6, 2, 5], [4, 1, 3, 4]
    kwargs = dict(backend=cpu_backend, **VARIANTS[variant])
    got = s2dtw.pairwise(x, y, x_lengths=x_lengths, y_lengths=y_lengths, **kwargs)
    want = loop_pairwise(x, y, x_lengths, y_lengths, **kwargs)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    weights = torch.randn(3, 4, dtype=torch.float64)  # a non-uniform upstream gradient
    got_grads = torch.autograd.grad((got * weights).sum(), (x, y))
    want_grads = torch.autograd.grad((want * weights).sum(), (x, y))
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_pairwise_gradcheck_and_callable_metric():
    x = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    l1 = lambda a, b: (a[:, :, None] - b[:, None]).abs().sum(-1)  # noqa: E731
    assert torch.autograd.gradcheck(lambda a, b: s2dtw.pairwise(a, b, y_lengths=[4, 2, 3]), (x, y))
    got = s2dtw.pairwise(x, y, metric=l1, smoothing=None, threshold=None, gamma=1.0)
    torch.testing.assert_close(got, loop_pairwise(x, y, [3, 3], [4] * 3, metric=l1, smoothing=None,
                                                  threshold=None, gamma=1.0))


def vt_twins_loss(video, text, **kwargs):
    """The VT-TWINS formula, written out with the b^2 expansion their code uses."""
    b = video.shape[0]
    pos = -s2dtw.s2dtw(video, text, **kwargs)
    video_rows = video.unsqueeze(0).expand(b, *video.shape).reshape(-1, *video.shape[1:])
    text_cols = text.unsqueeze(1).expand(b, *text.shape).reshape(-1, *text.shape[1:])
    neg = -s2dtw.s2dtw(video_rows, text_cols, **kwargs).reshape(b, b)
    return torch.mean(torch.logsumexp(neg, 1) - pos)


def test_contrastive_loss_matches_vt_twins_formula():
    video = F.normalize(torch.randn(5, 8, 16, dtype=torch.float64), dim=-1).requires_grad_()
    text = F.normalize(torch.randn(5, 8, 16, dtype=torch.float64), dim=-1).requires_grad_()
    got = s2dtw.S2DTWContrastiveLoss()(video, text)
    want = vt_twins_loss(video, text)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(torch.autograd.grad(got, (video, text)), torch.autograd.grad(want, (video, text)), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_contrastive_symmetric_and_temperature():
    video, text = torch.randn(4, 5, 8, dtype=torch.float64), torch.randn(4, 3, 8, dtype=torch.float64)
    values = loop_pairwise(video, text, [5] * 4, [3] * 4)  # [c, r]: video c, caption r
    tau = 0.3
    logits = -values / tau
    want = (F.cross_entropy(logits.T, torch.arange(4)) + F.cross_entropy(logits, torch.arange(4))) / 2
    got = s2dtw.S2DTWContrastiveLoss(temperature=tau, symmetric=True)(video, text)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_divergence_identities(variant):
    x = torch.randn(3, 7, 4, dtype=torch.float64)
    y = torch.randn(3, 4, 4, dtype=torch.float64)
    kwargs = dict(normalize=True, **VARIANTS[variant])
    torch.testing.assert_close(s2dtw.s2dtw(x, x, **kwargs), torch.zeros(3, dtype=torch.float64))
    got = s2dtw.s2dtw(x, y, x_lengths=[7, 3, 5], y_lengths=[4, 4, 1], **kwargs)
    plain = dict(kwargs, normalize=False)
    want = s2dtw.s2dtw(x, y, x_lengths=[7, 3, 5], y_lengths=[4, 4, 1], **plain) - (
        s2dtw.s2dtw(x, x, x_lengths=[7, 3, 5], y_lengths=[7, 3, 5], **plain)
        + s2dtw.s2dtw(y, y, x_lengths=[4, 4, 1], y_lengths=[4, 4, 1], **plain)
    ) / 2
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    matrix = s2dtw.pairwise(x, x, **kwargs)
    torch.testing.assert_close(matrix.diagonal(), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(matrix, matrix.T)


def test_soft_dtw_divergence_is_nonnegative_and_normalize_needs_sequences():
    x, y = torch.randn(8, 6, 3, dtype=torch.float64), torch.randn(8, 9, 3, dtype=torch.float64)
    assert torch.all(s2dtw.soft_dtw(x, y, normalize=True) >= 0)
    assert torch.all(s2dtw.SoftDTWLoss(normalize=True, reduction="none")(x, y) >= 0)
    with pytest.raises(ValueError, match="normalize=True needs the sequences"):
        s2dtw.soft_dtw(cost=torch.rand(1, 2, 2), normalize=True)


def test_soft_alignment_against_reference(cpu_backend):
    cost = torch.randn(2, 4, 3, dtype=torch.float64)
    result = s2dtw.soft_alignment(cost=cost, x_lengths=[4, 2], backend=cpu_backend)
    for b, n in enumerate([4, 2]):
        c = cost[b, :n].numpy()
        smoothed, _ = _reference.smooth(c, 0.1)
        grid = _reference.weak_grid(smoothed, 0.5)
        expected = _reference.soft_dtw_grad(grid, _reference.soft_dtw_table(grid, 0.1), 0.1)
        _, alignment = _reference.align_one(c, 0.1, 0.1, 0.5)
        np.testing.assert_allclose(result.alignment[b, :n].numpy(), alignment, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(result.x_skipped[b, :n].numpy(), expected[1::2, 0::2].sum(1), atol=1e-12)
        np.testing.assert_allclose(result.y_skipped[b].numpy(), expected[0::2, 1::2].sum(0), atol=1e-12)
        assert torch.all(result.alignment[b, n:] == 0) and torch.all(result.x_skipped[b, n:] == 0)
    plain = s2dtw.soft_alignment(cost=cost, smoothing=None, threshold=None)
    assert plain.x_skipped is None and plain.alignment.shape == cost.shape


def test_plot_alignment_writes_a_picture(tmp_path):
    pytest.importorskip("matplotlib")
    x, y = torch.randn(1, 6, 4), torch.randn(1, 5, 4)
    path = tmp_path / "alignment.png"
    s2dtw.plot_alignment(-x @ y.transpose(1, 2), s2dtw.soft_alignment(x, y), path=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bandwidth", [0.75, 1.0, 2.5])
def test_band_matches_reference(cpu_backend, variant, bandwidth):
    params = {**dict(gamma=0.3, smoothing=0.1, threshold=0.5), **VARIANTS[variant]}
    cost = np.random.default_rng(7).normal(size=(3, 6, 6))
    x_lengths, y_lengths = [6, 4, 5], [6, 5, 4]
    value, grad = backend_value_grad(cost, cpu_backend, x_lengths=x_lengths, y_lengths=y_lengths,
                                     bandwidth=bandwidth, **params)
    ref_value, ref_grad = reference_value_grad(cost, x_lengths, y_lengths, **params)  # no band
    want = [_reference.align_one(cost[b, :n, :m], params["gamma"], params["smoothing"], params["threshold"],
                                 bandwidth) for b, (n, m) in enumerate(zip(x_lengths, y_lengths, strict=True))]
    np.testing.assert_allclose(value, [v for v, _ in want], rtol=1e-12, atol=1e-12)
    for b, (n, m) in enumerate(zip(x_lengths, y_lengths, strict=True)):
        np.testing.assert_allclose(grad[b, :n, :m], want[b][1], rtol=1e-10, atol=1e-12)
    assert np.all(value >= ref_value - 1e-12)  # fewer paths: never a smaller soft minimum


def test_band_excludes_cells_and_unreachable_end_raises():
    cost = torch.rand(1, 8, 8, dtype=torch.float64)
    banded = s2dtw.soft_dtw(cost=cost, bandwidth=1, gamma=0.1)
    far = cost.clone()
    far[0, 0, 7] = far[0, 7, 0] = 1e6  # outside |i - j| <= 1
    torch.testing.assert_close(s2dtw.soft_dtw(cost=far, bandwidth=1, gamma=0.1), banded, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"bandwidth=0.0 cuts every path off for a pair of lengths \(2, 10\)"):
        s2dtw.soft_dtw(cost=torch.rand(1, 2, 10), bandwidth=0)
    with pytest.raises(ValueError, match="bandwidth must be a finite number >= 0"):
        s2dtw.soft_dtw(cost=cost, bandwidth=-1)
    s2dtw.soft_dtw(cost=torch.rand(1, 2, 10), bandwidth=4)  # the suggested minimum for (2, 10) works


def test_opcheck(cpu_backend):
    from s2dtw._op import align_op

    cost = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    layout = Layout.batched(cost, torch.tensor([4, 2, 3]), torch.tensor([5, 5, 1]))
    torch.library.opcheck(
        align_op, (cost, layout.pair_n, layout.pair_m, layout.ints(), Params(0.5, 0.1, 0.5).floats(), cpu_backend, True)
    )


def test_eager_calls_skip_the_op_with_the_same_values_gradients_and_errors(cpu_backend, monkeypatch):
    from s2dtw import _op

    cost = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)  # d loss / d value differs per pair

    def value_and_grad():
        value = s2dtw.s2dtw(cost=cost, x_lengths=[4, 2, 3], y_lengths=[5, 5, 1], backend=cpu_backend)
        (grad,) = torch.autograd.grad(value @ weights, cost, create_graph=True)
        return value, grad

    eager_value, eager_grad = value_and_grad()
    monkeypatch.setattr(_op, "_eager", lambda cost: False)
    op_value, op_grad = value_and_grad()
    assert type(eager_value.grad_fn).__name__ == "_EagerBackward"
    assert "s2dtw_align" in type(op_value.grad_fn).__name__
    torch.testing.assert_close(eager_value, op_value, rtol=0, atol=0)
    torch.testing.assert_close(eager_grad, op_grad, rtol=0, atol=0)
    eager_second, op_second = (torch.autograd.grad(grad.pow(2).sum(), cost)[0] for grad in (eager_grad, op_grad))
    torch.testing.assert_close(eager_second, op_second, rtol=0, atol=0)  # the double backward, both paths


def _compile_fullgraph(fn):
    """torch.compile(fn, fullgraph=True). Without a C++ compiler (a wheel user's machine) inductor cannot
    generate its CPU code, so the aot_eager backend runs instead: the same dynamo trace through the custom
    op and AOT autograd, without inductor's code generation."""
    backend = "inductor" if shutil.which(os.environ.get("CXX", "g++")) else "aot_eager"
    return torch.compile(fn, fullgraph=True, backend=backend)


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    model = torch.nn.Linear(8, 8)
    loss_fn = s2dtw.S2DTWLoss()
    x, y = torch.randn(4, 6, 8), torch.randn(4, 5, 8)

    def step(a, b):
        return loss_fn(model(a), model(b))

    compiled = _compile_fullgraph(step)
    loss = compiled(x, y)
    loss.backward()
    compiled_grad = model.weight.grad.clone()
    model.weight.grad = None
    eager = step(x, y)
    eager.backward()
    torch.testing.assert_close(loss, eager)
    torch.testing.assert_close(compiled_grad, model.weight.grad, rtol=1e-5, atol=1e-5)


def test_autocast_keeps_the_dynamic_programme_in_float32():
    x = torch.randn(2, 6, 16, requires_grad=True)
    y = torch.randn(2, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = s2dtw.s2dtw(x, y)
    assert value.dtype == torch.float32
    value.sum().backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()
    # only the bfloat16 GEMM differs: close to the float32 result
    torch.testing.assert_close(value, s2dtw.s2dtw(x.detach(), y), rtol=0.05, atol=0.05)


def _gather_worker(rank, world, init_file, video, text, results):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    share = video.shape[0] // world
    mine = slice(rank * share, (rank + 1) * share)
    v, t = video[mine].clone().requires_grad_(), text[mine].clone().requires_grad_()
    lengths = torch.tensor([4, 3, 4, 2])[mine]
    for symmetric in (False, True):
        loss = s2dtw.S2DTWContrastiveLoss(gather=True, symmetric=symmetric)(v, t, video_lengths=lengths)
        gv, gt = torch.autograd.grad(loss, (v, t))
        results[(rank, symmetric)] = (loss.detach(), gv, gt)
    dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is missing")
def test_gather_across_two_gloo_processes_equals_one_process(tmp_path):
    import torch.multiprocessing as mp

    video, text = torch.randn(4, 4, 8, dtype=torch.float64), torch.randn(4, 3, 8, dtype=torch.float64)
    manager = mp.Manager()
    results = manager.dict()
    init_file = tmp_path / "rendezvous"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_gather_worker, args=(2, str(init_file), video, text, results), nprocs=2, join=True)
    for symmetric in (False, True):
        v, t = video.clone().requires_grad_(), text.clone().requires_grad_()
        loss = s2dtw.S2DTWContrastiveLoss(symmetric=symmetric)(v, t, video_lengths=[4, 3, 4, 2])
        gv, gt = torch.autograd.grad(loss, (v, t))
        # Each rank's loss is the mean over its captions: the full loss is their average, and
        # each rank's gradient (summed over ranks by the gather) is world x the full gradient.
        ranks = [results[(r, symmetric)] for r in range(2)]
        torch.testing.assert_close((ranks[0][0] + ranks[1][0]) / 2, loss, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(torch.cat([ranks[0][1], ranks[1][1]]) / 2, gv, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(torch.cat([ranks[0][2], ranks[1][2]]) / 2, gt, rtol=1e-10, atol=1e-12)


def test_torch_compile_fullgraph_with_lengths_band_and_pairwise():
    torch._dynamo.reset()
    x, y = torch.randn(3, 6, 4, dtype=torch.float64), torch.randn(3, 5, 4, dtype=torch.float64)
    x_lengths, y_lengths = torch.tensor([6, 4, 5]), torch.tensor([5, 5, 3])

    def values(a, b, xl, yl):
        paired = s2dtw.s2dtw(a, b, x_lengths=xl, y_lengths=yl, bandwidth=2.0)
        return paired, s2dtw.pairwise(a, b, x_lengths=xl, y_lengths=yl)

    compiled = _compile_fullgraph(values)
    for got, want in zip(compiled(x, y, x_lengths, y_lengths), values(x, y, x_lengths, y_lengths), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_poison_non_finite_makes_values_nan_without_a_host_check():
    from s2dtw._validation import poison_non_finite

    value = torch.tensor([1.0, 2.0])
    torch.testing.assert_close(poison_non_finite(value, torch.ones(2, 3, 3)), value)
    for bad in (float("nan"), float("inf"), -float("inf")):
        cost = torch.ones(2, 3, 3)
        cost[1, 2, 0] = bad
        assert torch.isnan(poison_non_finite(value, cost)).all()


def test_contrastive_loss_rejects_a_bad_temperature_by_name():
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got 0"):
        s2dtw.S2DTWContrastiveLoss(temperature=0)
