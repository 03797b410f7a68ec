"""Soft-DTW k-means with s2dtw: variable-length noisy, time-warped waveforms of a few shapes, clustered.

Each iteration assigns every sequence to the centroid of least soft-DTW (one ``s2dtw.pairwise`` call), then
recomputes ALL K centroids with ONE ``s2dtw.barycenter`` call: the clusters are the K sets of a
(K, S, T, D) tensor, padded to the largest cluster with weight-0 copies, warm-started at the old centroids.

    python examples/kmeans_barycenter.py --clusters 4 --per-cluster 25 --length 64
"""

from __future__ import annotations

import argparse
import math

import torch

import s2dtw

SHAPES = ("sine", "square", "sawtooth", "bump", "chirp", "steps")


def waveform(shape: str, phase: torch.Tensor) -> torch.Tensor:
    """One of SHAPES sampled at `phase` in [0, 1]."""
    turn = 2 * math.pi * phase
    return {
        "sine": torch.sin(turn),
        "square": torch.sign(torch.sin(turn)),
        "sawtooth": 2 * (2 * phase % 1) - 1,
        "bump": 2 * torch.exp(-((phase - 0.5) ** 2) / 0.02) - 1,
        "chirp": torch.sin(turn * (1 + 3 * phase)),
        "steps": torch.floor(4 * phase) / 1.5 - 1,
    }[shape]


def make_data(clusters: int, per_cluster: int, length: int, generator: torch.Generator):
    """(N, length, 1) padded sequences, their (N,) lengths in [length / 2, length] and (N,) true classes."""
    n = clusters * per_cluster
    lengths = torch.randint(length // 2, length + 1, (n,), generator=generator)
    x = torch.zeros(n, length, 1, dtype=torch.float64)
    classes = torch.arange(clusters).repeat_interleave(per_cluster)
    for i in range(n):
        t = torch.linspace(0, 1, int(lengths[i]), dtype=torch.float64)
        warp = t ** (1 + 0.4 * (torch.rand((), generator=generator, dtype=torch.float64) - 0.5))  # time warping
        noise = 0.15 * torch.randn(int(lengths[i]), generator=generator, dtype=torch.float64)
        x[i, : int(lengths[i]), 0] = waveform(SHAPES[int(classes[i])], warp) + noise
    return x, lengths, classes


def cluster_sets(assign: torch.Tensor, x: torch.Tensor, lengths: torch.Tensor, clusters: int):
    """The clusters as K sets: (K, S, T, D) members, (K, S) lengths and weights (0 for the padding copies)."""
    members = [torch.nonzero(assign == k).flatten() for k in range(clusters)]
    size = max(len(m) for m in members)
    index = torch.stack([torch.cat([m, m[:1].expand(size - len(m))]) for m in members])  # pad with a member
    weights = (torch.arange(size)[None, :] < torch.tensor([len(m) for m in members])[:, None]).to(x.dtype)
    return x[index], lengths[index], weights


def kmeans(x, lengths, clusters: int, iterations: int, gamma: float, generator: torch.Generator):
    """Soft-DTW k-means; returns the assignment and the inertia (sum of soft-DTW to the centroid) per iteration."""
    first = torch.randperm(len(x), generator=generator)[:clusters]  # K distinct sequences as the first centroids
    centroids, c_len = x[first].clone(), lengths[first].clone()
    inertia, assign = [], None
    for _ in range(iterations):
        cost = s2dtw.pairwise(x, centroids, gamma=gamma, smoothing=None, threshold=None, metric="sqeuclidean",
                              x_lengths=lengths, y_lengths=c_len)  # (N, K)
        new = cost.argmin(1)
        for k in range(clusters):  # an empty cluster takes the sequence worst served by its centroid
            if not bool((new == k).any()):
                new[cost.gather(1, new[:, None]).argmax()] = k
        inertia.append(float(cost.gather(1, new[:, None]).sum()))
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        sets, set_len, weights = cluster_sets(assign, x, lengths, clusters)
        result = s2dtw.barycenter(sets, lengths=set_len, weights=weights, gamma=gamma, init=centroids,
                                  length=c_len)
        centroids, c_len = result.barycenter, result.lengths
    return assign, inertia


def purity(assign: torch.Tensor, classes: torch.Tensor, clusters: int) -> float:
    """Fraction of sequences in their cluster's majority class."""
    return sum(int(torch.bincount(classes[assign == k]).max()) for k in range(clusters) if (assign == k).any()) \
        / len(classes)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, default=4, choices=range(2, len(SHAPES) + 1), metavar="K")
    parser.add_argument("--per-cluster", type=int, default=25)
    parser.add_argument("--length", type=int, default=64, help="longest sequence (the shortest is half of it)")
    parser.add_argument("--iterations", type=int, default=10, help="most k-means iterations")
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    generator = torch.Generator().manual_seed(args.seed)
    x, lengths, classes = make_data(args.clusters, args.per_cluster, args.length, generator)
    assign, inertia = kmeans(x, lengths, args.clusters, args.iterations, args.gamma, generator)
    report = {"purity": purity(assign, classes, args.clusters), "inertia": inertia, "iterations": len(inertia)}
    print(f"{len(x)} sequences, {args.clusters} clusters: purity {report['purity']:.2f} after "
          f"{report['iterations']} iterations; inertia " + " -> ".join(f"{v:.1f}" for v in inertia))
    return report


if __name__ == "__main__":
    main()
