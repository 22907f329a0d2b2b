"""Perceptual hashes of frames and a multi-index hash table to find near-duplicates fast.

``phash``: the 64-bit DCT hash (as the ``imagehash`` package computes it: grey, 32x32, DCT-II, the
8x8 lowest frequencies against their median), vectorised over a block of thumbnails with fixed
resize and DCT matrices. ``HashIndex``: multi-index hashing (Norouzi et al.): the 64 bits in four
16-bit bands, one sorted table per band; a query within Hamming radius r probes every band value
within r // 4 of its own (pigeonhole: one band is that close), then checks the true distance.
Never a Python object per stored hash.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from .keyframes import ThumbnailBlocks

HASH_SIZE, SCALE = 8, 32  # 8x8 low frequencies of a 32x32 DCT: imagehash.phash's defaults
BANDS = 4  # 16-bit bands
DEFAULT_RADIUS = 10  # Hamming distance (of 64) under which two keyframes count as the same picture


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` linear interpolation (area-averaging when shrinking)."""
    out = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        lo, hi = i * n_in / n_out, (i + 1) * n_in / n_out
        if hi - lo >= 1:  # shrink: average the covered input cells
            for j in range(int(lo), min(n_in, int(np.ceil(hi)))):
                out[i, j] = min(hi, j + 1) - max(lo, j)
        else:  # grow: linear between the two nearest input cells
            x = (lo + hi) / 2 - 0.5
            j = int(np.clip(np.floor(x), 0, n_in - 1))
            t = float(np.clip(x - j, 0, 1))
            out[i, j] += 1 - t
            out[i, min(j + 1, n_in - 1)] += t
        out[i] /= out[i].sum()
    return out


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    return np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n)).astype(np.float32)


_MATRICES: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
_DCT = _dct_matrix(SCALE)[:HASH_SIZE]  # only the 8 lowest frequencies are ever needed
_WEIGHTS = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


def phash(frames: np.ndarray) -> np.ndarray:
    """``[n, H, W, 3]`` (or ``[H, W, 3]``) uint8 → ``[n]`` uint64 pHashes."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    n, h, w = frames.shape[:3]
    if (h, w) not in _MATRICES:
        _MATRICES[(h, w)] = (_resize_matrix(h, SCALE), _resize_matrix(w, SCALE).T)
    rows, cols = _MATRICES[(h, w)]
    grey = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # [n, H, W]
    small = rows @ grey @ cols  # [n, 32, 32]
    low = _DCT @ small @ _DCT.T  # [n, 8, 8]
    flat = low.reshape(n, -1)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    return (bits.astype(np.uint64) * _WEIGHTS).sum(axis=1, dtype=np.uint64)


def hamming(a: np.ndarray, b) -> np.ndarray:
    """Bit differences between uint64 hashes (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))).astype(np.int32)


def _bands(hashes: np.ndarray) -> np.ndarray:
    """``[n]`` uint64 → ``[BANDS, n]`` uint16, most significant band first."""
    h = np.asarray(hashes, np.uint64)
    return np.stack([((h >> np.uint64(16 * (BANDS - 1 - b))) & np.uint64(0xFFFF)).astype(np.uint16)
                     for b in range(BANDS)])


def _flip_masks(radius: int) -> np.ndarray:
    """Every 16-bit mask with at most ``radius`` bits set."""
    masks = [0]
    for r in range(1, radius + 1):
        masks += [sum(1 << i for i in bits) for bits in combinations(range(16), r)]
    return np.array(masks, np.uint16)


class HashIndex:
    """Hashes with an integer payload (a row number the caller maps to clip ids), searchable
    within a Hamming radius. ``add`` appends; tables are re-sorted lazily before a search."""

    def __init__(self, radius: int = DEFAULT_RADIUS):
        self.radius = radius
        self.masks = _flip_masks(radius // BANDS)
        self._hashes: list[np.ndarray] = []
        self._ids: list[np.ndarray] = []
        self._sorted: tuple | None = None

    def __len__(self) -> int:
        return sum(len(h) for h in self._hashes)

    def add(self, hashes, ids) -> None:
        self._hashes.append(np.asarray(hashes, np.uint64))
        self._ids.append(np.asarray(ids, np.int64))
        self._sorted = None

    def _tables(self):
        if self._sorted is None:
            hashes = np.concatenate(self._hashes) if self._hashes else np.zeros(0, np.uint64)
            ids = np.concatenate(self._ids) if self._ids else np.zeros(0, np.int64)
            self._hashes, self._ids = [hashes], [ids]
            bands = _bands(hashes)
            orders = [np.argsort(band, kind="stable") for band in bands]
            self._sorted = (hashes, ids, [band[o] for band, o in zip(bands, orders)], orders)
        return self._sorted

    def candidates(self, query: int) -> np.ndarray:
        """Row positions whose hash shares a band within ``radius // 4`` bits of ``query``'s
        (with repeats: a row close in two bands comes twice). All numpy, no loop over buckets."""
        _, _, sorted_bands, orders = self._tables()
        found = []
        for b, qb in enumerate(_bands(np.array([query], np.uint64))[:, 0]):
            probes = np.bitwise_xor(self.masks, qb)
            lo = np.searchsorted(sorted_bands[b], probes, side="left")
            lengths = np.searchsorted(sorted_bands[b], probes, side="right") - lo
            total = int(lengths.sum())
            if total:
                starts = np.repeat(lo - np.cumsum(lengths) + lengths, lengths)  # each run's start, minus its offset
                found.append(orders[b][starts + np.arange(total)])
        return np.concatenate(found) if found else np.zeros(0, np.int64)

    def search(self, query: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, distances) of stored hashes within ``radius`` of ``query``, nearest first."""
        hashes, ids, _, _ = self._tables()
        rows = self.candidates(query)
        rows = rows[hamming(hashes[rows], np.uint64(query)) <= self.radius]  # few: dedupe only these
        rows = np.array(sorted(set(rows.tolist())), np.int64)
        dist = hamming(hashes[rows], np.uint64(query))
        order = np.argsort(dist, kind="stable")
        return ids[rows[order]], dist[order]


def brute_force_search(hashes: np.ndarray, query: int, radius: int) -> np.ndarray:
    """The peer: every stored hash's distance by numpy popcount; row positions within ``radius``."""
    return np.nonzero(hamming(hashes, np.uint64(query)) <= radius)[0]


INNER_MARGIN = 0.08  # the inner hash skips this share of each side: a re-upload cropped by about this much matches it
MIN_CONTRAST = 2.0  # grey std below this (black, fades, flat titles) gets no hash: flat frames all look alike


class FrameHashes(ThumbnailBlocks):
    """Streams two pHashes per frame, of the whole thumbnail and of its inner part (a cropped
    copy's whole frame looks like the original's inner part); 0 for a flat frame. 16 bytes a frame."""

    def __init__(self, block: int = 64):
        super().__init__(block)
        self._full: list[np.ndarray] = []
        self._inner: list[np.ndarray] = []

    def _consume(self, frames: np.ndarray) -> None:
        h, w = frames.shape[1:3]
        dy, dx = int(round(h * INNER_MARGIN)), int(round(w * INNER_MARGIN))
        flat = frames.astype(np.float32).mean(axis=3).std(axis=(1, 2)) < MIN_CONTRAST
        full, inner = phash(frames), phash(frames[:, dy : h - dy, dx : w - dx])
        full[flat] = 0
        inner[flat] = 0
        self._full.append(full)
        self._inner.append(inner)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(whole, inner) uint64 hashes of every frame seen so far, in order (0: flat frame)."""
        self._flush()
        full = np.concatenate(self._full) if self._full else np.zeros(0, np.uint64)
        inner = np.concatenate(self._inner) if self._inner else np.zeros(0, np.uint64)
        self._full, self._inner = [full], [inner]
        return full, inner

    def at(self, frames: list[int]) -> list[str]:
        """Hex hashes (whole, inner, whole, inner, ...) of ``frames``, flat frames left out."""
        return hex_hashes(*self.arrays(), frames)


def hex_hashes(full: np.ndarray, inner: np.ndarray, positions) -> list[str]:
    """Hex hashes (whole, inner, ...) at ``positions`` of per-frame hash arrays, flat frames (0) left out."""
    out = []
    for f in positions:
        if f < len(full) and full[f]:
            out += [f"{int(full[f]):016x}", f"{int(inner[f]):016x}"]
    return out
