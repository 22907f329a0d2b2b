"""Keyframes by DPSelect (ReTaKe) on cheap per-frame features.

``FrameDistance`` streams ``d[t] = 1 - cos`` between consecutive frames' patch features
(averaged over patches: the frame-level variant), keeping one float per frame;
``dpselect`` picks the top-k frames of ``d + 2 * peak`` in a span, sorted in time.
"""

from __future__ import annotations

import numpy as np


class FrameDistance:
    def __init__(self, grid: tuple[int, int] = (3, 4)):
        self.grid = grid  # patches (rows, cols) per frame
        self._prev: np.ndarray | None = None
        self.distances: list[float] = []

    def _patches(self, thumb: np.ndarray) -> np.ndarray:
        h, w = thumb.shape[:2]
        rows, cols = self.grid
        x = thumb[: h - h % rows, : w - w % cols].astype(np.float32)
        x = x - x.mean()  # centre so that cosine sees structure, not brightness
        ph, pw = x.shape[0] // rows, x.shape[1] // cols
        return x.reshape(rows, ph, cols, pw, -1).transpose(0, 2, 1, 3, 4).reshape(rows * cols, -1)

    def update(self, thumb: np.ndarray) -> None:
        patches = self._patches(thumb)
        if self._prev is None:
            self.distances.append(1.0)
        else:
            num = (patches * self._prev).sum(axis=1)
            den = np.linalg.norm(patches, axis=1) * np.linalg.norm(self._prev, axis=1) + 1e-6
            self.distances.append(float(np.mean(1.0 - num / den)))
        self._prev = patches


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
