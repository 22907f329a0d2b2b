"""Probe from the streams, not the headers: files whose headers lie, generated with PyAV."""

import io
import struct
from fractions import Fraction

import av
import numpy as np

from longvid.annotators.probe import probe_bytes


def _frame(value, width, height):
    return av.VideoFrame.from_ndarray(np.full((height, width, 3), value % 255, np.uint8), format="rgb24")


def _mkv(seconds=3, fps=25, start_s=0.0) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="matroska") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = Fraction(1, fps)
        offset = int(start_s * fps)
        for i in range(seconds * fps):
            frame = _frame(i * 3, 64, 48)
            frame.pts, frame.time_base = offset + i, Fraction(1, fps)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return out.getvalue()


def test_timestamps_starting_at_ten_hours_give_the_real_length():
    probe = probe_bytes(_mkv(seconds=3, start_s=36000.0))
    assert abs(probe["duration"] - 3.0) < 0.1
    assert abs(probe["start_time"] - 36000.0) < 0.1
    assert any(n.startswith("start_offset: ") for n in probe["notes"])


def test_header_claiming_eleven_days_is_overruled():
    data = bytearray(_mkv(seconds=2))
    at = data.find(b"\x44\x89\x88")  # Matroska Duration element, an 8-byte float in milliseconds
    assert at > 0
    data[at + 3:at + 11] = struct.pack(">d", 11 * 86400 * 1000.0)
    probe = probe_bytes(bytes(data))
    assert abs(probe["duration"] - 2.0) < 0.1
    assert any(n.startswith("header_overruled: ") for n in probe["notes"])


def test_preview_track_listed_first_is_not_the_video():
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as c:
        preview = c.add_stream("libx264", rate=1)
        preview.width, preview.height, preview.pix_fmt = 64, 48, "yuv420p"
        main = c.add_stream("libx264", rate=25)
        main.width, main.height, main.pix_fmt = 320, 240, "yuv420p"
        for i in range(50):
            for p in main.encode(_frame(i * 5, 320, 240)):
                c.mux(p)
            if i % 25 == 0:
                for p in preview.encode(_frame(i, 64, 48)):
                    c.mux(p)
        for s in (preview, main):
            for p in s.encode():
                c.mux(p)
    probe = probe_bytes(out.getvalue())
    assert (probe["width"], probe["height"], probe["fps"], probe["num_frames"]) == (320, 240, 25.0, 50)
    assert probe["stream_index"] == 1
    assert any(n.startswith("stream_chosen: ") for n in probe["notes"])


def test_plain_video_has_no_notes_and_no_rotation(sample_videos):
    probe = probe_bytes(open(sample_videos["a_h264"].path, "rb").read())
    assert probe["notes"] == [] and probe["rotation"] == 0
