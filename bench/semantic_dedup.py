"""Semantic dedup's clustering against exact all-pairs search, on the same synthetic embeddings:
how much of the pairwise work k-means saves, and how many duplicates it misses for it.

    python bench/semantic_dedup.py [--clips 50000] [--dim 256] [--clusters 0]

Embeddings: ``--topics`` random directions, each clip one topic plus noise (clips of a topic are
alike, cosine ~0.5-0.7, not duplicates), and ``--dup-share`` of the clips planted as near-copies of
another clip (cosine > 0.99). Both sides use the same arithmetic (``best_earlier_match``, one rank
order) and the same threshold (``1 - eps``): the floor is the exact all-pairs result, and the
figure is SemDedup's time (k-means fit on a sample + assignment + per-cluster pairwise, one
process, no Ray) and its recall of the duplicates the exact search finds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from longvid.pipelines.semantic_dedup import best_earlier_match, fit_centroids


def synthetic(clips: int, dim: int, topics: int, dup_share: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(topics, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, topics, clips)] + rng.normal(scale=0.9 / np.sqrt(dim), size=(clips, dim)).astype(np.float32)
    copies = rng.choice(clips, size=int(dup_share * clips), replace=False)
    x[copies] = x[rng.integers(0, clips, len(copies))] + rng.normal(scale=0.05 / np.sqrt(dim), size=(len(copies), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def semdedup(x: np.ndarray, clusters: int, eps: float, sample: int, block: int) -> tuple[np.ndarray, dict]:
    t0 = time.perf_counter()
    rng = np.random.default_rng(1)
    centroids = fit_centroids(x[rng.choice(len(x), size=min(sample, len(x)), replace=False)], clusters, 20, 0)
    fit = time.perf_counter() - t0
    assign = np.argmax(x @ centroids.T, axis=1)
    duplicate = np.zeros(len(x), bool)
    pairs = 0
    for c in np.unique(assign):
        rows = np.flatnonzero(assign == c)  # rank order = row order, as on the exact side
        _, best = best_earlier_match(x[rows], None, block)
        duplicate[rows] = best > 1 - eps
        pairs += len(rows) * (len(rows) - 1) // 2
    return duplicate, {"fit_s": fit, "total_s": time.perf_counter() - t0, "pairs": pairs, "clusters": len(centroids)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--topics", type=int, default=500)
    parser.add_argument("--dup-share", type=float, default=0.02)
    parser.add_argument("--clusters", type=int, default=0, help="0: one per ~1,000 clips, as dedup-semantic")
    parser.add_argument("--eps", type=float, default=0.05)
    parser.add_argument("--sample", type=int, default=200_000)
    parser.add_argument("--block", type=int, default=1024)
    args = parser.parse_args()
    x = synthetic(args.clips, args.dim, args.topics, args.dup_share)
    clusters = args.clusters or max(1, round(args.clips / 1000))
    found, info = semdedup(x, clusters, args.eps, args.sample, args.block)
    t0 = time.perf_counter()
    _, best = best_earlier_match(x, None, args.block)
    exact = best > 1 - args.eps
    exact_s = time.perf_counter() - t0
    recall = (found & exact).sum() / max(1, exact.sum())
    print(f"{args.clips:,} clips x {args.dim} dims, {exact.sum()} duplicates (exact, cosine > {1 - args.eps:.2f})")
    print(f"semdedup: k={info['clusters']}, fit {info['fit_s']:.2f} s, total {info['total_s']:.2f} s, "
          f"{info['pairs']:,} pairs, found {found.sum()} (recall {recall:.4f}, {int((found & ~exact).sum())} not in exact)")
    print(f"exact all pairs: {exact_s:.2f} s, {args.clips * (args.clips - 1) // 2:,} pairs")
    print(f"speed-up (exact / semdedup): {exact_s / info['total_s']:.1f}x at recall {recall:.4f}")


if __name__ == "__main__":
    main()
