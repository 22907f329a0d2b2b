"""Near-duplicate lookup at corpus scale: multi-index hashing (4 x 16-bit bands, radius 10) against
a brute-force numpy popcount scan of every stored hash, on the same 1 M clip hashes and queries.

    python bench/near_duplicates.py [--clips 1000000] [--queries 500]

Also measured, same data and queries, where ``faiss-cpu`` imports: faiss' own multi-index hashing
(``IndexBinaryMultiHash``, 4 tables of 16 bits, ``nflip`` = radius // 4: the same pigeonhole scheme)
and its brute-force ``IndexBinaryFlat``, one query per call (as the near-duplicate actor asks) and
all queries in one call (batched), on one thread.

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
    compare_faiss(stored, queries, mih, args.radius, mih_s)


def compare_faiss(stored: np.ndarray, queries: list[int], expected: list[list[int]], radius: int, mih_s: float) -> None:
    try:
        import faiss
    except ImportError:
        print("faiss not installed: no faiss figures")
        return
    faiss.omp_set_num_threads(1)  # the same single thread as ours
    data = np.ascontiguousarray(stored.view(np.uint8).reshape(-1, 8))  # Hamming is byte-order blind
    q = np.ascontiguousarray(np.array(queries, np.uint64).view(np.uint8).reshape(-1, 8))
    built = {}
    t0 = time.perf_counter()
    multi = faiss.IndexBinaryMultiHash(64, 4, 16)
    multi.nflip = radius // 4
    multi.add(data)
    built["faiss IndexBinaryMultiHash"] = (multi, time.perf_counter() - t0)
    t0 = time.perf_counter()
    flat = faiss.IndexBinaryFlat(64)
    flat.add(data)
    built["faiss IndexBinaryFlat (brute)"] = (flat, time.perf_counter() - t0)
    n = len(queries)
    for name, (index, build) in built.items():
        t0 = time.perf_counter()
        single = []
        for i in range(n):
            lims, _, ids = index.range_search(q[i : i + 1], radius + 1)  # faiss: distance < radius
            single.append(sorted(ids[lims[0] : lims[1]].tolist()))
        single_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        lims, _, ids = index.range_search(q, radius + 1)
        batched_s = time.perf_counter() - t0
        batched = [sorted(ids[lims[i] : lims[i + 1]].tolist()) for i in range(n)]
        same = "same results" if single == expected and batched == expected else "RESULTS DIFFER"
        print(f"{name}: build {build:.2f} s, {1e3 * single_s / n:.3f} ms/query one at a time "
              f"(ours / faiss: {mih_s / single_s:.2f}x), {1e3 * batched_s / n:.3f} ms/query batched "
              f"(ours / faiss: {mih_s / batched_s:.2f}x); {same}")


if __name__ == "__main__":
    main()
