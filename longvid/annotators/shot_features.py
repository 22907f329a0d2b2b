"""Cheap per-frame features of 48x27 thumbnails and the distances between frames, vectorized over
blocks of frames so that no per-frame Python work remains.

Features: a 2x2-binned luma image (for motion-compensated pixel distance), a 3x4 grid of mean
colours and a 4x4x4 colour histogram (both blind to small motion). Never keeps more than it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255.0
SHIFT = 2  # motion search ±2 binned pixels (±4 at 48x27, ~8% of the width per frame)
GRID = (3, 4)  # rows, cols of the mean-colour grid
HIST_BITS = 2  # bits per channel of the colour histogram (4x4x4 = 64 bins)


@dataclass
class Features:
    """Features of ``n`` consecutive frames (arrays with a leading frame axis)."""

    luma: np.ndarray  # [n, 13, 24] float32 in 0..1, 2x2-binned luma
    grid: np.ndarray  # [n, 12*3] float32 in 0..1, mean colour per grid cell
    hist: np.ndarray  # [n, 64] float32, sums to 1
    brightness: np.ndarray  # [n] mean luma, 0..1 (black frames of fades are near 0)

    def __len__(self) -> int:
        return len(self.brightness)

    def take(self, index) -> "Features":
        return Features(self.luma[index], self.grid[index], self.hist[index], self.brightness[index])

    @staticmethod
    def concat(parts: list["Features"]) -> "Features":
        return Features(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                          ("luma", "grid", "hist", "brightness")))


def compute_features(thumbs: np.ndarray) -> Features:
    """``thumbs``: ``[n, H, W, 3]`` uint8 RGB. Reductions run over contiguous axes, in stages."""
    n, h, w, _ = thumbs.shape
    rows, cols = GRID
    x = thumbs.astype(np.float32)
    luma = x @ LUMA  # [n, h, w]
    hh, ww = h - h % 2, w - w % 2
    binned = 0.25 * (luma[:, 0:hh:2, 0:ww:2] + luma[:, 1:hh:2, 0:ww:2] + luma[:, 0:hh:2, 1:ww:2] + luma[:, 1:hh:2, 1:ww:2])
    gh, gw = h - h % rows, w - w % cols
    band = x[:, :gh].reshape(n, rows, gh // rows, w, 3).sum(axis=2)[:, :, :gw]  # [n, rows, w, 3]
    grid = band.reshape(n, rows, cols, gw // cols, 3).sum(axis=3) / ((gh // rows) * (gw // cols) * 255.0)
    q = thumbs >> (8 - HIST_BITS)
    bins = 1 << (3 * HIST_BITS)
    code = ((q[..., 0].astype(np.int32) << (2 * HIST_BITS)) | (q[..., 1] << HIST_BITS) | q[..., 2]).reshape(n, -1)
    code += (np.arange(n, dtype=np.int32) * bins)[:, None]
    hist = np.bincount(code.ravel(), minlength=n * bins).reshape(n, bins).astype(np.float32) / (h * w)
    hist = _smooth_hist(hist)
    return Features(np.ascontiguousarray(binned), grid.reshape(n, -1).astype(np.float32), hist,
                    binned.reshape(n, -1).mean(axis=1).astype(np.float32))


def _smooth_hist(hist: np.ndarray) -> np.ndarray:
    """Spread each bin [1, 2, 1]/4 along every colour axis: a slight brightness change (a fade's
    first frames) then moves mass between neighbouring bins gently instead of all at once."""
    side = 1 << HIST_BITS
    x = hist.reshape(-1, side, side, side)
    for axis in (1, 2, 3):
        pad = np.concatenate([x.take([0], axis=axis), x, x.take([side - 1], axis=axis)], axis=axis)
        x = 0.25 * pad.take(range(0, side), axis=axis) + 0.5 * x + 0.25 * pad.take(range(2, side + 2), axis=axis)
    return x.reshape(hist.shape)


def motion_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean |a - b| of binned luma pairs ``[m, h, w]``, minimised over global shifts of ±SHIFT.

    A pan moves the whole picture and costs almost nothing here; a cut does not go away.
    """
    s = SHIFT
    core = b[:, s:-s, s:-s]
    best = None
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            moved = a[:, s + dy : a.shape[1] - s + dy, s + dx : a.shape[2] - s + dx]
            d = np.abs(moved - core).mean(axis=(1, 2))
            best = d if best is None else np.minimum(best, d)
    return best


def colour_distance(a: Features, b: Features) -> np.ndarray:
    """Motion-blind distance of frame pairs: histogram total variation plus grid colour change."""
    hist = 0.5 * np.abs(a.hist - b.hist).sum(axis=1)
    grid = np.abs(a.grid - b.grid).mean(axis=1)
    return 0.5 * hist + 2.0 * grid


def cut_distance(a: Features, b: Features) -> np.ndarray:
    """Distance across a possible hard cut: motion-compensated pixels plus colour."""
    return 2.0 * motion_distance(a.luma, b.luma) + 2.0 * np.abs(a.grid - b.grid).mean(axis=1)
