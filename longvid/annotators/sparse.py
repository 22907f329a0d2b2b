"""Sparse shot detection: decode only the frames the signal needs, then put every hard cut on its
exact frame by decoding densely around it.

On streams with B-frames the coarse pass skips non-reference frames (``skip_frame = NONREF``: nothing
depends on them, so what is decoded is exact) and skips deblocking; the ``fast`` detector runs on the
decoded frames in order. A cut it finds lies between two decoded frames; when they are not adjacent,
a seek to the keyframe before them and a dense decode of that gap alone places the cut (the largest
consecutive cut distance). Gradual transitions and DPSelect features come from the coarse frames.
Never decodes a frame twice except inside a refined gap; never holds more than the detector's window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    skip_nonref: bool = True  # on streams with B-frames, decode reference frames only (a third of x264 veryfast's frames go)
    skip_loop_filter: bool = True  # in the coarse pass: deblocking is ~30% of decode and barely changes a 48x27 thumbnail
    refine: bool = True  # decode each cut's gap densely to place it on its exact frame (off: the first decoded frame after it)
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
    sparse: bool = False  # whether non-reference frames were skipped
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


def _thumbnail(scaler: VideoReformatter, frame, decode: DecodeConfig) -> np.ndarray:
    method = "AREA" if decode.interpolation == "auto" else decode.interpolation
    return scaler.reformat(frame, decode.width, decode.height, decode.pix_fmt, interpolation=method).to_ndarray()


def _seek(container, stream, clock: FrameClock, index: int) -> None:
    """Position at the keyframe at or before frame ``index`` (a no-op at the start)."""
    if index > 0:
        container.seek(clock.pts(index), stream=stream, backward=True, any_frame=False)


def scan(source, decode: DecodeConfig, sparse: SparseConfig, detector: FastCutDetector,
         start: int = 0, end: int | None = None, trackers: Sequence = ()) -> Scan:
    """Decode frames ``[start, end)`` (all, or reference frames only), run ``detector`` and DPSelect's
    distance on them, and return the transitions with every cut placed exactly. ``trackers`` (objects
    with ``update(thumb)``) see every thumbnail the detector sees, in order (``coarse_signals``)."""
    distance = FrameDistance()
    frames: list[int] = []
    scaler = VideoReformatter()
    with open_video(source, decode.hwaccel) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if decode.threads:
            stream.codec_context.thread_count = decode.threads
        clock = FrameClock(stream)
        skip_nonref = sparse.skip_nonref and bool(stream.codec_context.has_b_frames)
        if skip_nonref:
            stream.codec_context.skip_frame = "NONREF"
        if sparse.skip_loop_filter or decode.skip_loop_filter:
            stream.codec_context.options = {"skip_loop_filter": "all"}
        _seek(container, stream, clock, start)
        result = Scan(np.zeros(0, np.int64), np.zeros(0, np.float32), sparse=skip_nonref)
        try:
            # yields decoded frames in display order: all of them, or the reference frames only
            for frame in container.decode(stream):
                result.decoded += 1
                index = clock.index(frame.pts) if frame.pts is not None else (frames[-1] + 1 if frames else start)
                if index < start or (frames and index <= frames[-1]):
                    continue
                if end is not None and index >= end:
                    break
                thumb = _thumbnail(scaler, frame, decode)
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
    result.transitions = _place(source, decode, sparse, result, boundaries, detector.transitions, detector.config)
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
                         c.dark_level) if sparse.refine and gaps else {})
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
    joins them by growing spans over the dark frames, which the coarse series no longer holds)."""
    out: list[dict] = []
    for e in sorted(events, key=lambda e: e["frame"]):
        last = out[-1] if out else None
        if last and "cut" in (last["kind"], e["kind"]) and last["kind"] == e["kind"]:
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
                dark_level: float = 0.08) -> dict:
    """For each ``(a, b)``: ``("cut", frame)`` with the frame in ``(a, b]`` that holds the change (the
    largest cut distance to the frame before, at least ``threshold`` and ``concentration`` x the next
    largest); when the change is spread over the gap, ``("fade" | "dissolve", None)`` if the colours
    changed by ``gradual_threshold`` (a fast gradual transition), else ``("motion", None)`` (a fast
    pan seen at half the frame rate looks like a cut). From a dense decode of ``[a, b]``
    only: a seek to the keyframe before ``a``, reference frames up to there, every frame inside, at
    full quality (deblocked), as a dense pass would see them."""
    found = {}
    scaler = VideoReformatter()
    with open_video(source, decode.hwaccel) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        clock = FrameClock(stream)
        context = stream.codec_context
        for a, b in sorted(set(gaps)):
            thumbs: dict[int, np.ndarray] = {}
            _seek(container, stream, clock, a)
            lo, hi = clock.pts(a) - 1, clock.pts(b) + 1
            try:
                for packet in container.demux(stream):
                    past = packet.dts is None or packet.dts > hi  # this and later packets show later frames
                    # frames outside the gap are needed only as references: skip the others' decoding
                    inside = packet.pts is not None and lo <= packet.pts <= hi
                    context.skip_frame = "DEFAULT" if inside else "NONREF"
                    for frame in context.decode(None if past else packet):  # past the gap: drain
                        result.decoded += 1
                        index = clock.index(frame.pts)
                        if a <= index <= b:
                            thumbs[index] = _thumbnail(scaler, frame, decode)
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
                elif float(colour_distance(features.take([0]), features.take([len(got) - 1]))[0]) >= gradual_threshold:
                    found[(a, b)] = ("fade" if features.brightness.min() < dark_level else "dissolve", None)
                else:
                    found[(a, b)] = ("motion", None)
    return found
