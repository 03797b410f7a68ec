#!/usr/bin/env python
"""Train tiny video and text encoders on synthetic weakly aligned pairs with three contrastive objectives.

    python examples/train_video_text.py                 # the committed run: writes examples/results/
    python examples/train_video_text.py --noise 0.2 0.8 --steps 200 --out /tmp/run
    python examples/train_video_text.py --help

At each noise level (examples/video_text_data.py says what the noise does) the same training pairs train
the same encoders, from the same initial weights, on the same batches, with the same optimiser and
learning rate, under three losses:

- ``S2DTW``: ``s2dtw.S2DTWContrastiveLoss()`` (VT-TWINS: gamma 0.1, smoothing 0.1, threshold 0.5);
- ``soft-DTW``: the same loss with ``smoothing=None, threshold=None``;
- ``mean-pool InfoNCE``: cross-entropy of the dot products of the mean clip and mean sentence embeddings.

Each model is then scored zero-shot on held-out pairs (new tasks): every caption ranks every held-out video
by its own training similarity (-S2DTW, -soft-DTW, pooled dot product); R@1, R@5 and median rank.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from video_text_data import Pairs, make_pairs, make_world

import s2dtw
from s2dtw import S2DTWContrastiveLoss

DTW_OPTIONS = {"S2DTW": {}, "soft-DTW": {"smoothing": None, "threshold": None}}
FEATURES = 32  # raw clip and sentence feature size
NULL_CELL_USE = ("skip irrelevant", "skip step", "cost irrelevant", "cost step")
METHODS = ("S2DTW", "soft-DTW", "mean-pool InfoNCE")
Similarity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.4, 0.8],
                        help="noise levels in [0, 1]; each trains and tests its own models")
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps per model")
    parser.add_argument("--train-pairs", type=int, default=512)
    parser.add_argument("--test-pairs", type=int, default=200, help="held-out pairs: the retrieval candidates")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dim", type=int, default=32, help="embedding size")
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3],
                        help="Adam learning rates tried for every method; each keeps its best on validation pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when s2dtw can use it)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results",
                        help="where results.md and the pictures go")
    parser.add_argument("--note", default="", help="a sentence for results.md (e.g. what else ran on the machine)")
    args = parser.parse_args(argv)
    if not 2 <= args.batch <= args.train_pairs:
        parser.error(f"--batch must be in [2, --train-pairs], got {args.batch}")
    if args.test_pairs < 2 or len(set(args.noise)) < len(args.noise) or not all(0 <= p <= 1 for p in args.noise):
        parser.error("--test-pairs must be at least 2, and --noise distinct levels in [0, 1]")
    return args


class Encoder(torch.nn.Module):
    """Per-element MLP with one residual 3-wide temporal convolution: (B, L, F) -> (B, L, dim)."""

    def __init__(self, features: int, dim: int, hidden: int = 64):
        super().__init__()
        self.inp = torch.nn.Linear(features, hidden)
        self.context = torch.nn.Conv1d(hidden, hidden, 3, padding=1)
        self.out = torch.nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.inp(x)) * mask[..., None]  # padding must not leak into its neighbours
        h = h + F.gelu(self.context(h.transpose(1, 2)).transpose(1, 2))
        return self.out(h) * mask[..., None]


class Model(torch.nn.Module):
    """The two tiny encoders; ``forward(pairs) -> (video (P, N, dim), text (P, M, dim))``."""

    def __init__(self, features: int, dim: int):
        super().__init__()
        self.video, self.text = Encoder(features, dim), Encoder(features, dim)

    def forward(self, pairs: Pairs) -> tuple[torch.Tensor, torch.Tensor]:
        clips = torch.arange(pairs.video.shape[1], device=pairs.video.device) < pairs.video_lengths[:, None]
        words = torch.ones(pairs.text.shape[:2], device=pairs.text.device)
        return self.video(pairs.video, clips.float()), self.text(pairs.text, words)


def dtw_similarity(options: dict) -> Similarity:
    """(captions, videos) similarities -S(v_c, t_r), from one pairwise call."""
    return lambda video, lengths, text: -s2dtw.pairwise(video, text, x_lengths=lengths, **options).T


def pooled_similarity(video: torch.Tensor, lengths: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """(captions, videos) dot products of the mean sentence and the mean clip (padding left out)."""
    video_mean = video.sum(1) / lengths[:, None].to(video.dtype)  # padded clips are zero (Encoder masks them)
    return text.mean(1) @ video_mean.T


def similarity_of(method: str) -> Similarity:
    return dtw_similarity(DTW_OPTIONS[method]) if method in DTW_OPTIONS else pooled_similarity


def loss_of(method: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """loss(video, lengths, text): the package's contrastive loss, or InfoNCE on pooled embeddings."""
    if method in DTW_OPTIONS:
        module = S2DTWContrastiveLoss(**DTW_OPTIONS[method])
        return lambda video, lengths, text: module(video, text, video_lengths=lengths)
    return lambda video, lengths, text: F.cross_entropy(
        pooled_similarity(video, lengths, text), torch.arange(text.shape[0], device=text.device))


class Progress:
    """tqdm when it is installed, else a plain text bar on stderr."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.done = total, desc, 0
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, desc=desc, leave=False)

    def update(self, loss: float) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix(loss=f"{loss:.3f}")
        elif self.done == self.total or self.done % max(1, self.total // 20) == 0:
            filled = 20 * self.done // self.total
            print(f"\r{self.desc} [{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total} loss {loss:.3f}",
                  end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            print(file=sys.stderr)


def batch_of(pairs: Pairs, index: torch.Tensor) -> Pairs:
    return Pairs(*(field[index] for field in pairs))


class Curve(NamedTuple):
    """One training run: the loss at every step, the validation R@1 at every check."""

    losses: list[float]
    checked: list[int]
    recall: list[float]


def _key(scores: dict[str, float]) -> tuple[float, float, float]:
    """Validation order: R@1, then R@5, then the lower median rank."""
    return scores["R@1"], scores["R@5"], -scores["median rank"]


def train(method: str, data: Pairs, validation: Pairs, lr: float, args: argparse.Namespace, device: torch.device,
          desc: str) -> tuple[Model, Curve, tuple]:
    """One model from seed `args.seed`'s weights, on the batches of seed `args.seed`, checked on the validation
    pairs 8 times; -> (the model at its best check, its curve, the best check's validation key)."""
    torch.manual_seed(args.seed)
    model = Model(data.video.shape[-1], args.dim).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = loss_of(method)
    order = torch.Generator().manual_seed(args.seed)
    batches_per_epoch, every = len(data.video) // args.batch, max(1, args.steps // 8)
    curve, bar, best = Curve([], [], []), Progress(args.steps, desc), None
    for step in range(args.steps):
        if step % batches_per_epoch == 0:
            permutation = torch.randperm(len(data.video), generator=order)
        chunk = step % batches_per_epoch
        batch = batch_of(data, permutation[chunk * args.batch : (chunk + 1) * args.batch].to(device))
        video, text = model(batch)
        loss = loss_fn(video, batch.video_lengths, text)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        curve.losses.append(loss.item())
        bar.update(curve.losses[-1])
        if (step + 1) % every == 0 or step + 1 == args.steps:
            scores = evaluate(method, model, validation)
            curve.checked.append(step + 1)
            curve.recall.append(scores["R@1"])
            if best is None or _key(scores) > best[0]:
                best = _key(scores), copy.deepcopy(model.state_dict())
    bar.close()
    model.load_state_dict(best[1])
    return model.eval(), curve, best[0]


def retrieval(scores: torch.Tensor) -> dict[str, float]:
    """Caption-to-video retrieval from (captions, videos) scores, caption r's video being video r."""
    ranks = (scores >= scores.diagonal()[:, None]).sum(1)  # a tie counts against: constant scores rank last
    return {"R@1": (ranks <= 1).float().mean().item() * 100, "R@5": (ranks <= 5).float().mean().item() * 100,
            "median rank": ranks.float().median().item()}


@torch.no_grad()
def evaluate(method: str, model: Model, test: Pairs) -> dict[str, float]:
    video, text = model(test)
    return retrieval(similarity_of(method)(video, test.video_lengths, text))


@torch.no_grad()
def null_cell_use(model: Model, test: Pairs) -> dict[str, float]:
    """How the trained S2DTW model treats irrelevant clips and step clips of the held-out pairs.

    "skip": mean ``soft_alignment(...).x_skipped``, the expected null cells in the clip's row (about 1 for a
    clip the path skips, 0 for a clip matched to one caption); "cost": mean cost -<clip, caption> of an
    irrelevant clip against its video's captions, of a step clip against the caption it shows.
    """
    video, text = model(test)
    cost = -video @ text.transpose(1, 2)
    result = s2dtw.soft_alignment(cost=cost, x_lengths=test.video_lengths)
    shown = test.clip_captions.to(video.device)
    steps, irrelevant = shown >= 0, test.irrelevant_clips.to(video.device)
    own = cost.gather(2, shown.clamp_min(0)[..., None])[..., 0]
    means = (result.x_skipped[irrelevant], result.x_skipped[steps], cost.mean(2)[irrelevant], own[steps])
    return dict(zip(NULL_CELL_USE, (values.mean().item() for values in means), strict=True))  # no clips (noise 0): nan


def plot_curves(curves: dict[float, dict[str, Curve]], path: Path) -> None:
    """Training loss (moving average of 10 steps) and validation R@1 of each method, a column per noise level."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(curves), figsize=(4.5 * len(curves), 6), squeeze=False, sharex=True,
                             sharey="row", constrained_layout=True)
    for column, (noise, by_method) in enumerate(curves.items()):
        for method, curve in by_method.items():
            window = min(10, len(curve.losses))
            smooth = torch.tensor(curve.losses).unfold(0, window, 1).mean(1)
            axes[0, column].plot(range(window, len(curve.losses) + 1), smooth, label=method)
            axes[1, column].plot(curve.checked, curve.recall, marker="o", label=method)
        axes[0, column].set(title=f"noise {noise}", yscale="log")
        axes[1, column].set(xlabel="step")
    axes[0, 0].set(ylabel="training loss (batch cross-entropy)")
    axes[1, 0].set(ylabel="validation R@1 (%)")
    axes[0, 0].legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def plot_pair(model: Model, test: Pairs, noise: float, path: Path) -> None:
    """plot_alignment of the first held-out pair with two irrelevant clips, the truth marked on it."""
    import matplotlib.pyplot as plt

    counts = test.irrelevant_clips.sum(1).cpu()
    index = int((counts >= 2).nonzero()[0]) if (counts >= 2).any() else int(counts.argmax())
    n = int(test.video_lengths[index])
    video, text = model(batch_of(test, slice(index, index + 1)))
    cost = (-video[:, :n] @ text.transpose(1, 2)).cpu()  # the loss's metric, "neg_dot"
    fig = s2dtw.plot_alignment(cost, s2dtw.soft_alignment(cost=cost))
    shown, bad_captions = test.clip_captions[index, :n].cpu(), test.irrelevant_captions[index].cpu()
    fig.axes[1].set_yticks(range(n), [str(j) if j >= 0 else "irrelevant" for j in shown.tolist()], fontsize=7)
    fig.axes[1].set_ylabel("clip (label: the caption it shows)")
    fig.axes[1].set_xticks(range(len(bad_captions)), ["irrelevant" if bad else str(j)
                                                      for j, bad in enumerate(bad_captions.tolist())],
                           fontsize=7, rotation=90)
    for where, marker, label in ((shown < 0, "^", "irrelevant clips (truth)"),
                                 (bad_captions, "s", "off-topic captions (truth)")):
        spots = where.nonzero()[:, 0]
        fig.axes[2].scatter(spots, torch.full((len(spots),), -0.05), marker=marker, color="red", label=label)
    fig.axes[2].legend(fontsize=7)
    fig.suptitle(f"S2DTW model, held-out pair {index} at noise {noise}")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def machine() -> str:
    """CPU model (lscpu), s2dtw's SIMD level, threads, versions."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        cpu = fields.get("Model name", "?").strip()
    except (OSError, subprocess.CalledProcessError):
        cpu = platform.processor() or "?"
    return (f"{cpu}, s2dtw SIMD {s2dtw.backends()['simd']}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def table(results: dict[tuple[float, str], dict[str, float]], test_pairs: int) -> str:
    lines = [f"| noise | method | R@1 (%) | R@5 (%) | median rank (of {test_pairs}) | learning rate |",
             "|---|---|---:|---:|---:|---:|"]
    for (noise, method), row in results.items():
        lines.append(f"| {noise} | {method} | {row['R@1']:.1f} | {row['R@5']:.1f} | {row['median rank']:g} "
                     f"| {row['lr']:g} |")
    return "\n".join(lines)


def pick_device(name: str | None) -> torch.device:
    if name is None:
        name = "cuda" if torch.cuda.is_available() and s2dtw.backends()["cuda"] else "cpu"
    return torch.device(name)


def load_average() -> str:
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"


def write_report(args: argparse.Namespace, argv: list[str], results: dict, skips: dict, run: str) -> str:
    """results.md in args.out: the command, date, machine, `run` (time and load), settings and tables."""
    skip_rows = "\n".join(f"| {noise} | " + " | ".join("–" if math.isnan(use[k]) else f"{use[k]:.2f}"
                                                      for k in NULL_CELL_USE) + " |" for noise, use in skips.items())
    now = datetime.datetime.now(datetime.timezone.utc)
    report = f"""# Video-text retrieval on synthetic weakly aligned pairs

`{shlex.join(['python', 'examples/train_video_text.py', *argv])}`, {now:%Y-%m-%d %H:%M} UTC, {run}; {machine()}.
{args.note}

Per noise level: {args.train_pairs} training pairs, {args.test_pairs} validation pairs, {args.test_pairs} held-out
test pairs (new tasks); every method trains the same encoders from the same initial weights on the same batches,
{args.steps} Adam steps of batch {args.batch} at each learning rate of {', '.join(f'{lr:g}' for lr in args.lrs)},
checked on the validation pairs every {max(1, args.steps // 8)} steps, and keeps the learning rate and the check with
the best validation R@1 (then R@5, median rank); embeddings of {args.dim}; seed {args.seed}. Caption-to-video
retrieval among the {args.test_pairs} test videos (chance: R@1 {100 / args.test_pairs:.1f} %, R@5
{500 / args.test_pairs:.1f} %, median rank {(args.test_pairs + 1) / 2:g}); on {args.test_pairs} pairs a recall has a
binomial standard error of up to {50 / math.sqrt(args.test_pairs):.1f} points.

{table(results, args.test_pairs)}

How the S2DTW model treats the held-out clips: mean skipped mass (`s2dtw.soft_alignment(...).x_skipped`, the
expected null cells in the clip's row: about 1 for a skipped clip, 0 for a clip matched to one caption), and mean
cost (-<clip, caption>: an irrelevant clip against its video's captions, a step clip against the caption it shows;
a null cell costs the threshold, 0.5):

| noise | skip: irrelevant clips | skip: step clips | cost: irrelevant clips | cost: step clips |
|---|---:|---:|---:|---:|
{skip_rows}

![training curves](training_curves.png)

![alignment of a held-out pair](alignment.png)
"""
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(report)
    return report


def fit(method: str, data: Pairs, validation: Pairs, noise: float, args: argparse.Namespace,
        device: torch.device) -> tuple[Model, Curve, float]:
    """Train at every learning rate of `args.lrs`; keep the best on the validation pairs -> (model, curve, lr)."""
    best = None
    for lr in args.lrs:
        model, curve, key = train(method, data, validation, lr, args, device, f"noise {noise} {method} lr {lr:g}")
        if best is None or key > best[0]:
            best = key, model, curve, lr
    return best[1:]


def main(argv: list[str] | None = None) -> dict[tuple[float, str], dict[str, float]]:
    """Run the comparison; returns {(noise, method): {"R@1", "R@5", "median rank", "lr"}} and writes args.out."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    start, load_at_start = time.perf_counter(), load_average()
    world = make_world(FEATURES, torch.Generator().manual_seed(args.seed))
    results, curves, skips = {}, {}, {}
    for noise in args.noise:  # a level's data depend on the seed and the level only: `--noise 0.4` gives its row
        gen = torch.Generator().manual_seed(args.seed * 1000 + round(noise * 100))
        data, validation, test = (Pairs(*(t.to(device) for t in make_pairs(world, count, noise, gen)))
                                  for count in (args.train_pairs, args.test_pairs, args.test_pairs))
        curves[noise] = {}
        for method in METHODS:
            model, curves[noise][method], lr = fit(method, data, validation, noise, args, device)
            results[noise, method] = {**evaluate(method, model, test), "lr": lr}
            if method == "S2DTW":
                skips[noise], s2dtw_model = null_cell_use(model, test), model
        print(table({key: row for key, row in results.items() if key[0] == noise}, args.test_pairs))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU"
    run = (f"{time.perf_counter() - start:.0f} s on {where} (1-minute load average {load_at_start} at the start, "
           f"{load_average()} at the end, {os.cpu_count()} CPUs)")
    report = write_report(args, argv, results, skips, run)
    try:
        plot_curves(curves, args.out / "training_curves.png")
        plot_pair(s2dtw_model, test, args.noise[-1], args.out / "alignment.png")
    except ImportError as err:
        print(f"no pictures ({err}): pip install matplotlib", file=sys.stderr)
    print(report)
    return results


if __name__ == "__main__":
    main()
