"""Keyframes by DPSelect (ReTaKe) on cheap per-frame features.

``FrameDistance`` streams ``d[t] = 1 - cos`` between consecutive frames' patch features
(averaged over patches: the frame-level variant), keeping one float per frame and computing in
blocks (no per-frame numpy calls); ``dpselect`` picks the top-k frames of ``d + 2 * peak`` in a
span, sorted in time. Never keeps a thumbnail beyond the current block.
"""

from __future__ import annotations

import numpy as np


class FrameDistance:
    def __init__(self, grid: tuple[int, int] = (3, 4), block: int = 64):
        self.grid = grid  # patches (rows, cols) per frame
        self.block = block  # frames per vectorized step
        self._buffer: np.ndarray | None = None
        self._fill = 0
        self._prev: np.ndarray | None = None  # patches of the last frame of the previous block
        self._parts: list[np.ndarray] = []

    def _patches(self, thumbs: np.ndarray) -> np.ndarray:
        """``[n, H, W, C]`` → ``[n, patches, features]``, each frame centred on its own mean."""
        n, h, w = thumbs.shape[:3]
        rows, cols = self.grid
        x = thumbs[:, : h - h % rows, : w - w % cols].astype(np.float32).reshape(n, h - h % rows, w - w % cols, -1)
        x -= x.mean(axis=(1, 2, 3), keepdims=True)  # centre so that cosine sees structure, not brightness
        ph, pw = x.shape[1] // rows, x.shape[2] // cols
        return x.reshape(n, rows, ph, cols, pw, -1).transpose(0, 1, 3, 2, 4, 5).reshape(n, rows * cols, -1)

    def update(self, thumb: np.ndarray) -> None:
        if self._buffer is None:
            self._buffer = np.empty((self.block,) + thumb.shape, dtype=thumb.dtype)
        self._buffer[self._fill] = thumb
        self._fill += 1
        if self._fill == self.block:
            self._flush()

    def _flush(self) -> None:
        if not self._fill:
            return
        patches = self._patches(self._buffer[: self._fill])
        if self._prev is None:
            cur, prev = patches[1:], patches[:-1]
        else:
            cur, prev = patches, np.concatenate([self._prev[None], patches[:-1]])
        num = (cur * prev).sum(axis=2)
        den = np.linalg.norm(cur, axis=2) * np.linalg.norm(prev, axis=2) + 1e-6
        d = np.mean(1.0 - num / den, axis=1).astype(np.float32)
        if self._prev is None:
            d = np.concatenate([[1.0], d]).astype(np.float32)
        self._parts.append(d)
        self._prev = patches[-1]
        self._fill = 0

    @property
    def distances(self) -> np.ndarray:
        """``d[t]`` for every frame seen so far (``d[0] = 1``)."""
        self._flush()
        if len(self._parts) > 1:
            self._parts = [np.concatenate(self._parts)]
        return self._parts[0] if self._parts else np.zeros(0, dtype=np.float32)


def dpselect(distances: np.ndarray | list[float], keep: int) -> list[int]:
    """Indices (into ``distances``) of the ``keep`` frames DPSelect chooses, in time order.

    The first frame of a span counts as maximally distant (d[0] = 1), as in ReTaKe.
    """
    d = np.asarray(distances, dtype=np.float64).copy()
    if d.size == 0 or keep <= 0:
        return []
    d[0] = 1.0
    left = np.concatenate([[-np.inf], d[:-1]])
    right = np.concatenate([d[1:], [-np.inf]])
    peak = (d >= left) & (d >= right)
    score = d + 2.0 * peak
    keep = min(keep, d.size)
    top = np.argsort(-score, kind="stable")[:keep]
    return sorted(int(i) for i in top)


class ThumbnailBlocks:
    """Collects streamed thumbnails into blocks of ``block`` frames and hands each block, as one
    ``[n, H, W, 3]`` array, to ``_consume``: per-frame signals then cost one vectorised step per block."""

    def __init__(self, block: int = 64):
        self.block = block
        self._buffer: list[np.ndarray] = []

    def update(self, thumb: np.ndarray) -> None:
        self._buffer.append(thumb)
        if len(self._buffer) >= self.block:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            frames, self._buffer = np.stack(self._buffer), []
            self._consume(frames)

    def _consume(self, frames: np.ndarray) -> None:
        raise NotImplementedError


class FrameMotion(ThumbnailBlocks):
    """Streams ``m[t]`` = mean absolute difference between frame ``t`` and ``t - 1`` (grey
    thumbnails, in [0, 1]; ``m[0] = 0``), a block at a time. One float per frame is kept."""

    def __init__(self, block: int = 64):
        super().__init__(block)
        self._prev: np.ndarray | None = None
        self._parts: list[np.ndarray] = [np.zeros(1, np.float32)]

    def _consume(self, frames: np.ndarray) -> None:
        grey = frames.astype(np.float32).mean(axis=3)
        frames = grey if self._prev is None else np.concatenate([self._prev[None], grey])
        self._prev = grey[-1]
        if len(frames) > 1:
            self._parts.append((np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2)) / 255.0).astype(np.float32))

    @property
    def values(self) -> np.ndarray:
        self._flush()
        return np.concatenate(self._parts)

    def span_score(self, start: int, end: int) -> float:
        """Mean motion of the frames ``(start, end)`` (the first frame's diff is to the previous shot)."""
        m = self.values[start + 1 : end]
        return round(float(m.mean()), 6) if len(m) else 0.0
