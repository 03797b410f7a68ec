"""Shared by the tests: which backends must be there, and a backend's value and gradient as NumPy."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import s2dtw
from s2dtw import _reference


def require_backend(name: str) -> None:
    """Fail a test that needs the C++ extension when it cannot be imported; skip one whose optional part is missing.

    A missing s2dtw._cpu is a broken build (or an unbuilt source tree shadowing the installed package), never
    a reason to skip: S2DTW_ALLOW_NO_CPP=1 is the deliberate exception, for a check without a compiler.
    """
    if name == "numpy":
        return
    if s2dtw.backends()[name]:
        if name in ("cpp", "cuda"):  # the extension must be this package's, not another checkout's
            module = importlib.import_module({"cpp": "s2dtw._cpu", "cuda": "s2dtw._cuda"}[name])
            assert Path(module.__file__).parent == Path(s2dtw.__file__).parent, (
                f"{module.__name__} comes from {module.__file__}, not from the s2dtw under test "
                f"({Path(s2dtw.__file__).parent}): build this checkout (`pip install -e .`)")
        return
    if name == "numba":
        pytest.skip('numba is not installed (an optional extra: pip install "s2dtw[numba]")')
    if name == "cuda":
        pytest.skip("needs a CUDA device and the CUDA module")
    if os.environ.get("S2DTW_ALLOW_NO_CPP") == "1":
        pytest.skip("the C++ extension is missing and S2DTW_ALLOW_NO_CPP=1")
    try:
        importlib.import_module("s2dtw._cpu")
        reason = "it imports but does not work"
    except ImportError as err:
        reason = str(err)
    pytest.fail(
        f"the C++ extension s2dtw._cpu cannot be imported from {Path(s2dtw.__file__).parent} ({reason}). "
        "If that is an unbuilt source tree, it shadows the installed package: build it in place with "
        "`pip install -e .` or run the tests from another directory. S2DTW_ALLOW_NO_CPP=1 allows a build "
        "without it.",
        pytrace=False,
    )


def run_child(module: str, function: str, out: Path, timeout: float) -> object:
    """`module.function(str(out))` (a test module of this folder) in a fresh Python, then what it torch.saved to
    `out`: a kernel that reads or writes out of bounds fails the calling test instead of killing pytest."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import {module}; " \
           f"{module}.{function}({str(out)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"the child crashed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    return torch.load(out)


def backend_value_grad(cost: np.ndarray, backend: str, dtype=torch.float64, device="cpu", **kwargs):
    """Value (B,) and d sum(value) / d cost (B, N, M) from `backend`, as float64 NumPy."""
    c = torch.tensor(cost, dtype=dtype, device=device, requires_grad=True)
    value = s2dtw.s2dtw(cost=c, backend=backend, **kwargs)
    (grad,) = torch.autograd.grad(value.sum(), c)
    return value.detach().cpu().double().numpy(), grad.cpu().double().numpy()


def reference_value_grad(cost: np.ndarray, x_lengths=None, y_lengths=None, *, gamma, smoothing, threshold,
                         bandwidth=None):
    batch, n, m = cost.shape
    pair_n = np.full(batch, n) if x_lengths is None else np.asarray(x_lengths)
    pair_m = np.full(batch, m) if y_lengths is None else np.asarray(y_lengths)
    return _reference.align(cost, pair_n, pair_m, gamma, smoothing, threshold, bandwidth)


# The four variants of the alignment, as keyword arguments of s2dtw.s2dtw.
VARIANTS = {
    "s2dtw": dict(smoothing=0.1, threshold=0.5),
    "smoothing only": dict(smoothing=0.7, threshold=None),
    "weak only": dict(smoothing=None, threshold=-0.2),
    "soft-dtw": dict(smoothing=None, threshold=None),
}


def public_entries(x, y, cost, x_lengths, y_lengths):
    """Every public entry as (name, call returning a scalar), on x (B, N, d), y (B, M, d), cost (B, N, M)."""
    lengths = dict(x_lengths=x_lengths, y_lengths=y_lengths)
    yield "s2dtw", lambda: s2dtw.s2dtw(x, y, bandwidth=2.0, **lengths).sum()
    yield "s2dtw cost", lambda: s2dtw.s2dtw(cost=cost, **lengths).sum()
    yield "soft_dtw", lambda: s2dtw.soft_dtw(x, y, normalize=True, **lengths).sum()
    yield "pairwise", lambda: s2dtw.pairwise(x, y, bandwidth=1.0, normalize=True, **lengths).sum()
    yield "S2DTWLoss", lambda: s2dtw.S2DTWLoss()(x, y, x_lengths, y_lengths)
    yield "SoftDTWLoss", lambda: s2dtw.SoftDTWLoss(bandwidth=1.0)(x, y, x_lengths, y_lengths)
    yield "S2DTWContrastiveLoss", lambda: s2dtw.S2DTWContrastiveLoss(symmetric=True)(x, y, x_lengths, y_lengths)
    yield "soft_alignment", lambda: s2dtw.soft_alignment(cost=cost, **lengths).alignment.sum()


def finite_differences(fn, cost: np.ndarray, h: float) -> np.ndarray:
    """Central differences of the scalar fn at every element of cost."""
    numeric = np.zeros_like(cost)
    for idx in np.ndindex(cost.shape):
        up, down = cost.copy(), cost.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (fn(up) - fn(down)) / (2 * h)
    return numeric
