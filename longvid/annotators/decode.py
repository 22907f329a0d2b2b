"""Streamed decoding: one pass over a video yields small per-frame arrays, never the whole video.

Every stage that needs pixels (shot boundaries, keyframe features) shares this one decode.
"""

from __future__ import annotations

import io
from typing import Iterator

import av
import numpy as np

from .base import ItemFailed


class DecodeStats:
    """Filled in while decoding: how many frames came out and whether decoding broke off."""

    def __init__(self):
        self.frames = 0
        self.error: str | None = None


def iter_thumbnails(
    source: bytes | str,
    width: int = 48,
    height: int = 27,
    pix_fmt: str = "rgb24",
    stats: DecodeStats | None = None,
    threads: int = 0,
) -> Iterator[np.ndarray]:
    """Yield each frame scaled to ``width``×``height`` (``HxWx3`` uint8), in decode order.

    A decode error ends the stream and is reported in ``stats.error`` (the caller decides
    whether what was decoded is enough). ``threads`` 0 lets FFmpeg choose.
    """
    stats = stats if stats is not None else DecodeStats()
    src = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        container = av.open(src, mode="r")
    except av.error.FFmpegError as exc:
        raise ItemFailed(f"cannot open media for decoding: {exc}") from exc
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        try:
            for frame in container.decode(stream):
                # swscale does the resize and colour conversion in C; the full frame never reaches numpy
                yield frame.to_ndarray(width=width, height=height, format=pix_fmt)
                stats.frames += 1
        except av.error.FFmpegError as exc:
            stats.error = str(exc)
