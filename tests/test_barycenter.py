"""s2dtw.barycenter: soft-DTW / S2DTW barycenters against tslearn, its gradient, K sets at once, padding,
weights, the optimiser on known minima, errors, and the k-means example."""

from __future__ import annotations

import functools
import importlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import s2dtw
from s2dtw._problem import Params
from s2dtw.barycenter import lbfgs, resampled_mean, set_values, with_gradient

barycenter_module = importlib.import_module("s2dtw.barycenter")  # s2dtw.barycenter is the function
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def make_sets(k: int, s: int, t: int, d: int, seed: int = 0, dtype=torch.float64):
    """K sets of S noisy, time-shifted sine waves, with variable lengths in [t // 2, t] (each set has one of t)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(t // 2, t + 1, size=(k, s))
    lengths[:, 0] = t
    x = np.zeros((k, s, t, d))
    for i in range(k):
        for j in range(s):
            n = lengths[i, j]
            phase = np.linspace(0, 1, n)[:, None] + 0.1 * rng.standard_normal() + np.arange(d) / (d + 1) + i / 3
            x[i, j, :n] = np.sin(2 * np.pi * phase) + 0.1 * rng.standard_normal((n, d))
    return torch.tensor(x, dtype=dtype), torch.from_numpy(lengths)


def soft_dtw_objective(z, x, lengths, weights, gamma):
    """sum_s w_s sdtw(z, x_s), by tslearn's own soft-DTW: the yardstick both barycenters are judged with."""
    from tslearn.metrics import soft_dtw

    pairs = enumerate(zip(lengths.tolist(), weights.tolist(), strict=True))
    return sum(w * soft_dtw(z, x[s, :n].numpy(), gamma=gamma) for s, (n, w) in pairs)


@pytest.fixture(scope="module")
def tslearn_barycenters():
    pytest.importorskip("tslearn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tslearn warns that h5py is missing
        from tslearn.barycenters import softdtw_barycenter
        from tslearn.preprocessing import TimeSeriesResampler
        from tslearn.utils import to_time_series_dataset
    return softdtw_barycenter, TimeSeriesResampler, to_time_series_dataset


@pytest.mark.parametrize("gamma", [1.0, 0.1])
def test_objective_at_most_tslearns(tslearn_barycenters, gamma):
    """Same data, weights, init (both default: the resampled weighted mean) and gamma: per set, our objective at
    convergence is <= tslearn's (scipy L-BFGS-B, its defaults tol=1e-3, max_iter=50), judged by tslearn's soft-DTW."""
    softdtw_barycenter, _, to_dataset = tslearn_barycenters
    x, lengths = make_sets(3, 5, 16, 2, seed=1)
    weights = torch.rand(3, 5, dtype=torch.float64) + 0.5
    ours = s2dtw.barycenter(x, lengths=lengths, weights=weights, gamma=gamma)
    assert bool(ours.converged.all())
    for k in range(3):
        seqs = [x[k, s, :n].numpy() for s, n in enumerate(lengths[k].tolist())]
        theirs = softdtw_barycenter(to_dataset(seqs), gamma=gamma, weights=weights[k].numpy())
        f_theirs = soft_dtw_objective(theirs, x[k], lengths[k], weights[k], gamma)
        f_ours = soft_dtw_objective(ours.barycenter[k].numpy(), x[k], lengths[k], weights[k], gamma)
        assert f_ours == pytest.approx(float(ours.objective[k]), rel=1e-10)  # the reported objective is the real one
        assert f_ours <= f_theirs + 1e-6 * abs(f_theirs), (k, f_ours, f_theirs)


def test_init_is_tslearns(tslearn_barycenters):
    """Default init: each sequence linearly resampled to the longest length, then the weighted mean, as tslearn."""
    _, resampler, to_dataset = tslearn_barycenters
    x, lengths = make_sets(2, 4, 12, 3, seed=2)
    weights = torch.rand(2, 4, dtype=torch.float64) + 0.1
    for target in (12, 7, 1):
        z = resampled_mean(x, lengths, weights, torch.tensor([target, target]))
        for k in range(2):
            seqs = to_dataset([x[k, s, :n].numpy() for s, n in enumerate(lengths[k].tolist())])
            expected = np.average(resampler(sz=target).fit_transform(seqs), axis=0, weights=weights[k].numpy())
            np.testing.assert_allclose(z[k].numpy(), expected, rtol=1e-12, atol=1e-12)
    result = s2dtw.barycenter(x, lengths=lengths, weights=weights, max_iter=0)
    np.testing.assert_array_equal(result.barycenter.numpy(), resampled_mean(x, lengths, weights, result.lengths))


@pytest.mark.parametrize("variant", [dict(smoothing=None, threshold=None), dict(smoothing=0.3, threshold=2.0)])
def test_objective_gradient(variant):
    """The gradient L-BFGS gets is the objective's: gradcheck of the values, and per set finite differences."""
    x, lengths = make_sets(2, 3, 5, 2, seed=3)
    weights = torch.tensor([[1.0, 0.5, 2.0], [0.0, 1.0, 3.0]], dtype=torch.float64)
    z_len = torch.tensor([4, 5])
    params = Params(gamma=0.7, **variant)
    both = torch.arange(2)
    values = functools.partial(set_values(x, lengths, weights, z_len, params, "sqeuclidean", None), sets=both)
    z = torch.randn(2, 5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(values, (z,))
    f, grad = with_gradient(set_values(x, lengths, weights, z_len, params, "sqeuclidean", None), z.shape[1:])(
        z.detach().reshape(2, -1), both)
    np.testing.assert_array_equal(f.numpy(), values(z).detach().numpy())
    eps, flat = 1e-6, z.detach().reshape(2, -1)
    for i in range(flat.shape[1]):
        bump = torch.zeros_like(flat)
        bump[:, i] = eps
        shape = z.shape
        numeric = (values((flat + bump).reshape(shape)) - values((flat - bump).reshape(shape))) / (2 * eps)
        np.testing.assert_allclose(grad[:, i].numpy(), numeric.detach().numpy(), rtol=1e-6, atol=1e-8)
    assert torch.all(grad.reshape(shape)[0, 4] == 0)  # set 0's barycenter is 4 long: its padded row has no gradient


def test_k_sets_at_once_equal_k_calls(monkeypatch):
    """K sets in one call give each set's separate result, from ONE batched s2dtw call per evaluation (the pairs
    of the sets still searching)."""
    x, lengths = make_sets(3, 4, 14, 2, seed=4)
    weights = torch.rand(3, 4, dtype=torch.float64) + 0.5
    calls = []
    real = barycenter_module.s2dtw
    monkeypatch.setattr(barycenter_module, "s2dtw", lambda z, y, **kw: calls.append(z.shape[0]) or real(z, y, **kw))
    together = s2dtw.barycenter(x, lengths=lengths, weights=weights, gamma=0.5)
    assert calls[0] == 3 * 4 and all(n % 4 == 0 for n in calls) and min(calls) < 3 * 4  # finished sets drop out
    assert len(calls) < 2 * int(together.n_iter.max()) + 3  # a few evaluations per iteration, not one per set
    monkeypatch.setattr(barycenter_module, "s2dtw", real)
    assert together.lengths.tolist() == lengths.amax(1).tolist()  # default length: each set's longest sequence
    for k in range(3):
        alone = s2dtw.barycenter(x[k], lengths=lengths[k], weights=weights[k], gamma=0.5)
        n = int(alone.lengths)
        assert alone.barycenter.shape == (n, 2) and int(together.lengths[k]) == n
        torch.testing.assert_close(together.barycenter[k, :n], alone.barycenter, rtol=1e-12, atol=1e-12)
        assert torch.all(together.barycenter[k, n:] == 0)
        torch.testing.assert_close(together.objective[k], alone.objective, rtol=1e-12, atol=0)
        assert int(together.n_iter[k]) == int(alone.n_iter)


def test_padding_has_no_influence():
    x, lengths = make_sets(2, 4, 12, 3, seed=5)
    padded = torch.arange(12)[None, None, :, None] >= lengths[..., None, None]
    noisy = torch.where(padded, 1e3 * torch.randn_like(x), x)
    for kwargs in (dict(), dict(length=[9, 5]), dict(smoothing=0.5, threshold=1.0)):
        a = s2dtw.barycenter(x, lengths=lengths, **kwargs)
        b = s2dtw.barycenter(noisy, lengths=lengths, **kwargs)
        torch.testing.assert_close(a.barycenter, b.barycenter, rtol=0, atol=0)
        torch.testing.assert_close(a.objective, b.objective, rtol=0, atol=0)


def test_weights():
    """A weight of 0 drops a sequence (exactly); an integer weight counts the sequence that many times."""
    x, lengths = make_sets(1, 5, 12, 2, seed=6)
    x, lengths = x[0], lengths[0]
    dropped = s2dtw.barycenter(x[[0, 1, 3]], lengths=lengths[[0, 1, 3]], length=12)
    zero = s2dtw.barycenter(x, lengths=lengths, weights=[1.0, 1.0, 0.0, 1.0, 0.0], length=12)
    torch.testing.assert_close(zero.barycenter, dropped.barycenter, rtol=0, atol=0)
    torch.testing.assert_close(zero.objective, dropped.objective, rtol=0, atol=0)
    twice = s2dtw.barycenter(x[[0, 0, 1, 2, 3, 4]], lengths=lengths[[0, 0, 1, 2, 3, 4]], tol=1e-10)
    weighted = s2dtw.barycenter(x, lengths=lengths, weights=torch.tensor([2.0, 1, 1, 1, 1]), tol=1e-10)
    torch.testing.assert_close(weighted.objective, twice.objective, rtol=1e-8, atol=0)
    torch.testing.assert_close(weighted.barycenter, twice.barycenter, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(weighted.barycenter, s2dtw.barycenter(x, lengths=lengths, tol=1e-10).barycenter)


def test_s2dtw_variant_decreases_its_objective():
    """With smoothing/threshold the objective is S2DTW's: it decreases from the init, and is what is reported."""
    x, lengths = make_sets(2, 4, 12, 2, seed=7)
    options = dict(gamma=0.5, smoothing=0.2, threshold=1.5)
    result = s2dtw.barycenter(x, lengths=lengths, **options)
    start = s2dtw.barycenter(x, lengths=lengths, max_iter=0, **options)
    assert bool(result.converged.all()) and bool((result.n_iter > 0).all())
    assert bool((result.objective < start.objective - 1e-3 * start.objective.abs()).all())
    for k in range(2):
        z = result.barycenter[k].expand(4, -1, -1)
        values = s2dtw.s2dtw(z, x[k], metric="sqeuclidean", x_lengths=[int(result.lengths[k])] * 4,
                             y_lengths=lengths[k], **options)
        torch.testing.assert_close(values.sum(), result.objective[k], rtol=1e-12, atol=0)
    plain = s2dtw.barycenter(x, lengths=lengths, gamma=0.5)
    assert not torch.allclose(plain.barycenter, result.barycenter, atol=1e-3)  # a different objective, another answer


def test_float32_and_init():
    x, lengths = make_sets(1, 4, 10, 2, seed=8)
    f64 = s2dtw.barycenter(x[0], lengths=lengths[0], tol=1e-8)
    f32 = s2dtw.barycenter(x[0].float(), lengths=lengths[0], tol=1e-6)
    assert f32.barycenter.dtype == f32.objective.dtype == torch.float32
    torch.testing.assert_close(f32.objective.double(), f64.objective, rtol=1e-4, atol=1e-4)
    init = torch.zeros(6, 2, dtype=torch.float64)
    started = s2dtw.barycenter(x[0], lengths=lengths[0], init=init, max_iter=0)
    assert started.barycenter.shape == (6, 2) and int(started.lengths) == 6 and torch.all(started.barycenter == 0)
    assert s2dtw.barycenter(x[0], lengths=lengths[0], init=init, length=4).barycenter.shape == (4, 2)
    assert init.abs().sum() == 0  # inputs are never modified


def test_lbfgs_finds_the_minima_of_independent_quadratics():
    """K quadratics 1/2 z'A_k z - b_k'z of very different conditioning, solved together: each reaches A_k^-1 b_k
    in its own number of iterations (a set that has converged stops; the others go on)."""
    torch.manual_seed(1)
    n, k = 6, 3
    basis = torch.linalg.qr(torch.randn(k, n, n, dtype=torch.float64)).Q
    spectra = torch.stack([torch.ones(n), torch.logspace(0, 2, n), torch.logspace(0, 4, n)]).double()
    a = basis @ torch.diag_embed(spectra) @ basis.transpose(1, 2)
    b = torch.randn(k, n, dtype=torch.float64)

    def objective(z, sets):
        az = (a[sets] @ z[..., None])[..., 0]
        return (0.5 * (z * az).sum(1) - (b[sets] * z).sum(1)), az - b[sets]

    z, f, n_iter, converged = lbfgs(objective, torch.zeros(k, n, dtype=torch.float64), 200, 1e-12, 10)
    torch.testing.assert_close(z, torch.linalg.solve(a, b), rtol=1e-6, atol=1e-6)
    assert bool(converged.all()) and n_iter[0] < n_iter[2]
    _, _, n_iter_alone, _ = lbfgs(lambda z, sets: objective(z, sets + 2), torch.zeros(1, n, dtype=torch.float64),
                                  200, 1e-12, 10)
    assert int(n_iter_alone) == int(n_iter[2])


BAD = [
    (dict(sequences=[[1.0, 2.0]]), TypeError, "torch.Tensor"),
    (dict(sequences=torch.zeros(3, 4, dtype=torch.int64)), TypeError, "float32 or float64"),
    (dict(sequences=torch.zeros(3, 4)), ValueError, r"\(S, T, D\)"),
    (dict(sequences=torch.zeros(0, 4, 1)), ValueError, "empty"),
    (dict(lengths=[3, 4]), ValueError, r"lengths must have shape \(3,\)"),
    (dict(lengths=[3, 4, 9]), ValueError, r"\[1, 5\]"),
    (dict(lengths=[3.0, 4.0, 5.0]), TypeError, "integers"),
    (dict(weights=[1.0, 1.0]), ValueError, r"weights must have shape \(3,\)"),
    (dict(weights=[1.0, -1.0, 1.0]), ValueError, ">= 0"),
    (dict(weights=[0.0, 0.0, 0.0]), ValueError, "weight > 0"),
    (dict(weights=[1.0, float("nan"), 1.0]), ValueError, "finite"),
    (dict(weights=[True, True, False]), TypeError, "real numbers"),
    (dict(weights=["a", "b", "c"]), TypeError, "real numbers"),
    (dict(gamma=0.0), ValueError, "gamma"),
    (dict(length=0), ValueError, "length must lie"),
    (dict(length=[3, 4]), ValueError, "one per set"),
    (dict(length=2.5), TypeError, "length"),
    (dict(init=torch.zeros(4, 2, dtype=torch.float64)), ValueError, "D = 1"),
    (dict(init=torch.zeros(4, 1)), ValueError, "dtype"),
    (dict(init=torch.zeros(4, 1, dtype=torch.float64), length=5), ValueError, r"\[1, 4\]"),
    (dict(init=torch.full((4, 1), float("inf"), dtype=torch.float64)), ValueError, "NaN or inf"),
    (dict(max_iter=-1), ValueError, "max_iter"),
    (dict(tol=float("nan")), ValueError, "tol"),
    (dict(memory=0), ValueError, "memory"),
    (dict(metric="euclid"), ValueError, "metric"),
    (dict(backend="gpu"), ValueError, "backend"),
    (dict(sequences=torch.full((3, 5, 1), float("nan"), dtype=torch.float64)), ValueError, "NaN or inf"),
]


@pytest.mark.parametrize("kwargs, error, match", BAD)
def test_bad_inputs_raise(kwargs, error, match):
    kwargs = dict(kwargs)
    sequences = kwargs.pop("sequences", torch.zeros(3, 5, 1, dtype=torch.float64))
    with pytest.raises(error, match=match):
        s2dtw.barycenter(sequences, **kwargs)


def test_bad_shapes_for_k_sets():
    x = torch.zeros(2, 3, 5, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"lengths must have shape \(2, 3\)"):
        s2dtw.barycenter(x, lengths=[5, 5, 5])
    with pytest.raises(ValueError, match=r"weights must have shape \(2, 3\)"):
        s2dtw.barycenter(x, weights=torch.ones(3))
    with pytest.raises(ValueError, match=r"init must have shape \(2, L, D\)"):
        s2dtw.barycenter(x, init=torch.zeros(5, 1, dtype=torch.float64))


def test_kmeans_example(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import kmeans_barycenter

    report = kmeans_barycenter.main(["--clusters", "2", "--per-cluster", "4", "--length", "16", "--iterations", "3"])
    assert report["purity"] >= 0.75 and report["iterations"] >= 1
    assert report["inertia"][-1] <= report["inertia"][0]


def test_docs_kmeans_snippet():
    """The k-means snippet of docs/barycenter.md runs as written."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "barycenter.md").read_text()
    blocks = [block.split("```")[0] for block in text.split("```python")[1:]]
    snippet = next(block for block in blocks if "s2dtw.pairwise" in block)
    scope: dict = {}
    exec(compile(snippet.replace("range(5)", "range(2)"), "docs/barycenter.md", "exec"), scope)
    assert scope["centroids"].shape[0] == 3 and scope["c_len"].shape == (3,)


@pytest.mark.cuda
@pytest.mark.skipif(not (torch.cuda.is_available() and s2dtw.backends()["cuda"]), reason="needs CUDA and its module")
def test_cuda_equals_cpu():
    """On a GPU the barycenters stay there and agree with the CPU's (float64)."""
    x, lengths = make_sets(3, 4, 12, 2, seed=9)
    cpu = s2dtw.barycenter(x, lengths=lengths, gamma=0.5, tol=1e-9)
    gpu = s2dtw.barycenter(x.cuda(), lengths=lengths.cuda(), weights=torch.ones(3, 4, device="cuda"), gamma=0.5,
                           tol=1e-9)
    assert gpu.barycenter.is_cuda and gpu.objective.is_cuda and bool(gpu.converged.all())
    torch.testing.assert_close(gpu.objective.cpu(), cpu.objective, rtol=1e-8, atol=0)
    torch.testing.assert_close(gpu.barycenter.cpu(), cpu.barycenter, rtol=1e-4, atol=1e-4)
