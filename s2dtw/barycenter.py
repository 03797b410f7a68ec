"""Soft-DTW (and S2DTW) barycenters of sets of variable-length sequences, many sets at once.

The barycenter of a set {x_1, ..., x_S} with weights w_s is (Cuturi & Blondel, ICML 2017)

    z* = argmin_z  f(z) = sum_s w_s * sdtw_gamma(z, x_s),

found by L-BFGS on z with the gradient from autograd through :func:`s2dtw.s2dtw`. K sets are
solved together: every objective evaluation is ONE batched call over the pairs (z_k, x_ks) of the sets
still searching, and each set has its own L-BFGS state, step and stopping test (docs/barycenter.md).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from ._cost import Metric
from ._problem import Params
from ._validation import Lengths, check_lengths, check_options, check_params
from .functional import s2dtw

# objective(z, sets): z (k, n) flattened points of the k sets numbered `sets` (k,) -> (values (k,), gradients (k, n))
Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Values = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_ARMIJO = 1e-4  # sufficient-decrease constant of the line search (the customary c1)
_LINE_SEARCH_STEPS = 20


class Barycenter(NamedTuple):
    """What :func:`barycenter` returns; for one set (3-D ``sequences``) the leading K axis is absent.

    barycenter: (K, L, D) barycenters; set k's is ``barycenter[k, :lengths[k]]`` (rows past it are 0).
    lengths: (K,) int64 barycenter lengths.
    objective: (K,) final objective ``sum_s w_ks * value(z_k, x_ks)``.
    n_iter: (K,) int64 L-BFGS iterations (accepted steps) each set took.
    converged: (K,) bool: the stopping rule was met (False: ``max_iter`` reached or the line search stalled).
    """

    barycenter: torch.Tensor
    lengths: torch.Tensor
    objective: torch.Tensor
    n_iter: torch.Tensor
    converged: torch.Tensor


def barycenter(
    sequences: torch.Tensor,
    *,
    lengths: Lengths | Sequence[Sequence[int]] = None,
    weights: torch.Tensor | Sequence[float] | None = None,
    gamma: float = 1.0,
    length: int | Sequence[int] | torch.Tensor | None = None,
    init: torch.Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-5,
    memory: int = 10,
    metric: Metric = "sqeuclidean",
    smoothing: float | None = None,
    threshold: float | None = None,
    bandwidth: float | None = None,
    backend: str | None = None,
) -> Barycenter:
    """Soft-DTW barycenter(s) (Cuturi & Blondel 2017), or S2DTW barycenters with ``smoothing``/``threshold``.

    Args:
        sequences: (S, T, D) one set of S sequences, or (K, S, T, D) K sets (e.g. k-means clusters),
            float32 or float64, CPU or CUDA; padded to T.
        lengths: (S,) or (K, S) integers in [1, T]; sequence s uses ``sequences[..., s, :lengths[s], :]``
            (padding never affects the result). ``None``: all are T long.
        weights: (S,) or (K, S) finite weights >= 0, each set's sum > 0 (0 drops a sequence: that is how
            sets of different sizes share one tensor). ``None``: all 1, as tslearn.
        gamma: soft-DTW temperature (> 0).
        length: barycenter length, an int or (K,) ints; ``None``: init's length if ``init`` is given,
            else the longest sequence of each set.
        init: (L, D) or (K, L, D) starting barycenter(s); ``None``: as tslearn, each sequence linearly
            resampled to ``length`` points, then their weighted mean.
        max_iter: most L-BFGS iterations per set (0 returns the initialisation).
        tol: a set stops when its objective's relative decrease ``(f_old - f) / max(|f_old|, |f|, 1)``
            or its gradient's largest entry is <= tol (the rule of scipy's L-BFGS-B with ``tol=``).
        memory: L-BFGS history length (curvature pairs kept; scipy's default 10).
        metric: the cost, as :func:`s2dtw.s2dtw` (default squared Euclidean, as soft-DTW).
        smoothing, threshold: S2DTW's local smoothing and weak-alignment null cost; both ``None``
            (the default) is plain soft-DTW.
        bandwidth: Sakoe-Chiba band, as :func:`s2dtw.s2dtw`.
        backend: as :func:`s2dtw.s2dtw`.

    Returns:
        :class:`Barycenter` (barycenter, lengths, objective, n_iter, converged), on the input's device, in
        its dtype, detached (no gradient flows back to ``sequences``).
    """
    params = check_params(gamma, smoothing, threshold, bandwidth, allow_zero=False)  # L-BFGS needs a smooth objective
    check_options(metric, False, backend)
    _check_iterations(max_iter, tol, memory)
    one_set = isinstance(sequences, torch.Tensor) and sequences.dim() == 3
    x = _check_sequences(sequences)
    k, s, t, _ = x.shape
    x_len = _check_lengths(lengths, k, s, t).to(x.device)
    w = _check_weights(weights, k, s, x)
    z, z_len = _initial(init, length, x, x_len, w, one_set)

    values = set_values(x, x_len, w, z_len, params, metric, backend)
    flat, f, n_iter, converged = lbfgs(with_gradient(values, z.shape[1:]), z.reshape(k, -1), max_iter, tol, memory)
    out = flat.reshape(z.shape)
    out = out * (torch.arange(z.shape[1], device=x.device) < z_len[:, None]).unsqueeze(-1)
    if one_set:
        return Barycenter(out[0], z_len[0], f[0], n_iter[0], converged[0])
    return Barycenter(out, z_len, f, n_iter, converged)


def set_values(x: torch.Tensor, x_len: torch.Tensor, w: torch.Tensor, z_len: torch.Tensor, params: Params,
               metric: Metric, backend: str | None) -> Values:
    """``values(z, sets)``: the (k,) objectives ``sum_s w_ks * value(z_i, x_ks)``, k = sets[i], of (k, L, D)
    barycenters z, differentiable, from ONE :func:`s2dtw.s2dtw` call over their k * S pairs.

    x (K, S, T, D), x_len and w (K, S), z_len (K,); `sets` (k,) int64 on x's device.
    """
    _, s, t, d = x.shape

    def values(z: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
        k = sets.numel()
        pairs = s2dtw(z.repeat_interleave(s, dim=0), x[sets].reshape(k * s, t, d), gamma=params.gamma,
                      smoothing=params.smoothing, threshold=params.threshold, metric=metric,
                      x_lengths=z_len[sets].repeat_interleave(s), y_lengths=x_len[sets].reshape(-1),
                      bandwidth=params.bandwidth, backend=backend)
        return (pairs.reshape(k, s) * w[sets]).sum(1)

    return values


def with_gradient(values: Values, shape: torch.Size) -> Objective:
    """The L-BFGS objective: flattened (k, n) points to (values (k,), gradients (k, n)), detached; `shape` is
    one barycenter's (L, D)."""

    def objective(flat: torch.Tensor, sets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            z = flat.detach().reshape(-1, *shape).requires_grad_(True)
            f = values(z, sets)
            (grad,) = torch.autograd.grad(f.sum(), z)  # the sets are separable: d sum / d z_k = d f_k / d z_k
        return f.detach(), grad.reshape(flat.shape)

    return objective


def _check_sequences(sequences: object) -> torch.Tensor:
    """(K, S, T, D) float32/float64 CPU/CUDA finite sequences (a 3-D set gets K = 1), detached."""
    if not isinstance(sequences, torch.Tensor):
        raise TypeError(f"sequences must be a torch.Tensor of shape (S, T, D) or (K, S, T, D), "
                        f"got {type(sequences).__name__}")
    if sequences.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"sequences must be float32 or float64, got {sequences.dtype}")
    if sequences.dim() not in (3, 4):
        raise ValueError(f"sequences must have shape (S, T, D) (one set) or (K, S, T, D) (K sets), "
                         f"got {tuple(sequences.shape)}")
    if sequences.numel() == 0:
        raise ValueError(f"sequences must not be empty, got shape {tuple(sequences.shape)}")
    if sequences.device.type not in ("cpu", "cuda"):
        raise ValueError(f"sequences must be on a CPU or CUDA device, got {sequences.device}")
    x = sequences.detach()
    return x.unsqueeze(0) if x.dim() == 3 else x


def _check_lengths(lengths: object, k: int, s: int, t: int) -> torch.Tensor:
    """(K, S) int64 lengths in [1, T] on the sequences' device (read on the host once: one sync on CUDA)."""
    if lengths is None:
        return check_lengths("lengths", None, k * s, t).reshape(k, s)
    if not isinstance(lengths, torch.Tensor):
        try:  # no dtype given: floats and bools must fail in check_lengths as tensors of them do
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError("lengths must be a tensor or nested sequence of integers of shape (S,) or (K, S)") from err
    shape = (k, s) if lengths.dim() == 2 else (s,)
    if tuple(lengths.shape) != shape or (lengths.dim() == 1 and k != 1):
        want = f"({s},)" if k == 1 else f"({k}, {s})"
        raise ValueError(f"lengths must have shape {want} (one per sequence), got {tuple(lengths.shape)}")
    flat = check_lengths("lengths", lengths.detach().cpu().reshape(-1), k * s, t)
    return flat.reshape(k, s)


def _check_weights(weights: object, k: int, s: int, x: torch.Tensor) -> torch.Tensor:
    """(K, S) weights in the sequences' dtype and device: finite, >= 0, a positive sum per set."""
    if weights is None:
        return x.new_ones(k, s)
    if isinstance(weights, torch.Tensor) and weights.device != x.device:
        raise ValueError(f"weights are on {weights.device} but the sequences are on {x.device}")
    try:  # no dtype given: bools must fail below, in a list as in a tensor
        w = torch.as_tensor(weights).detach()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError("weights must be a tensor or sequence of real numbers of shape (S,) or (K, S)") from err
    if w.dtype == torch.bool or w.is_complex():
        raise TypeError(f"weights must be real numbers, got dtype {w.dtype}")
    w = w.to(x.device, x.dtype)
    if w.shape != (k, s) and not (k == 1 and w.shape == (s,)):
        want = f"({s},)" if k == 1 else f"({k}, {s})"
        raise ValueError(f"weights must have shape {want} (one per sequence), got {tuple(w.shape)}")
    w = w.reshape(k, s)
    if not bool(torch.isfinite(w).all() and (w >= 0).all()):
        raise ValueError("weights must be finite and >= 0")
    if not bool((w.sum(1) > 0).all()):
        raise ValueError("every set needs a weight > 0 (a set whose weights are all 0 has no barycenter)")
    return w


def _check_iterations(max_iter: object, tol: object, memory: object) -> None:
    for name, v, low in (("max_iter", max_iter, 0), ("memory", memory, 1)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")


def _initial(init: object, length: object, x: torch.Tensor, x_len: torch.Tensor, w: torch.Tensor,
             one_set: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The starting (K, L, D) barycenters and their (K,) lengths on the sequences' device."""
    k, _, _, d = x.shape
    if init is None:
        z_len = _check_length(length, k, x_len.amax(1))
        z = resampled_mean(x, x_len, w, z_len)
        return z, z_len.to(x.device)
    if not isinstance(init, torch.Tensor):
        raise TypeError(f"init must be a torch.Tensor or None, got {type(init).__name__}")
    want = "(L, D)" if one_set else f"({k}, L, D)"
    if init.dim() != (2 if one_set else 3) or init.shape[-1] != d or (not one_set and init.shape[0] != k):
        raise ValueError(f"init must have shape {want} with D = {d}, got {tuple(init.shape)}")
    if init.shape[-2] == 0:
        raise ValueError("init must not be empty")
    if init.device != x.device or init.dtype != x.dtype:
        raise ValueError(f"init must have the sequences' device and dtype ({x.device}, {x.dtype}), "
                         f"got {init.device}, {init.dtype}")
    if not bool(torch.isfinite(init).all()):
        raise ValueError("init contains NaN or inf")
    z = init.detach().reshape(k, -1, d)
    z_len = _check_length(length, k, torch.full((k,), z.shape[1]), most=z.shape[1])
    return z[:, : int(z_len.max())].clone(), z_len.to(x.device)


def _check_length(length: object, k: int, default: torch.Tensor, most: int | None = None) -> torch.Tensor:
    """(K,) int64 barycenter lengths on the host: ``length`` (an int or K ints) or `default`."""
    if length is None:
        return default.detach().cpu().to(torch.int64)
    values = [length] if isinstance(length, numbers.Integral) else length
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"length must be an int, a sequence of K ints, or None, got {length!r}") from None
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in values):
        raise TypeError(f"length must hold integers, got {length!r}")
    if len(values) not in (1, k):
        raise ValueError(f"length must be one int or {k} ints (one per set), got {len(values)}")
    high = most if most is not None else math.inf
    if not all(1 <= v <= high for v in values):
        where = f"[1, {most}] (init's length)" if most is not None else ">= 1"
        raise ValueError(f"length must lie in {where}, got {length!r}")
    return torch.tensor(values, dtype=torch.int64).expand(k).clone()


def resampled_mean(x: torch.Tensor, x_len: torch.Tensor, w: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Each sequence linearly resampled to its set's length, then the sets' weighted means (tslearn's init).

    Args: x (K, S, T, D), x_len (K, S), w (K, S), length (K,) (host). Returns (K, max(length), D), zero past
    each set's length. Sequence s of set k keeps its ends: point j sits at j * (n - 1) / (L - 1) of its n
    points; a length of 1 gives the sequence's mean.
    """
    k, s, _, d = x.shape
    width = int(length.max())
    target = length.to(x.device, x.dtype)[:, None, None]  # (K, 1, 1)
    n = x_len.to(x.dtype)[:, :, None]  # (K, S, 1)
    j = torch.arange(width, device=x.device, dtype=x.dtype)
    pos = j * (n - 1) / (target - 1).clamp_min(1)  # (K, S, L): where point j falls in each sequence
    low = pos.floor().clamp(max=(n - 2).clamp_min(0))
    frac = (pos - low)[..., None]
    low = low.long()
    high = torch.minimum(low + 1, x_len[:, :, None] - 1)
    at = lambda idx: torch.gather(x, 2, idx[..., None].expand(k, s, width, d))  # noqa: E731
    points = at(low) * (1 - frac) + at(high) * frac
    valid = torch.arange(x.shape[2], device=x.device) < x_len[:, :, None]
    means = (x * valid[..., None]).sum(2, keepdim=True) / n[..., None]
    points = torch.where((target == 1)[..., None], means, points)  # (K, S, L, D)
    z = (points * w[:, :, None, None]).sum(1) / w.sum(1)[:, None, None]
    return z * (j[None, :] < target[:, 0])[..., None]


def lbfgs(objective: Objective, z: torch.Tensor, max_iter: int, tol: float,
          memory: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """K independent L-BFGS minimisations in lockstep (torch.optim.LBFGS would couple them into one).

    Args: `objective` (see Objective), called on the sets still searching only; z (K, n) starting points. Each
    set has its own curvature history, step and stopping test; a set that has stopped keeps its point.
    Returns (z, f, n_iter, converged).
    """
    k = z.shape[0]
    state = _History(memory, z)
    f, g = objective(z, torch.arange(k, device=z.device))
    n_iter = torch.zeros(k, dtype=torch.int64, device=z.device)
    converged = g.abs().amax(1) <= tol
    done = converged.clone()
    for _ in range(max_iter):
        if bool(done.all()):  # a host read per iteration
            break
        p = -state.apply(g)
        slope = (g * p).sum(1)
        uphill = slope >= 0  # a history that no longer gives descent (round-off): restart from the gradient
        state.reset(uphill)
        p = torch.where(uphill[:, None], -g, p)
        slope = torch.where(uphill, -(g * g).sum(1), slope)
        # First trial: 1 (the history is scaled); on a fresh history a move of length <= 1, as L-BFGS-B's first.
        step = torch.where(state.count == 0, 1 / g.norm(dim=1).clamp_min(1e-30), torch.ones_like(f)).clamp(max=1)
        f_new, g_new, step, moved = _line_search(objective, z, f, g, p, slope, step, ~done)
        state.push(step[:, None] * p, g_new - g, moved)
        z = z + step[:, None] * p
        small = (f - f_new) / torch.maximum(torch.maximum(f.abs(), f_new.abs()), torch.ones_like(f)) <= tol
        stop = moved & (small | (g_new.abs().amax(1) <= tol))
        converged |= stop
        done |= stop | ~moved  # ~moved: stopped before, or the line search found no decrease
        n_iter += moved
        f, g = f_new, g_new
    return z, f, n_iter, converged


def _line_search(objective: Objective, z: torch.Tensor, f: torch.Tensor, g: torch.Tensor, p: torch.Tensor,
                 slope: torch.Tensor, step: torch.Tensor, active: torch.Tensor):
    """Backtracking (Armijo) along p for the active sets; the sets still searching are evaluated in one call per trial.

    Returns the accepted (f, grad, step) per set (step 0 and f, g unchanged where none was) and which moved.
    """
    searching = active.clone()
    step = torch.where(active, step, torch.zeros_like(step))
    f_new, g_new = f, g
    for _ in range(_LINE_SEARCH_STEPS):
        f_try, g_try = _evaluate(objective, z + step[:, None] * p, searching)
        accept = searching & (f_try <= f + _ARMIJO * step * slope)  # False for NaN
        f_new = torch.where(accept, f_try, f_new)
        g_new = torch.where(accept[:, None], g_try, g_new)
        searching &= ~accept
        if not bool(searching.any()):
            break
        # Minimiser of the quadratic through f(0), f'(0) and f(step), kept within [0.1, 0.5] * step.
        quadratic = -slope * step**2 / (2 * (f_try - f - slope * step))
        quadratic = torch.where(torch.isfinite(quadratic), quadratic, step / 2)
        step = torch.where(searching, torch.minimum(torch.maximum(quadratic, step / 10), step / 2), step)
    moved = active & ~searching
    return f_new, g_new, torch.where(moved, step, torch.zeros_like(step)), moved


def _evaluate(objective: Objective, z: torch.Tensor, which: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K,) values and (K, n) gradients at z of the sets `which` (K,) bool (NaN and 0 elsewhere): one call."""
    sets = torch.nonzero(which).flatten()  # a host read; the finished sets cost nothing more
    f_sets, g_sets = objective(z[sets], sets)
    f = torch.full_like(z[:, 0], math.nan).index_copy(0, sets, f_sets)
    return f, torch.zeros_like(z).index_copy(0, sets, g_sets)


class _History:
    """Per-set L-BFGS curvature pairs (s, y) in a ring of `memory` slots: (memory, K, n) tensors."""

    def __init__(self, memory: int, z: torch.Tensor) -> None:
        k = z.shape[0]
        self.s = z.new_zeros(memory, *z.shape)
        self.y = z.new_zeros(memory, *z.shape)
        self.rho = z.new_zeros(memory, k)
        self.count = torch.zeros(k, dtype=torch.int64, device=z.device)  # valid pairs per set
        self.next = torch.zeros(k, dtype=torch.int64, device=z.device)  # slot the next pair goes to
        self.sets = torch.arange(k, device=z.device)

    def push(self, s: torch.Tensor, y: torch.Tensor, moved: torch.Tensor) -> None:
        sy = (s * y).sum(1)
        keep = moved & (sy > torch.finfo(s.dtype).eps * (y * y).sum(1))  # curvature condition, else skip
        slot = (self.next, self.sets)
        self.s[slot] = torch.where(keep[:, None], s, self.s[slot])
        self.y[slot] = torch.where(keep[:, None], y, self.y[slot])
        self.rho[slot] = torch.where(keep, 1 / torch.where(keep, sy, torch.ones_like(sy)), self.rho[slot])
        self.next = torch.where(keep, (self.next + 1) % self.s.shape[0], self.next)
        self.count = torch.where(keep, (self.count + 1).clamp(max=self.s.shape[0]), self.count)

    def reset(self, sets: torch.Tensor) -> None:
        self.count = torch.where(sets, torch.zeros_like(self.count), self.count)

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        """H g per set, H the L-BFGS inverse-Hessian estimate (the two-loop recursion, Nocedal & Wright 7.4)."""
        memory = self.s.shape[0]
        q, alphas = g.clone(), []
        for back in range(memory):  # newest pair first
            slot = ((self.next - 1 - back) % memory, self.sets)
            rho = torch.where(back < self.count, self.rho[slot], torch.zeros_like(self.rho[slot]))
            alpha = rho * (self.s[slot] * q).sum(1)
            q = q - alpha[:, None] * self.y[slot]
            alphas.append((slot, rho, alpha))
        slot = ((self.next - 1) % memory, self.sets)
        s, y = self.s[slot], self.y[slot]
        scale = (s * y).sum(1) / (y * y).sum(1).clamp_min(torch.finfo(g.dtype).tiny)
        r = q * torch.where(self.count > 0, scale, torch.ones_like(scale))[:, None]
        for slot, rho, alpha in reversed(alphas):
            beta = rho * (self.y[slot] * r).sum(1)
            r = r + (alpha - beta)[:, None] * self.s[slot]
        return r
