"""Near-duplicate lookup at corpus scale: multi-index hashing (4 x 16-bit bands, radius 10) against
a brute-force numpy popcount scan of every stored hash, on the same 1 M clip hashes and queries.

    python bench/near_duplicates.py [--clips 1000000] [--queries 500]

Stored hashes: uniform random 64-bit values (a best case for band tables: real pHashes cluster,
so buckets are fuller; the figure is the lookup's floor cost, the ratio an upper bound). Queries:
stored hashes with 0-10 random bit flips (every one must be found) and fresh random hashes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from longvid.annotators.phash import HashIndex, brute_force_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--radius", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 2**63, size=args.clips, dtype=np.uint64) * np.uint64(2) + \
        rng.integers(0, 2, args.clips).astype(np.uint64)
    queries = []
    for i in range(args.queries):
        if i % 2:
            queries.append(int(rng.integers(0, 2**63)))
            continue
        q = int(stored[rng.integers(0, args.clips)])
        for bit in rng.choice(64, size=int(rng.integers(0, args.radius + 1)), replace=False):
            q ^= 1 << int(bit)
        queries.append(q)

    t0 = time.perf_counter()
    index = HashIndex(args.radius)
    index.add(stored, np.arange(args.clips))
    index.search(0)  # builds the band tables
    build = time.perf_counter() - t0

    t0 = time.perf_counter()
    mih = [sorted(index.search(q)[0].tolist()) for q in queries]
    mih_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    brute = [sorted(brute_force_search(stored, q, args.radius).tolist()) for q in queries]
    brute_s = time.perf_counter() - t0
    if mih != brute:
        raise SystemExit("multi-index results differ from brute force")
    found = sum(bool(m) for m in mih)
    print(f"{args.clips:,} stored hashes, {args.queries} queries (radius {args.radius}), {found} with a match; "
          f"same results both ways")
    print(f"multi-index: build {build:.2f} s, {1e3 * mih_s / args.queries:.3f} ms/query")
    print(f"brute force popcount: {1e3 * brute_s / args.queries:.3f} ms/query")
    print(f"speed-up (brute / multi-index): {brute_s / mih_s:.1f}x")


if __name__ == "__main__":
    main()
