"""Synthetic weakly aligned video-text pairs, for examples/train_video_text.py.

A task is an ordered list of steps drawn from a shared vocabulary (as recipes share "add the salt").
Its caption is one sentence per step; its video is one or two clips per step. Noise level p in [0, 1]:

- video: each step is dropped with probability p/3 (its caption stays: a caption that matches no clip),
  irrelevant clips (from a small pool of backgrounds, the same in every video: the presenter talking) are
  inserted, about p/2 per step clip, and neighbouring clips are swapped with probability p/2 (local shuffle);
- captions: each is replaced by an irrelevant sentence (a new random feature vector: off-topic speech is
  varied) with probability p/3;
- every clip and sentence feature gets Gaussian noise of standard deviation 0.3 + 0.4 p.

Video and text features come from independent random prototypes: the encoders must learn the pairing.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

VOCABULARY, BACKGROUNDS, STEPS_PER_TASK = 12, 4, 6


class World(NamedTuple):
    """What each step looks like in each modality, and the backgrounds of irrelevant clips: (count, features)."""

    video_steps: torch.Tensor
    text_steps: torch.Tensor
    video_background: torch.Tensor


class Pairs(NamedTuple):
    """P video-text pairs, the videos zero-padded to N clips."""

    video: torch.Tensor  # (P, N, F) clip features
    video_lengths: torch.Tensor  # (P,) clips in each video
    text: torch.Tensor  # (P, M, F) sentence features, M = STEPS_PER_TASK
    clip_captions: torch.Tensor  # (P, N) int64: the caption each clip shows; -1: irrelevant clip or padding
    irrelevant_clips: torch.Tensor  # (P, N) bool: inserted background clips
    irrelevant_captions: torch.Tensor  # (P, M) bool: captions replaced by off-topic sentences


def make_world(features: int, gen: torch.Generator) -> World:
    """Random unit-variance prototypes of `features` dimensions for the steps and the backgrounds."""
    return World(*(torch.randn(count, features, generator=gen) for count in (VOCABULARY, VOCABULARY, BACKGROUNDS)))


def _chance(p: float, gen: torch.Generator) -> bool:
    return torch.rand((), generator=gen).item() < p


def _clip_plan(noise: float, gen: torch.Generator) -> list[int]:
    """Which caption each clip shows, in video order (-1: an irrelevant clip)."""
    kept = [j for j in range(STEPS_PER_TASK) if not _chance(noise / 3, gen)]
    if len(kept) < 2:  # a video shows at least two of its steps
        kept = sorted(torch.randperm(STEPS_PER_TASK, generator=gen)[:2].tolist())
    clips = [j for j in kept for _ in range(1 + int(_chance(0.5, gen)))]
    i = 0
    while i < len(clips) - 1:  # one pass of neighbour swaps; a swapped clip is not swapped again
        if _chance(noise / 2, gen):
            clips[i], clips[i + 1] = clips[i + 1], clips[i]
            i += 1
        i += 1
    for _ in range(len(clips)):  # irrelevant clips at random places
        if _chance(noise / 2, gen):
            clips.insert(int(torch.randint(len(clips) + 1, (), generator=gen)), -1)
    return clips


def make_pairs(world: World, count: int, noise: float, gen: torch.Generator) -> Pairs:
    """`count` new tasks at noise level `noise`, each as a (video, caption) pair."""
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    features = world.video_steps.shape[1]
    sigma = 0.3 + 0.4 * noise
    tasks = [torch.randperm(VOCABULARY, generator=gen)[:STEPS_PER_TASK] for _ in range(count)]
    plans = [_clip_plan(noise, gen) for _ in range(count)]
    max_clips = max(len(plan) for plan in plans)
    video = torch.zeros(count, max_clips, features)
    text = torch.empty(count, STEPS_PER_TASK, features)
    lengths = torch.empty(count, dtype=torch.int64)
    clip_captions = torch.full((count, max_clips), -1, dtype=torch.int64)
    irrelevant_captions = torch.zeros(count, STEPS_PER_TASK, dtype=torch.bool)
    for p, (task, plan) in enumerate(zip(tasks, plans, strict=True)):
        for j, step in enumerate(task.tolist()):
            irrelevant_captions[p, j] = _chance(noise / 3, gen)
            # off-topic sentences are all different; the irrelevant clips come from a few backgrounds
            source = torch.randn(features, generator=gen) if irrelevant_captions[p, j] else world.text_steps[step]
            text[p, j] = source + sigma * torch.randn(features, generator=gen)
        lengths[p] = len(plan)
        for i, j in enumerate(plan):
            background = world.video_background[int(torch.randint(BACKGROUNDS, (), generator=gen))]
            source = background if j < 0 else world.video_steps[task[j]]
            video[p, i] = source + sigma * torch.randn(features, generator=gen)
            clip_captions[p, i] = j
    irrelevant_clips = (clip_captions < 0) & (torch.arange(max_clips) < lengths[:, None])
    return Pairs(video, lengths, text, clip_captions, irrelevant_clips, irrelevant_captions)
