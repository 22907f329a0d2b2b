"""Clip files: the frames ``[start_frame, end_frame)`` of a video as an MP4 of their own.

A trainer that reads whole files only (VideoChat-Flash's local readers) needs each clip as a
file. One decode of the parent serves all of its clips; a span that starts and ends on
keyframes is stream-copied (checked by decoding the copy), any other span is re-encoded frame
for frame with the frames' own relative timestamps. Never touches anything but the files it
is told to write.
"""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass

import av

from ..shards.streams import rotate_frame

CLIP_ENCODER = "libx264"
CLIP_ENCODER_OPTIONS = {"crf": "18", "preset": "veryfast"}  # near-lossless, cheap: the trainer resizes anyway


@dataclass
class ClipSpan:
    clip_id: str
    start_frame: int
    end_frame: int  # exclusive
    target: str  # final path of the clip file


def _atomic_target(target: str) -> str:
    return os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.{uuid.uuid4().hex[:8]}.tmp")


def keyframe_indices(media: bytes) -> tuple[list[int], int]:
    """Presentation indices of keyframes, and the frame count (demux only, no decoding)."""
    with av.open(io.BytesIO(media)) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size and p.pts is not None]
    order = sorted(packets)
    return [i for i, (_, key) in enumerate(order) if key], len(order)


def _copy_span(media: bytes, span: ClipSpan, tmp: str) -> int:
    """Stream copy of the packets presented in the span; returns the decoded frame count."""
    with av.open(io.BytesIO(media)) as inp:
        stream = inp.streams.video[0]
        packets = [p for p in inp.demux(stream) if p.size and p.pts is not None]
        by_pts = sorted(packets, key=lambda p: p.pts)
        keep = {id(p) for p in by_pts[span.start_frame:span.end_frame]}
        first_pts = by_pts[span.start_frame].pts
        with av.open(tmp, "w", format="mp4", options={"movflags": "+faststart"}) as out:
            out_stream = out.add_stream_from_template(stream)
            for packet in packets:  # decode order
                if id(packet) in keep:
                    packet.pts -= first_pts
                    if packet.dts is not None:
                        packet.dts -= first_pts
                    packet.stream = out_stream
                    out.mux(packet)
    with av.open(tmp) as check:
        return sum(1 for _ in check.decode(video=0))


def _encode_spans(media: bytes, spans: list[ClipSpan], tmps: dict[str, str]) -> None:
    """One decode of the parent; each frame goes to the encoders of the spans that hold it."""
    if not spans:
        return
    with av.open(io.BytesIO(media)) as inp:
        stream = inp.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        open_outputs: dict[str, tuple] = {}
        last = max(s.end_frame for s in spans)
        try:
            for index, frame in enumerate(inp.decode(stream)):
                if index >= last:
                    break
                upright = _upright(frame)
                for span in spans:
                    if span.start_frame <= index < span.end_frame:
                        if span.clip_id not in open_outputs:
                            out = av.open(tmps[span.clip_id], "w", format="mp4", options={"movflags": "+faststart"})
                            enc = out.add_stream(CLIP_ENCODER, rate=rate)
                            enc.width, enc.height, enc.pix_fmt = upright.width, upright.height, "yuv420p"
                            enc.time_base = enc.codec_context.time_base = stream.time_base
                            enc.options = dict(CLIP_ENCODER_OPTIONS)
                            open_outputs[span.clip_id] = (out, enc, frame.pts)
                        out, enc, first_pts = open_outputs[span.clip_id]
                        copy = upright.reformat(format="yuv420p")
                        copy.pts, copy.time_base = frame.pts - first_pts, stream.time_base
                        out.mux(enc.encode(copy))
                    elif index == span.end_frame and span.clip_id in open_outputs:
                        _close(open_outputs.pop(span.clip_id))
        finally:
            for handle in open_outputs.values():
                _close(handle)


def _upright(frame):
    """The frame as shown: a re-encoded clip cannot carry its parent's display matrix (the muxer
    takes it from the stream, not the frames), so a rotated phone video's pixels are turned here."""
    rotation = int(round(frame.rotation or 0)) % 360
    if not rotation:
        return frame
    return av.VideoFrame.from_ndarray(rotate_frame(frame.to_ndarray(format="rgb24"), rotation), format="rgb24")


def _close(handle) -> None:
    out, enc, _ = handle
    out.mux(enc.encode(None))
    out.close()


def write_clip_files(media: bytes, spans: list[ClipSpan]) -> dict[str, str]:
    """Write every span's file (atomically); returns clip_id → ``"copy"`` or ``"reencode"``."""
    keyframes, total = keyframe_indices(media)
    key_set = set(keyframes)
    how: dict[str, str] = {}
    to_encode: list[ClipSpan] = []
    tmps = {s.clip_id: _atomic_target(s.target) for s in spans}
    try:
        for span in spans:
            if span.start_frame in key_set and (span.end_frame in key_set or span.end_frame >= total):
                try:
                    if _copy_span(media, span, tmps[span.clip_id]) == span.end_frame - span.start_frame:
                        how[span.clip_id] = "copy"
                        continue
                except (av.error.FFmpegError, ValueError):
                    pass  # an unusual stream: the re-encode below still gives exact frames
            to_encode.append(span)
        _encode_spans(media, to_encode, tmps)
        how.update({s.clip_id: "reencode" for s in to_encode})
        for span in spans:
            os.replace(tmps[span.clip_id], span.target)
    finally:
        for tmp in tmps.values():
            if os.path.exists(tmp):
                os.unlink(tmp)
    return how
