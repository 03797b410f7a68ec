"""The libraries cpu_bench.py times: s2dtw's backends and the peers, each wrapped as cost (B, N, M) -> values.

Every library receives the same precomputed cost tensor; how each one gets it is in benchmarks/README.md
("Libraries"). A peer that fails to import is listed with its error, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from workloads import GAMMA, SMOOTHING, THRESHOLD

import s2dtw
from s2dtw import _torch_reference


@dataclass
class Lib:
    name: str
    fn: Callable[[torch.Tensor], torch.Tensor] | None  # cost -> (B,) values, or their sum if not per_pair
    per_pair: bool = True
    peer: bool = True
    error: str | None = None
    input_note: str = ""


def _identity_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x  # the "sequence" x *is* the precomputed cost; y only carries the shape checks


def _dummy_y(cost: torch.Tensor) -> torch.Tensor:
    # (B, M, M) zero-stride view: lets a cost (B, N, M) pass a peer's "feature dims must match" assert.
    b, _, m = cost.shape
    return cost.new_zeros(()).detach().expand(b, m, m)


Fn = Callable[[torch.Tensor], torch.Tensor]


def _pysdtw(dtype: torch.dtype) -> Fn:
    import pysdtw

    sdtw = pysdtw.SoftDTW(gamma=GAMMA, dist_func=_identity_cost, use_cuda=False)
    return lambda c: sdtw(c, _dummy_y(c))


def _tslearn(dtype: torch.dtype) -> Fn:
    from tslearn.metrics import SoftDTWLossPyTorch

    loss = SoftDTWLossPyTorch(gamma=GAMMA, dist_func=_identity_cost)
    return lambda c: loss(c, _dummy_y(c))


def _maghoumi(dtype: torch.dtype) -> Fn:
    from dtw_loss_functions.soft_dtw_implementations import soft_dtw_cuda_mag

    mag = soft_dtw_cuda_mag.SoftDTW(use_cuda=False, gamma=GAMMA, dist_func=_identity_cost)
    return lambda c: mag(c, _dummy_y(c))


def _ddtw(dtype: torch.dtype) -> Fn:
    import ddtw

    # SDTW returns the batch *mean* (normalization="none": of the raw values); times B gives their sum.
    model = ddtw.SDTW(gamma=GAMMA, normalization="none", backend="cpu_numba", dtype_float=dtype)
    return lambda c: model(C=c) * c.shape[0]


# name, factory (dtype -> cost function; imports the peer), one value per pair?, how it gets the cost
PEERS = [
    ("pysdtw", _pysdtw, True, "dist_func returning the cost"),
    ("tslearn", _tslearn, True, "dist_func returning the cost"),
    ("dtw-loss-functions (Maghoumi CPU)", _maghoumi, True, "dist_func returning the cost"),
    ("ddtw (cpu_numba)", _ddtw, False, "C= (returns the batch mean only)"),
]


def _s2dtw_libs(s2dtw_workload: bool) -> list[Lib]:
    libs = []
    for backend in ("cpp", "numba"):
        if s2dtw_workload:
            fn = (lambda b: lambda cost: s2dtw.s2dtw(cost=cost, gamma=GAMMA, smoothing=SMOOTHING,
                                                      threshold=THRESHOLD, backend=b))(backend)
            libs.append(Lib(f"s2dtw {backend}", fn, peer=False, input_note="fused S2DTW from the 8x8 cost"))
        else:
            fn = (lambda b: lambda cost: s2dtw.soft_dtw(cost=cost, gamma=GAMMA, backend=b))(backend)
            libs.append(Lib(f"s2dtw {backend}", fn, peer=False, input_note="cost="))
    return libs


def make_libs(dtype: torch.dtype, s2dtw_workload: bool) -> list[Lib]:
    """s2dtw's backends, then every peer (or its import error), as cost (B, N, M) -> values.

    For the S2DTW workload the peers (and one s2dtw row) get the VT-TWINS construction: the dense weak-alignment
    grid built from the cost with torch ops inside the call (s2dtw._torch_reference), then plain soft-DTW on it.
    """

    def wrap(fn: Fn) -> Fn:
        return (lambda cost: fn(_torch_reference.dense_grid(cost, SMOOTHING, THRESHOLD))) if s2dtw_workload else fn

    libs = _s2dtw_libs(s2dtw_workload)
    if s2dtw_workload:
        libs.append(Lib("s2dtw cpp, dense grid", wrap(lambda g: s2dtw.soft_dtw(cost=g, gamma=GAMMA, backend="cpp")),
                        peer=False, input_note="soft_dtw on the torch-built 17x17 grid (not a peer)"))
    for name, factory, per_pair, note in PEERS:
        try:
            libs.append(Lib(name, wrap(factory(dtype)), per_pair=per_pair, input_note=note))
        except Exception as exc:  # noqa: BLE001 - report any import failure
            libs.append(Lib(name, None, error=f"import failed: {exc!r}"))
    return libs


# Why a peer loses accuracy, from reading its source at the pinned version (shown next to its failed checks).
KNOWN_CAUSES = {
    "pysdtw": "sdtw_cpu.py builds R with `torch.Tensor(compute_softdtw(...)).type(dtype)`: torch.Tensor() is float32, "
              "so the float64 R of its Numba kernel is rounded to float32 before the backward uses it (and E too); "
              "float64 inputs get float64 tensors of float32 accuracy, and the gradient error grows with the path "
              "length",
    "dtw-loss-functions (Maghoumi CPU)": "soft_dtw_cuda_mag._SoftDTW has the same `torch.Tensor(...)` float32 "
              "round trip of R and E as pysdtw (the code is Maghoumi's, which pysdtw derives from)",
    "tslearn": "soft_dtw_loss_pytorch.py runs the recursion in the input dtype (a float32 R for float32 inputs, "
               "whose error grows along long paths) and then saves R as `torch.Tensor(R_)`, i.e. float32, so "
               "float64 inputs also get a float32-accurate gradient",
}
