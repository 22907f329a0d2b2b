"""Uniform media members: a source's streams put into an MP4 (``+faststart``) by stream copy.

Every consumer of WebDataset shards that infers columns from member names (Hugging Face
``datasets``, Ray Data) needs one media extension per dataset, and MP4 with its index at the
front also serves ranged reads. Packets are copied untouched (same frames, same timestamps);
only a stream MP4 cannot carry is re-encoded, frame for frame with its own timestamps. Never
changes frame counts or timing, and never decides what is a video (probe does that).
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid

import av

from ..shards.storage import local_scratch_dir
from .base import ItemFailed

MP4_EXT = "mp4"
# Audio codecs copied as they are; any other audio is re-encoded to AAC (vorbis and PCM in MP4
# are ffmpeg extensions most readers refuse).
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"})
VIDEO_REENCODER = "libx264"  # for video codecs MP4 cannot carry (vp8, theora, flv1, wmv...)
AUDIO_REENCODER = "aac"


def mp4_can_copy_video(codec: str) -> bool:
    """Whether ffmpeg's MP4 muxer carries this video codec as it is."""
    with av.open(io.BytesIO(), "w", format="mp4") as probe_out:
        return codec in probe_out.supported_codecs


def _copy_or_encode_stream(out: av.container.OutputContainer, stream, copy: bool, encoder: str):
    if copy:
        return out.add_stream_from_template(stream)
    if stream.type == "video":
        new = out.add_stream(encoder, rate=stream.average_rate or stream.guessed_rate)
        new.width, new.height, new.pix_fmt = stream.codec_context.width, stream.codec_context.height, "yuv420p"
        new.time_base = stream.time_base  # keep every frame's own timestamp (VFR stays VFR)
        new.codec_context.time_base = stream.time_base
        new.options = {"crf": "18", "preset": "veryfast", "bf": "0"}
        return new
    return out.add_stream(encoder, rate=stream.codec_context.sample_rate or 48000)


def _write_mp4(source, target: str) -> dict:
    """Copy (or re-encode where needed) the first video and audio stream of ``source`` to ``target``."""
    with av.open(source) as inp:
        video = inp.streams.video[0]
        audio = inp.streams.audio[0] if inp.streams.audio else None
        copy_video = mp4_can_copy_video(video.codec_context.name)
        copy_audio = audio is not None and audio.codec_context.name in MP4_AUDIO_COPY
        with av.open(target, "w", format="mp4", options={"movflags": "+faststart"}) as out:
            plan = {video: (_copy_or_encode_stream(out, video, copy_video, VIDEO_REENCODER), copy_video)}
            if audio is not None:
                plan[audio] = (_copy_or_encode_stream(out, audio, copy_audio, AUDIO_REENCODER), copy_audio)
            resampler = av.AudioResampler(format="fltp") if audio is not None and not copy_audio else None
            # yields packets of the chosen streams in file order
            for packet in inp.demux(list(plan)):
                target_stream, copy = plan[packet.stream]
                if copy:
                    if packet.dts is None and packet.pts is None:
                        continue  # a demuxer's flush packet: nothing to carry
                    packet.stream = target_stream
                    out.mux(packet)
                    continue
                for frame in packet.decode():
                    if resampler is not None and packet.stream is audio:
                        for piece in resampler.resample(frame):
                            out.mux(target_stream.encode(piece))
                    else:
                        frame.pict_type = av.video.frame.PictureType.NONE
                        out.mux(target_stream.encode(frame))
            for target_stream, copy in plan.values():
                if not copy:
                    out.mux(target_stream.encode(None))
    return {"video": "copy" if copy_video else f"reencode:{VIDEO_REENCODER}",
            "audio": None if audio is None else ("copy" if copy_audio else f"reencode:{AUDIO_REENCODER}")}


def to_mp4(data: bytes, source_ext: str) -> tuple[bytes, dict]:
    """``data`` as an MP4 member, and what was done (for the record).

    An MP4 source is still rewritten (faststart, first video/audio stream only) so every member
    has its index at the front. Raises ItemFailed with a reason when ffmpeg refuses the streams.
    """
    tmp = os.path.join(local_scratch_dir(), f"{uuid.uuid4().hex}.remux.mp4")
    try:
        try:
            how = _write_mp4(io.BytesIO(data), tmp)
        except (av.error.FFmpegError, ValueError) as exc:
            raise ItemFailed(f"cannot put the {source_ext} source into MP4: {exc}") from exc
        with open(tmp, "rb") as f:
            media = f.read()
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    info = {"media_ext": MP4_EXT, "source_ext": source_ext, "media_bytes": len(media),
            "media_sha256": hashlib.sha256(media).hexdigest(), "remux": how}
    return media, info
