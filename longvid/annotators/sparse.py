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
    # detector's windows (gradual scales, flash and baseline spans, shortest shot) are halved so that they span
    # the same time as on every frame: x264 veryfast keeps ~40% of its frames with BIDIR (two wide windows
    # otherwise join neighbouring dissolves)
    halve_windows_below: float = 0.6
    probe_packets: int = 500  # packets demuxed (not decoded) at the start of a pass to estimate that share
    # a cut found across a gap must hold this multiple of the gap's next-largest frame-to-frame change: a cut
    # happens in one frame, motion (a fast pan seen at half the frame rate) spreads over all of them
    cut_concentration: float = 2.0


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
    """frame → ``HxWx3`` uint8 thumbnail by swscale (one per pass: it keeps its scaler's context)."""
    method = "AREA" if decode.interpolation == "auto" else decode.interpolation
    scaler = VideoReformatter()
    return lambda frame: scaler.reformat(frame, decode.width, decode.height, decode.pix_fmt,
                                         interpolation=method).to_ndarray()


# in a BIDIR pass a spread change across a shorter gap (2-4 frames between two P-frames) is not kept as a dissolve:
# the shortest dissolves last 8 frames and the gradual detector sees them; over 4 frames a fast pan moves the
# colours as much (a NONREF pass's 1-2 frame gaps keep them: the benchmark set's F1 is higher that way)
MIN_DISSOLVE_GAP = 6
FADE_RAMP = 0.1  # mean luma that a gap's frames move by, in one direction, to be part of a fade (a pan: ~0.02)


def _ramps(brightness: np.ndarray) -> bool:
    """Whether brightness moves steadily one way across the gap by at least FADE_RAMP (a fade's ramp)."""
    steps = np.diff(brightness)
    return abs(float(brightness[-1] - brightness[0])) >= FADE_RAMP and bool(np.all(steps >= 0) or np.all(steps <= 0))

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


def coarse_detector(detector: FastCutDetector, share: float, sparse: SparseConfig) -> FastCutDetector:
    """``detector``, or a fresh one of its kind with its windows halved when the pass decodes at most
    ``sparse.halve_windows_below`` of the frames (so that they cover the same time)."""
    if share > sparse.halve_windows_below:
        return detector
    c = detector.config
    halved = replace(c, gradual_scales=tuple(sorted({max(2, k // 2) for k in c.gradual_scales})))
    return type(detector)(halved)


def _seek(container, stream, clock: FrameClock, index: int, rewind: bool = False) -> None:
    """Position at the keyframe at or before frame ``index`` (at the start: a no-op unless ``rewind``)."""
    if index > 0 or rewind:
        container.seek(clock.pts(index), stream=stream, backward=True, any_frame=False)


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
        stream.thread_type = sparse.thread_type.upper() if skipping != "DEFAULT" else "AUTO"
        if skipping != "DEFAULT":
            stream.codec_context.skip_frame = skipping
        placing = detector.config  # frame spans in _place are in the video's frames, whatever the detector sees
        if skipping == "BIDIR":  # demuxes the first packets, then seeks back to the start
            detector = coarse_detector(detector, decoded_share(container, stream, clock, start, sparse.probe_packets),
                                       sparse)
        else:
            _seek(container, stream, clock, start)
        if sparse.skip_loop_filter or decode.skip_loop_filter:
            stream.codec_context.options = {"skip_loop_filter": "all"}
        result = Scan(np.zeros(0, np.int64), np.zeros(0, np.float32), sparse=skipping != "DEFAULT", skip=skipping)
        try:
            # yields decoded frames in display order: all of them, or the reference frames only
            for frame in container.decode(stream):
                result.decoded += 1
                index = clock.index(frame.pts) if frame.pts is not None else (frames[-1] + 1 if frames else start)
                if index < start or (frames and index <= frames[-1]):
                    continue
                if end is not None and index >= end:
                    break
                thumb = thumbnail(frame)  # the one place each decoded frame's thumbnail is handled
                detector.update(thumb)
                distance.update(thumb)
                for tracker in trackers:
                    tracker.update(thumb)
                frames.append(index)
        except av.error.FFmpegError as exc:
            result.error = str(exc)
    result.frames = np.asarray(frames, dtype=np.int64)
    result.distances = distance.distances
    result.end = int(frames[-1]) + 1 if frames else start
    boundaries = detector.finish()
    result.transitions = _place(source, decode, sparse, result, boundaries, detector.transitions, placing)
    return result


def _place(source, decode: DecodeConfig, sparse: SparseConfig, result: Scan, boundaries: list[int],
           transitions: list[dict], detector_config) -> list[dict]:
    """Detector output (positions in the decoded sequence) → frame numbers; cuts refined exactly."""
    frames, out = result.frames, []
    n = len(frames)
    gaps = [(int(frames[b - 1]), int(frames[b])) for b, t in zip(boundaries, transitions)
            if t["kind"] == "cut" and 0 < b < n and frames[b] - frames[b - 1] > 1]
    c = detector_config
    exact = (refine_cuts(source, decode, gaps, result, sparse.cut_concentration, c.cut_threshold, c.gradual_threshold,
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
