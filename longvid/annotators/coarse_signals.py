"""Curation signals (motion, keyframe pHashes) from the frames a sparse or windowed scan already
decodes: the same :class:`FrameMotion` / :class:`FrameHashes` trackers as a dense decode, fed each
coarse thumbnail through ``sparse.scan``'s ``trackers`` hook. Never decodes anything itself.

The arrays are aligned with ``Scan.frames`` (one entry per frame the detector saw), so a window's
core is cut with the same mask as its frames and windows stitch by concatenation.
"""

from __future__ import annotations

import numpy as np

from .keyframes import FrameMotion
from .phash import FrameHashes
from .sparse import Scan, scan


def scan_with_signals(source, decode, sparse, detector, start: int = 0, end: int | None = None) -> Scan:
    """:func:`sparse.scan` plus ``signals``: ``motion`` (float32, per frame seen, per frame of gap),
    ``phash_full`` / ``phash_inner`` (uint64, 0 for a flat frame), all aligned with ``frames``."""
    motion, hashes = FrameMotion(), FrameHashes()
    result = scan(source, decode, sparse, detector, start=start, end=end, trackers=(motion, hashes))
    full, inner = hashes.arrays()
    result.signals = {"motion": per_frame_motion(motion.values, result.frames), "phash_full": full,
                      "phash_inner": inner}
    return result


def per_frame_motion(values: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Motion between consecutive *seen* frames divided by the frames between them: a coarse scan
    that skips every other frame sees about twice the change per step; this puts it on the dense
    per-frame scale (exact for a steady pan, an approximation otherwise)."""
    values = np.asarray(values, np.float32)[: len(frames)]
    gaps = np.diff(frames, prepend=frames[:1] - 1).astype(np.float32) if len(frames) else np.ones(0, np.float32)
    return (values / np.maximum(gaps, 1.0)).astype(np.float32)


def cut(signals: dict, keep: np.ndarray) -> dict:
    """The signals of the frames ``keep`` selects (a window's core)."""
    return {name: values[keep] for name, values in signals.items()}


def concatenate(parts: list[dict]) -> dict:
    """One window's signals after another's; empty when any window has none."""
    if not parts or any(not p for p in parts):
        return {}
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
