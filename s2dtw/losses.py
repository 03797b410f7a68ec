"""Loss modules: thin wrappers over :mod:`s2dtw.functional`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import functional
from ._cost import Metric
from ._validation import Lengths, check_lengths, check_options, check_params, check_positive, check_sequences

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _checked_options(gamma: float, smoothing: float | None, threshold: float | None, metric: Metric,
                     bandwidth: float | None, normalize: bool, backend: str | None, open_begin: bool,
                     open_end: bool) -> dict:
    """A loss's keyword arguments for functional.s2dtw / pairwise, checked when the loss is made."""
    check_options(metric, normalize, backend, check_params(gamma, smoothing, threshold, bandwidth, open_begin,
                                                           open_end))
    return dict(gamma=gamma, smoothing=smoothing, threshold=threshold, metric=metric, bandwidth=bandwidth,
                normalize=normalize, open_begin=open_begin, open_end=open_end, backend=backend)


class S2DTWLoss(torch.nn.Module):
    """S2DTW between paired sequences, reduced over the batch.

    ``loss(x, y)`` with x (B, N, d), y (B, M, d) returns a scalar (or (B,) with
    ``reduction="none"``). Arguments as :func:`s2dtw.s2dtw`.
    """

    def __init__(
        self,
        gamma: float = 0.1,
        smoothing: float | None = 0.1,
        threshold: float | None = 0.5,
        metric: Metric = "neg_dot",
        reduction: str = "mean",
        bandwidth: float | None = None,
        normalize: bool = False,
        backend: str | None = None,
        open_begin: bool = False,
        open_end: bool = False,
    ):
        super().__init__()
        self.options = _checked_options(gamma, smoothing, threshold, metric, bandwidth, normalize, backend,
                                        open_begin, open_end)
        self.reduction = _check_reduction(reduction)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, x_lengths: Lengths = None, y_lengths: Lengths = None
    ) -> torch.Tensor:
        values = functional.s2dtw(x, y, x_lengths=x_lengths, y_lengths=y_lengths, **self.options)
        return _reduce(values, self.reduction)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in {**self.options, "reduction": self.reduction}.items())


class SoftDTWLoss(S2DTWLoss):
    """Plain soft-DTW between paired sequences, reduced over the batch. Arguments as :func:`s2dtw.soft_dtw`."""

    def __init__(
        self,
        gamma: float = 1.0,
        metric: Metric = "sqeuclidean",
        reduction: str = "mean",
        bandwidth: float | None = None,
        normalize: bool = False,
        backend: str | None = None,
        open_begin: bool = False,
        open_end: bool = False,
    ):
        super().__init__(gamma, None, None, metric, reduction, bandwidth, normalize, backend, open_begin, open_end)


def _gather(t: torch.Tensor, differentiable: bool) -> torch.Tensor:
    """Concatenate every rank's `t` along dim 0; with `differentiable`, gradients flow back to each owner."""
    import torch.distributed as dist

    if differentiable:
        import torch.distributed.nn.functional as dist_fn

        return torch.cat(dist_fn.all_gather(t))
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


class S2DTWContrastiveLoss(torch.nn.Module):
    """The VT-TWINS objective: every caption against every video of the batch.

    With ``s(v, t) = -S2DTW(v, t) / temperature``, rows r captions and columns c videos,
    ``loss = mean_r [ logsumexp_c s(v_c, t_r) - s(v_r, t_r) ]`` (temperature 1 is VT-TWINS' loss).
    The b x b values come from one :func:`s2dtw.pairwise` call; the positives are its diagonal.

    Args:
        temperature: divides the similarities (> 0).
        symmetric: average with the video-to-caption direction.
        gather: with ``torch.distributed`` initialised, use every rank's videos (and captions, if
            symmetric) as negatives; gradients flow back to each rank's own embeddings through the
            all-gather, so the summed-over-ranks loss matches one process on the whole batch.
            Every rank must pass the same batch size.
        Others as :func:`s2dtw.s2dtw`.

    ``forward(video (B, N, d), text (B, M, d), video_lengths=None, text_lengths=None)`` -> scalar.
    """

    def __init__(
        self,
        gamma: float = 0.1,
        smoothing: float | None = 0.1,
        threshold: float | None = 0.5,
        metric: Metric = "neg_dot",
        temperature: float = 1.0,
        symmetric: bool = False,
        gather: bool = False,
        bandwidth: float | None = None,
        normalize: bool = False,
        backend: str | None = None,
        open_begin: bool = False,
        open_end: bool = False,
    ):
        super().__init__()
        self.options = _checked_options(gamma, smoothing, threshold, metric, bandwidth, normalize, backend,
                                        open_begin, open_end)
        check_positive("temperature", temperature)
        self.temperature, self.symmetric, self.gather = temperature, symmetric, gather

    def _everyone(self, video: torch.Tensor, text: torch.Tensor, video_lengths: torch.Tensor | None,
                  text_lengths: torch.Tensor | None):
        """Every rank's videos, captions and lengths (one differentiable all-gather), and this rank's offset."""
        import torch.distributed as dist

        batch = video.shape[0]
        both = _gather(torch.cat([video.reshape(batch, -1), text.reshape(batch, -1)], dim=1), differentiable=True)
        videos = both[:, : video[0].numel()].reshape(-1, *video.shape[1:])
        texts = both[:, video[0].numel() :].reshape(-1, *text.shape[1:])
        lengths = [None if ls is None else _gather(ls.to(video.device), differentiable=False)
                   for ls in (video_lengths, text_lengths)]
        return videos, texts, lengths[0], lengths[1], dist.get_rank() * batch

    def forward(
        self, video: torch.Tensor, text: torch.Tensor, video_lengths: Lengths = None, text_lengths: Lengths = None
    ) -> torch.Tensor:
        """video (B, N, d), text (B, M, d), lengths (B,) or None -> the scalar loss."""
        if self.gather:
            video_lengths, text_lengths = _check_on_every_rank(video, text, video_lengths, text_lengths)
            videos, texts, all_video_lengths, all_text_lengths, offset = self._everyone(
                video, text, video_lengths, text_lengths)
        else:
            video_lengths, text_lengths = _checked_inputs(video, text, video_lengths, text_lengths)
            videos, texts, all_video_lengths, all_text_lengths, offset = video, text, video_lengths, text_lengths, 0
        targets = torch.arange(text.shape[0], device=text.device) + offset
        # values[c, r] = S2DTW(video c, caption r); each caption's positive is its own video.
        values = functional.pairwise(videos, text, x_lengths=all_video_lengths, y_lengths=text_lengths,
                                     **self.options)
        loss = F.cross_entropy(-values.T / self.temperature, targets)
        if not self.symmetric:
            return loss
        if self.gather:  # this rank's videos against every rank's captions
            values = functional.pairwise(video, texts, x_lengths=video_lengths, y_lengths=all_text_lengths,
                                         **self.options)
        return (loss + F.cross_entropy(-values / self.temperature, targets)) / 2


def _checked_inputs(video: object, text: object, video_lengths: Lengths,
                    text_lengths: Lengths) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """This rank's preconditions: (B, N, d) and (B, M, d) tensors, lengths (B,) or None (returned as int64)."""
    video, text = check_sequences(video, text, same_batch=False)
    if video.shape[0] != text.shape[0]:
        raise ValueError(f"video and text must have the same batch size, got {tuple(video.shape)} "
                         f"and {tuple(text.shape)}")
    return tuple(None if ls is None else check_lengths(name, ls, batch, full) for name, ls, (batch, full) in (
        ("video_lengths", video_lengths, video.shape[:2]), ("text_lengths", text_lengths, text.shape[:2])))


def _check_on_every_rank(video: torch.Tensor, text: torch.Tensor, video_lengths: Lengths,
                         text_lengths: Lengths) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """`_checked_inputs`, then the cross-rank ones, decided together: one small all-gather of each rank's
    shapes, which lengths it gives and whether its own checks passed, so that every rank raises (the same
    error where the ranks disagree) instead of one rank failing inside a collective and the others hanging."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("gather=True needs torch.distributed to be initialised")
    if not (isinstance(video, torch.Tensor) and isinstance(text, torch.Tensor)):
        raise TypeError(f"video and text must be torch.Tensors, got {type(video).__name__} and {type(text).__name__}")
    error, lengths = None, (None, None)
    try:
        lengths = _checked_inputs(video, text, video_lengths, text_lengths)
    except (TypeError, ValueError) as err:
        error = err
    mine = torch.tensor([*_shape3(video), *_shape3(text), video_lengths is not None, text_lengths is not None,
                         error is None], dtype=torch.int64, device=video.device)
    everyone = _gather(mine[None], differentiable=False)
    if error is not None:
        raise error
    failed = (everyone[:, -1] == 0).nonzero().flatten().tolist()
    if failed:
        raise ValueError(f"gather=True: the inputs of rank(s) {failed} failed their checks (see the error there)")
    if not bool((everyone == mine).all()):
        raise ValueError("gather=True needs the same video and text shapes and the same lengths arguments (given "
                         "or None) on every rank; per rank [video dims and shape, text dims and shape, video_lengths "
                         f"given, text_lengths given]: {everyone[:, :-1].tolist()}")
    return lengths


def _shape3(t: torch.Tensor) -> list[int]:
    """dims and the first three sizes (-1 beyond the tensor's): a fixed-size description to all-gather."""
    return [t.dim(), *(list(t.shape) + [-1] * 3)[:3]]
