"""Seek-decoding of a few frames from a video member inside a shard, local or on S3.

``MemberFile`` is a read-only, seekable file over a byte window of a shard that fetches only the
blocks the demuxer asks for (ranged reads, a small block cache); ``decode_frames`` seeks to the
keyframe before each needed frame. Neither ever reads a whole long video nor scans it from the start.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from .storage import LocalStorage, Storage
from .streams import main_video_stream, rotate_frame

DEFAULT_BLOCK = 256 * 1024  # one ranged GET: large enough to amortise S3 latency, small next to a long video
DEFAULT_CACHE_BLOCKS = 16  # the demuxer revisits the index (moov) and the current GOP; 4 MiB covers both


class DecodeError(ValueError):
    """A member that cannot give the planned frames (corrupt, truncated, not a video)."""


class MemberFile(io.RawIOBase):
    """A seekable, read-only view of ``size`` bytes at ``offset`` of ``path`` in ``storage``.

    Reads go through an LRU cache of aligned blocks; ``bytes_fetched`` counts what came from
    storage, so a caller can check that a clip read only about its span.
    """

    def __init__(self, storage: Storage, path: str, offset: int, size: int,
                 block_size: int = DEFAULT_BLOCK, cache_blocks: int = DEFAULT_CACHE_BLOCKS):
        super().__init__()
        if offset < 0 or size < 0 or block_size <= 0 or cache_blocks <= 0:
            raise ValueError("offset and size must be >= 0, block_size and cache_blocks > 0")
        self.storage, self.path, self.offset, self.size = storage, path, offset, size
        self.block_size, self.cache_blocks = block_size, cache_blocks
        self.bytes_fetched = 0
        self.fetches = 0
        self._pos = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        # a local shard is read through one open handle rather than one open() per block
        self._local = open(storage.uri(path), "rb") if isinstance(storage, LocalStorage) else None

    # -- io.RawIOBase ----------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            new = pos
        elif whence == io.SEEK_CUR:
            new = self._pos + pos
        elif whence == io.SEEK_END:
            new = self.size + pos
        else:
            raise ValueError(f"bad whence {whence}")
        if new < 0:
            raise ValueError("negative seek position")
        self._pos = new
        return new

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), max(0, self.size - self._pos))
        done = 0
        while done < want:
            number, within = divmod(self._pos, self.block_size)
            block = self._block(number)
            take = min(want - done, len(block) - within)
            if take <= 0:
                break
            view[done : done + take] = block[within : within + take]
            done += take
            self._pos += take
        return done

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self.size - self._pos)
        buf = bytearray(size)
        n = self.readinto(buf)
        return bytes(buf[:n])

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            self._local = None
        self._cache.clear()
        super().close()

    # -- blocks ----------------------------------------------------------------------------
    def _block(self, number: int) -> bytes:
        block = self._cache.get(number)
        if block is not None:
            self._cache.move_to_end(number)
            return block
        start = number * self.block_size
        length = min(self.block_size, self.size - start)
        if self._local is not None:
            block = os.pread(self._local.fileno(), length, self.offset + start)
        else:
            block = self.storage.read_range(self.path, self.offset + start, length)
        self.bytes_fetched += len(block)
        self.fetches += 1
        self._cache[number] = block
        if len(self._cache) > self.cache_blocks:
            self._cache.popitem(last=False)
        return block


@dataclass
class DecodeStats:
    """What one decode cost: frames decoded (including those passed over) and seeks made."""

    frames_decoded: int = 0
    seeks: int = 0
    bytes_fetched: int = 0
    gop_seen: int = 0  # largest keyframe spacing observed, in frames
    extra: dict = field(default_factory=dict)


def resized_shape(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side at ``short_side``, aspect kept, both even."""
    if short_side <= 0 or min(width, height) == short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def _to_array(frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
    """RGB picture, turned upright by the frame's display rotation (a phone video shown as filmed)."""
    if size is None or size == (frame.width, frame.height):
        array = frame.to_ndarray(format="rgb24")
    else:
        array = frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray()
    return rotate_frame(array, frame.rotation)


def decode_frames(source, indices: list[int], resize: int = 0, forward_gop: int | None = None,
                  threads: bool = True, stats: DecodeStats | None = None) -> np.ndarray:
    """Frames ``indices`` (display order numbers, any order, repeats allowed) as uint8 [T, H, W, 3].

    ``source`` is a path or a seekable binary file. Needed frames are visited in sorted order; the
    decoder keeps going forward unless a keyframe is expected well before the next needed frame,
    and then seeks to the keyframe before it (see ``_worth_seeking``). A frame is identified by its
    presentation time (constant frame rate: index = (pts - start) * time_base * rate), so B-frame
    reordering is harmless. ``forward_gop`` overrides the rule: seek when the next needed frame
    is more than that many frames ahead (0: always seek; large: never).
    """
    stats = stats if stats is not None else DecodeStats()
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    if wanted[0] < 0:
        raise DecodeError(f"negative frame index {wanted[0]}")
    # the demuxer's read size: one cache block, so reads map onto blocks (PyAV's default is 32 KiB)
    buffer_size = min(max(getattr(source, "block_size", 32768), 4096), 1 << 20)
    try:
        container = av.open(source, mode="r", buffer_size=buffer_size)
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise DecodeError(f"cannot open media: {exc}") from exc
    try:
        got = _decode_sorted(container, wanted, resize, forward_gop, threads, stats)
    except av.error.FFmpegError as exc:
        raise DecodeError(f"decode failed: {exc}") from exc
    finally:
        container.close()
    return np.stack([got[int(i)] for i in indices])


def _worth_seeking(target: int, position: int, last_key: int | None, gop: int, seek_cost: int,
                   forward_gop: int | None) -> bool:
    """Seek when it skips at least ``seek_cost`` frames of forward decoding.

    A seek lands on the keyframe at or before ``target``. With the keyframe spacing known (``gop``,
    seen while decoding) that keyframe is expected at ``last_key + k * gop``; unknown, the spacing
    is assumed 2 s but at least twice what was decoded since the last keyframe without meeting
    one, so a stream of long GOPs goes forward instead of seeking back to the same keyframe again.
    ``seek_cost`` (1 s of frames) stands for the flush and the refill of a threaded decoder: on
    2-4 cores a seek costs about as much as decoding that many frames.
    """
    if forward_gop is not None:
        return target - position > forward_gop
    if last_key is None:
        return target - position > 2 * seek_cost
    if gop:
        spacing = max(gop, position - last_key + 1)
    else:
        spacing = max(2 * seek_cost, 2 * (position - last_key))
    landing = last_key + spacing * ((target - last_key) // spacing)
    return landing - position >= seek_cost


def _decode_sorted(container, wanted: list[int], resize: int, forward_gop: int | None, threads: bool,
                   stats: DecodeStats) -> dict[int, np.ndarray]:
    if not container.streams.video:
        raise DecodeError("no video stream")
    stream = main_video_stream(container)
    if threads:
        stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate
    if not rate or stream.time_base is None:
        raise DecodeError("no frame rate or time base in the video stream")
    clock = _Clock(Fraction(stream.time_base), Fraction(rate), stream.start_time or 0)
    size = resized_shape(stream.codec_context.width, stream.codec_context.height, resize) if resize else None
    seek_cost = max(1, int(round(clock.rate)))  # one second of frames
    got: dict[int, np.ndarray] = {}
    pending = list(wanted)
    frames = None  # the running decoder's frames, or None when the next frame needs a seek
    position = -1  # index of the last frame decoded
    last_key = None  # index of the last keyframe decoded since the last seek

    def far(target: int) -> bool:
        return _worth_seeking(target, position, last_key, stats.gop_seen, seek_cost, forward_gop)

    while pending:
        if frames is None or far(pending[0]):
            frames = _seek(container, stream, pending[0], clock, 2 * seek_cost, stats)
            position, last_key = -1, None
        for frame in frames:
            if frame.pts is None:
                continue
            index = clock.index(frame.pts)
            stats.frames_decoded += 1
            if frame.key_frame:
                if last_key is not None and index > last_key:
                    stats.gop_seen = max(stats.gop_seen, index - last_key)
                last_key = index
            position = index
            took = False
            while pending and pending[0] <= index:
                if pending[0] < index:  # a gap in the timestamps: the next frame stands in
                    stats.extra["substituted"] = stats.extra.get("substituted", 0) + 1
                got[pending.pop(0)] = _to_array(frame, size)
                took = True
            if not pending or (took and far(pending[0])):
                break  # done, or a keyframe lies before the next needed frame: seek there
        else:
            if pending:
                raise DecodeError(f"the stream ended at frame {position}, before frame {pending[0]}")
            frames = None
    return got


@dataclass(frozen=True)
class _Clock:
    """Frame index <-> presentation timestamp of a constant-rate stream."""

    time_base: Fraction
    rate: Fraction
    start: int

    def index(self, pts: int) -> int:
        # integer rounding of (pts - start) * time_base * rate: once per decoded frame, so no Fraction
        num = (pts - self.start) * self.time_base.numerator * self.rate.numerator
        den = self.time_base.denominator * self.rate.denominator
        return (2 * num + den) // (2 * den)

    def pts(self, index: int) -> int:
        return self.start + int(round(Fraction(index) / self.rate / self.time_base))


def _seek(container, stream, target: int, clock: _Clock, back_step: int, stats: DecodeStats):
    """Frames from the keyframe at or before ``target``, with ``target`` among them.

    A seek by timestamp can land after the wanted frame (the container indexes decode times;
    B-frames shift them); then it is retried from further back, down to the stream's start.
    """
    back = 0
    while True:
        seek_to = max(0, target - back)
        container.seek(clock.pts(seek_to), stream=stream, backward=True, any_frame=False)
        stats.seeks += 1
        frames = container.decode(stream)
        first = None
        for frame in frames:
            if frame.pts is not None:
                first = frame
                break
        if first is None:
            raise DecodeError(f"no frame decoded after seeking to frame {target}")
        if clock.index(first.pts) <= target or seek_to == 0:
            return _chain(first, frames)
        back = max(2 * back, back_step, 1)


def _chain(first, rest):
    yield first
    yield from rest
