"""Sparse shot detection: decode only the frames the signal needs, then put every hard cut on its
exact frame by decoding densely around it.

On streams with B-frames the coarse pass skips every B-frame (``skip_frame = BIDIR``; x264's P-frames
never reference one, so what is decoded is exact; ``sparse.skip: nonref`` skips only non-reference
frames, exact for any stream) and skips deblocking; the ``fast`` detector runs on the decoded frames
in order, its gradual windows halved when half the frames are gone (the share is read from packet
order before decoding). A cut it finds lies between two decoded frames; when they are not adjacent,
a seek to the keyframe before them and a dense decode of that gap alone places the cut (the largest
consecutive cut distance). Gradual transitions and DPSelect features come from the coarse frames.
Never decodes a frame twice except inside a refined gap; never holds more than the detector's window.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Sequence

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .decode import DecodeConfig, open_video
from .fastcut import FastCutDetector
from .keyframes import FrameDistance
from .shot_features import colour_distance, compute_features, cut_distance


@dataclass
class SparseConfig:
    # which frames the coarse pass skips on a stream with B-frames: bidir = every B-frame (I and P only: half of
    # x264 veryfast's frames; exact for x264 output, whose P-frames never reference a B-frame: tested bit for bit),
    # nonref = non-reference frames only (B-refs of a b-pyramid are decoded: exact for any stream), none
    skip: str = "bidir"
    # FFmpeg threading of a coarse pass that skips frames: frame threads stall on a stream whose B-frames are skipped
    # (x264 veryfast, 640x360: 203 ms frame-threaded vs 115 ms slice-threaded for the same 427 frames) and slice
    # threading leaves the other cores to other tasks (windows of the same video, other videos); "auto" = FFmpeg's
    # choice. A pass that skips nothing (no B-frames) always uses frame threads (slice: 14.1 s vs 12.6 s, 20 min ultrafast)
    thread_type: str = "slice"
    skip_loop_filter: bool = True  # in the coarse pass: deblocking is ~30% of decode and barely changes a 48x27 thumbnail
    refine: bool = True  # decode each cut's gap densely to place it on its exact frame (off: the first decoded frame after it)
    # when the coarse pass decodes at most this share of the frames (estimated from the first packets' order), the
    # detector's gradual windows are halved so that they span the same time as on every frame: x264 veryfast keeps
    # ~40% of its frames with BIDIR (two wide windows otherwise join neighbouring dissolves). Its flash, baseline
    # and shortest-shot spans stay in decoded frames: halving the flash span too let flashes through (benchmark
    # set F1 0.949 -> 0.889), halving the shortest shot cost hard cuts (1.000 -> 0.970); kept as they are, shots
    # under ~15 frames merge (see docs/segmentation.md, real footage)
    halve_windows_below: float = 0.6
    probe_packets: int = 500  # packets demuxed (not decoded) at the start of a pass to estimate that share
    # a cut found across a gap must hold this multiple of the gap's next-largest frame-to-frame change: a cut
    # happens in one frame, motion (a fast pan seen at half the frame rate) spreads over all of them
    cut_concentration: float = 2.0
    # on a stream without B-frames every frame is a reference and must be decoded, so the coarse pass hands the
    # detector (thumbnail, features, DPSelect, curation signals) only the frames whose number is a multiple of
    # ``stride`` and windows scaled to match; the frames between are held, and where a cut is possible between two
    # seen frames a strided sample of each (see LumaChanges) places it without decoding again. 1 = every frame
    stride: int = 3
    # decoder threads of a stride pass (0 = FFmpeg's frame threads on every core). 1: on this 2-vCPU machine
    # frame threads decode x264 ultrafast 640x360 no faster than one thread (2.34 s vs 2.14 s wall) for 47% more
    # CPU, and the other core is left to the detector thread and to other windows and videos
    stride_threads: int = 1
    # run the detector's feature work on a helper thread beside the decoding (see FrameSink)
    detector_thread: bool = True


class SparseCutDetector(FastCutDetector):
    """The ``fast`` detector fed the coarse (reference) frames of a stream; the segment stage decodes for it."""

    name = "sparse"


@dataclass
class Scan:
    """What one decoding pass over ``[start, end)`` of a video found, in absolute frame numbers."""

    frames: np.ndarray  # int64 frame number of each frame the detector saw, ascending
    distances: np.ndarray  # DPSelect's d for each of those frames
    transitions: list[dict] = field(default_factory=list)  # {"frame", "start_frame", "end_frame", "kind"}
    decoded: int = 0  # frames decoded, refined gaps included
    error: str | None = None  # a decode error that ended the pass early
    end: int = 0  # first frame number after what was covered (the last decoded frame + 1)
    sparse: bool = False  # whether frames were skipped (B-frames or non-reference frames)
    skip: str = "DEFAULT"  # FFmpeg's skip_frame of the pass (what a refinement may skip outside a gap)
    signals: dict = field(default_factory=dict)  # per-frame arrays aligned with ``frames`` (coarse_signals: motion, pHashes)
    stride: int = 1  # a stride pass (no B-frames): the detector saw frames whose number is a multiple of this
    changes: LumaChanges | None = None  # a stride pass's per-frame luma change (cut placement without a re-decode)


class FrameClock:
    """Frame numbers from presentation timestamps (constant frame rate, as the probe reports it)."""

    def __init__(self, stream):
        self.fps = float(stream.average_rate or stream.guessed_rate or 25)
        self.time_base = float(stream.time_base)
        self.origin = stream.start_time or 0

    def index(self, pts: int) -> int:
        return int(round((pts - self.origin) * self.time_base * self.fps))

    def pts(self, index: int) -> int:
        return int(self.origin + index / self.fps / self.time_base)


def thumbnailer(decode: DecodeConfig):
    """frame → ``HxWx3`` uint8 thumbnail by swscale (one per pass: it keeps its scaler's context), on one
    thread: PyAV's default (0, swscale's own threads) costs twice as much for a 48x27 output (84 vs 182 µs at
    640x360), bit-identical."""
    method = "AREA" if decode.interpolation == "auto" else decode.interpolation
    scaler = VideoReformatter()
    return lambda frame: scaler.reformat(frame, decode.width, decode.height, decode.pix_fmt,
                                         interpolation=method, threads=1).to_ndarray()


# in a BIDIR pass a spread change across a shorter gap (2-4 frames between two P-frames) is not kept as a dissolve:
# the shortest dissolves last 8 frames and the gradual detector sees them; over 4 frames a fast pan moves the
# colours as much (a NONREF pass's 1-2 frame gaps keep them: the benchmark set's F1 is higher that way)
MIN_DISSOLVE_GAP = 6
FADE_RAMP = 0.1  # mean luma that a gap's frames move by, in one direction, to be part of a fade (a pan: ~0.02)


def _ramps(brightness: np.ndarray) -> bool:
    """Whether brightness moves steadily one way across the gap by at least FADE_RAMP (a fade's ramp)."""
    steps = np.diff(brightness)
    return abs(float(brightness[-1] - brightness[0])) >= FADE_RAMP and bool(np.all(steps >= 0) or np.all(steps <= 0))

# a stride gap's luma change must be this multiple of the gap's next-largest to be one frame's (a cut): raw luma
# differences include motion (no motion compensation), so the shot after a cut moving fast adds ~half the cut's change
LUMA_CONCENTRATION = 1.5

SKIPS = {"bidir": "BIDIR", "nonref": "NONREF", "none": "DEFAULT"}  # SparseConfig.skip -> FFmpeg's skip_frame


def coarse_skip(sparse: SparseConfig, stream) -> str:
    """FFmpeg's ``skip_frame`` for the coarse pass over ``stream``: nothing to skip without B-frames."""
    if sparse.skip not in SKIPS:
        raise ValueError(f"sparse.skip must be one of {', '.join(SKIPS)}, not {sparse.skip!r}")
    return SKIPS[sparse.skip] if stream.codec_context.has_b_frames else "DEFAULT"


def decoded_share(container, stream, clock: FrameClock, start: int, packets: int) -> float:
    """The share of frames a BIDIR pass decodes, from packet order alone: in decode order a B-frame shows
    before a frame already sent (its pts is below the largest so far); I and P frames never do."""
    _seek(container, stream, clock, start)
    seen, kept, top = 0, 0, None
    for packet in container.demux(stream):
        if packet.pts is None:
            continue
        seen += 1
        if top is None or packet.pts > top:
            kept, top = kept + 1, packet.pts
        if seen >= packets:
            break
    _seek(container, stream, clock, start, rewind=True)
    return kept / seen if seen else 1.0


def coarse_detector(detector: FastCutDetector, share: float, sparse: SparseConfig, factor: int = 2) -> FastCutDetector:
    """``detector``, or a fresh one of its kind with its gradual windows divided by ``factor`` when the pass
    decodes at most ``sparse.halve_windows_below`` of the frames (so that they cover the same time)."""
    if share > sparse.halve_windows_below or factor < 2:
        return detector
    c = detector.config
    scaled = replace(c, gradual_scales=tuple(sorted({max(2, k // factor) for k in c.gradual_scales})))
    return type(detector)(scaled)


LUMA_COLUMNS, CHROMA_COLUMNS = 64, 32  # columns sampled per plane (every step-th row and column)


def _step(plane, columns: int) -> int:
    return max(1, plane.width // columns)


def _plane_sample(frame, i: int, columns: int) -> np.ndarray:
    plane = frame.planes[i]
    wide = frame.format.components[min(i, len(frame.format.components) - 1)].bits > 8
    rows = np.frombuffer(plane, np.uint16 if wide else np.uint8)
    rows = rows[: plane.height * (plane.line_size // rows.itemsize)].reshape(plane.height, -1)
    step = _step(plane, columns)
    return rows[::step, : plane.width : step].astype(np.int32 if wide else np.int16).ravel()


def luma_sample(frame) -> np.ndarray:
    """About 64 columns of every ~10th row of the frame's luma plane, then ~32 of every ~10th row of each chroma
    plane (a cut between two shots of the same brightness changes the colours), read in place, no conversion:
    the stride pass's per-frame signal for placing a cut (a few µs at 640x360). The luma part comes first."""
    parts = [_plane_sample(frame, 0, LUMA_COLUMNS)]
    if len(frame.planes) >= 3 and frame.format.name.startswith("yuv"):
        parts += [_plane_sample(frame, 1, CHROMA_COLUMNS), _plane_sample(frame, 2, CHROMA_COLUMNS)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def luma_size(frame) -> int:
    """How many of :func:`luma_sample`'s values are luma."""
    plane = frame.planes[0]
    step = _step(plane, LUMA_COLUMNS)
    return len(range(0, plane.height, step)) * len(range(0, plane.width, step))


# cut_distance(a, b) (2 x motion-compensated binned-luma distance + 2 x grid colour change) is at most this multiple
# of the mean absolute RGB difference of the two thumbnails (0..1): the binned luma differs by at most 0.587 x 3 of it
# and the motion search's core is 180 of the 312 binned pixels (so x 1.73), the grid change by at most 1
CUT_DISTANCE_BOUND = 8.1


class LumaChanges:
    """A stride pass's record of the frames between the frames the detector sees. Those frames are held (a
    reference, no copy) until the next seen frame; when the two seen thumbnails differ enough that the
    detector could call a cut between them (see CUT_DISTANCE_BOUND: it never can below this), the mean absolute
    change of :func:`luma_sample` into each frame of the gap and each frame's mean luma (0..1, black at 0
    whatever the range) are recorded; elsewhere NaN. 8 bytes per frame; a few µs per frame outside candidate gaps."""

    def __init__(self, start: int, cut_threshold: float = 0.15):
        self.start = start
        self.values = array("f")  # change into frame start + i from the frame before
        self.levels = array("f")  # mean luma of frame start + i
        self.floor = 0.8 * cut_threshold / CUT_DISTANCE_BOUND * 255.0  # on the uint8 scale of the thumbnails
        self._held: list = []  # (index, frame) decoded since the last seen frame (that one first)
        self._thumb: np.ndarray | None = None  # the last seen frame's thumbnail

    def hold(self, index: int, frame) -> None:
        self._held.append((index, frame))

    def seen(self, index: int, frame, thumb: np.ndarray) -> None:
        """Frame ``index`` is one the detector sees, with its thumbnail: settle the gap before it."""
        held, self._held = self._held, [(index, frame)]
        prev, self._thumb = self._thumb, thumb
        lo = self.start + len(self.values)  # first frame without an entry
        if index < lo:
            return
        gap = held + [(index, frame)]
        candidate = (prev is not None and gap[0][0] == lo - 1 and index - gap[0][0] == len(gap) - 1
                     and float(np.abs(prev.astype(np.int16) - thumb).mean()) >= self.floor)
        if not candidate:
            self.values.extend([math.nan] * (index + 1 - lo))
            self.levels.extend([math.nan] * (index + 1 - lo))
            return
        samples = [luma_sample(f) for _, f in gap]
        top = 65535.0 if samples[0].dtype == np.int32 else 255.0
        scale, ny = top * samples[0].size, luma_size(frame)
        levels = [float(x[:ny].sum()) / (top * ny) for x in samples]
        if getattr(frame, "color_range", 0) != 2 and not frame.format.name.startswith("yuvj"):
            levels = [(v - 16 / 255) * 255 / 219 for v in levels]  # limited range (black at 16): the thumbnails' scale
        self.levels[-1] = levels[0]  # the gap's first frame: the last seen one
        self.values.extend(float(np.abs(b - a).sum()) / scale for a, b in zip(samples, samples[1:]))
        self.levels.extend(levels[1:])

    def release(self) -> None:
        """Let go of the frames held (the pass is over)."""
        self._held, self._thumb = [], None

    def gap(self, a: int, b: int) -> np.ndarray | None:
        """Changes into frames ``a+1 .. b``, or None where any is unknown (not a candidate, or not decoded)."""
        lo, hi = a + 1 - self.start, b + 1 - self.start
        if lo < 0 or hi > len(self.values):
            return None
        d = np.asarray(self.values[lo:hi], dtype=np.float32)
        return None if np.isnan(d).any() else d

    def level(self, index: int) -> float:
        i = index - self.start
        return float(self.levels[i]) if 0 <= i < len(self.levels) else math.nan


def place_in_gap(changes: np.ndarray, concentration: float) -> int | None:
    """Offset (1-based, into the gap) of the one frame that holds the change, or None when it is spread."""
    best = int(np.argmax(changes))
    runner_up = float(np.sort(changes)[-2]) if len(changes) > 1 else 0.0
    return best + 1 if changes[best] > 0 and changes[best] >= concentration * runner_up else None


def _seek(container, stream, clock: FrameClock, index: int, rewind: bool = False) -> None:
    """Position at the keyframe at or before frame ``index`` (at the start: a no-op unless ``rewind``)."""
    if index > 0 or rewind:
        container.seek(clock.pts(index), stream=stream, backward=True, any_frame=False)


class FrameSink:
    """Everything a scan does with a decoded frame, in decoding order: a frame the detector sees is made a
    thumbnail and handed to the consumers (``update(thumb)``: the detector, DPSelect's distance, trackers);
    a stride pass's other frames are held by its :class:`LumaChanges`. With ``threaded`` this runs on one
    helper thread, in batches, while the calling thread only decodes: FFmpeg's decoding and swscale release
    the GIL, so the decode and the detector use two cores (x264 ultrafast 640x360: two single-threaded decodes
    in two threads take 1.6 s where one after the other take 3.1 s). At most two batches of about
    ``BATCH_BYTES`` of frames are pending: memory stays bounded."""

    BATCH_BYTES = 8 << 20

    def __init__(self, thumbnail, consumers, changes: "LumaChanges | None", threaded: bool = True):
        self.thumbnail, self.consumers, self.changes = thumbnail, consumers, changes
        self.batch: list = []
        self.limit = 0  # frames per batch, from the first frame's size
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="longvid-detector") if threaded else None
        self.pending: deque = deque()

    def _feed(self, batch: list) -> None:
        changes = self.changes
        for index, frame, seen in batch:
            if not seen:
                changes.hold(index, frame)
                continue
            thumb = self.thumbnail(frame)  # the one place each decoded frame's thumbnail is handled
            if changes is not None:
                changes.seen(index, frame, thumb)
            for consumer in self.consumers:
                consumer.update(thumb)

    def add(self, index: int, frame, seen: bool = True) -> None:
        if not self.limit:
            size = sum(plane.buffer_size for plane in frame.planes)
            self.limit = max(1, min(64, self.BATCH_BYTES // max(size, 1)))
        self.batch.append((index, frame, seen))
        if len(self.batch) >= self.limit:
            self._submit()

    def _submit(self) -> None:
        batch, self.batch = self.batch, []
        if self.pool is None:
            self._feed(batch)
            return
        while len(self.pending) >= 2:
            self.pending.popleft().result()  # re-raises a consumer's error here
        self.pending.append(self.pool.submit(self._feed, batch))

    def close(self) -> None:
        """Feed what is left and wait for every batch (a consumer's error is raised here)."""
        try:
            if self.batch:
                self._submit()
            while self.pending:
                self.pending.popleft().result()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)


def scan(source, decode: DecodeConfig, sparse: SparseConfig, detector: FastCutDetector,
         start: int = 0, end: int | None = None, trackers: Sequence = ()) -> Scan:
    """Decode frames ``[start, end)`` (all, or reference frames only), run ``detector`` and DPSelect's
    distance on them, and return the transitions with every cut placed exactly. ``trackers`` (objects
    with ``update(thumb)``) see every thumbnail the detector sees, in order (``coarse_signals``)."""
    distance = FrameDistance()
    frames: list[int] = []
    thumbnail = thumbnailer(decode)
    with open_video(source, decode.hwaccel) as container:
        stream = container.streams.video[0]
        if decode.threads:
            stream.codec_context.thread_count = decode.threads
        clock = FrameClock(stream)
        skipping = coarse_skip(sparse, stream)
        # nothing to skip in the decoder (no B-frames): decode all, show the detector every stride-th frame
        stride = max(1, int(sparse.stride)) if skipping == "DEFAULT" and sparse.skip != "none" else 1
        stream.thread_type = sparse.thread_type.upper() if skipping != "DEFAULT" else "AUTO"
        if stride > 1 and sparse.stride_threads and not decode.threads:
            stream.codec_context.thread_count = sparse.stride_threads
        if skipping != "DEFAULT":
            stream.codec_context.skip_frame = skipping
        placing = detector.config  # frame spans in _place are in the video's frames, whatever the detector sees
        if skipping == "BIDIR":  # demuxes the first packets, then seeks back to the start
            detector = coarse_detector(detector, decoded_share(container, stream, clock, start, sparse.probe_packets),
                                       sparse)
        else:
            _seek(container, stream, clock, start)
            if stride > 1:
                detector = coarse_detector(detector, 1.0 / stride, sparse, factor=stride)
                detector.keep_history()  # a fresh detector (coarse_detector): the history is this pass's
        if sparse.skip_loop_filter or decode.skip_loop_filter:
            stream.codec_context.options = {"skip_loop_filter": "all"}
        result = Scan(np.zeros(0, np.int64), np.zeros(0, np.float32), sparse=skipping != "DEFAULT" or stride > 1,
                      skip=skipping, stride=stride, changes=LumaChanges(start, placing.cut_threshold) if stride > 1 else None)
        changes = result.changes
        sink = FrameSink(thumbnail, (detector, distance, *trackers), changes, sparse.detector_thread)
        last = None  # the last frame number handed on
        try:
            # yields decoded frames in display order: all of them, or the reference frames only
            for frame in container.decode(stream):
                result.decoded += 1
                index = clock.index(frame.pts) if frame.pts is not None else (last + 1 if last is not None else start)
                if index < start or (last is not None and index <= last):
                    continue
                if end is not None and index >= end:
                    break
                seen = not index % stride  # the same frames whatever the start: windows see what one pass sees
                sink.add(index, frame, seen)
                last = index
                if seen:
                    frames.append(index)
        except av.error.FFmpegError as exc:
            result.error = str(exc)
        finally:
            sink.close()
            if changes is not None:
                changes.release()
    result.frames = np.asarray(frames, dtype=np.int64)
    result.distances = distance.distances
    result.end = int(frames[-1]) + 1 if frames else start
    if changes is not None and last is not None:  # the frames after the last one seen were decoded: covered
        result.end = max(result.end, last + 1)
    boundaries = detector.finish()
    result.transitions = _place(source, decode, sparse, result, boundaries, detector.transitions, placing,
                                detector.history)
    return result


def _place(source, decode: DecodeConfig, sparse: SparseConfig, result: Scan, boundaries: list[int],
           transitions: list[dict], detector_config, history: dict | None = None) -> list[dict]:
    """Detector output (positions in the decoded sequence) → frame numbers; cuts refined exactly."""
    frames, out = result.frames, []
    n = len(frames)
    gaps = [(int(frames[b - 1]), int(frames[b])) for b, t in zip(boundaries, transitions)
            if t["kind"] == "cut" and 0 < b < n and frames[b] - frames[b - 1] > 1]
    c = detector_config
    exact = {}
    if result.changes is not None:  # a stride pass decoded every frame of each gap: place the cut from its luma changes
        exact = judge_stride_gaps(result, gaps, c, history)
        gaps = [g for g in gaps if g not in exact]  # a frame of the gap missing: decode it again
    exact.update(refine_cuts(source, decode, gaps, result, sparse.cut_concentration, c.cut_threshold, c.gradual_threshold,
                         c.dark_level, result.skip, thumbnailer(decode)) if sparse.refine and gaps else {})
    for b, t in zip(boundaries, transitions):
        if not 0 < b < n:
            continue
        if t["kind"] == "cut":
            gap = (int(frames[b - 1]), int(frames[b]))
            kind, frame = exact.get(gap, ("cut", gap[1]))
            if kind == "cut":
                out.append({"frame": frame, "start_frame": frame, "end_frame": frame, "kind": "cut"})
            elif kind != "motion":  # a short fade or dissolve inside the gap; motion is no transition
                out.append({"frame": (gap[0] + gap[1] + 1) // 2, "start_frame": gap[0] + 1, "end_frame": gap[1],
                            "kind": kind})
        else:
            stop = int(frames[t["end_frame"]]) if t["end_frame"] < n else result.end
            out.append({"frame": int(frames[b]), "start_frame": int(frames[min(t["start_frame"], n - 1)]),
                        "end_frame": stop, "kind": t["kind"]})
    return merge_gradual(out, c.min_shot_frames)


def merge_gradual(events: list[dict], min_gap: int) -> list[dict]:
    """Join a gradual transition with a neighbour closer than 3 x ``min_gap`` frames: a fade through black
    seen at half the frame rate is a cut-like step down and another up, found as two (the dense detector
    joins them by growing spans over the dark frames, which the coarse series no longer holds); two cuts
    never join."""
    out: list[dict] = []
    for e in sorted(events, key=lambda e: e["frame"]):
        last = out[-1] if out else None
        if last and last["kind"] == e["kind"] == "cut":
            out.append(e)
        elif last and e["start_frame"] - last["end_frame"] < 3 * min_gap:
            start, end = min(last["start_frame"], e["start_frame"]), max(last["end_frame"], e["end_frame"])
            kind = "fade" if "fade" in (last["kind"], e["kind"]) else "dissolve"
            out[-1] = {"frame": (start + end) // 2, "start_frame": start, "end_frame": end, "kind": kind}
        else:
            out.append(e)
    return out


def judge_stride_gaps(result: Scan, gaps: list[tuple[int, int]], c, history: dict) -> dict:
    """What :func:`refine_cuts` decides for each ``(a, b)`` cut gap of a stride pass (two seen frames), without
    decoding anything again: the cut is the gap's frame that holds its luma change; a spread change is judged by
    the colour distance and brightness of the two seen frames (the detector's own, kept in ``history``). A gap
    whose frames were not all measured is left out (it is decoded again)."""
    found = {}
    for a_frame, b_frame in gaps:
        d = result.changes.gap(a_frame, b_frame)
        if d is None:
            continue
        at = place_in_gap(d, LUMA_CONCENTRATION)
        if at is not None:
            cut = a_frame + at
            # a cut into or out of black is a fade's edge (the dense detector grows it over the dark frames)
            dark = min(result.changes.level(cut), result.changes.level(cut - 1)) < c.dark_level
            found[(a_frame, b_frame)] = ("fade", None) if dark else ("cut", cut)
            continue
        b = int(np.searchsorted(result.frames, b_frame))  # its position among the seen frames
        colour = float(history["lag1"][b]) if b < len(history["lag1"]) else math.nan
        bright = np.asarray(history["bright"][b - 1 : b + 1], np.float32)
        if not colour >= c.gradual_threshold:
            found[(a_frame, b_frame)] = ("motion", None)
        elif bright.min() < c.dark_level or _ramps(bright):
            found[(a_frame, b_frame)] = ("fade", None)
        else:
            found[(a_frame, b_frame)] = ("dissolve", None)
    return found


def refine_cuts(source, decode: DecodeConfig, gaps: list[tuple[int, int]], result: Scan,
                concentration: float = 2.0, threshold: float = 0.15, gradual_threshold: float = 0.20,
                dark_level: float = 0.08, skip: str = "NONREF", thumbnail=None) -> dict:
    """For each ``(a, b)``: ``("cut", frame)`` with the frame in ``(a, b]`` that holds the change (the
    largest cut distance to the frame before, at least ``threshold`` and ``concentration`` x the next
    largest); when the change is spread over the gap, ``("fade" | "dissolve", None)`` if the colours
    changed by ``gradual_threshold`` (a fast gradual transition), else ``("motion", None)`` (a fast
    pan seen at half the frame rate looks like a cut). From a dense decode of ``[a, b]``
    only: a seek to the keyframe before ``a``, reference frames up to there, every frame inside, at
    full quality (deblocked), as a dense pass would see them."""
    found = {}
    thumbnail = thumbnail or thumbnailer(decode)
    with open_video(source, decode.hwaccel) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        clock = FrameClock(stream)
        context = stream.codec_context
        outside = "NONREF" if skip == "DEFAULT" else skip  # frames outside a gap serve only as references
        for a, b in sorted(set(gaps)):
            thumbs: dict[int, np.ndarray] = {}
            _seek(container, stream, clock, a)
            lo, hi = clock.pts(a) - 1, clock.pts(b) + 1
            try:
                for packet in container.demux(stream):
                    past = packet.dts is None or packet.dts > hi  # this and later packets show later frames
                    # frames outside the gap are needed only as references: skip the others' decoding
                    inside = packet.pts is not None and lo <= packet.pts <= hi
                    context.skip_frame = "DEFAULT" if inside else outside
                    for frame in context.decode(None if past else packet):  # past the gap: drain
                        result.decoded += 1
                        index = clock.index(frame.pts)
                        if a <= index <= b:
                            thumbs[index] = thumbnail(frame)
                    if past or len(thumbs) == b - a + 1:
                        break
            except av.error.FFmpegError:
                pass
            context.flush_buffers()  # the next seek starts clean
            got = sorted(thumbs)
            if len(got) >= 2 and got[0] == a and got[-1] == b:
                features = compute_features(np.stack([thumbs[i] for i in got]))
                d = cut_distance(features.take(slice(0, len(got) - 1)), features.take(slice(1, len(got))))
                best = int(np.argmax(d))
                runner_up = float(np.sort(d)[-2]) if len(d) > 1 else 0.0
                if d[best] >= threshold and d[best] >= concentration * runner_up:
                    found[(a, b)] = ("cut", got[1 + best])
                elif float(colour_distance(features.take([0]), features.take([len(got) - 1]))[0]) < gradual_threshold:
                    found[(a, b)] = ("motion", None)
                elif features.brightness.min() < dark_level or _ramps(features.brightness):
                    found[(a, b)] = ("fade", None)  # part of a fade through black, seen at the coarse frame rate
                elif skip != "BIDIR" or b - a >= MIN_DISSOLVE_GAP:
                    found[(a, b)] = ("dissolve", None)
                else:
                    found[(a, b)] = ("motion", None)
    return found
